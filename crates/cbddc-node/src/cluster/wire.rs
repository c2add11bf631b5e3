//! The control-plane payloads carried by `Request::Control` (JSON; see docs/protocol.md).

use cbddc_core::NodeId;
use cbddc_election::membership::{Configuration, ControlEntry, ControlFrame};
use serde::{Deserialize, Serialize};

/// What a node or tool asks of a node's control plane.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "call", rename_all = "snake_case")]
pub enum ControlCall {
    /// OmniPaxos messages from a member, in the order they were produced (nodes only).
    Frames {
        /// The frames.
        frames: Vec<ControlFrame>,
    },
    /// A member invites this node into `configuration`: copy the data, store the sealed
    /// log (which ends with the seal naming `configuration`), then start (nodes only).
    Offer {
        /// The configuration to join.
        configuration: Configuration,
        /// The decided log of the configuration before it.
        sealed_log: Vec<ControlEntry>,
        /// Members that departed configurations the inviter knows, with the last
        /// configuration each was a member of: the newcomer accepts their hand-over.
        #[serde(default)]
        departed: Vec<(NodeId, u32)>,
    },
    /// The control plane's state.
    Status,
    /// Replace the running configuration with these members (tools only).
    Reconfigure {
        /// The next configuration's members, by node id.
        members: Vec<String>,
    },
}

/// The answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum ControlReply {
    /// Taken.
    Accepted,
    /// The frames' configuration is sealed: learn the seal from its decided log.
    Superseded {
        /// The sealed configuration.
        configuration_id: u32,
        /// Its decided log, ending with the seal.
        decided: Vec<ControlEntry>,
    },
    /// The control plane's state.
    Status(crate::ClusterStatus),
    /// The seal is decided; `configuration` runs now.
    Reconfigured {
        /// The new configuration.
        configuration: Configuration,
    },
}
