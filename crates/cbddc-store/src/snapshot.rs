//! Snapshots: read in chunks on a read connection at the source; applied chunk by chunk
//! at the receiver, each document written once, straight into `documents` by
//! last-writer-wins, in a transaction of its own with the progress (so a crash resumes
//! where it stopped).
//!
//! Nothing a partial snapshot leaves can be mistaken for a complete one: the version
//! vector the snapshot stands for is merged only by [`finish`], after the last chunk.
//! Until then the documents applied are like entries pulled ahead of their oplog: each
//! won or lost by its stamp, the node still counts itself as lacking their entries and
//! takes them (or the snapshot again) later, which last-writer-wins makes harmless. A
//! document the receiver holds, whose writing entry the snapshot's vector covers but
//! which the snapshot lacks, was deleted and collected at the source: it goes, range by
//! range as the chunks pass over its key, and for the range after the last chunk in
//! [`finish`].

use crate::batch_apply::{ROWS, multi_row};
use crate::error::{SqlContext, StoreError};
use crate::indexes::IndexSet;
use crate::rows::QUEUE_TOMBSTONE;
use crate::rows::corrupt;
use crate::rows::stamp_after;
use cbddc_core::{
    Interest, NodeId, PageLimits, SnapshotChunk, SnapshotDocument, SnapshotProgress, StorageError,
    VersionVector,
};
use rusqlite::{Connection, OptionalExtension, ToSql, params};
use std::sync::OnceLock;

fn sql(operation: &'static str) -> impl FnOnce(rusqlite::Error) -> StorageError {
    move |source| StoreError::Sqlite { operation, source }.into()
}

/// Reads a chunk (see `DocumentStore::snapshot_chunk`), in one read transaction.
pub(crate) fn read_chunk(
    conn: &Connection,
    after: Option<&(String, String)>,
    limits: PageLimits,
    wanted: &Interest,
) -> Result<SnapshotChunk, StoreError> {
    // The version vector and the first chunk agree.
    crate::rows::consistently(conn, "reading a snapshot", |c| {
        read_chunk_in(c, after, limits, wanted)
    })
}

fn read_chunk_in(
    conn: &Connection,
    after: Option<&(String, String)>,
    limits: PageLimits,
    wanted: &Interest,
) -> Result<SnapshotChunk, StoreError> {
    const OP: &str = "reading a snapshot";
    let mut chunk = SnapshotChunk {
        version_vector: match after {
            None => Some(crate::rows::read_version_vector(conn)?),
            Some(_) => None,
        },
        ..SnapshotChunk::default()
    };
    let (after_collection, after_key) = after
        .map(|(c, k)| (c.as_str(), k.as_str()))
        .unwrap_or(("", ""));
    let max = limits.max_entries.max(1);
    // Documents merged field by field carry their state; a database without any skips
    // looking for one per document.
    let any_state: bool = conn
        .query_row("SELECT EXISTS (SELECT 1 FROM field_states)", [], |r| {
            r.get(0)
        })
        .during(OP)?;
    let mut stmt = conn
        .prepare_cached(if any_state {
            "SELECT d.collection, d.key, d.value, d.hlc_wall, d.hlc_counter, d.hlc_node, d.seq,
                    f.state
             FROM documents d LEFT JOIN field_states f
                 ON f.collection = d.collection AND f.key = d.key
             WHERE (d.collection, d.key) > (?1, ?2) ORDER BY d.collection, d.key"
        } else {
            "SELECT collection, key, value, hlc_wall, hlc_counter, hlc_node, seq, NULL
             FROM documents
             WHERE (collection, key) > (?1, ?2) ORDER BY collection, key"
        })
        .during(OP)?;
    let mut rows = stmt
        .query(params![after_collection, after_key])
        .during(OP)?;
    let mut bytes = 0usize;
    while let Some(r) = rows.next().during(OP)? {
        let collection: String = r.get(0).during(OP)?;
        if !wanted.includes(&collection) {
            continue;
        }
        let key: String = r.get(1).during(OP)?;
        let value: Option<String> = r.get(2).during(OP)?;
        let field_state: Option<String> = r.get(7).during(OP)?;
        let size = collection.len()
            + key.len()
            + value.as_ref().map_or(0, String::len)
            + field_state.as_ref().map_or(0, String::len)
            + 48;
        if chunk.documents.len() >= max
            || (!chunk.documents.is_empty() && bytes + size > limits.max_bytes)
        {
            chunk.more = true;
            break;
        }
        bytes += size;
        let seq: Option<i64> = r.get(6).during(OP)?;
        // Most documents of a chunk were written by the same few replicas.
        let hlc = stamp_after(r, 3, chunk.documents.last().map(|d| &d.hlc), OP)?;
        chunk.documents.push(SnapshotDocument {
            hlc,
            collection,
            key,
            value,
            seq: seq.and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
            field_state,
        });
    }
    Ok(chunk)
}

