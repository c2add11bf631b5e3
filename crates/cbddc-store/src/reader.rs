//! Read-only connections, used on tokio's blocking pool.

use crate::error::{SqlContext, StoreError};
use crate::rows::{
    consistently, corrupt, node_id, oplog_entry, read_version_vector, replica_id, stamp,
    vector_from,
};
use cbddc_core::{
    Document, EntryPage, Interest, KnownPeer, NodeId, PageLimits, PeerType, ReplicaId,
    StorageError, StoreStats, VersionVector,
};
use rusqlite::{Connection, OptionalExtension, params};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Idle read connections are kept up to this number.
const MAX_IDLE_READERS: usize = 8;

#[derive(Debug)]
pub(crate) struct ReaderPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    closed: AtomicBool,
}

impl ReaderPool {
    pub(crate) fn new(path: PathBuf) -> Self {
        Self {
            path,
            idle: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
        }
    }

    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Runs `read` on a pooled connection on the blocking pool.
    pub(crate) async fn read<T, F>(self: &Arc<Self>, read: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        if self.closed.load(Ordering::SeqCst) {
            return Err(StorageError::Closed);
        }
        let pool = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let conn = pool.take()?;
            let result = read(&conn);
            pool.give(conn);
            result.map_err(StorageError::from)
        })
        .await
        .map_err(|e| StorageError::Backend {
            operation: "reading",
            message: format!("the read task failed: {e}"),
        })?
    }

    fn take(&self) -> Result<Connection, StorageError> {
        if let Some(conn) = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            return Ok(conn);
        }
        Ok(crate::schema::open_reader(&self.path)?)
    }

    fn give(&self, conn: Connection) {
        if self.closed.load(Ordering::SeqCst) {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
    }
}

/// The replicas this database has been (its own history), oldest first.
pub(crate) fn local_replicas(conn: &Connection) -> Result<Vec<ReplicaId>, StoreError> {
    const OP: &str = "reading the local replicas";
    let mut stmt = conn
        .prepare_cached("SELECT replica FROM local_replicas ORDER BY opened_ms, replica")
        .during(OP)?;
    let rows = stmt
        .query_map([], |row| row.get::<_, String>(0))
        .during(OP)?;
    let mut out = Vec::new();
    for row in rows {
        out.push(replica_id(&row.during(OP)?, OP)?);
    }
    Ok(out)
}

pub(crate) fn get(
    conn: &Connection,
    collection: &str,
    key: &str,
) -> Result<Option<Document>, StoreError> {
    let row: Option<(String, i64, u32, String)> = conn
        .prepare_cached(
            "SELECT value, hlc_wall, hlc_counter, hlc_node FROM documents
             WHERE collection = ?1 AND key = ?2 AND value IS NOT NULL",
        )
        .and_then(|mut stmt| {
            stmt.query_row(params![collection, key], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()
        })
        .during("reading a document")?;
    row.map(|(value, wall, counter, node)| {
        Ok(Document {
            collection: collection.to_string(),
            key: key.to_string(),
            value,
            hlc: stamp(wall, counter, &node)?,
        })
    })
    .transpose()
}

pub(crate) fn list(
    conn: &Connection,
    collection: &str,
    after_key: Option<&str>,
    limit: usize,
) -> Result<Vec<Document>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT key, value, hlc_wall, hlc_counter, hlc_node FROM documents
             WHERE collection = ?1 AND key > ?2 AND value IS NOT NULL
             ORDER BY key LIMIT ?3",
        )
        .during("listing a collection")?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = stmt
        .query_map(params![collection, after_key.unwrap_or(""), limit], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, u32>(3)?,
                r.get::<_, String>(4)?,
            ))
        })
        .during("listing a collection")?;
    let mut out = Vec::new();
    for row in rows {
        let (key, value, wall, counter, node) = row.during("listing a collection")?;
        out.push(Document {
            collection: collection.to_string(),
            key,
            value,
            hlc: stamp(wall, counter, &node)?,
        });
    }
    Ok(out)
}

/// A page reads at most this many entries per entry it returns, matching the wanted
/// collections or not, so a filter never turns one page into a scan of the whole oplog.
const MAX_SCANNED_PER_ENTRY: usize = 16;

/// Entries `theirs` lacks, of the collections `wanted` only. Where this store replicates
/// every collection `wanted` names (`ours` covers it), its gaps (entries of collections it
/// does not replicate) hold nothing the receiver wants, and the page speaks for them too;
/// otherwise it speaks only for the stretch before an origin's first gap.
pub(crate) fn entries_missing_from(
    conn: &Connection,
    theirs: &VersionVector,
    limits: PageLimits,
    wanted: &Interest,
    ours_interest: &Interest,
) -> Result<EntryPage, StoreError> {
    // The version vector, what was collected and the entries agree.
    consistently(conn, "reading the oplog", |c| {
        entries_in(c, theirs, limits, wanted, ours_interest)
    })
}

