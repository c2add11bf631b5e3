//! Floors: how version vectors stay small although every start of a node is a new
//! replica (see docs/protocol.md, "Floors").
//!
//! A node's floors are `(replica, seq)` pairs it holds entirely and that every peer it
//! syncs with has reported holding too. Two nodes whose floors have the same digest know
//! each other's floors, so a version vector between them may omit every origin that
//! stands exactly at its floor: the receiver puts it back. A floor is only ever a lower
//! bound of what its owner holds, so restoring it can never make a node skip an entry
//! the other side lacks; with different digests the full vectors travel.

use blake2::{Blake2s256, Digest};
use cbddc_core::VersionVector;

/// A node's floors and their digest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Floors {
    floors: VersionVector,
    digest: Vec<u8>,
}

impl Floors {
    /// These floors (empty: no digest, nothing is ever omitted).
    pub fn new(floors: VersionVector) -> Self {
        let digest = if floors.is_empty() {
            Vec::new()
        } else {
            let mut hash = Blake2s256::new().chain_update(b"cbddc floors v1\0");
            for (origin, seq) in floors.iter() {
                hash.update((origin.as_str().len() as u32).to_be_bytes());
                hash.update(origin.as_str().as_bytes());
                hash.update(seq.to_be_bytes());
            }
            hash.finalize()[..16].to_vec()
        };
        Self { floors, digest }
    }

    /// The floors.
    pub fn floors(&self) -> &VersionVector {
        &self.floors
    }

    /// Their digest (empty when there are none).
    pub fn digest(&self) -> &[u8] {
        &self.digest
    }

    /// Whether the other side's digest is ours: then vectors between us are compressed.
    pub fn shared_with(&self, theirs: &[u8]) -> bool {
        !self.digest.is_empty() && self.digest == theirs
    }

    /// `vv` without the origins that stand exactly at their floor.
    pub fn compress(&self, vv: &VersionVector) -> VersionVector {
        let mut out = VersionVector::default();
        for (origin, seq) in vv.iter() {
            if self.floors.get(origin) != seq {
                out.advance(origin, seq);
            }
        }
        out
    }

    /// `vv` with every floor put back.
    pub fn expand(&self, vv: &VersionVector) -> VersionVector {
        let mut out = vv.clone();
        out.merge(&self.floors);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cbddc_core::ReplicaId;

    fn vv(pairs: &[(&str, u64)]) -> VersionVector {
        pairs
            .iter()
            .map(|(r, s)| (ReplicaId::new(*r).unwrap(), *s))
            .collect()
    }

    #[test]
    fn origins_at_their_floor_are_omitted_and_restored() {
        let floors = Floors::new(vv(&[("old1", 5), ("old2", 9)]));
        let ours = vv(&[("old1", 5), ("old2", 12), ("live", 3)]);
        let sent = floors.compress(&ours);
        assert_eq!(sent, vv(&[("old2", 12), ("live", 3)]));
        assert_eq!(floors.expand(&sent), ours);
        assert!(floors.shared_with(Floors::new(vv(&[("old2", 9), ("old1", 5)])).digest()));
        assert!(!floors.shared_with(Floors::new(vv(&[("old1", 5)])).digest()));
        assert!(
            !Floors::default().shared_with(&[]),
            "no floors, nothing shared"
        );
    }
}