/// The snapshot being received, from `meta`.
pub(crate) fn progress(conn: &Connection) -> Result<Option<SnapshotProgress>, StoreError> {
    const OP: &str = "reading the snapshot in progress";
    let text: Option<String> = conn
        .query_row("SELECT value FROM meta WHERE key = 'snapshot'", [], |r| {
            r.get(0)
        })
        .optional()
        .during(OP)?;
    text.map(|t| serde_json::from_str(&t).map_err(|e| corrupt(OP, e)))
        .transpose()
}

fn save_progress(conn: &Connection, progress: &SnapshotProgress) -> Result<(), StorageError> {
    let text = serde_json::to_string(progress).map_err(|e| StorageError::Backend {
        operation: "recording the snapshot in progress",
        message: e.to_string(),
    })?;
    crate::rows::set_meta(conn, "snapshot", &text)
        .map_err(sql("recording the snapshot in progress"))
}

/// Forgets the snapshot in progress.
pub(crate) fn clear(conn: &Connection) -> Result<(), StorageError> {
    conn.execute_batch("DELETE FROM meta WHERE key = 'snapshot';")
        .map_err(sql("dropping a snapshot in progress"))
}

/// Applies one chunk (see the module docs); the documents are validated by the caller,
/// and take feed position `position` if they change anything. With `version_vector`
/// (the first chunk) any snapshot in progress is dropped; without, the chunk must follow
/// the progress from the same source. Returns the progress and the documents changed.
pub(crate) fn apply_chunk(
    conn: &Connection,
    (indexes, any_state): (&IndexSet, bool),
    source: &NodeId,
    version_vector: Option<VersionVector>,
    documents: &[SnapshotDocument],
    position: i64,
) -> Result<(SnapshotProgress, u64), StorageError> {
    let mut progress = match version_vector {
        Some(version_vector) => {
            clear(conn)?;
            SnapshotProgress {
                source: source.clone(),
                version_vector,
                after: None,
                staged: 0,
                latest: None,
                changed: 0,
            }
        }
        None => match progress(conn)? {
            Some(p) if &p.source == source => p,
            Some(p) => {
                return Err(StorageError::Backend {
                    operation: "applying a snapshot chunk",
                    message: format!(
                        "the snapshot in progress comes from {}, not {source}; start again",
                        p.source
                    ),
                });
            }
            None => {
                return Err(StorageError::Backend {
                    operation: "applying a snapshot chunk",
                    message: "no snapshot is in progress; start with its first chunk".into(),
                });
            }
        },
    };
    let from = progress.after.clone();
    let mut last = from.as_ref().map(|(c, k)| (c.as_str(), k.as_str()));
    for doc in documents {
        let place = (doc.collection.as_str(), doc.key.as_str());
        if last.is_some_and(|last| place <= last) {
            return Err(StorageError::Invalid(cbddc_core::CoreError::InvalidValue {
                reason: format!(
                    "snapshot document {}/{} is out of order",
                    doc.collection, doc.key
                ),
            }));
        }
        last = Some(place);
        progress.staged += 1;
        let stamp = (doc.hlc.wall_ms, doc.hlc.counter);
        if progress.latest.is_none_or(|latest| stamp > latest) {
            progress.latest = Some(stamp);
        }
    }
    if let Some(last) = documents.last() {
        progress.after = Some((last.collection.clone(), last.key.clone()));
    }
    // Before this chunk's own rows exist: a receiver that held nothing there reads nothing.
    let mut changed = match &progress.after {
        Some(upto) if !documents.is_empty() => remove_absent(
            conn,
            indexes,
            &progress.version_vector,
            from.as_ref(),
            Some(upto),
            documents,
        )?,
        _ => 0,
    };
    // Documents merged field by field (here or at the source) join their states; the
    // others settle by last-writer-wins.
    let mut plain = Vec::with_capacity(documents.len());
    for doc in documents {
        let merges = doc.field_state.is_some()
            || (any_state
                && crate::field_apply::has_state(conn, &doc.collection, &doc.key)
                    .map_err(sql("applying a snapshot chunk"))?);
        if merges {
            changed += u64::from(join_document(conn, indexes, doc, position)?);
        } else {
            plain.push(doc);
        }
    }
    changed += write_documents(conn, indexes, &plain, position)
        .map_err(sql("applying a snapshot chunk"))?;
    progress.changed += changed;
    save_progress(conn, &progress)?;
    Ok((progress, changed))
}

