//! The seam between the control plane and the data plane.

use cbddc_core::NodeId;
use cbddc_sync::handover::Reached;
use cbddc_sync::{SyncOrchestrator, copy_from, handover};

/// What the control plane needs from the data plane: a newcomer's copy of the cluster's
/// data, and a departing member's hand-over of its writes.
///
/// Contract: both calls move data over the network and may take long; dropping the
/// future cancels them and leaves nothing half-applied that a later call cannot resume
/// (snapshots resume, pushes are idempotent). Each call dials with the settings in force
/// when it is made (cluster key, node key, client settings), never ones captured before.
/// An error is a one-line reason for the log; the caller retries.
#[async_trait::async_trait]
pub trait DataPlane: Send + Sync + std::fmt::Debug {
    /// This node's id.
    fn node_id(&self) -> NodeId;

    /// Copies everything `peer` at `address` holds that this node lacks: its snapshot,
    /// then the entries after it. Returns the documents and entries applied.
    async fn copy_from(&self, peer: &NodeId, address: &str) -> Result<u64, String>;

    /// Pushes this node's own writes to `member` at `address` until it holds them all,
    /// or says it retired too.
    async fn hand_over_to(&self, member: &NodeId, address: &str) -> Result<Reached, String>;
}

#[async_trait::async_trait]
impl DataPlane for SyncOrchestrator {
    fn node_id(&self) -> NodeId {
        self.context().node_id
    }

    async fn copy_from(&self, peer: &NodeId, address: &str) -> Result<u64, String> {
        copy_from(&self.context(), peer, address).await
    }

    async fn hand_over_to(&self, member: &NodeId, address: &str) -> Result<Reached, String> {
        handover::hand_over_to(&self.context(), member, address)
            .await
            .map_err(|e| e.to_string())
    }
}
