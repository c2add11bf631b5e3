//! One step of oplog compaction, on the writer's connection inside a transaction of its
//! own. The work comes from `collectable`, which the writer (`document_write`) and the
//! delete trigger on `documents` fill: an entry lands there when it stops being its
//! document's winner, and a winning delete lands there flagged as a tombstone.

use crate::error::StoreError;
use cbddc_core::{CompactionOutcome, CompactionPlan, PeerAck, StorageError, VersionVector};
use rusqlite::{Connection, OptionalExtension, params};

fn sql(operation: &'static str) -> impl FnOnce(rusqlite::Error) -> StorageError {
    move |source| StoreError::Sqlite { operation, source }.into()
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Persists the plan's acknowledgements, then removes what its horizons allow, at most
/// `plan.max_entries` entries.
pub(crate) fn compact(
    conn: &Connection,
    plan: &CompactionPlan,
) -> Result<CompactionOutcome, StorageError> {
    record_acks(conn, &plan.acks, &plan.forget)?;
    let mut outcome = CompactionOutcome::default();
    let mut budget = plan.max_entries.max(1);
    let now_ms = cbddc_core::unix_millis();
    for (tombstones, horizon) in [(false, &plan.horizon), (true, &plan.tombstone_horizon)] {
        for (origin, upto) in horizon.iter() {
            if budget == 0 {
                outcome.more = true;
                return finish(conn, outcome);
            }
            let removed = collect_origin(conn, origin.as_str(), upto, tombstones, budget, now_ms)?;
            budget -= removed;
            if tombstones {
                outcome.tombstones += removed as u64;
            } else {
                outcome.entries += removed as u64;
            }
        }
    }
    outcome.settled = settle_states(conn, &plan.tombstone_horizon, budget)?;
    outcome.feed_dropped = crate::feed::drop_expired(conn, &plan.feed, budget)?;
    if outcome.feed_dropped as usize >= budget {
        outcome.more = true;
    }
    finish(conn, outcome)
}

/// A step gives at most this many free pages back to the file system.
const VACUUM_PAGES: i64 = 4_096;

fn finish(
    conn: &Connection,
    outcome: CompactionOutcome,
) -> Result<CompactionOutcome, StorageError> {
    let removed = outcome.entries + outcome.tombstones;
    if !outcome.more {
        give_back_free_pages(conn)?;
    }
    if removed > 0 {
        conn.prepare_cached(
            "INSERT INTO meta (key, value) VALUES ('collected', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = CAST(value AS INTEGER) + ?1",
        )
        .and_then(|mut stmt| stmt.execute([to_i64(removed)]))
        .map_err(sql("counting collected entries"))?;
    }
    Ok(outcome)
}

/// Whether a tenth of the file is free pages that incremental vacuum can hand back (never
/// for a database created before incremental vacuum was chosen: its free pages are
/// reused instead).
fn many_free_pages(conn: &Connection) -> Result<Option<i64>, StorageError> {
    let read = |pragma: &str| -> Result<i64, StorageError> {
        conn.query_row(pragma, [], |r| r.get(0))
            .map_err(sql("reading the free pages"))
    };
    if read("PRAGMA auto_vacuum")? != 2 {
        return Ok(None);
    }
    let free = read("PRAGMA freelist_count")?;
    Ok((free > 64 && free * 10 > read("PRAGMA page_count")?).then_some(free))
}

/// Once a tenth of the file is free pages, hands some back.
fn give_back_free_pages(conn: &Connection) -> Result<(), StorageError> {
    if let Some(free) = many_free_pages(conn)? {
        // The pragma frees one page per step of its statement: run it to the end (one
        // `execute` would hand back a single page).
        let mut stmt = conn
            .prepare(&format!(
                "PRAGMA incremental_vacuum({})",
                free.min(VACUUM_PAGES)
            ))
            .map_err(sql("giving free pages back"))?;
        let mut rows = stmt.query([]).map_err(sql("giving free pages back"))?;
        while rows
            .next()
            .map_err(sql("giving free pages back"))?
            .is_some()
        {}
    }
    Ok(())
}

/// Drops the field states of documents whose latest write is under `horizon` (the
/// tombstone horizon: every peer holds it and everything it held before, so every write
/// still to come is stamped after it). Such a state and the one its row stands for
/// (`FieldState::from_whole`) merge every later write alike, so the row alone is kept.
/// A state that holds counters stays: its tallies decide how later writes count. Looks
/// at up to `budget` states per step, round the table from where the last step stopped
/// (meta `settle_after`). Returns how many it dropped.
fn settle_states(
    conn: &Connection,
    horizon: &VersionVector,
    budget: usize,
) -> Result<u64, StorageError> {
    const OP: &str = "settling field states";
    if budget == 0 || horizon.is_empty() {
        return Ok(0);
    }
    let after: String = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'settle_after'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(sql(OP))?
        .unwrap_or_default();
    let (after_collection, after_key) = after.split_once('\n').unwrap_or(("", ""));
    type Row = (String, String, String, String, Option<i64>);
    let rows: Vec<Row> = {
        let mut stmt = conn
            .prepare_cached(
                "SELECT f.collection, f.key, f.state, d.hlc_node, d.seq
                 FROM field_states f JOIN documents d
                     ON d.collection = f.collection AND d.key = f.key
                 WHERE (f.collection, f.key) > (?1, ?2)
                 ORDER BY f.collection, f.key LIMIT ?3",
            )
            .map_err(sql(OP))?;
        let rows = stmt
            .query_map(
                params![after_collection, after_key, to_i64(budget as u64)],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .map_err(sql(OP))?;
        rows.collect::<Result<_, _>>().map_err(sql(OP))?
    };
    let mut drop_state = conn
        .prepare_cached("DELETE FROM field_states WHERE collection = ?1 AND key = ?2")
        .map_err(sql(OP))?;
    let mut settled = 0;
    for (collection, key, state, replica, seq) in &rows {
        let under = cbddc_core::ReplicaId::new(replica).is_ok_and(|r| {
            seq.and_then(|s| u64::try_from(s).ok())
                .is_some_and(|s| s <= horizon.get(&r))
        });
        // Parsed only once it could go.
        if under && cbddc_core::field_merge::FieldState::stored_has_counters(state) == Some(false) {
            settled += drop_state
                .execute(params![collection, key])
                .map_err(sql(OP))? as u64;
        }
    }
    let next = match rows.last() {
        // A short read reached the end: the next step starts from the beginning.
        Some((collection, key, ..)) if rows.len() == budget => format!("{collection}\n{key}"),
        _ => String::new(),
    };
    if next != after {
        crate::rows::set_meta(conn, "settle_after", &next).map_err(sql(OP))?;
    }
    Ok(settled)
}

/// A queued entry: its sequence number, its change position, and its document's place
/// (none if the entry is gone already).
type Queued = (i64, Option<i64>, Option<(String, String)>);

/// Removes up to `budget` queued entries of `origin` up to `upto` (tombstones, with
/// their document rows, or superseded entries), returning how many. A tombstone's
/// change stays in the feed as a kept delete (taken over at `now_ms`).
fn collect_origin(
    conn: &Connection,
    origin: &str,
    upto: u64,
    tombstones: bool,
    budget: usize,
    now_ms: u64,
) -> Result<usize, StorageError> {
    let queued: Vec<Queued> = {
        let mut stmt = conn
            .prepare_cached(
                "SELECT q.seq, q.position, o.collection, o.key FROM collectable q
                 LEFT JOIN oplog o ON o.origin = q.origin AND o.seq = q.seq
                 WHERE q.origin = ?1 AND q.seq <= ?2 AND q.tombstone = ?3
                 ORDER BY q.seq LIMIT ?4",
            )
            .map_err(sql("reading the compaction queue"))?;
        let rows = stmt
            .query_map(
                params![origin, to_i64(upto), tombstones, to_i64(budget as u64)],
                |r| {
                    let collection: Option<String> = r.get(2)?;
                    let key: Option<String> = r.get(3)?;
                    Ok((r.get(0)?, r.get(1)?, collection.zip(key)))
                },
            )
            .map_err(sql("reading the compaction queue"))?;
        rows.collect::<Result<_, _>>()
            .map_err(sql("reading the compaction queue"))?
    };
    let mut drop_row = conn
        .prepare_cached(
            "DELETE FROM documents WHERE collection = ?1 AND key = ?2 AND hlc_node = ?3
                 AND seq = ?4 AND value IS NULL",
        )
        .map_err(sql("preparing a tombstone removal"))?;
    let mut drop_entry = conn
        .prepare_cached("DELETE FROM oplog WHERE origin = ?1 AND seq = ?2")
        .map_err(sql("preparing an oplog removal"))?;
    let mut drop_change = conn
        .prepare_cached("DELETE FROM changes WHERE position = ?1")
        .map_err(sql("preparing a change removal"))?;
    let mut forget_state = conn
        .prepare_cached("DELETE FROM field_states WHERE collection = ?1 AND key = ?2")
        .map_err(sql("preparing a field state removal"))?;
    let mut dequeue = conn
        .prepare_cached("DELETE FROM collectable WHERE origin = ?1 AND seq = ?2")
        .map_err(sql("preparing a dequeue"))?;
    let mut highest = 0;
    let mut highest_change = 0;
    for (seq, position, place) in &queued {
        if tombstones && let Some((collection, key)) = place {
            let dropped = drop_row
                .execute(params![collection, key, origin, seq])
                .map_err(sql("removing a tombstone"))?;
            if dropped > 0 {
                // Every peer holds the delete and everything before it: whatever writes
                // still come are stamped after it, and merge into nothing as well.
                forget_state
                    .execute(params![collection, key])
                    .map_err(sql("removing a tombstone's field state"))?;
            }
        }
        if let Some(position) = position {
            if tombstones {
                crate::feed::keep_delete(conn, *position, now_ms)?;
            }
            drop_change
                .execute([position])
                .map_err(sql("removing a change"))?;
            highest_change = highest_change.max(*position);
        }
        drop_entry
            .execute(params![origin, seq])
            .map_err(sql("removing an oplog entry"))?;
        // Also drops what the tombstone row's removal queued.
        dequeue
            .execute(params![origin, seq])
            .map_err(sql("dequeuing an entry"))?;
        highest = highest.max(*seq);
    }
    if highest > 0 {
        raise_collected(conn, origin, highest)?;
    }
    if highest_change > 0 {
        crate::feed::removed_changes_upto(conn, highest_change)?;
    }
    Ok(queued.len())
}

/// Whether nothing waits for compaction under `plan`: nothing queued, no field state to
/// look at, no free pages to hand back, and no delete the change feed may drop.
pub(crate) fn nothing_to_do(
    conn: &Connection,
    plan: &CompactionPlan,
) -> Result<bool, StorageError> {
    let queue_empty: bool = conn
        .prepare_cached(
            "SELECT NOT EXISTS (SELECT 1 FROM collectable)
                AND NOT EXISTS (SELECT 1 FROM field_states)",
        )
        .and_then(|mut stmt| stmt.query_row([], |r| r.get(0)))
        .map_err(sql("reading the compaction queue"))?;
    Ok(queue_empty
        && many_free_pages(conn)?.is_none()
        && !crate::feed::has_expired(conn, &plan.feed)?)
}

/// Records that entries of `origin` up to `upto` may be missing here.
pub(crate) fn raise_collected(
    conn: &Connection,
    origin: &str,
    upto: i64,
) -> Result<(), StorageError> {
    conn.prepare_cached(
        "INSERT INTO oplog_collected (origin, upto) VALUES (?1, ?2)
             ON CONFLICT (origin) DO UPDATE SET upto = max(upto, excluded.upto)",
    )
    .and_then(|mut stmt| stmt.execute(params![origin, upto]))
    .map(|_| ())
    .map_err(sql("recording what compaction removed"))
}

fn record_acks(
    conn: &Connection,
    acks: &[PeerAck],
    forget: &[cbddc_core::NodeId],
) -> Result<(), StorageError> {
    let mut save = conn
        .prepare_cached(
            "INSERT INTO peer_acks (node_id, holds, acked_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (node_id) DO UPDATE SET holds = excluded.holds,
                     acked_ms = excluded.acked_ms",
        )
        .map_err(sql("preparing an acknowledgement"))?;
    for ack in acks {
        let holds = serde_json::to_string(&ack.holds).map_err(|e| StorageError::Backend {
            operation: "recording an acknowledgement",
            message: e.to_string(),
        })?;
        save.execute(params![ack.peer.as_str(), holds, to_i64(ack.at_ms)])
            .map_err(sql("recording an acknowledgement"))?;
    }
    let mut drop = conn
        .prepare_cached("DELETE FROM peer_acks WHERE node_id = ?1")
        .map_err(sql("preparing to forget an acknowledgement"))?;
    for peer in forget {
        drop.execute([peer.as_str()])
            .map_err(sql("forgetting an acknowledgement"))?;
    }
    Ok(())
}

/// The persisted acknowledgements.
pub(crate) fn peer_acks(conn: &Connection) -> Result<Vec<PeerAck>, StoreError> {
    use crate::error::SqlContext;
    const OP: &str = "reading acknowledgements";
    let mut stmt = conn
        .prepare_cached("SELECT node_id, holds, acked_ms FROM peer_acks ORDER BY node_id")
        .during(OP)?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .during(OP)?;
    let mut out = Vec::new();
    for row in rows {
        let (peer, holds, at) = row.during(OP)?;
        let corrupt = |detail: String| StoreError::Corrupt {
            operation: OP,
            detail,
        };
        out.push(PeerAck {
            peer: cbddc_core::NodeId::new(peer).map_err(|e| corrupt(e.to_string()))?,
            holds: serde_json::from_str::<VersionVector>(&holds)
                .map_err(|e| corrupt(e.to_string()))?,
            at_ms: u64::try_from(at).unwrap_or(0),
        });
    }
    Ok(out)
}

/// Per origin, the highest sequence number that may be missing from the oplog.
pub(crate) fn collected_upto(conn: &Connection) -> Result<VersionVector, StoreError> {
    crate::rows::vector_from(
        conn,
        "SELECT origin, upto FROM oplog_collected",
        "reading what compaction removed",
    )
}