/// Ends the snapshot from `source` once its last chunk is applied: removes what it
/// covers but lacks after its last document, and returns its progress (whose version
/// vector the caller merges, in the same transaction; `changed` counts the removals here
/// too) and the documents removed here.
pub(crate) fn finish(
    conn: &Connection,
    indexes: &IndexSet,
    source: &NodeId,
) -> Result<(SnapshotProgress, u64), StorageError> {
    let mut progress = match progress(conn)? {
        Some(p) if &p.source == source => p,
        _ => {
            return Err(StorageError::Backend {
                operation: "finishing a snapshot",
                message: format!("no snapshot from {source} is in progress"),
            });
        }
    };
    let removed = remove_absent(
        conn,
        indexes,
        &progress.version_vector,
        progress.after.as_ref(),
        None,
        &[],
    )?;
    progress.changed += removed;
    clear(conn)?;
    Ok((progress, removed))
}

/// Removes the documents with a key in `(from, upto]` (`None`: unbounded) whose writing
/// entry `covered` covers and that `present` (sorted by place) lacks: deleted and
/// collected at the source. The delete trigger queues their entries for compaction.
fn remove_absent(
    conn: &Connection,
    indexes: &IndexSet,
    covered: &VersionVector,
    from: Option<&(String, String)>,
    upto: Option<&(String, String)>,
    present: &[SnapshotDocument],
) -> Result<u64, StorageError> {
    const OP: &str = "removing documents a snapshot deleted";
    let (from_collection, from_key) = from.map_or(("", ""), |(c, k)| (c.as_str(), k.as_str()));
    let (upto_collection, upto_key) = match upto {
        Some((c, k)) => (Some(c.as_str()), Some(k.as_str())),
        None => (None, None),
    };
    let held: Vec<(String, String, String, i64)> = {
        let mut stmt = conn
            .prepare_cached(
                "SELECT collection, key, hlc_node, seq FROM documents
                 WHERE (collection, key) > (?1, ?2)
                   AND (?3 IS NULL OR (collection, key) <= (?3, ?4))
                   AND seq IS NOT NULL",
            )
            .map_err(sql(OP))?;
        let rows = stmt
            .query_map(
                params![from_collection, from_key, upto_collection, upto_key],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .map_err(sql(OP))?;
        rows.collect::<Result<_, _>>().map_err(sql(OP))?
    };
    let mut remove = conn
        .prepare_cached("DELETE FROM documents WHERE collection = ?1 AND key = ?2")
        .map_err(sql(OP))?;
    let mut forget_state = conn
        .prepare_cached("DELETE FROM field_states WHERE collection = ?1 AND key = ?2")
        .map_err(sql(OP))?;
    let mut removed = 0;
    for (collection, key, replica, seq) in held {
        let in_snapshot = present
            .binary_search_by(|d| {
                (d.collection.as_str(), d.key.as_str()).cmp(&(collection.as_str(), key.as_str()))
            })
            .is_ok();
        let written_before = cbddc_core::ReplicaId::new(&replica)
            .is_ok_and(|r| u64::try_from(seq).is_ok_and(|s| s <= covered.get(&r)));
        if !in_snapshot && written_before {
            let held = indexes.held(conn, &collection, &key).map_err(sql(OP))?;
            removed += remove.execute(params![collection, key]).map_err(sql(OP))? as u64;
            forget_state
                .execute(params![collection, key])
                .map_err(sql(OP))?;
            indexes
                .record(conn, &collection, &key, held.as_deref(), None)
                .map_err(sql(OP))?;
        }
    }
    Ok(removed)
}

/// The document row a snapshot document writes: its columns, with the sequence number
/// unknown (`None`) when the source did not know it.
struct SnapshotRow<'a> {
    doc: &'a SnapshotDocument,
    replica: &'a str,
    wall: i64,
    seq: Option<i64>,
}

