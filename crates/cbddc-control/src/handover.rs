//! A retired node hands over the writes it took as a member: it pushes its own entries
//! (those of every replica its database has been) to every member of the configuration that followed its last one, until each holds
//! them all (or has retired too). The writes are final by then: the node's write gate
//! closed before the hand-over starts (see `gate`).
//!
//! Members accept the push from a departed member for entries of its own origin only,
//! and give it no data back (see `NodeHandler`'s push admission).

use cbddc_core::{NodeId, ReplicaId, StorageError, VersionVector};
use cbddc_election::membership::Configuration;
use cbddc_net::proto::ErrorCode;
use cbddc_net::{NetError, PeerClient};
use cbddc_sync::{SyncContext, SyncOrchestrator};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const FIRST_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(5);
/// Pages pushed to one member in one attempt at most.
const MAX_PAGES: usize = 100_000;

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

#[derive(Debug, thiserror::Error)]
enum HandoverError {
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("the node at {address} is {found}, not {expected}")]
    Identity {
        address: String,
        expected: NodeId,
        found: NodeId,
    },
    #[error("{member} took none of the entries pushed to it")]
    Stalled { member: NodeId },
}

/// How one attempt with one member ended.
enum Reached {
    /// It holds every write of this node.
    HoldsAll,
    /// It retired too: it cannot keep them moving, so it is skipped.
    Retired,
}

/// Hands this node's writes over to the members of `successor`, reporting progress on
/// `progress`, until every member holds them or `token` is cancelled. Each attempt dials
/// with the data plane's settings in force then (a `cluster_key` changed live included).
pub async fn run(
    sync: Arc<SyncOrchestrator>,
    successor: Configuration,
    progress: watch::Sender<Option<Handover>>,
    token: CancellationToken,
) {
    let local = sync.context().node_id;
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
            let ctx = sync.context();
            let attempt = tokio::select! {
                _ = token.cancelled() => return,
                attempt = hand_over_to(&ctx, &member, &address) => attempt,
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

async fn hand_over_to(
    ctx: &SyncContext,
    member: &NodeId,
    address: &str,
) -> Result<Reached, HandoverError> {
    let own = ctx.store.own_replicas();
    let mut client = PeerClient::connect(address, &ctx.key, &ctx.identity, ctx.client).await?;
    if client.remote_node() != member {
        return Err(HandoverError::Identity {
            address: address.to_string(),
            expected: member.clone(),
            found: client.remote_node().clone(),
        });
    }
    // An empty push answers with what the member holds.
    let mut held = match client.push(&[]).await {
        Ok(outcome) => outcome.holder,
        Err(NetError::Remote {
            code: ErrorCode::NotAMember,
            ..
        }) => return Ok(Reached::Retired),
        Err(e) => return Err(e.into()),
    };
    for _ in 0..MAX_PAGES {
        let ours = ctx.store.version_vector().await?;
        if own.iter().all(|r| held.get(r) >= ours.get(r)) {
            return Ok(Reached::HoldsAll);
        }
        let page = ctx
            .store
            .entries_missing_from(only_own_missing(&ours, &own, &held), ctx.limits)
            .await?;
        let outcome = client.push(&page.entries).await?;
        if own.iter().all(|r| outcome.holder.get(r) <= held.get(r)) {
            return Err(HandoverError::Stalled {
                member: member.clone(),
            });
        }
        held = outcome.holder;
    }
    Err(HandoverError::Stalled {
        member: member.clone(),
    })
}

/// A version vector that lacks only this node's own entries (of any of its replicas)
/// beyond what the member `held`: every other origin stands at what this store holds.
fn only_own_missing(
    ours: &VersionVector,
    own: &[ReplicaId],
    held: &VersionVector,
) -> VersionVector {
    let mut have = VersionVector::default();
    for (origin, seq) in ours.iter() {
        let at = if own.contains(origin) {
            held.get(origin)
        } else {
            seq
        };
        have.advance(origin, at);
    }
    have
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_own_entries_after_what_the_member_holds_are_missing() {
        let [a, c1, c2] = ["a", "c1", "c2"].map(|r| ReplicaId::new(r).unwrap());
        let mut ours = VersionVector::default();
        ours.advance(&a, 7);
        ours.advance(&c1, 20);
        ours.advance(&c2, 3);
        let mut held = VersionVector::default();
        held.advance(&c1, 5);
        let have = only_own_missing(&ours, &[c1.clone(), c2.clone()], &held);
        assert_eq!(have.get(&a), 7);
        assert_eq!(have.get(&c1), 5);
        assert_eq!(have.get(&c2), 0);
    }
}
