//! What the change feed stores: its pages, the deletes it keeps after compaction
//! collected their tombstones, the oldest position it can resume after, and its named
//! consumers.
//!
//! The promise: a consumer resuming after position `p` gets, for every document changed
//! after `p`, its latest state at a later position (deletes included), or
//! [`FeedCompacted`] when the feed can no longer say that. Compaction keeps the promise
//! for superseded entries by itself (the change that superseded one comes later in the
//! feed). A collected tombstone would break it, so its change moves to `feed_deletes`
//! and stays there for the feed retention, and while a named consumer that acknowledged
//! within the retention has not read past it. Dropping one raises the oldest position
//! the feed resumes after (meta `feed_oldest`); so does a snapshot, whose documents
//! come without feed positions.

use crate::error::{SqlContext, StoreError};
use crate::rows::{corrupt, oplog_entry, replica_id};
use cbddc_core::{
    Change, ChangePage, FeedConsumer, FeedRetention, MergedChange, OplogEntry, StorageError,
};
use rusqlite::{Connection, OptionalExtension, params};

/// A page of the change feed reads at most this many positions, matching or not, so a
/// filter on a rare collection never turns one page into a scan of the whole feed.
const MAX_CHANGES_SCANNED: u64 = 10_000;

/// The feed no longer holds everything after the position asked for: it can resume only
/// after this one or later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FeedCompacted {
    pub(crate) oldest: u64,
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn sql(operation: &'static str) -> impl FnOnce(rusqlite::Error) -> StorageError {
    move |source| StoreError::Sqlite { operation, source }.into()
}

fn meta_position(conn: &Connection, key: &str) -> Result<u64, StoreError> {
    const OP: &str = "reading the change feed";
    let text: Option<String> = conn
        .prepare_cached("SELECT value FROM meta WHERE key = ?1")
        .and_then(|mut stmt| stmt.query_row([key], |r| r.get(0)).optional())
        .during(OP)?;
    match text {
        None => Ok(0),
        Some(text) => text
            .parse()
            .map_err(|_| corrupt(OP, format!("meta.{key} is {text:?}"))),
    }
}

/// Raises meta `key` to `position` (a position kept there never goes down).
fn raise_meta_position(conn: &Connection, key: &str, position: u64) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value
             WHERE CAST(value AS INTEGER) < CAST(excluded.value AS INTEGER)",
    )?
    .execute(params![key, position.to_string()])
    .map(|_| ())
}

/// The oldest position the feed can resume after (0: any).
pub(crate) fn oldest(conn: &Connection) -> Result<u64, StoreError> {
    meta_position(conn, "feed_oldest")
}

/// Makes `position` the oldest the feed can resume after, if it is later than that.
pub(crate) fn raise_oldest(conn: &Connection, position: u64) -> Result<(), StorageError> {
    raise_meta_position(conn, "feed_oldest", position)
        .map_err(sql("raising the feed's oldest position"))
}

/// The last position the feed handed out, including positions whose change rows
/// compaction removed since: positions are never handed out twice, restarts included.
pub(crate) fn last_position(conn: &Connection) -> Result<u64, StoreError> {
    const OP: &str = "reading the change feed";
    let rows: i64 = conn
        .query_row(
            "SELECT max(COALESCE((SELECT MAX(position) FROM changes), 0),
                        COALESCE((SELECT MAX(position) FROM feed_deletes), 0))",
            [],
            |r| r.get(0),
        )
        .during(OP)?;
    let rows = u64::try_from(rows).map_err(|_| corrupt(OP, rows))?;
    Ok(rows
        .max(meta_position(conn, "feed_last")?)
        .max(oldest(conn)?))
}

/// Changes after `after` (see `DocumentStore::changes_after`), read in one transaction
/// with the oldest position, so a delete dropped meanwhile cannot slip between them.
pub(crate) fn changes_after(
    conn: &Connection,
    after: u64,
    collection: Option<&str>,
    limit: usize,
) -> Result<Result<ChangePage, FeedCompacted>, StoreError> {
    crate::rows::consistently(conn, "reading the change feed", |conn| {
        let oldest = oldest(conn)?;
        if after < oldest {
            return Ok(Err(FeedCompacted { oldest }));
        }
        page_after(conn, after, collection, limit).map(Ok)
    })
}

