//! When this node raises its floors (see `cbddc_net::Floors`): a replica is folded at the
//! sequence number this node holds of it once every peer it synced with in the last
//! minute reported holding as much, unless the replica is still written to — this node's
//! own running replica, or one a peer's session announced in the last few minutes.
//!
//! Nodes that see the same peers fold the same replicas at the same numbers, so their
//! floors share a digest and the version vectors they exchange keep only live replicas:
//! a node restarted a thousand times does not carry a thousand entries. A floor is only
//! a lower bound of what this node holds, so a wrong guess costs bytes, never an entry.

use cbddc_core::{DocumentStore, NodeId, ReplicaId, StorageError, VersionVector};
use cbddc_net::Floors;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

/// Peers heard from within this window count for folding.
const PEER_WINDOW: Duration = Duration::from_secs(60);
/// A replica announced by a session within this window is still written to.
const LIVE_WINDOW: Duration = Duration::from_secs(300);

/// This node's floors and what it knows to raise them (see the module docs).
#[derive(Debug, Default)]
pub struct FoldTracker {
    floors: RwLock<Floors>,
    /// Per peer, the last version vector it reported (complete) and when.
    holders: Mutex<BTreeMap<NodeId, (VersionVector, Instant)>>,
    /// Per peer, the replica its last session announced and when.
    live: Mutex<BTreeMap<NodeId, (ReplicaId, Instant)>>,
}

impl FoldTracker {
    /// The floors `store` persisted.
    pub async fn load(store: &dyn DocumentStore) -> Result<Self, StorageError> {
        Ok(Self {
            floors: RwLock::new(Floors::new(store.floors().await?)),
            ..Self::default()
        })
    }

    /// The floors in force.
    pub fn floors(&self) -> Floors {
        self.floors
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// `peer` reported holding `holder`.
    pub fn observed(&self, peer: &NodeId, holder: VersionVector) {
        self.holders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(peer.clone(), (holder, Instant::now()));
    }

    /// The version vector `peer` last reported, if it reported one.
    pub fn holder(&self, peer: &NodeId) -> Option<VersionVector> {
        self.holders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(peer)
            .map(|(holder, _)| holder.clone())
    }

    /// A session of `peer` announced that it writes as `replica`.
    pub fn live(&self, peer: &NodeId, replica: &ReplicaId) {
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(peer.clone(), (replica.clone(), Instant::now()));
    }

    /// Raises the floors as far as the module docs allow; returns how many replicas were
    /// folded now.
    pub async fn fold(&self, store: &dyn DocumentStore) -> Result<usize, StorageError> {
        let ours = store.version_vector().await?;
        let now = Instant::now();
        let reported: Vec<VersionVector> = self
            .holders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|(_, at)| now.duration_since(*at) < PEER_WINDOW)
            .map(|(vv, _)| vv.clone())
            .collect();
        if reported.is_empty() {
            return Ok(0);
        }
        let live: BTreeSet<ReplicaId> = self
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|(_, at)| now.duration_since(*at) < LIVE_WINDOW)
            .map(|(r, _)| r.clone())
            .collect();
        let floors = self.floors();
        let mut raise = VersionVector::default();
        for (replica, held) in ours.iter() {
            if replica == store.replica()
                || live.contains(replica)
                || floors.floors().get(replica) >= held
            {
                continue;
            }
            if reported.iter().all(|vv| vv.get(replica) >= held) {
                raise.advance(replica, held);
            }
        }
        let folded = raise.len();
        if folded > 0 {
            store.raise_floors(raise).await?;
            let floors = Floors::new(store.floors().await?);
            tracing::debug!(folded, floors = floors.floors().len(), "raised the floors");
            *self.floors.write().unwrap_or_else(|p| p.into_inner()) = floors;
        }
        Ok(folded)
    }
}