fn entries_in(
    conn: &Connection,
    theirs: &VersionVector,
    limits: PageLimits,
    wanted: &Interest,
    ours_interest: &Interest,
) -> Result<EntryPage, StoreError> {
    const OP: &str = "reading the oplog";
    let ours = read_version_vector(conn)?;
    let collected = crate::compaction::collected_upto(conn)?;
    if ours
        .iter()
        .any(|(origin, seq)| seq > theirs.get(origin) && theirs.get(origin) < collected.get(origin))
    {
        return Ok(EntryPage {
            behind: true,
            ..EntryPage::default()
        });
    }
    let gaps_are_foreign = ours_interest.covers(wanted);
    let behind: Vec<(ReplicaId, u64, u64)> = ours
        .iter()
        .filter(|(origin, seq)| *seq > theirs.get(origin))
        .map(|(origin, seq)| (origin.clone(), theirs.get(origin), seq))
        .collect();
    let mut page = EntryPage::default();
    let mut bytes = 0usize;
    let max_entries = limits.max_entries.max(1);
    let mut scan_budget = max_entries.saturating_mul(MAX_SCANNED_PER_ENTRY);
    let mut stmt = conn
        .prepare_cached(
            "SELECT seq, collection, key, value, hlc_wall, hlc_counter, node, field FROM oplog
             WHERE origin = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
        )
        .during(OP)?;
    for (origin, from, to) in &behind {
        let rows = stmt
            .query_map(
                params![origin.as_str(), *from as i64, (scan_budget + 1) as i64],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, Option<String>>(3)?,
                        r.get::<_, i64>(4)?,
                        r.get::<_, u32>(5)?,
                        r.get::<_, String>(6)?,
                        r.get::<_, Option<String>>(7)?,
                    ))
                },
            )
            .during(OP)?;
        // Every entry up to `spoken` is in the page or not wanted.
        let mut spoken = *from;
        let mut full = false;
        let mut gap = false;
        for row in rows {
            let (seq, collection, key, value, wall, counter, node, field) = row.during(OP)?;
            let seq = u64::try_from(seq).map_err(|_| corrupt(OP, seq))?;
            if seq != spoken + 1 {
                if ours_interest.is_all() {
                    // A store of every collection has no gaps: never skip past a hole.
                    return Err(corrupt(
                        OP,
                        format!("origin {origin} lacks entry {} in the oplog", spoken + 1),
                    ));
                }
                if !gaps_are_foreign {
                    gap = true;
                    break;
                }
            }
            if scan_budget == 0 || page.entries.len() >= max_entries {
                full = true;
                break;
            }
            scan_budget -= 1;
            if wanted.includes(&collection) {
                let entry = oplog_entry(
                    origin.clone(),
                    seq,
                    (collection, key, value, field),
                    (wall, counter),
                    &node,
                )?;
                let size = entry.approx_size();
                if !page.entries.is_empty() && bytes + size > limits.max_bytes {
                    full = true;
                    break;
                }
                bytes += size;
                page.entries.push(entry);
            }
            spoken = seq;
        }
        if !full && !gap && spoken < *to {
            if ours_interest.is_all() {
                return Err(corrupt(
                    OP,
                    format!(
                        "origin {origin} has entries up to {to} but the oplog stops at {spoken}"
                    ),
                ));
            }
            if gaps_are_foreign {
                // What follows the last entry up to our vector is a gap, foreign to them.
                spoken = *to;
            }
        }
        page.coverage.cover(origin, *from, spoken);
        if full {
            page.more = true;
            return Ok(page);
        }
    }
    Ok(page)
}

pub(crate) fn stats(conn: &Connection) -> Result<StoreStats, StoreError> {
    let documents: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM documents WHERE value IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .during("counting documents")?;
    let oplog_entries: i64 = conn
        .query_row("SELECT COUNT(*) FROM oplog", [], |r| r.get(0))
        .during("counting oplog entries")?;
    let collectable: i64 = conn
        .query_row("SELECT COUNT(*) FROM collectable", [], |r| r.get(0))
        .during("counting collectable entries")?;
    let field_states: i64 = conn
        .query_row("SELECT COUNT(*) FROM field_states", [], |r| r.get(0))
        .during("counting field states")?;
    let collected: Option<String> = conn
        .query_row("SELECT value FROM meta WHERE key = 'collected'", [], |r| {
            r.get(0)
        })
        .optional()
        .during("reading the collected count")?;
    Ok(StoreStats {
        documents: documents.max(0) as u64,
        oplog_entries: oplog_entries.max(0) as u64,
        collectable: collectable.max(0) as u64,
        collected: collected.and_then(|c| c.parse().ok()).unwrap_or(0),
        field_states: field_states.max(0) as u64,
        ..StoreStats::default()
    })
}

pub(crate) fn list_peers(conn: &Connection) -> Result<Vec<KnownPeer>, StoreError> {
    const OP: &str = "listing known peers";
    let mut stmt = conn
        .prepare_cached(
            "SELECT node_id, address, peer_type, enabled FROM known_peers ORDER BY node_id",
        )
        .during(OP)?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, bool>(3)?,
            ))
        })
        .during(OP)?;
    let mut peers = Vec::new();
    for row in rows {
        let (id, address, peer_type, enabled) = row.during(OP)?;
        peers.push(KnownPeer {
            node_id: node_id(&id, OP)?,
            address,
            peer_type: PeerType::parse(&peer_type)
                .ok_or_else(|| corrupt(OP, format!("peer type {peer_type:?}")))?,
            enabled,
        });
    }
    Ok(peers)
}

pub(crate) fn pinned_keys(conn: &Connection) -> Result<Vec<(NodeId, String)>, StoreError> {
    const OP: &str = "listing pinned node keys";
    let mut stmt = conn
        .prepare_cached("SELECT node_id, public_key FROM pinned_keys ORDER BY node_id")
        .during(OP)?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .during(OP)?;
    let mut out = Vec::new();
    for row in rows {
        let (id, key) = row.during(OP)?;
        out.push((node_id(&id, OP)?, key));
    }
    Ok(out)
}

pub(crate) fn floors(conn: &Connection) -> Result<VersionVector, StoreError> {
    vector_from(
        conn,
        "SELECT replica, floor FROM replica_floors",
        "reading the floors",
    )
}
