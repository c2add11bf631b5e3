//! Domain types shared by every CBDDC crate, and the traits at the seams between them.
//!
//! Nothing here does I/O or needs a tokio runtime. The vocabulary:
//!
//! - [`NodeId`]: a validated node name, ordered byte-wise (the bully election relies on it).
//! - [`Hlc`] and [`HybridClock`]: hybrid logical clock stamps that order conflicting writes.
//! - [`OplogEntry`]: one write (put or delete) by one origin node, numbered 1, 2, 3, … per origin.
//! - [`VersionVector`]: per origin, the highest sequence number a node holds.
//! - [`KnownPeer`]: a peer this node was told about (static remote, cloud remote, LAN).
//! - [`DocumentStore`] and [`PeerStore`]: what a storage engine offers the rest of the system.
//! - [`PeerDirectory`]: which peers are alive and may lead, for the election.
//!
//! ```
//! use cbddc_core::{HybridClock, NodeId, SystemTimeSource, VersionVector};
//! use std::sync::Arc;
//!
//! let node = NodeId::new("node-a").unwrap();
//! let mut clock = HybridClock::new(node.clone(), 60_000, Arc::new(SystemTimeSource));
//! let first = clock.tick();
//! let second = clock.tick();
//! assert!(second > first);
//!
//! let mut vv = VersionVector::default();
//! vv.advance(&node, 2);
//! assert_eq!(vv.get(&node), 2);
//! ```
#![warn(missing_docs)]

mod directory;
mod error;
mod hlc;
mod node_id;
mod oplog;
mod peer;
mod store;
mod version_vector;

#[cfg(feature = "mocks")]
pub use directory::MockPeerDirectory;
pub use directory::{PeerDirectory, PeerState};
pub use error::{ClockError, CoreError, StorageError};
pub use hlc::{Hlc, HybridClock, SystemTimeSource, TimeSource};
pub use node_id::NodeId;
pub use oplog::{
    Document, LocalWrite, MAX_COLLECTION_LEN, MAX_KEY_LEN, MAX_VALUE_BYTES, Operation, OplogEntry,
    validate_collection, validate_json_value, validate_key,
};
pub use peer::{KnownPeer, PeerType, validate_peer_address};
pub use store::{ApplyOutcome, DocumentStore, EntryPage, PageLimits, PeerStore, StoreStats};
#[cfg(feature = "mocks")]
pub use store::{MockDocumentStore, MockPeerStore};
pub use version_vector::VersionVector;

/// Milliseconds since the Unix epoch, as the system clock reports them (0 if it is before 1970).
pub fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
