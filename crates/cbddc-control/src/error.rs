//! Why a control-plane request failed.

use std::time::Duration;

/// The control plane (cluster membership) refused or failed a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlPlaneError {
    /// The node has no `[cluster]` section.
    #[error(
        "this node runs without a control plane: give it a [cluster] section to make it a cluster member"
    )]
    NotConfigured,
    /// The control thread stopped (the node is stopping, or its state failed).
    #[error("the control plane stopped: {reason}")]
    Stopped {
        /// What stopped it.
        reason: String,
    },
    /// The control thread restarted while the request was in flight.
    #[error(
        "the control plane restarted before the request was answered; check `cbddc cluster status` and try again"
    )]
    Restarted,
    /// A reconfiguration was proposed but its seal not decided in time.
    #[error(
        "the reconfiguration was not decided within {after:?}: is a majority of the members up? It may still be decided; check `cbddc cluster status`"
    )]
    NotDecided {
        /// How long it waited.
        after: Duration,
    },
    /// The membership refused the request (an invalid member list, not a member, …).
    #[error("{reason}")]
    Refused {
        /// Why, in words.
        reason: String,
    },
    /// A control message from a peer or tool could not be read.
    #[error("an unreadable control message: {reason}")]
    Malformed {
        /// What is wrong with it.
        reason: String,
    },
    /// The control plane could not start.
    #[error("the control plane could not start: {reason}")]
    Start {
        /// Why.
        reason: String,
    },
}
