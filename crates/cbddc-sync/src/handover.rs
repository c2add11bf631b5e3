//! Pushing a departing member's own writes to a member of the next configuration: the
//! data-plane half of the hand-over (the control plane decides when, and to whom).
//!
//! Members accept such a push from a departed member for entries of its own writing only,
//! and give it no data back.

use crate::SyncContext;
use cbddc_core::{NodeId, ReplicaId, StorageError, VersionVector};
use cbddc_net::NetError;
use cbddc_net::proto::ErrorCode;

/// Pages pushed to one member in one attempt at most.
const MAX_PAGES: usize = 100_000;

/// Why one attempt to hand this node's writes over to a member failed.
#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    /// The session with the member failed.
    #[error(transparent)]
    Net(#[from] NetError),
    /// This node's store failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Another node answers at the member's address.
    #[error("the node at {address} is {found}, not {expected}")]
    Identity {
        /// The address dialled.
        address: String,
        /// The member expected there.
        expected: NodeId,
        /// The node that answered.
        found: NodeId,
    },
    /// The member took nothing of what was pushed.
    #[error("{member} took none of the entries pushed to it")]
    Stalled {
        /// The member.
        member: NodeId,
    },
}

/// How handing this node's writes over to one member ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reached {
    /// It holds every write of this node.
    HoldsAll,
    /// It retired too: it cannot keep them moving, so it is skipped.
    Retired,
}

/// Pushes this node's own writes (those of every replica its database has been) to
/// `member` at `address`, with the settings of `ctx`, until it holds them all.
pub async fn hand_over_to(
    ctx: &SyncContext,
    member: &NodeId,
    address: &str,
) -> Result<Reached, HandoverError> {
    let own = ctx.store.own_replicas();
    let mut client = ctx.dial(address).await?;
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