fn page_after(
    conn: &Connection,
    after: u64,
    collection: Option<&str>,
    limit: usize,
) -> Result<ChangePage, StoreError> {
    const OP: &str = "reading the change feed";
    let last_position = last_position(conn)?;
    let upto = after.saturating_add(MAX_CHANGES_SCANNED).min(last_position);
    let mut page = ChangePage {
        changes: Vec::new(),
        scanned_to: after.max(upto),
        last_position,
    };
    if after >= last_position || limit == 0 {
        page.scanned_to = after;
        return Ok(page);
    }
    // Changes whose entries the oplog holds, and the deletes the feed kept after their
    // tombstones were collected.
    let mut stmt = conn
        .prepare_cached(
            "SELECT position, origin, seq, collection, key, value, hlc_wall, hlc_counter, node,
                    field, merged, document
             FROM (
                 SELECT c.position, o.origin, o.seq, o.collection, o.key, o.value, o.hlc_wall,
                        o.hlc_counter, o.node, o.field, c.merged,
                        CASE WHEN c.merged IS NULL THEN NULL ELSE (
                            SELECT d.value FROM documents d
                            WHERE d.collection = o.collection AND d.key = o.key
                        ) END AS document
                 FROM changes c JOIN oplog o ON o.origin = c.origin AND o.seq = c.seq
                 WHERE c.position > ?1 AND c.position <= ?2
                   AND (?3 IS NULL OR o.collection = ?3)
                 UNION ALL
                 SELECT position, origin, seq, collection, key, NULL, hlc_wall, hlc_counter,
                        node, NULL, NULL, NULL
                 FROM feed_deletes
                 WHERE position > ?1 AND position <= ?2 AND (?3 IS NULL OR collection = ?3)
             )
             ORDER BY position LIMIT ?4",
        )
        .during(OP)?;
    let rows = stmt
        .query_map(
            params![
                to_i64(after),
                to_i64(upto),
                collection,
                to_i64(limit as u64)
            ],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, Option<String>>(5)?,
                    r.get::<_, i64>(6)?,
                    r.get::<_, u32>(7)?,
                    r.get::<_, String>(8)?,
                    r.get::<_, Option<String>>(9)?,
                    r.get::<_, Option<String>>(10)?,
                    r.get::<_, Option<String>>(11)?,
                ))
            },
        )
        .during(OP)?;
    for row in rows {
        let (
            position,
            origin,
            seq,
            collection,
            key,
            value,
            wall,
            counter,
            node,
            field,
            merged,
            document,
        ) = row.during(OP)?;
        let entry = oplog_entry(
            replica_id(&origin, OP)?,
            u64::try_from(seq).map_err(|_| corrupt(OP, seq))?,
            (collection, key, value, field),
            (wall, counter),
            &node,
        )?;
        page.changes.push(Change {
            position: u64::try_from(position).map_err(|_| corrupt(OP, position))?,
            entry,
            merged: merged
                .map(|text| merged_change(&text, document))
                .transpose()?,
        });
    }
    if page.changes.len() >= limit
        && let Some(last) = page.changes.last()
    {
        // The page is full: positions after its last change are not read yet.
        page.scanned_to = last.position;
    }
    Ok(page)
}

/// The live documents after `after` in `(collection, key)` order, each as the entry
/// that wrote it (see `DocumentStore::current_state`).
pub(crate) fn current_state(
    conn: &Connection,
    collection: Option<&str>,
    after: Option<&(String, String)>,
    limit: usize,
) -> Result<Vec<OplogEntry>, StoreError> {
    const OP: &str = "reading the current state";
    let (after_collection, after_key) = after
        .map(|(c, k)| (c.as_str(), k.as_str()))
        .unwrap_or(("", ""));
    let mut stmt = conn
        .prepare_cached(
            "SELECT d.hlc_node, COALESCE(d.seq, 0), d.collection, d.key, d.value, d.hlc_wall,
                    d.hlc_counter, COALESCE(o.node, '')
             FROM documents d LEFT JOIN oplog o ON o.origin = d.hlc_node AND o.seq = d.seq
             WHERE (d.collection, d.key) > (?1, ?2) AND d.value IS NOT NULL
               AND (?3 IS NULL OR d.collection = ?3)
             ORDER BY d.collection, d.key LIMIT ?4",
        )
        .during(OP)?;
    let rows = stmt
        .query_map(
            params![
                after_collection,
                after_key,
                collection,
                to_i64(limit as u64)
            ],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, u32>(6)?,
                    r.get::<_, String>(7)?,
                ))
            },
        )
        .during(OP)?;
    let mut out = Vec::new();
    for row in rows {
        let (origin, seq, collection, key, value, wall, counter, node) = row.during(OP)?;
        out.push(oplog_entry(
            replica_id(&origin, OP)?,
            u64::try_from(seq).map_err(|_| corrupt(OP, seq))?,
            (collection, key, value, None),
            (wall, counter),
            &node,
        )?);
    }
    Ok(out)
}

/// What a merged change left: the paths `field_apply` recorded, and the document as its
/// row holds it now.
fn merged_change(text: &str, document: Option<String>) -> Result<MergedChange, StoreError> {
    const OP: &str = "reading a merged change";
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| corrupt(OP, e))?;
    let paths = value
        .get("paths")
        .and_then(serde_json::Value::as_array)
        .map(|paths| {
            paths
                .iter()
                .filter_map(|p| p.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    Ok(MergedChange { document, paths })
}

/// Compaction is about to collect the tombstone whose change is at `position`: the
/// feed keeps that delete (taken over at `now_ms`).
pub(crate) fn keep_delete(
    conn: &Connection,
    position: i64,
    now_ms: u64,
) -> Result<(), StorageError> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO feed_deletes
             (position, collection, key, hlc_wall, hlc_counter, origin, seq, node, kept_ms)
         SELECT c.position, o.collection, o.key, o.hlc_wall, o.hlc_counter, o.origin, o.seq,
                o.node, ?2
         FROM changes c JOIN oplog o ON o.origin = c.origin AND o.seq = c.seq
         WHERE c.position = ?1 AND o.value IS NULL",
    )
    .and_then(|mut stmt| stmt.execute(params![position, to_i64(now_ms)]))
    .map(|_| ())
    .map_err(sql("keeping a delete in the change feed"))
}

