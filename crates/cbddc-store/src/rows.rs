//! Row helpers every part of the store shares: how stamps, entries and (replica, number)
//! tables read back from their columns, the statements that append an entry, queue one
//! for compaction and record a change, meta keys, and read transactions. A leaf: it
//! depends on nothing else of this crate but its errors, so the writer, the readers,
//! compaction, snapshots and the feed all build on it without depending on each other.

use crate::error::{SqlContext, StoreError};
use cbddc_core::{Hlc, NodeId, Operation, OplogEntry, ReplicaId, VersionVector};
use rusqlite::Connection;

/// Sets `key` of the `meta` table to `value`.
pub(crate) fn set_meta(conn: &Connection, key: &str, value: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?
    .execute([key, value])
    .map(|_| ())
}

pub(crate) const APPEND_OPLOG: &str =
    "INSERT INTO oplog (origin, seq, collection, key, value, hlc_wall, hlc_counter, node, field)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";

/// A winning delete, queued for compaction as its document's tombstone.
pub(crate) const QUEUE_TOMBSTONE: &str =
    "INSERT OR REPLACE INTO collectable (origin, seq, position, tombstone)
     VALUES (?1, ?2, ?3, 1)";

pub(crate) const RECORD_CHANGE: &str =
    "INSERT INTO changes (position, origin, seq) VALUES (?1, ?2, ?3)";

/// Makes a stamp from stored columns.
/// A stored wall clock reading, which is never negative.
pub(crate) fn wall_clock(wall: i64) -> Result<u64, StoreError> {
    u64::try_from(wall).map_err(|_| StoreError::Corrupt {
        operation: "reading a stamp",
        detail: format!("negative wall clock {wall}"),
    })
}

pub(crate) fn stamp(wall: i64, counter: u32, replica: &str) -> Result<Hlc, StoreError> {
    Ok(Hlc {
        wall_ms: wall_clock(wall)?,
        counter,
        replica: ReplicaId::new(replica).map_err(|e| StoreError::Corrupt {
            operation: "reading a stamp",
            detail: e.to_string(),
        })?,
    })
}

/// The stamp in columns `first..first + 3` of `row` (wall clock, counter, replica), read
/// after `previous`: rows written by the same replica as the one before share its
/// checked id rather than checking and allocating it again.
pub(crate) fn stamp_after(
    row: &rusqlite::Row<'_>,
    first: usize,
    previous: Option<&Hlc>,
    operation: &'static str,
) -> Result<Hlc, StoreError> {
    let (wall, counter): (i64, u32) = (
        row.get(first).during(operation)?,
        row.get(first + 1).during(operation)?,
    );
    let replica = row
        .get_ref(first + 2)
        .during(operation)?
        .as_str()
        .map_err(|e| StoreError::Corrupt {
            operation,
            detail: format!("a stamp's replica is not text: {e}"),
        })?;
    match previous {
        Some(last) if last.replica.as_str() == replica => Ok(Hlc {
            wall_ms: wall_clock(wall)?,
            counter,
            replica: last.replica.clone(),
        }),
        _ => stamp(wall, counter, replica),
    }
}

pub(crate) fn corrupt(operation: &'static str, detail: impl ToString) -> StoreError {
    StoreError::Corrupt {
        operation,
        detail: detail.to_string(),
    }
}

pub(crate) fn node_id(text: &str, operation: &'static str) -> Result<NodeId, StoreError> {
    NodeId::new(text).map_err(|e| corrupt(operation, e))
}

pub(crate) fn replica_id(text: &str, operation: &'static str) -> Result<ReplicaId, StoreError> {
    ReplicaId::new(text).map_err(|e| corrupt(operation, e))
}

/// The writer of an entry: its `node` column, or for entries written before replica ids
/// (an empty column) the origin, which was the node id then.
pub(crate) fn writer_of(node: &str, origin: &ReplicaId) -> Result<NodeId, StoreError> {
    node_id(
        if node.is_empty() {
            origin.as_str()
        } else {
            node
        },
        "reading an entry's writer",
    )
}

/// An oplog row as an entry: `(collection, key, value)` (no value: a delete), the stamp's
/// `(wall, counter)`, and the writer's `node` column.
pub(crate) fn oplog_entry(
    origin: ReplicaId,
    seq: u64,
    (collection, key, value, field): (String, String, Option<String>, Option<String>),
    (wall, counter): (i64, u32),
    node: &str,
) -> Result<OplogEntry, StoreError> {
    let op = Operation::from_columns(value, field.as_deref()).ok_or_else(|| {
        corrupt(
            "reading an oplog entry",
            format!("entry {seq} of {origin} holds a field write that is not one"),
        )
    })?;
    Ok(OplogEntry {
        node: writer_of(node, &origin)?,
        seq,
        collection,
        key,
        op,
        hlc: stamp(wall, counter, origin.as_str())?,
        origin,
    })
}

pub(crate) fn read_version_vector(conn: &Connection) -> Result<VersionVector, StoreError> {
    vector_from(
        conn,
        "SELECT origin, max_seq FROM origins",
        "reading the version vector",
    )
}

/// Runs `read` in one read transaction: everything it reads comes from one state of the
/// database, whatever the writer commits meanwhile.
pub(crate) fn consistently<T>(
    conn: &Connection,
    operation: &'static str,
    read: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    conn.execute_batch("BEGIN").during(operation)?;
    let result = read(conn);
    // A read transaction changed nothing: ending it cannot lose anything.
    let _ = conn.execute_batch("COMMIT");
    result
}

/// A version vector stored as rows of `(replica, sequence number)`, read by `query`.
pub(crate) fn vector_from(
    conn: &Connection,
    query: &str,
    operation: &'static str,
) -> Result<VersionVector, StoreError> {
    let mut stmt = conn.prepare_cached(query).during(operation)?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
        .during(operation)?;
    let mut out = VersionVector::default();
    for row in rows {
        let (replica, seq) = row.during(operation)?;
        let seq = u64::try_from(seq).map_err(|_| corrupt(operation, seq))?;
        out.advance(&replica_id(&replica, operation)?, seq);
    }
    Ok(out)
}
