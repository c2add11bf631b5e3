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
//!
//! A server with a handler of its own, and a tool's session with it:
//!
//! ```
//! use async_trait::async_trait;
//! use cbddc_core::NodeId;
//! use cbddc_net::proto::{self, request::Body as Req, response::Body as Res};
//! use cbddc_net::{ClientSettings, ClusterKey, LocalIdentity, NodeKey, PeerClient};
//! use cbddc_net::{RequestHandler, ServerSettings, SessionInfo, TcpSyncServer};
//! use std::sync::Arc;
//!
//! #[derive(Debug)]
//! struct Hello;
//!
//! #[async_trait]
//! impl RequestHandler for Hello {
//!     async fn handle(&self, _session: &SessionInfo, request: Req) -> Res {
//!         match request {
//!             Req::Status(_) => Res::Status(Box::new(proto::StatusResponse {
//!                 node_id: "demo".into(),
//!                 ..Default::default()
//!             })),
//!             _ => cbddc_net::error_body(proto::ErrorCode::InvalidRequest, "only status"),
//!         }
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let key = ClusterKey::derive("our secret");
//! let settings = ServerSettings::new(NodeId::new("demo")?, NodeKey::generate()?, key.clone());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let address = listener.local_addr()?.to_string();
//! let token = tokio_util::sync::CancellationToken::new();
//! let server = TcpSyncServer::start(listener, settings, Arc::new(Hello), token)?;
//!
//! let mut client =
//!     PeerClient::connect(&address, &key, &LocalIdentity::tool()?, ClientSettings::default()).await?;
//! assert_eq!(client.status().await?.node_id, "demo");
//! server.stop(std::time::Duration::from_secs(1)).await;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod admission;
mod client;
mod client_settings;
mod connector;
pub mod convert;
pub mod discovery;
mod error;
pub mod floors;
pub mod formats;
pub mod identity;
pub mod liveness;
mod meter;
mod noise;
pub mod proto;
pub mod secure;
mod server;
pub mod version;

pub use client::{ChangesAsk, ChangesPage, FeedFrom, PeerClient, PulledPage, PushOutcome};
pub use client_settings::{ClientSettings, LIVENESS, UNACKNOWLEDGED_TIMEOUT};
pub use connector::{Connector, TcpConnector, Transport};
pub use error::NetError;
pub use floors::Floors;
pub use identity::{LocalIdentity, NodeKey, PeerVerifier, PublicKey};
pub use meter::{NetMeter, REFUSAL_REASONS};
pub use secure::{
    BufferBudget, ClusterKey, MAX_MESSAGE_BYTES, PROTOCOL_VERSION, Remote, SecureStream,
};
pub use server::{RequestHandler, ServerSettings, SessionInfo, TcpSyncServer, error_body};
pub use version::{FeatureGate, PeerBuild, ProtocolRange, RELEASE, Versions};

#[cfg(test)]
mod tests;
#[cfg(test)]
mod version_tests;
