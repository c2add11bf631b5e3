//! Domain types shared by every CBDDC crate, and the traits at the seams between them.
//!
//! Nothing here does I/O or needs a tokio runtime. The vocabulary:
//!
//! - [`NodeId`]: a validated node name, ordered byte-wise (the bully election relies on it).
//! - [`ReplicaId`]: one incarnation of a node's database, the owner of oplog history.
//! - [`Hlc`] and [`HybridClock`]: hybrid logical clock stamps that order conflicting writes.
//! - [`OplogEntry`]: one write (put or delete) by one origin replica, numbered 1, 2, 3, …
//!   per origin, naming the node that wrote it.
//! - [`VersionVector`]: per origin replica, the highest sequence number a node holds.
//! - [`KnownPeer`]: a peer this node was told about (static remote, cloud remote, LAN).
//! - [`DocumentStore`] and [`PeerStore`]: what a storage engine offers the rest of the system.
//! - [`PeerDirectory`]: which peers are alive and may lead, for the election.
//!
//! ```
//! use cbddc_core::{HybridClock, ReplicaId, SystemTimeSource, VersionVector};
//! use std::sync::Arc;
//!
//! let replica = ReplicaId::generate().unwrap();
//! let mut clock = HybridClock::new(replica.clone(), 60_000, Arc::new(SystemTimeSource));
//! let first = clock.tick();
//! let second = clock.tick();
//! assert!(second > first);
//!
//! let mut vv = VersionVector::default();
//! vv.advance(&replica, 2);
//! assert_eq!(vv.get(&replica), 2);
//! ```
#![warn(missing_docs)]

mod compaction;
mod directory;
mod error;
pub mod field_merge;
#[cfg(test)]
mod field_merge_props;
mod hlc;
mod index;
mod interest;
mod invalid;
mod node_id;
mod oplog;
mod peer;
mod replica;
mod store;
mod version_vector;

pub use compaction::{
    CompactionOutcome, CompactionPlan, PeerAck, SnapshotChunk, SnapshotDocument, SnapshotProgress,
    horizons,
};
#[cfg(feature = "mocks")]
pub use directory::MockPeerDirectory;
pub use directory::{PeerDirectory, PeerState};
pub use error::{ClockError, StorageError};
pub use field_merge::Edit;
pub use hlc::{Hlc, HybridClock, SystemTimeSource, TimeSource};
pub use index::{IndexBuild, IndexDefinition, IndexPage, IndexRead, IndexStatus};
pub use interest::{Coverage, Interest};
pub use invalid::CoreError;
pub use node_id::NodeId;
pub use oplog::{
    Document, LocalWrite, MAX_COLLECTION_LEN, MAX_KEY_LEN, MAX_VALUE_BYTES, Operation, OplogEntry,
    validate_collection, validate_json_value, validate_key,
};
pub use peer::{KnownPeer, PeerType, validate_peer_address};
pub use replica::ReplicaId;
pub use store::{
    ApplyOutcome, Change, ChangePage, DocumentStore, EntryPage, FeedConsumer, FeedRetention,
    MAX_CONSUMER_NAME_LEN, MergedChange, PageLimits, PeerStore, StoreStats, validate_consumer_name,
};
#[cfg(feature = "mocks")]
pub use store::{MockDocumentStore, MockPeerStore};
pub use version_vector::VersionVector;

/// How hard a commit tries to reach the disk: one type for the configuration and the
/// store alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// `synchronous=FULL`: an acknowledged write survives a power loss.
    #[default]
    Full,
    /// `synchronous=NORMAL`: survives a crash of the process; the last commits may be
    /// lost on power loss.
    Normal,
}

/// Milliseconds since the Unix epoch, as the system clock reports them (0 if it is before 1970).
pub fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
