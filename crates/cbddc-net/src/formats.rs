//! What a peer can read: entries in a format it lacks are never sent to it. A node
//! writes a new format only once every peer it syncs with reads it, but it relays what
//! others wrote: a peer of an older release would read a field-level entry (no `value`)
//! as a delete. Such an entry, and every later one of its origin, waits for the peer's
//! upgrade instead.

use cbddc_core::{Coverage, Operation, OplogEntry, ReplicaId};
use std::collections::{BTreeMap, BTreeSet};

/// The format an entry is written in, if it is not one every release reads.
pub fn format_of(entry: &OplogEntry) -> Option<&'static str> {
    match entry.op {
        Operation::Merge { .. } => Some(cbddc_core::field_merge::FEATURE),
        Operation::Put { .. } | Operation::Delete => None,
    }
}

/// `entries` (each origin's in sequence order) cut for a peer that reads `features`:
/// each origin's up to its first entry in a format the peer lacks, and `coverage` cut to
/// match. Whether anything was withheld.
pub fn readable_by(
    entries: Vec<OplogEntry>,
    coverage: Coverage,
    features: &BTreeSet<String>,
) -> (Vec<OplogEntry>, Coverage, bool) {
    // Per origin, the first sequence number withheld.
    let mut withheld: BTreeMap<ReplicaId, u64> = BTreeMap::new();
    for entry in &entries {
        if let Some(format) = format_of(entry)
            && !features.contains(format)
        {
            let first = withheld.entry(entry.origin.clone()).or_insert(entry.seq);
            *first = (*first).min(entry.seq);
        }
    }
    if withheld.is_empty() {
        return (entries, coverage, false);
    }
    let kept = entries
        .into_iter()
        .filter(|e| withheld.get(&e.origin).is_none_or(|first| e.seq < *first))
        .collect();
    let mut cut = Coverage::default();
    for (origin, (after, upto)) in coverage.iter() {
        let upto = withheld
            .get(origin)
            .map_or(upto, |first| upto.min(first.saturating_sub(1)));
        cut.cover(origin, after, upto);
    }
    (kept, cut, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cbddc_core::field_merge::FieldWrite;
    use cbddc_core::{Hlc, NodeId};

    fn entry(origin: &str, seq: u64, merge: bool) -> OplogEntry {
        let replica = ReplicaId::new(origin).unwrap();
        OplogEntry {
            origin: replica.clone(),
            node: NodeId::new(origin).unwrap(),
            seq,
            collection: "c".into(),
            key: format!("k{seq}"),
            op: if merge {
                Operation::Merge {
                    write: FieldWrite::Patch {
                        patch: serde_json::json!({"a": 1}),
                        observed: Default::default(),
                    },
                }
            } else {
                Operation::Put { value: "1".into() }
            },
            hlc: Hlc {
                wall_ms: seq,
                counter: 0,
                replica,
            },
        }
    }

    #[test]
    fn an_older_peer_gets_each_origin_up_to_its_first_entry_it_cannot_read() {
        let entries = vec![
            entry("a", 1, false),
            entry("a", 2, true),
            entry("a", 3, false),
            entry("b", 1, false),
        ];
        let mut coverage = Coverage::default();
        coverage.cover(&ReplicaId::new("a").unwrap(), 0, 3);
        coverage.cover(&ReplicaId::new("b").unwrap(), 0, 1);
        let (kept, cut, withheld) =
            readable_by(entries.clone(), coverage.clone(), &BTreeSet::new());
        assert!(withheld);
        assert_eq!(
            kept.iter()
                .map(|e| (e.origin.to_string(), e.seq))
                .collect::<Vec<_>>(),
            [("a".to_string(), 1), ("b".to_string(), 1)]
        );
        assert_eq!(cut.get(&ReplicaId::new("a").unwrap()), Some((0, 1)));
        assert_eq!(cut.get(&ReplicaId::new("b").unwrap()), Some((0, 1)));

        let reads: BTreeSet<String> = [cbddc_core::field_merge::FEATURE.to_string()].into();
        let (kept, cut, withheld) = readable_by(entries, coverage.clone(), &reads);
        assert!(!withheld);
        assert_eq!(kept.len(), 4);
        assert_eq!(cut, coverage);
    }
}