/// Inserts a snapshot document's row unless its key has one ([`SnapshotRow::columns`]).
const INSERT_SNAPSHOT_DOCUMENT: &str = "INSERT OR IGNORE INTO documents
     (collection, key, value, hlc_wall, hlc_counter, hlc_node, seq, position)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";

impl<'a> SnapshotRow<'a> {
    /// The row's columns in the order of [`INSERT_SNAPSHOT_DOCUMENT`] and of the update in
    /// [`settle`], with the change position `position`.
    fn columns<'r>(&'r self, position: &'r i64) -> [&'r dyn ToSql; 8] {
        [
            &self.doc.collection,
            &self.doc.key,
            &self.doc.value,
            &self.wall,
            &self.doc.hlc.counter,
            &self.replica,
            &self.seq,
            position,
        ]
    }

    fn of(doc: &'a SnapshotDocument) -> Self {
        Self {
            doc,
            replica: doc.hlc.replica.as_str(),
            wall: i64::try_from(doc.hlc.wall_ms).unwrap_or(i64::MAX),
            seq: (doc.seq > 0).then(|| i64::try_from(doc.seq).unwrap_or(i64::MAX)),
        }
    }
}

/// Joins a snapshot document's state (or the one its whole document stands for) into the
/// receiver's state of it. Whether the document changed.
fn join_document(
    conn: &Connection,
    indexes: &IndexSet,
    doc: &SnapshotDocument,
    position: i64,
) -> Result<bool, StorageError> {
    use cbddc_core::field_merge::FieldState;
    let document = crate::field_apply::parse_document(doc.value.as_deref());
    let incoming = match &doc.field_state {
        Some(text) => {
            crate::field_apply::parse_state(text, document.as_ref()).map_err(|reason| {
                StorageError::Invalid(cbddc_core::CoreError::InvalidValue {
                    reason: format!("snapshot document {}/{}: {reason}", doc.collection, doc.key),
                })
            })?
        }
        None => FieldState::from_whole(document.as_ref(), &doc.hlc),
    };
    let current = crate::field_apply::read(conn, &doc.collection, &doc.key)?;
    let outcome = crate::field_apply::write(
        conn,
        indexes,
        current,
        &crate::field_apply::Merging {
            collection: &doc.collection,
            key: &doc.key,
            stamp: &doc.hlc,
            seq: (doc.seq > 0).then(|| i64::try_from(doc.seq).unwrap_or(i64::MAX)),
            position,
            arriving: crate::field_apply::Arriving::State(&incoming),
        },
        None,
    )?;
    Ok(outcome.changed)
}

