//! What the rest of the control plane asks of its thread (`plane`), and what a member's
//! frames get back: the links and the handle send these, the thread answers them.

use cbddc_core::NodeId;
use cbddc_election::membership::{Configuration, ControlEntry, ControlFrame};
use std::collections::BTreeMap;
use tokio::sync::oneshot;

/// What a member's frames got, once the step that took them is durable.
#[derive(Debug, Default)]
pub struct FramesAnswer {
    /// Their configuration is sealed here: its id and decided log, ending with the seal.
    pub superseded: Option<(u32, Vec<ControlEntry>)>,
    /// The step's heartbeat answers to the sender, to ride back on the reply instead of
    /// a call of their own (heartbeats need no FIFO link).
    pub frames: Vec<ControlFrame>,
}

pub enum Command {
    Frames {
        from: NodeId,
        frames: Vec<ControlFrame>,
        /// `None` for frames that rode back on a reply: nobody waits for their answer.
        reply: Option<oneshot::Sender<FramesAnswer>>,
    },
    LearnSeal {
        configuration_id: u32,
        decided: Vec<ControlEntry>,
    },
    Join {
        configuration: Configuration,
        sealed_log: Vec<ControlEntry>,
        departed: Vec<(NodeId, u32)>,
        reply: oneshot::Sender<Result<(), String>>,
    },
    Reconfigure {
        members: Vec<(NodeId, String)>,
        /// The members' node keys this node knows (pinned, and its own).
        keys: BTreeMap<NodeId, String>,
        reply: oneshot::Sender<Result<Configuration, String>>,
    },
    Stop,
    /// Panics inside the plane mid-step, as a storage failure inside OmniPaxos would.
    #[cfg(test)]
    Crash,
}
