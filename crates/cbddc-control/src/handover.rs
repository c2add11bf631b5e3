//! A retired node hands over the writes it took as a member: it pushes its own entries
//! (those of every replica its database has been) to every member of the configuration that followed its last one, until each holds
//! them all (or has retired too). The writes are final by then: the node's write gate
//! closed before the hand-over starts (see `gate`).
//!
//! The pushing itself is the data plane's ([`DataPlane::hand_over_to`]); this is the
//! driver: every member of the successor, retried with backoff, progress for `status`.

use crate::data_plane::DataPlane;
use cbddc_core::NodeId;
use cbddc_election::membership::Configuration;
use cbddc_sync::handover::Reached;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const FIRST_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(5);

/// Where a retired node's hand-over stands (in `cbddc cluster status`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handover {
    /// The configuration whose members take the writes over.
    pub to_configuration: u32,
    /// Members that do not hold every write of this node yet.
    pub pending: Vec<String>,
    /// Members that hold them all (or retired since, and were skipped).
    pub done: Vec<String>,
    /// Every member holds them: this node may be shut down for good.
    pub complete: bool,
}

/// Hands this node's writes over to the members of `successor`, reporting progress on
/// `progress`, until every member holds them or `token` is cancelled. Each attempt dials
/// with the data plane's settings in force then (a `cluster_key` changed live included).
pub async fn run(
    data: Arc<dyn DataPlane>,
    successor: Configuration,
    progress: watch::Sender<Option<Handover>>,
    token: CancellationToken,
) {
    let local = data.node_id();
    let mut pending: Vec<(NodeId, String)> = successor
        .members
        .iter()
        .filter(|m| m.node_id != local)
        .map(|m| (m.node_id.clone(), m.address.clone()))
        .collect();
    let mut status = Handover {
        to_configuration: successor.configuration_id,
        pending: pending.iter().map(|(n, _)| n.to_string()).collect(),
        done: Vec::new(),
        complete: pending.is_empty(),
    };
    progress.send_replace(Some(status.clone()));
    tracing::info!(node = %local, to = successor.configuration_id, members = ?status.pending, "handing the writes taken as a member over to the cluster");
    let mut retry = FIRST_RETRY;
    while !pending.is_empty() {
        let mut still = Vec::new();
        for (member, address) in pending {
            let attempt = tokio::select! {
                _ = token.cancelled() => return,
                attempt = data.hand_over_to(&member, &address) => attempt,
            };
            match attempt {
                Ok(reached) => {
                    match reached {
                        Reached::HoldsAll => {
                            tracing::info!(node = %local, %member, "member holds every write of this node")
                        }
                        Reached::Retired => {
                            tracing::warn!(node = %local, %member, "member retired too; skipped in the hand-over")
                        }
                    }
                    status.done.push(member.to_string());
                }
                Err(e) => {
                    tracing::warn!(node = %local, %member, %address, error = %e, retry_in = ?retry, "hand-over to a member failed; retrying");
                    still.push((member, address));
                }
            }
        }
        pending = still;
        status.pending = pending.iter().map(|(n, _)| n.to_string()).collect();
        status.complete = pending.is_empty();
        progress.send_replace(Some(status.clone()));
        if pending.is_empty() {
            break;
        }
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(retry) => {}
        }
        retry = (retry * 2).min(MAX_RETRY);
    }
    tracing::info!(node = %local, to = successor.configuration_id, "hand-over complete: the cluster holds every write this node took");
}
