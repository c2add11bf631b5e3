#![warn(missing_docs)]
//! What a CBDDC node shows about itself: Prometheus metrics ([`NodeMetrics`]), a
//! [`cbddc_core::DocumentStore`] wrapper that counts and times every write through it
//! ([`MeteredStore`]), and a small HTTP server ([`ObserveServer`]) for `/metrics`, the live
//! cluster page at `/` and its data at `/api/state`.
//!
//! The server reads the node's state through one seam, [`StateSource`], so it knows
//! nothing of how a node is put together:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use cbddc_observe::{NodeMetrics, NodeView, ObserveServer, StateSource};
//! use std::sync::Arc;
//!
//! #[derive(Debug)]
//! struct Fixed(NodeView);
//!
//! #[async_trait::async_trait]
//! impl StateSource for Fixed {
//!     async fn view(&self) -> Result<NodeView, String> {
//!         Ok(self.0.clone())
//!     }
//! }
//!
//! let view = NodeView {
//!     node_id: "node-a".into(),
//!     ..NodeView::default()
//! };
//! let server = ObserveServer::start(
//!     "127.0.0.1:0".parse()?,
//!     Arc::new(Fixed(view)),
//!     Arc::new(NodeMetrics::default()),
//!     tokio_util::sync::CancellationToken::new(),
//! )
//! .await?;
//! println!("metrics at http://{}/metrics", server.address());
//! server.stop().await;
//! # Ok(()) }
//! ```

mod http;
mod metered;
mod metrics;
mod view;

pub use http::{ObserveError, ObserveServer};
pub use metered::MeteredStore;
pub use metrics::NodeMetrics;
pub use view::{ConsumerView, NodeView, PeerView, entries_behind};

/// Where the server reads the node's state, once per request. Contract: answers from
/// the node's current database (a node id change switches it), never blocks the async
/// worker (storage reads go to a blocking thread), and fails with a message a person can
/// read ("the node is stopping") that the server returns as a 503.
#[async_trait::async_trait]
pub trait StateSource: Send + Sync + std::fmt::Debug {
    /// The node's state now.
    async fn view(&self) -> Result<NodeView, String>;
}
