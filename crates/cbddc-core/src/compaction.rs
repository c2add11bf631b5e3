//! What a node may drop from its oplog, and what it sends a peer that is behind what it
//! still holds (docs/compaction.md has the rules and why they hold).
//!
//! - An entry is **superseded** once its document holds a later write. It is collected
//!   once every peer that holds entries back has acknowledged it ([`horizons`]).
//! - A **tombstone** (the winning delete of a document) is collected together with its
//!   document row, by a stricter rule: every such peer acknowledged it *a round ago*,
//!   and this node holds everything those peers held then. Any write that could lose to
//!   the tombstone was made before its writer saw the tombstone, so it was among its
//!   writer's holdings then, and this node holds it and has already let it lose. It can
//!   never arrive here again as a new entry: no resurrection.

use crate::{NodeId, VersionVector};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A peer's acknowledgement: the version vector it reported holding, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerAck {
    /// The peer.
    pub peer: NodeId,
    /// What it reported holding (empty: it never reported, and holds everything back).
    pub holds: VersionVector,
    /// When it reported (or, for a peer that never did, when this node first wanted it),
    /// in Unix milliseconds.
    pub at_ms: u64,
}

/// One bounded step of compaction, as the store runs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactionPlan {
    /// Superseded entries up to this per origin may go.
    pub horizon: VersionVector,
    /// Tombstones (and their document rows) up to this per origin may go.
    pub tombstone_horizon: VersionVector,
    /// Acknowledgements to persist in the same transaction.
    pub acks: Vec<PeerAck>,
    /// Peers whose acknowledgements no longer count (removed, or past the retention).
    pub forget: Vec<NodeId>,
    /// At most this many entries in this step.
    pub max_entries: usize,
    /// Which deletes the change feed may drop.
    pub feed: crate::FeedRetention,
}

/// What one compaction step did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactionOutcome {
    /// Superseded entries removed from the oplog.
    pub entries: u64,
    /// Tombstones removed, with their document rows.
    pub tombstones: u64,
    /// Deletes the change feed dropped (past the feed retention).
    pub feed_dropped: u64,
    /// Field states dropped: documents merged field by field whose every write every
    /// peer holds, kept as their rows alone from then on.
    pub settled: u64,
    /// The step stopped at its bound: more may be collected now.
    pub more: bool,
}

/// The compaction horizons (see the module docs): per origin, what `ours` holds that
/// every peer of `now` holds too; and, for tombstones, what every peer held at the
/// previous round, if this node holds all of that (else nothing).
///
/// `previous` must hold an acknowledgement of every peer of `now`; a peer new since the
/// last round holds every tombstone back for one round.
pub fn horizons(
    ours: &VersionVector,
    now: &BTreeMap<NodeId, VersionVector>,
    previous: &BTreeMap<NodeId, VersionVector>,
) -> (VersionVector, VersionVector) {
    // Per origin, the least of what we hold and what each of `acks` holds.
    let lowest = |acks: &[&VersionVector]| {
        let mut out = VersionVector::default();
        for (origin, held) in ours.iter() {
            let seq = acks.iter().map(|a| a.get(origin)).fold(held, u64::min);
            if seq > 0 {
                out.advance(origin, seq);
            }
        }
        out
    };
    let current: Vec<&VersionVector> = now.values().collect();
    let horizon = lowest(&current);
    let earlier: Option<Vec<&VersionVector>> = now.keys().map(|p| previous.get(p)).collect();
    let tombstones = match earlier {
        // Never past what every peer holds now either (an acknowledgement may go down:
        // a peer restored from an old copy).
        Some(mut earlier) if earlier.iter().all(|held| ours.dominates(held)) => {
            earlier.extend(&current);
            lowest(&earlier)
        }
        _ => VersionVector::default(),
    };
    (horizon, tombstones)
}

/// A document as a snapshot carries it: its value (none: a tombstone still held), its
/// stamp, and the sequence number of the entry that wrote it (0: unknown, written before
/// stores recorded it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotDocument {
    /// Collection.
    pub collection: String,
    /// Key.
    pub key: String,
    /// JSON text; `None` for a tombstone.
    pub value: Option<String>,
    /// The winning write's stamp (its replica is the entry's origin).
    pub hlc: crate::Hlc,
    /// The winning entry's sequence number of its origin.
    pub seq: u64,
    /// What the sender keeps to merge the document field by field (JSON of a
    /// [`crate::field_merge::FieldState`]); `None` for a document only whole writes made.
    pub field_state: Option<String>,
}

/// One chunk of a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotChunk {
    /// Documents in `(collection, key)` order, after the asked position.
    pub documents: Vec<SnapshotDocument>,
    /// What the snapshot stands for: with the first chunk only (asked without a position).
    pub version_vector: Option<VersionVector>,
    /// More documents follow.
    pub more: bool,
}

/// A snapshot being received, as the store keeps it between chunks (so a restart resumes
/// it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotProgress {
    /// The peer it comes from.
    pub source: NodeId,
    /// What it stands for.
    pub version_vector: VersionVector,
    /// The last `(collection, key)` received; `None` before the first chunk.
    pub after: Option<(String, String)>,
    /// Documents received so far.
    pub staged: u64,
    /// The greatest stamp staged, as `(wall, counter)`: the clock moves past it.
    #[serde(default)]
    pub latest: Option<(u64, u32)>,
    /// Documents the chunks applied so far changed (written, or removed as deleted at the
    /// source).
    #[serde(default)]
    pub changed: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ReplicaId;

    fn vv(pairs: &[(&str, u64)]) -> VersionVector {
        pairs
            .iter()
            .map(|(r, s)| (ReplicaId::new(*r).unwrap(), *s))
            .collect()
    }

    fn acks(pairs: &[(&str, VersionVector)]) -> BTreeMap<NodeId, VersionVector> {
        pairs
            .iter()
            .map(|(p, v)| (NodeId::new(*p).unwrap(), v.clone()))
            .collect()
    }

    #[test]
    fn the_horizon_is_what_everyone_holds() {
        let ours = vv(&[("a", 10), ("b", 5)]);
        let now = acks(&[("p", vv(&[("a", 7), ("b", 9)])), ("q", vv(&[("a", 9)]))]);
        let (horizon, _) = horizons(&ours, &now, &BTreeMap::new());
        assert_eq!(horizon, vv(&[("a", 7)]), "q lacks b entirely");
        let (alone, tombstones) = horizons(&ours, &BTreeMap::new(), &BTreeMap::new());
        assert_eq!(alone, ours, "with no peers, everything is acknowledged");
        assert_eq!(tombstones, ours);
    }

    #[test]
    fn tombstones_wait_for_a_round_and_for_what_the_peers_held() {
        let ours = vv(&[("a", 10), ("b", 5)]);
        let now = acks(&[("p", vv(&[("a", 10), ("b", 5)]))]);
        let (_, none) = horizons(&ours, &now, &BTreeMap::new());
        assert!(
            none.is_empty(),
            "a peer new this round holds tombstones back"
        );
        let before = acks(&[("p", vv(&[("a", 8), ("b", 5)]))]);
        let (_, tombstones) = horizons(&ours, &now, &before);
        assert_eq!(tombstones, vv(&[("a", 8), ("b", 5)]));
        let ahead = acks(&[("p", vv(&[("a", 8), ("b", 5), ("c", 1)]))]);
        let (_, none) = horizons(&ours, &now, &ahead);
        assert!(
            none.is_empty(),
            "p held an entry of c that we lack: it could be a write the tombstone beats"
        );
    }
}
