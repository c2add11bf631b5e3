#![warn(missing_docs)]
//! The data plane of a CBDDC node: keeping its documents in step with its peers.
//!
//! - [`SyncOrchestrator`]: one task per peer; pushes every committed local write at once,
//!   and runs a periodic catch-up round (pull what this node lacks by version vector, then
//!   push what the peer lacks), taking a snapshot from a peer that compacted past it.
//! - [`PeerBook`]: what this node knows of its peers at run time (liveness, last exchange,
//!   last error), which the election reads as a [`cbddc_core::PeerDirectory`].
//! - [`compaction`]: when the oplog is compacted, from every peer's acknowledgements.
//! - [`fold`], [`duplicates`], [`pins`]: floors that keep version vectors small, notices of
//!   a node id running twice, and the node keys pinned per peer.
//!
//! It depends on the store, the wire and the configuration's types, never on the control
//! plane, the HTTP server or a command line: a downstream crate can take it alone.
//!
//! ```no_run
//! # async fn demo(store: std::sync::Arc<cbddc_store::SqliteStore>) -> Result<(), Box<dyn std::error::Error>> {
//! use cbddc_sync::{PeerBook, SyncContext, SyncOrchestrator};
//! use std::sync::Arc;
//! let key = cbddc_net::NodeKey::generate()?;
//! let node = cbddc_core::NodeId::new("node-a")?;
//! let context = SyncContext {
//!     node_id: node.clone(),
//!     identity: cbddc_net::LocalIdentity::node(node, key, None),
//!     store: store.clone(),
//!     key: cbddc_net::ClusterKey::derive("my-cluster-secret"),
//!     book: Arc::new(PeerBook::new(std::time::Duration::from_secs(3))),
//!     interval: std::time::Duration::from_secs(1),
//!     limits: cbddc_core::PageLimits::default(),
//!     client: cbddc_net::ClientSettings::default(),
//!     connector: Arc::new(cbddc_net::TcpConnector),
//!     fan_out: Arc::new(tokio::sync::Semaphore::new(cbddc_sync::FAN_OUT)),
//!     duplicates: Default::default(),
//!     fold: Arc::new(cbddc_sync::fold::FoldTracker::load(store.as_ref()).await?),
//!     compactor: Arc::new(
//!         cbddc_sync::compaction::Compactor::load(store.as_ref(), 7 * 86_400_000, 7 * 86_400_000).await?,
//!     ),
//!     metrics: Arc::new(cbddc_sync::NoMetrics),
//! };
//! let sync = Arc::new(SyncOrchestrator::new(context, tokio_util::sync::CancellationToken::new()));
//! sync.start_compaction();
//! # Ok(()) }
//! ```

pub mod compaction;
pub mod duplicates;
pub mod features;
pub mod fold;
pub mod handover;
mod orchestrator;
mod peers;
pub mod pins;
mod read_ahead;

pub use compaction::CompactionReport;
pub use orchestrator::*;
pub use peers::{PeerActivity, PeerBook, PeerReport};
pub use read_ahead::SnapshotReadAhead;

/// What the data plane counts, for whoever exports metrics (the node's Prometheus
/// registry). Calls must not block: they happen on the sync tasks.
pub trait SyncMetrics: Send + Sync + std::fmt::Debug {
    /// A catch-up round with a peer ran (pull, then push).
    fn sync_round(&self);
    /// A sync session with a peer failed.
    fn sync_failed(&self);
}

/// Who may sync with this node: asked before a peer's pull, push or snapshot is served.
///
/// Contract: answers at once from state in memory (it is asked on every request, on an
/// async worker); a refusal says why in words the peer's operator can act on. Cloud
/// remotes and tools are the node's to admit, not this seam's.
pub trait SyncAdmission: Send + Sync + std::fmt::Debug {
    /// `Ok` if `peer` may pull from and push to this node now; otherwise why not.
    fn may_sync(&self, peer: &cbddc_core::NodeId) -> Result<(), String>;
}

/// Every holder of the cluster key may sync: a node without a control plane.
#[derive(Debug, Default, Clone, Copy)]
pub struct OpenAdmission;

impl SyncAdmission for OpenAdmission {
    fn may_sync(&self, _peer: &cbddc_core::NodeId) -> Result<(), String> {
        Ok(())
    }
}

/// Counts nothing: for a data plane whose figures nobody exports.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoMetrics;

impl SyncMetrics for NoMetrics {
    fn sync_round(&self) {}
    fn sync_failed(&self) {}
}
