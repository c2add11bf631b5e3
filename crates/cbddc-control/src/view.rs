//! What the control thread publishes: the status a tool sees, and the view the rest of
//! the node follows.

use crate::gate::GateState;
use crate::handover::Handover;
use cbddc_core::NodeId;
use cbddc_election::membership::Configuration;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What `cbddc cluster status` shows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// The running configuration (`None` before joining a cluster, or after retiring).
    pub configuration_id: Option<u32>,
    /// Its members' node ids, in pid order.
    pub members: Vec<String>,
    /// The OmniPaxos leader of the running configuration, if one is known.
    pub leader: Option<String>,
    /// Control entries decided in the running configuration.
    pub decided_idx: u64,
    /// This node was removed from the cluster.
    pub retired: bool,
    /// The last configuration it was a member of, if it retired.
    pub retired_after: Option<u32>,
    /// After retiring: the hand-over of the writes it took as a member.
    #[serde(default)]
    pub handover: Option<Handover>,
}

/// What the control thread publishes to the rest of the node.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    /// False until the control thread has opened its state.
    pub ready: bool,
    /// What a tool sees.
    pub status: ClusterStatus,
    /// The running configuration, if this node is in one.
    pub configuration: Option<Configuration>,
    /// After retiring: the configuration that followed this node's last one.
    pub successor: Option<Configuration>,
    /// Members that departed a configuration known here, with their last configuration.
    pub departed: BTreeMap<NodeId, u32>,
    /// Why the control plane stopped, if it did.
    pub failure: Option<String>,
}

impl ClusterView {
    /// What the write gate should let through in this view.
    pub fn gate_state(&self) -> GateState {
        match (&self.configuration, self.status.retired_after) {
            (Some(_), _) => GateState::Open,
            (None, Some(after)) => GateState::Retired { after },
            (None, None) => GateState::NotAdmitted,
        }
    }
}
