//! Snapshots: read in chunks on a read connection at the source; staged chunk by chunk
//! at the receiver (each chunk its own small transaction, with the progress, so a crash
//! resumes where it stopped), then applied in one transaction.

use crate::batch_apply::{ROWS, multi_row};
use crate::error::{SqlContext, StoreError};
use crate::rows::corrupt;
use crate::rows::stamp;
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
    let mut stmt = conn
        .prepare_cached(
            "SELECT collection, key, value, hlc_wall, hlc_counter, hlc_node, seq FROM documents
             WHERE (collection, key) > (?1, ?2) ORDER BY collection, key",
        )
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
        let size = collection.len() + key.len() + value.as_ref().map_or(0, String::len) + 48;
        if chunk.documents.len() >= max
            || (!chunk.documents.is_empty() && bytes + size > limits.max_bytes)
        {
            chunk.more = true;
            break;
        }
        bytes += size;
        let (wall, counter, replica, seq): (i64, u32, String, Option<i64>) = (
            r.get(3).during(OP)?,
            r.get(4).during(OP)?,
            r.get(5).during(OP)?,
            r.get(6).during(OP)?,
        );
        chunk.documents.push(SnapshotDocument {
            hlc: stamp(wall, counter, &replica)?,
            collection,
            key,
            value,
            seq: seq.and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
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

/// Drops a staged snapshot.
pub(crate) fn clear(conn: &Connection) -> Result<(), StorageError> {
    conn.execute_batch("DELETE FROM snapshot_documents; DELETE FROM meta WHERE key = 'snapshot';")
        .map_err(sql("dropping a staged snapshot"))
}

/// Stages one chunk; the documents are already validated by the caller.
pub(crate) fn stage(
    conn: &Connection,
    source: &NodeId,
    version_vector: Option<VersionVector>,
    documents: &[SnapshotDocument],
) -> Result<SnapshotProgress, StorageError> {
    let mut progress = match version_vector {
        Some(version_vector) => {
            clear(conn)?;
            SnapshotProgress {
                source: source.clone(),
                version_vector,
                after: None,
                staged: 0,
                latest: None,
            }
        }
        None => match progress(conn)? {
            Some(p) if &p.source == source => p,
            Some(p) => {
                return Err(StorageError::Backend {
                    operation: "staging a snapshot",
                    message: format!(
                        "the snapshot in progress comes from {}, not {source}; start again",
                        p.source
                    ),
                });
            }
            None => {
                return Err(StorageError::Backend {
                    operation: "staging a snapshot",
                    message: "no snapshot is in progress; start with its first chunk".into(),
                });
            }
        },
    };
    for doc in documents {
        let place = (doc.collection.as_str(), doc.key.as_str());
        if progress
            .after
            .as_ref()
            .is_some_and(|(c, k)| place <= (c.as_str(), k.as_str()))
        {
            return Err(StorageError::Invalid(cbddc_core::CoreError::InvalidValue {
                reason: format!(
                    "snapshot document {}/{} is out of order",
                    doc.collection, doc.key
                ),
            }));
        }
        progress.after = Some((doc.collection.clone(), doc.key.clone()));
        progress.staged += 1;
        let stamp = (doc.hlc.wall_ms, doc.hlc.counter);
        if progress.latest.is_none_or(|latest| stamp > latest) {
            progress.latest = Some(stamp);
        }
    }
    stage_rows(conn, documents).map_err(sql("staging a snapshot document"))?;
    save_progress(conn, &progress)?;
    Ok(progress)
}

/// Inserts the documents into `snapshot_documents`, [`ROWS`] to a statement.
fn stage_rows(conn: &Connection, documents: &[SnapshotDocument]) -> rusqlite::Result<()> {
    const STAGE: &str = "INSERT INTO snapshot_documents
         (collection, key, value, hlc_wall, hlc_counter, hlc_node, seq)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
    static MULTI: OnceLock<String> = OnceLock::new();
    // The columns that are not stored as the document holds them.
    let numbers: Vec<(i64, i64, &str)> = documents
        .iter()
        .map(|d| {
            (
                i64::try_from(d.hlc.wall_ms).unwrap_or(i64::MAX),
                i64::try_from(d.seq).unwrap_or(i64::MAX),
                d.hlc.replica.as_str(),
            )
        })
        .collect();
    fn row<'a>(
        (d, (wall, seq, replica)): (&'a SnapshotDocument, &'a (i64, i64, &'a str)),
    ) -> [&'a dyn ToSql; 7] {
        [
            &d.collection,
            &d.key,
            &d.value,
            wall,
            &d.hlc.counter,
            replica,
            seq,
        ]
    }
    let mut values: Vec<&dyn ToSql> = Vec::with_capacity(ROWS * 7);
    for (docs, numbers) in documents.chunks(ROWS).zip(numbers.chunks(ROWS)) {
        if docs.len() == ROWS {
            values.clear();
            values.extend(docs.iter().zip(numbers).flat_map(row));
            conn.prepare_cached(multi_row(&MULTI, STAGE))?
                .execute(&values[..])?;
        } else {
            let mut insert = conn.prepare_cached(STAGE)?;
            for one in docs.iter().zip(numbers) {
                insert.execute(&row(one)[..])?;
            }
        }
    }
    Ok(())
}

/// Applies the staged snapshot (see `DocumentStore::finish_snapshot`): returns the
/// progress it applied and the documents it changed. The caller merges the version
/// vector into its own and records what it stepped over.
pub(crate) fn apply(
    conn: &Connection,
    source: &NodeId,
) -> Result<(SnapshotProgress, u64), StorageError> {
    let progress = match progress(conn)? {
        Some(p) if &p.source == source => p,
        _ => {
            return Err(StorageError::Backend {
                operation: "applying a snapshot",
                message: format!("no snapshot from {source} is staged"),
            });
        }
    };
    conn.execute_batch(
        "CREATE TEMP TABLE IF NOT EXISTS snapshot_vv (origin TEXT PRIMARY KEY, seq INTEGER NOT NULL);
         DELETE FROM temp.snapshot_vv;",
    )
    .map_err(sql("preparing a snapshot's version vector"))?;
    {
        let mut insert = conn
            .prepare_cached("INSERT INTO temp.snapshot_vv (origin, seq) VALUES (?1, ?2)")
            .map_err(sql("preparing a snapshot's version vector"))?;
        for (origin, seq) in progress.version_vector.iter() {
            insert
                .execute(params![
                    origin.as_str(),
                    i64::try_from(seq).unwrap_or(i64::MAX)
                ])
                .map_err(sql("recording a snapshot's version vector"))?;
        }
    }
    // Deleted and collected at the source: held here, covered by the snapshot, absent
    // from it. Decided before the upsert, which may bring rows of those keys back.
    let removed = conn
        .execute(
            "DELETE FROM documents WHERE seq IS NOT NULL
                 AND seq <= (SELECT v.seq FROM temp.snapshot_vv v WHERE v.origin = documents.hlc_node)
                 AND NOT EXISTS (SELECT 1 FROM snapshot_documents s
                     WHERE s.collection = documents.collection AND s.key = documents.key)",
            [],
        )
        .map_err(sql("removing documents the snapshot deleted"))?;
    // The winners the snapshot displaces are superseded, like any overwritten entry.
    conn.execute(
        "INSERT OR REPLACE INTO collectable (origin, seq, position, tombstone)
             SELECT d.hlc_node, d.seq, d.position, 0 FROM snapshot_documents s JOIN documents d
                 ON d.collection = s.collection AND d.key = s.key
             WHERE d.seq IS NOT NULL
               AND (s.hlc_wall, s.hlc_counter, s.hlc_node) > (d.hlc_wall, d.hlc_counter, d.hlc_node)",
        [],
    )
    .map_err(sql("queuing what a snapshot supersedes"))?;
    let changed = conn
        .execute(
            "INSERT INTO documents (collection, key, value, hlc_wall, hlc_counter, hlc_node, seq, position)
                 SELECT collection, key, value, hlc_wall, hlc_counter, hlc_node, NULLIF(seq, 0), NULL
                 FROM snapshot_documents WHERE true
             ON CONFLICT (collection, key) DO UPDATE SET value = excluded.value,
                 hlc_wall = excluded.hlc_wall, hlc_counter = excluded.hlc_counter,
                 hlc_node = excluded.hlc_node, seq = excluded.seq, position = NULL
             WHERE (excluded.hlc_wall, excluded.hlc_counter, excluded.hlc_node)
                 > (documents.hlc_wall, documents.hlc_counter, documents.hlc_node)",
            [],
        )
        .map_err(sql("applying a snapshot"))?;
    // The tombstones that won are queued for compaction like any winning delete.
    conn.execute(
        "INSERT OR REPLACE INTO collectable (origin, seq, position, tombstone)
             SELECT d.hlc_node, d.seq, NULL, 1 FROM snapshot_documents s JOIN documents d
                 ON d.collection = s.collection AND d.key = s.key
                AND d.hlc_node = s.hlc_node AND d.seq = s.seq
             WHERE s.value IS NULL AND s.seq > 0",
        [],
    )
    .map_err(sql("queuing a snapshot's tombstones"))?;
    clear(conn)?;
    Ok((progress, (removed + changed) as u64))
}
