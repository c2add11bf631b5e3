use crate::ReplicaId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Per origin replica, the highest sequence number held. A missing origin counts as 0.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionVector(BTreeMap<ReplicaId, u64>);

impl VersionVector {
    /// The highest sequence number held for `origin` (0 when none).
    pub fn get(&self, origin: &ReplicaId) -> u64 {
        self.0.get(origin).copied().unwrap_or(0)
    }

    /// Raises `origin`'s entry to `seq` if it is lower.
    pub fn advance(&mut self, origin: &ReplicaId, seq: u64) {
        if seq == 0 {
            return;
        }
        // Held already in all but an origin's first entry: no copy of its id then.
        match self.0.get_mut(origin) {
            Some(slot) => *slot = (*slot).max(seq),
            None => {
                self.0.insert(origin.clone(), seq);
            }
        }
    }

    /// Point-wise maximum with `other`.
    pub fn merge(&mut self, other: &VersionVector) {
        for (origin, seq) in &other.0 {
            self.advance(origin, *seq);
        }
    }

    /// True when this vector holds at least everything `other` holds.
    pub fn dominates(&self, other: &VersionVector) -> bool {
        other.0.iter().all(|(origin, seq)| self.get(origin) >= *seq)
    }

    /// Origins and sequence numbers, ordered by origin.
    pub fn iter(&self) -> impl Iterator<Item = (&ReplicaId, u64)> {
        self.0.iter().map(|(k, v)| (k, *v))
    }

    /// Number of origins with at least one entry.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when no origin has an entry.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Sum of all sequence numbers: how many entries the holder has applied in all.
    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }
}

impl FromIterator<(ReplicaId, u64)> for VersionVector {
    fn from_iter<T: IntoIterator<Item = (ReplicaId, u64)>>(iter: T) -> Self {
        let mut vv = VersionVector::default();
        for (origin, seq) in iter {
            vv.advance(&origin, seq);
        }
        vv
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn vv() -> impl Strategy<Value = VersionVector> {
        proptest::collection::vec(("[a-d]", 0u64..20), 0..6).prop_map(|pairs| {
            pairs
                .into_iter()
                .map(|(k, v)| (ReplicaId::new(k).unwrap(), v))
                .collect()
        })
    }

    fn merged(a: &VersionVector, b: &VersionVector) -> VersionVector {
        let mut out = a.clone();
        out.merge(b);
        out
    }

    proptest! {
        #[test]
        fn merge_is_commutative(a in vv(), b in vv()) {
            prop_assert_eq!(merged(&a, &b), merged(&b, &a));
        }

        #[test]
        fn merge_is_associative(a in vv(), b in vv(), c in vv()) {
            prop_assert_eq!(merged(&merged(&a, &b), &c), merged(&a, &merged(&b, &c)));
        }

        #[test]
        fn merge_is_idempotent(a in vv(), b in vv()) {
            let once = merged(&a, &b);
            prop_assert_eq!(merged(&once, &b), once.clone());
            prop_assert_eq!(merged(&a, &a), a.clone());
        }

        #[test]
        fn a_merge_dominates_both_inputs(a in vv(), b in vv()) {
            let m = merged(&a, &b);
            prop_assert!(m.dominates(&a) && m.dominates(&b));
        }
    }

    #[test]
    fn zero_entries_are_not_recorded() {
        let mut v = VersionVector::default();
        v.advance(&ReplicaId::new("a").unwrap(), 0);
        assert!(v.is_empty());
    }
}
