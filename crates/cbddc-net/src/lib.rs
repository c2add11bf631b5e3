//! The CBDDC wire protocol and its TCP endpoints.
//!
//! - [`secure`]: transport frames, the Noise (`XXpsk0`) handshake that proves the cluster
//!   key and each side's static node key, and [`SecureStream`], the encrypted,
//!   replay-protected session.
//! - [`identity`]: node keys ([`NodeKey`], [`PublicKey`] and its fingerprint), the
//!   [`PeerVerifier`] that pins them, and [`LocalIdentity`].
//! - [`proto`]: the protobuf messages (see `proto/cbddc.proto` and `docs/protocol.md`).
//! - [`TcpSyncServer`]: accepts sessions and hands each request to a [`RequestHandler`].
//! - [`PeerClient`]: one session with a node, for syncing nodes and for tools.
//! - [`discovery`]: authenticated UDP beacons that find peers on the LAN.
//!
//! Nothing is served before the handshake completes, and every network wait has a timeout
//! that maps to [`NetError::Timeout`].
#![warn(missing_docs)]

mod client;
pub mod convert;
pub mod discovery;
mod error;
pub mod floors;
pub mod identity;
mod meter;
pub mod proto;
pub mod secure;
mod server;

pub use client::{ClientSettings, PeerClient, PulledPage, PushOutcome};
pub use error::NetError;
pub use floors::Floors;
pub use identity::{LocalIdentity, NodeKey, PeerVerifier, PublicKey};
pub use meter::{NetMeter, REFUSAL_REASONS};
pub use secure::{ClusterKey, MAX_MESSAGE_BYTES, PROTOCOL_VERSION, Remote, SecureStream};
pub use server::{RequestHandler, ServerSettings, SessionInfo, TcpSyncServer, error_body};

#[cfg(test)]
mod tests;