/// Writes the chunk's documents by last-writer-wins, [`ROWS`] to a statement while every
/// key is new (a newcomer: one insert each); a key held already is settled row by row.
/// Returns the documents changed.
fn write_documents(
    conn: &Connection,
    indexes: &IndexSet,
    documents: &[&SnapshotDocument],
    position: i64,
) -> rusqlite::Result<u64> {
    static MULTI: OnceLock<String> = OnceLock::new();
    let rows: Vec<SnapshotRow<'_>> = documents.iter().map(|doc| SnapshotRow::of(doc)).collect();
    let mut changed = 0;
    let mut values: Vec<&dyn ToSql> = Vec::with_capacity(ROWS * 8);
    let mut tombstone = conn.prepare_cached(QUEUE_TOMBSTONE)?;
    for chunk in rows.chunks(ROWS) {
        let all_inserted = chunk.len() == ROWS && {
            values.clear();
            values.extend(chunk.iter().flat_map(|r| r.columns(&position)));
            conn.prepare_cached(multi_row(&MULTI, INSERT_SNAPSHOT_DOCUMENT))?
                .execute(&values[..])?
                == ROWS
        };
        for row in chunk {
            let won = if all_inserted {
                let doc = row.doc;
                indexes.record(conn, &doc.collection, &doc.key, None, doc.value.as_deref())?;
                true
            } else {
                settle(conn, indexes, row, position, chunk.len() == ROWS)?
            };
            if won {
                changed += 1;
                if let (None, Some(seq)) = (&row.doc.value, row.seq) {
                    tombstone.execute(params![
                        row.doc.hlc.replica.as_str(),
                        seq,
                        Option::<i64>::None
                    ])?;
                }
            }
        }
    }
    Ok(changed)
}

/// Writes one row unless its key holds a newer (or the same) write; a displaced winner
/// that came from an oplog entry is queued for compaction. With `tried`, the row's
/// insert was tried already (in a multi-row statement) and may have been the one that
/// inserted it. Whether the row won.
fn settle(
    conn: &Connection,
    indexes: &IndexSet,
    row: &SnapshotRow<'_>,
    position: i64,
    tried: bool,
) -> rusqlite::Result<bool> {
    let doc = row.doc;
    let new = doc.value.as_deref();
    // The stamp, the writing entry's sequence number and the change position it holds.
    type Held = (i64, u32, String, Option<i64>, Option<i64>);
    let held: Option<Held> = conn
        .prepare_cached(
            "SELECT hlc_wall, hlc_counter, hlc_node, seq, position FROM documents
             WHERE collection = ?1 AND key = ?2",
        )?
        .query_row(params![doc.collection, doc.key], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .optional()?;
    let Some((wall, counter, replica, seq, held_position)) = held else {
        let inserted = conn
            .prepare_cached(INSERT_SNAPSHOT_DOCUMENT)?
            .execute(&row.columns(&position)[..])?;
        if inserted == 1 {
            indexes.record(conn, &doc.collection, &doc.key, None, new)?;
        }
        return Ok(inserted == 1);
    };
    let ours = (row.wall, doc.hlc.counter, doc.hlc.replica.as_str());
    if tried
        && (wall, counter, replica.as_str(), seq) == (ours.0, ours.1, ours.2, row.seq)
        && held_position == Some(position)
    {
        // The multi-row statement inserted it.
        indexes.record(conn, &doc.collection, &doc.key, None, new)?;
        return Ok(true);
    }
    if ours <= (wall, counter, replica.as_str()) {
        return Ok(false);
    }
    let replaced = indexes.held(conn, &doc.collection, &doc.key)?;
    conn.prepare_cached(
        "UPDATE documents SET value = ?3, hlc_wall = ?4, hlc_counter = ?5, hlc_node = ?6,
             seq = ?7, position = ?8
         WHERE collection = ?1 AND key = ?2",
    )?
    .execute(&row.columns(&position)[..])?;
    indexes.record(conn, &doc.collection, &doc.key, replaced.as_deref(), new)?;
    if let Some(seq) = seq {
        conn.prepare_cached(
            "INSERT OR REPLACE INTO collectable (origin, seq, position, tombstone)
             VALUES (?1, ?2, ?3, 0)",
        )?
        .execute(params![replica, seq, held_position])?;
    }
    Ok(true)
}
