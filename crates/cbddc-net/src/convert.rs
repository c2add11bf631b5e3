//! Conversions between domain types and wire messages. Everything arriving from the wire
//! is validated here: a hostile field becomes [`NetError::Malformed`], never a panic.

use crate::{NetError, proto};
use cbddc_core as core;
use cbddc_core::field_merge::{FieldWrite, Observed, Tally};

fn node_id(text: &str, field: &'static str) -> Result<core::NodeId, NetError> {
    core::NodeId::new(text).map_err(|e| NetError::Malformed {
        detail: format!("{field}: {e}"),
    })
}

fn replica_id(text: &str, field: &'static str) -> Result<core::ReplicaId, NetError> {
    core::ReplicaId::new(text).map_err(|e| NetError::Malformed {
        detail: format!("{field}: {e}"),
    })
}

/// An id read from the wire: checked (`parse`), and told apart by its text.
trait WireId: Clone {
    fn parse(text: &str, field: &'static str) -> Result<Self, NetError>;
    fn text(&self) -> &str;
}

impl WireId for core::ReplicaId {
    fn parse(text: &str, field: &'static str) -> Result<Self, NetError> {
        replica_id(text, field)
    }
    fn text(&self) -> &str {
        self.as_str()
    }
}

impl WireId for core::NodeId {
    fn parse(text: &str, field: &'static str) -> Result<Self, NetError> {
        node_id(text, field)
    }
    fn text(&self) -> &str {
        self.as_str()
    }
}

/// The id of a kind named last in a page being converted: a page's entries and documents
/// come from a few writers, so most share it rather than check and copy it again.
struct Last<T>(Option<T>);

impl<T> Default for Last<T> {
    fn default() -> Self {
        Self(None)
    }
}

impl<T: WireId> Last<T> {
    fn get(&mut self, text: &str, field: &'static str) -> Result<T, NetError> {
        if let Some(last) = &self.0
            && last.text() == text
        {
            return Ok(last.clone());
        }
        let id = T::parse(text, field)?;
        self.0 = Some(id.clone());
        Ok(id)
    }
}

/// Domain version vector to wire.
pub fn vv_to_wire(vv: &core::VersionVector) -> proto::VersionVector {
    proto::VersionVector {
        entries: vv
            .iter()
            .map(|(origin, seq)| proto::VersionVectorEntry {
                origin: origin.to_string(),
                seq,
            })
            .collect(),
    }
}

/// Wire version vector to domain, validating origins.
pub fn vv_from_wire(vv: Option<proto::VersionVector>) -> Result<core::VersionVector, NetError> {
    let mut out = core::VersionVector::default();
    for entry in vv.unwrap_or_default().entries {
        out.advance(
            &replica_id(&entry.origin, "version vector origin")?,
            entry.seq,
        );
    }
    Ok(out)
}

/// Domain stamp to wire.
pub fn hlc_to_wire(hlc: &core::Hlc) -> proto::Hlc {
    proto::Hlc {
        wall_ms: hlc.wall_ms,
        counter: hlc.counter,
        node: hlc.replica.to_string(),
    }
}

/// Wire stamp to domain.
pub fn hlc_from_wire(hlc: Option<proto::Hlc>) -> Result<core::Hlc, NetError> {
    let hlc = hlc.ok_or_else(|| NetError::Malformed {
        detail: "a stamp is missing".into(),
    })?;
    Ok(core::Hlc {
        wall_ms: hlc.wall_ms,
        counter: hlc.counter,
        replica: replica_id(&hlc.node, "stamp replica")?,
    })
}

/// A snapshot's document to wire.
pub fn snapshot_document_to_wire(doc: core::SnapshotDocument) -> proto::SnapshotDocument {
    proto::SnapshotDocument {
        hlc: Some(proto::Hlc {
            wall_ms: doc.hlc.wall_ms,
            counter: doc.hlc.counter,
            node: doc.hlc.replica.into(),
        }),
        collection: doc.collection,
        key: doc.key,
        value: doc.value,
        seq: doc.seq,
        field_state: doc.field_state,
    }
}

/// A snapshot chunk from the wire (the store validates names and values).
pub fn snapshot_chunk_from_wire(
    chunk: proto::SnapshotResponse,
) -> Result<core::SnapshotChunk, NetError> {
    let mut last = Last::<core::ReplicaId>::default();
    let documents = chunk
        .documents
        .into_iter()
        .map(|doc| {
            let hlc = doc.hlc.ok_or_else(|| NetError::Malformed {
                detail: "a stamp is missing".into(),
            })?;
            Ok(core::SnapshotDocument {
                hlc: core::Hlc {
                    wall_ms: hlc.wall_ms,
                    counter: hlc.counter,
                    replica: last.get(&hlc.node, "stamp replica")?,
                },
                collection: doc.collection,
                key: doc.key,
                value: doc.value,
                seq: doc.seq,
                field_state: doc.field_state,
            })
        })
        .collect::<Result<_, NetError>>()?;
    Ok(core::SnapshotChunk {
        documents,
        version_vector: chunk
            .version_vector
            .map(|vv| vv_from_wire(Some(vv)))
            .transpose()?,
        more: chunk.more,
    })
}

/// Domain oplog entry to wire.
pub fn entry_to_wire(entry: &core::OplogEntry) -> proto::OplogEntry {
    proto::OplogEntry {
        origin: entry.origin.to_string(),
        seq: entry.seq,
        collection: entry.collection.clone(),
        key: entry.key.clone(),
        value: match &entry.op {
            core::Operation::Put { value } => Some(value.clone()),
            core::Operation::Delete | core::Operation::Merge { .. } => None,
        },
        hlc_wall_ms: entry.hlc.wall_ms,
        hlc_counter: entry.hlc.counter,
        node: entry.node.to_string(),
        field_write: match &entry.op {
            core::Operation::Merge { write } => Some(field_write_to_wire(write)),
            _ => None,
        },
    }
}

fn observed_to_wire(observed: &Observed) -> Vec<proto::ObservedCounter> {
    observed
        .iter()
        .map(|(path, tallies)| proto::ObservedCounter {
            path: path.split('.').map(str::to_string).collect(),
            tallies: tallies
                .iter()
                .map(|(replica, tally)| proto::CounterTally {
                    replica: replica.to_string(),
                    count: tally.count,
                    sum: tally.sum,
                })
                .collect(),
        })
        .collect()
}

/// A field-level write to wire.
pub fn field_write_to_wire(write: &FieldWrite) -> proto::FieldWrite {
    match write {
        FieldWrite::Put { value, observed } => proto::FieldWrite {
            kind: 1,
            json: value.to_string(),
            observed: observed_to_wire(observed),
            ..Default::default()
        },
        FieldWrite::Patch { patch, observed } => proto::FieldWrite {
            kind: 2,
            json: patch.to_string(),
            observed: observed_to_wire(observed),
            ..Default::default()
        },
        FieldWrite::Increment { path, by } => proto::FieldWrite {
            kind: 3,
            path: path.clone(),
            by: *by,
            ..Default::default()
        },
        FieldWrite::Delete { observed } => proto::FieldWrite {
            kind: 4,
            observed: observed_to_wire(observed),
            ..Default::default()
        },
    }
}

/// A field-level write from the wire; the entry's validation checks its paths and sizes.
pub fn field_write_from_wire(write: proto::FieldWrite) -> Result<FieldWrite, NetError> {
    let malformed = |detail: String| NetError::Malformed {
        detail: format!("field write: {detail}"),
    };
    let json = |text: &str| -> Result<serde_json::Value, NetError> {
        if text.len() > core::MAX_VALUE_BYTES {
            return Err(malformed(format!(
                "its JSON is {} bytes; the limit is {} bytes",
                text.len(),
                core::MAX_VALUE_BYTES
            )));
        }
        serde_json::from_str(text).map_err(|e| malformed(format!("not JSON ({e})")))
    };
    let mut observed = Observed::new();
    for counter in write.observed {
        let mut tallies = std::collections::BTreeMap::new();
        for tally in counter.tallies {
            let replica = replica_id(&tally.replica, "counter replica")?;
            tallies.insert(
                replica,
                Tally {
                    count: tally.count,
                    sum: tally.sum,
                },
            );
        }
        if counter.path.iter().any(|p| p.contains('.')) {
            return Err(malformed("a counter's field name holds a dot".into()));
        }
        observed.insert(counter.path.join("."), tallies);
    }
    Ok(match write.kind {
        1 => FieldWrite::Put {
            value: json(&write.json)?,
            observed,
        },
        2 => FieldWrite::Patch {
            patch: json(&write.json)?,
            observed,
        },
        3 => FieldWrite::Increment {
            path: write.path,
            by: write.by,
        },
        4 => FieldWrite::Delete { observed },
        other => return Err(malformed(format!("unknown kind {other}"))),
    })
}

/// Wire oplog entry to domain, checking every field. An entry without `node` was
/// written before replica ids: its origin is its writer's node id.
pub fn entry_from_wire(entry: proto::OplogEntry) -> Result<core::OplogEntry, NetError> {
    entry_from_wire_after(entry, &mut Default::default())
}

fn entry_from_wire_after(
    entry: proto::OplogEntry,
    (last_replica, last_node): &mut (Last<core::ReplicaId>, Last<core::NodeId>),
) -> Result<core::OplogEntry, NetError> {
    let origin = last_replica.get(&entry.origin, "entry origin")?;
    let node = if entry.node.is_empty() {
        last_node.get(&entry.origin, "entry origin (as the writer's node id)")?
    } else {
        last_node.get(&entry.node, "entry node")?
    };
    let out = core::OplogEntry {
        hlc: core::Hlc {
            wall_ms: entry.hlc_wall_ms,
            counter: entry.hlc_counter,
            replica: origin.clone(),
        },
        origin,
        node,
        seq: entry.seq,
        collection: entry.collection,
        key: entry.key,
        op: match (entry.value, entry.field_write) {
            (None, Some(write)) => core::Operation::Merge {
                write: field_write_from_wire(write)?,
            },
            (Some(_), Some(_)) => {
                return Err(NetError::Malformed {
                    detail: format!(
                        "oplog entry {} of {} carries both a value and a field write",
                        entry.seq, entry.origin
                    ),
                });
            }
            (Some(value), None) => core::Operation::Put { value },
            (None, None) => core::Operation::Delete,
        },
    };
    out.validate().map_err(|e| NetError::Malformed {
        detail: format!("oplog entry {} of {}: {e}", out.seq, out.origin),
    })?;
    Ok(out)
}

/// Wire oplog entries to domain.
pub fn entries_from_wire(
    entries: Vec<proto::OplogEntry>,
) -> Result<Vec<core::OplogEntry>, NetError> {
    let mut last = Default::default();
    entries
        .into_iter()
        .map(|entry| entry_from_wire_after(entry, &mut last))
        .collect()
}

/// Domain document to wire.
pub fn document_to_wire(doc: &core::Document) -> proto::Document {
    proto::Document {
        key: doc.key.clone(),
        value: doc.value.clone(),
        hlc: Some(hlc_to_wire(&doc.hlc)),
    }
}

/// Coverage on the wire.
pub fn coverage_to_wire(coverage: &core::Coverage) -> Vec<proto::CoverageEntry> {
    coverage
        .iter()
        .map(|(origin, (after, upto))| proto::CoverageEntry {
            origin: origin.to_string(),
            after,
            upto,
        })
        .collect()
}

/// Coverage from the wire; an empty or inverted range says nothing and is dropped.
pub fn coverage_from_wire(entries: Vec<proto::CoverageEntry>) -> Result<core::Coverage, NetError> {
    let mut coverage = core::Coverage::default();
    for entry in entries {
        let origin = replica_id(&entry.origin, "coverage origin")?;
        coverage.cover(&origin, entry.after, entry.upto);
    }
    Ok(coverage)
}

/// The collections of a session hello (empty: every collection), validated.
pub fn interest_from_wire(collections: Vec<String>) -> Result<core::Interest, NetError> {
    for collection in &collections {
        core::validate_collection(collection).map_err(|e| NetError::Malformed {
            detail: format!("a collection in the session hello: {e}"),
        })?;
    }
    Ok(core::Interest::only(collections))
}

/// The collections of an interest as the wire carries them.
pub fn interest_to_wire(interest: &core::Interest) -> Vec<String> {
    interest
        .collections()
        .map(|set| set.iter().cloned().collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_hostile_ones_are_refused() {
        let origin = core::ReplicaId::generate().unwrap();
        let entry = core::OplogEntry {
            origin: origin.clone(),
            node: core::NodeId::new("a").unwrap(),
            seq: 3,
            collection: "c".into(),
            key: "k".into(),
            op: core::Operation::Put {
                value: "[1]".into(),
            },
            hlc: core::Hlc {
                wall_ms: 9,
                counter: 1,
                replica: origin,
            },
        };
        assert_eq!(entry_from_wire(entry_to_wire(&entry)).unwrap(), entry);

        // Written before replica ids: the origin names the writer.
        let mut legacy = entry_to_wire(&entry);
        legacy.origin = "node-a".into();
        legacy.node = String::new();
        let legacy = entry_from_wire(legacy).unwrap();
        assert_eq!(
            (legacy.origin.as_str(), legacy.node.as_str()),
            ("node-a", "node-a")
        );

        let mut bad = entry_to_wire(&entry);
        bad.origin = "no spaces allowed".into();
        assert!(matches!(
            entry_from_wire(bad),
            Err(NetError::Malformed { .. })
        ));
        let mut bad = entry_to_wire(&entry);
        bad.value = Some("{".into());
        assert!(matches!(
            entry_from_wire(bad),
            Err(NetError::Malformed { .. })
        ));
        let mut bad = entry_to_wire(&entry);
        bad.collection = String::new();
        assert!(entry_from_wire(bad).is_err());
    }

    #[test]
    fn version_vectors_round_trip() {
        let vv: core::VersionVector = [
            (core::ReplicaId::new("a").unwrap(), 4),
            (core::ReplicaId::new("b").unwrap(), 1),
        ]
        .into_iter()
        .collect();
        assert_eq!(vv_from_wire(Some(vv_to_wire(&vv))).unwrap(), vv);
        assert_eq!(vv_from_wire(None).unwrap(), core::VersionVector::default());
    }
}