/// Compaction removed change rows up to `position`: the feed remembers it handed it out.
pub(crate) fn removed_changes_upto(conn: &Connection, position: i64) -> Result<(), StorageError> {
    raise_meta_position(conn, "feed_last", u64::try_from(position).unwrap_or(0))
        .map_err(sql("recording the feed's last position"))
}

/// Whether some kept delete may leave the feed under `retention`.
pub(crate) fn has_expired(
    conn: &Connection,
    retention: &FeedRetention,
) -> Result<bool, StorageError> {
    if retention.cutoff_ms == 0 {
        return Ok(false);
    }
    conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM feed_deletes WHERE kept_ms < ?1 AND position <= ?2)",
    )
    .and_then(|mut stmt| {
        stmt.query_row(
            params![
                to_i64(retention.cutoff_ms),
                to_i64(retention.hold_after.unwrap_or(u64::MAX))
            ],
            |r| r.get(0),
        )
    })
    .map_err(sql("reading the change feed's kept deletes"))
}

/// Drops up to `budget` kept deletes that `retention` lets go, raising the feed's oldest
/// position past them; returns how many.
pub(crate) fn drop_expired(
    conn: &Connection,
    retention: &FeedRetention,
    budget: usize,
) -> Result<u64, StorageError> {
    if retention.cutoff_ms == 0 || budget == 0 {
        return Ok(0);
    }
    let args = params![
        to_i64(retention.cutoff_ms),
        to_i64(retention.hold_after.unwrap_or(u64::MAX)),
        to_i64(budget as u64)
    ];
    const EXPIRED: &str = "SELECT position FROM feed_deletes WHERE kept_ms < ?1 AND position <= ?2
                           ORDER BY position LIMIT ?3";
    let highest: Option<i64> = conn
        .prepare_cached(&format!("SELECT MAX(position) FROM ({EXPIRED})"))
        .and_then(|mut stmt| stmt.query_row(args, |r| r.get(0)))
        .map_err(sql("reading deletes past the feed retention"))?;
    let dropped = conn
        .prepare_cached(&format!(
            "DELETE FROM feed_deletes WHERE position IN ({EXPIRED})"
        ))
        .and_then(|mut stmt| stmt.execute(args))
        .map_err(sql("dropping deletes past the feed retention"))?;
    if let Some(highest) = highest {
        raise_oldest(conn, u64::try_from(highest).unwrap_or(0))?;
    }
    Ok(dropped as u64)
}

/// How many deletes the feed keeps, and the oldest position it can resume after.
pub(crate) fn stats(conn: &Connection) -> Result<(u64, u64), StoreError> {
    let kept: i64 = conn
        .query_row("SELECT COUNT(*) FROM feed_deletes", [], |r| r.get(0))
        .during("counting the change feed's kept deletes")?;
    Ok((kept.max(0) as u64, oldest(conn)?))
}

/// The named consumers, by name.
pub(crate) fn consumers(conn: &Connection) -> Result<Vec<FeedConsumer>, StoreError> {
    const OP: &str = "reading the feed's consumers";
    let mut stmt = conn
        .prepare_cached("SELECT name, position, acked_ms FROM feed_consumers ORDER BY name")
        .during(OP)?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .during(OP)?;
    let mut out = Vec::new();
    for row in rows {
        let (name, position, acked) = row.during(OP)?;
        out.push(FeedConsumer {
            name,
            position: u64::try_from(position).map_err(|_| corrupt(OP, position))?,
            acked_ms: u64::try_from(acked).unwrap_or(0),
        });
    }
    Ok(out)
}

/// Records consumer `name`'s acknowledged position.
pub(crate) fn acknowledge(
    conn: &Connection,
    name: &str,
    position: u64,
) -> Result<(), StorageError> {
    conn.prepare_cached(
        "INSERT INTO feed_consumers (name, position, acked_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO UPDATE SET position = excluded.position,
                 acked_ms = excluded.acked_ms",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            name,
            to_i64(position),
            to_i64(cbddc_core::unix_millis())
        ])
    })
    .map(|_| ())
    .map_err(sql("recording a feed consumer's position"))
}

/// Forgets consumer `name`; whether it was known.
pub(crate) fn forget(conn: &Connection, name: &str) -> Result<bool, StorageError> {
    conn.prepare_cached("DELETE FROM feed_consumers WHERE name = ?1")
        .and_then(|mut stmt| stmt.execute([name]))
        .map(|n| n > 0)
        .map_err(sql("forgetting a feed consumer"))
}
