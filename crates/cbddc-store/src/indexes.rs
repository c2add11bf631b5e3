//! Indexes on documents: a table of entries per index (see [`cbddc_query::index`] for
//! what an entry holds), kept current by the writer and built in the background in key
//! order.
//!
//! - **Kept current on every path, folded in batches.** Each place the writer changes a
//!   document's value (local writes, sync, snapshots) hands the key, the value it held
//!   and the value it holds now to [`IndexSet::record`]. It appends what moved (each
//!   index's entry before and after) to `index_pending`, in the write's transaction:
//!   one row at the end of a table, where moving the entries themselves would dirty a
//!   page at a random place of every index (a write of 1,000 documents rewrote most of
//!   each index into the write-ahead log). [`IndexSet::fold`] moves the pending entries
//!   into the indexes, sorted, each page written once for many writes: when
//!   [`FOLD_AT`] writes are pending, before a query reads an index, and before an index
//!   is declared, dropped or built. A table `index_<id>` is keyed by (entry, key): one
//!   b-tree, read by range. Writes to a collection without an index cost nothing more.
//! - **Read exact.** A read finds no pending row of its collection in its own read
//!   transaction, or it is done by the writer right after a fold: an index is never read
//!   behind its documents.
//! - **Built beside writes.** A new index is recorded, then its build walks the collection
//!   in key order, a batch per transaction, adding entries; a document written meanwhile
//!   has its entry from its write, and the build adds the same entry again as a no-op.
//! - **Local.** Nothing here is in the oplog or in a snapshot: every node builds its own.

use crate::error::{SqlContext, StoreError};
use crate::rows::stamp;
use cbddc_core::{
    Document, IndexBuild, IndexDefinition, IndexPage, IndexRead, IndexStatus, StorageError,
};
use cbddc_query::Path;
use cbddc_query::pruned::Pruner;
use rusqlite::{CachedStatement, Connection, OptionalExtension, params};
use std::cell::Cell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Pending writes that make the writer fold them into the indexes at the end of the
/// transaction that reached it; also the most rows one step of a fold holds in memory.
#[cfg(not(test))]
pub(crate) const FOLD_AT: u64 = 50_000;
#[cfg(test)]
pub(crate) const FOLD_AT: u64 = 64;

/// One index as the writer keeps it current.
#[derive(Debug)]
struct Kept {
    id: i64,
    fields: Vec<Path>,
    covering: bool,
    /// Adds an entry: `?1` the entry, `?2` the key, and for a covering index `?3` the
    /// collection, whose document is copied as it is now.
    add: String,
    remove: String,
}

impl Kept {
    fn new(id: i64, definition: &IndexDefinition) -> Result<Self, StoreError> {
        Ok(Self {
            id,
            fields: paths(definition)?,
            covering: definition.covering,
            add: add_entry(id, definition.covering),
            remove: format!("DELETE FROM index_{id} WHERE entry = ?1 AND key = ?2"),
        })
    }

    /// Runs [`Kept::add`] for `key` of `collection` under `entry`.
    fn add(
        &self,
        add: &mut CachedStatement<'_>,
        entry: &[u8],
        key: &str,
        collection: &str,
    ) -> rusqlite::Result<usize> {
        if self.covering {
            add.execute(params![entry, key, collection])
        } else {
            add.execute(params![entry, key])
        }
    }
}

/// The statement that adds an entry to index `id` (see [`Kept::add`]).
fn add_entry(id: i64, covering: bool) -> String {
    if covering {
        format!(
            "INSERT OR REPLACE INTO index_{id} (entry, key, value, hlc_wall, hlc_counter, hlc_node)
             SELECT ?1, key, value, hlc_wall, hlc_counter, hlc_node FROM documents
             WHERE collection = ?3 AND key = ?2 AND value IS NOT NULL"
        )
    } else {
        format!("INSERT OR IGNORE INTO index_{id} (entry, key) VALUES (?1, ?2)")
    }
}

/// The indexes of each collection, as the writer keeps them current.
#[derive(Debug, Default)]
pub(crate) struct IndexSet {
    by_collection: HashMap<String, Vec<Kept>>,
    /// Per collection, the fields its indexes read (all a write's entries need).
    pruners: HashMap<String, Pruner>,
    /// Rows in `index_pending` (at least: a rolled-back fold leaves more).
    pending: Cell<u64>,
    /// The id of the next pending row: ids rise in the order written.
    next_pending: Cell<i64>,
    /// When the last of them was recorded.
    last_recorded: Cell<Option<Instant>>,
}

/// What a read of an index found.
#[derive(Debug)]
pub(crate) enum IndexLookup {
    /// The page read.
    Page(IndexPage),
    /// The index is not built (or not held).
    NotBuilt,
    /// Writes are pending: the writer must fold them before the index is read.
    Behind,
}

impl IndexSet {
    /// The indexes recorded in the database.
    pub(crate) fn load(conn: &Connection) -> Result<Self, StoreError> {
        let mut set = Self::default();
        for index in recorded(conn)? {
            set.by_collection
                .entry(index.definition.collection.clone())
                .or_default()
                .push(Kept::new(index.id, &index.definition)?);
        }
        set.pruners = set
            .by_collection
            .iter()
            .map(|(collection, kept)| {
                let paths = kept.iter().flat_map(|k| &k.fields);
                (collection.clone(), Pruner::new(paths))
            })
            .collect();
        let (pending, last): (i64, i64) = conn
            .query_row(
                "SELECT count(*), COALESCE(MAX(id), 0) FROM index_pending",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .during("counting the index entries pending")?;
        set.pending.set(to_u64(pending));
        set.next_pending.set(last + 1);
        Ok(set)
    }

    /// Whether writes are pending and none was recorded for `quiet_for`.
    pub(crate) fn quiet_for(&self, quiet_for: Duration) -> bool {
        self.pending.get() > 0
            && self
                .last_recorded
                .get()
                .is_none_or(|at| at.elapsed() >= quiet_for)
    }

    /// Whether enough writes are pending to fold them now.
    pub(crate) fn due(&self) -> bool {
        self.pending.get() >= FOLD_AT
    }

    /// Whether `collection` has indexes (a writer replacing a document of it reads the
    /// value it replaces, for [`IndexSet::record`]).
    pub(crate) fn covers(&self, collection: &str) -> bool {
        self.by_collection.contains_key(collection)
    }

    /// Keeps the indexes of `collection` current after `key` went from holding `old` to
    /// holding `new` (`None`: no document, or a tombstone): what moved is appended to
    /// `index_pending`, for [`IndexSet::fold`]. Nothing to do for a collection without
    /// indexes, or when no entry moved.
    pub(crate) fn record(
        &self,
        conn: &Connection,
        collection: &str,
        key: &str,
        old: Option<&str>,
        new: Option<&str>,
    ) -> rusqlite::Result<()> {
        let (Some(indexes), Some(pruner)) = (
            self.by_collection.get(collection),
            self.pruners.get(collection),
        ) else {
            return Ok(());
        };
        // Stored documents were checked on the way in; one that does not parse indexes
        // as if it held none of the fields rather than failing the write.
        let parse = |v: &str| pruner.parse(v).unwrap_or(serde_json::Value::Null);
        let (old, new) = (old.map(parse), new.map(parse));
        let mut moved = Vec::new();
        for index in indexes {
            let old = old
                .as_ref()
                .map(|d| cbddc_query::index::entry(&index.fields, d));
            let new = new
                .as_ref()
                .map(|d| cbddc_query::index::entry(&index.fields, d));
            // A covering index copies the document: any new value is a move.
            if old != new || (index.covering && new.is_some()) {
                Move {
                    index: index.id,
                    old,
                    new,
                }
                .encode(&mut moved);
            }
        }
        if moved.is_empty() {
            return Ok(());
        }
        let id = self.next_pending.get();
        conn.prepare_cached(
            "INSERT INTO index_pending (collection, id, key, moved) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![collection, id, key, moved])?;
        self.next_pending.set(id + 1);
        self.pending.set(self.pending.get() + 1);
        self.last_recorded.set(Some(Instant::now()));
        Ok(())
    }

    /// Moves every pending entry into its index, [`FOLD_AT`] rows at a time, in the
    /// caller's transaction: per index and key, the entry before the first pending write
    /// goes and the one after the last comes, deletions then insertions each in entry
    /// order.
    pub(crate) fn fold(&self, conn: &Connection) -> Result<(), StoreError> {
        const OP: &str = "folding pending writes into the indexes";
        let mut read = conn
            .prepare_cached(
                "SELECT collection, id, key, moved FROM index_pending
                 ORDER BY collection, id LIMIT ?1",
            )
            .during(OP)?;
        type Statements<'k, 'c> = (&'k str, &'k Kept, CachedStatement<'c>, CachedStatement<'c>);
        let mut statements: HashMap<i64, Statements<'_, '_>> = HashMap::new();
        for (collection, kept) in &self.by_collection {
            for kept in kept {
                let remove = conn.prepare_cached(&kept.remove).during(OP)?;
                let add = conn.prepare_cached(&kept.add).during(OP)?;
                statements.insert(kept.id, (collection.as_str(), kept, remove, add));
            }
        }
        loop {
            // Every move, sorted by index and key, each key's in the order written.
            let mut moves: Vec<(i64, String, i64, Move)> = Vec::new();
            let mut last_row: Option<(String, i64)> = None;
            let mut rows = read
                .query([i64::try_from(FOLD_AT).unwrap_or(i64::MAX)])
                .during(OP)?;
            while let Some(row) = rows.next().during(OP)? {
                let id: i64 = row.get(1).during(OP)?;
                let key: String = row.get(2).during(OP)?;
                let moved = row.get_ref(3).during(OP)?.as_blob().unwrap_or_default();
                for one in Move::decode_all(moved)? {
                    // An index belongs to one collection: its moves are in `id` order.
                    moves.push((one.index, key.clone(), id, one));
                }
                last_row = Some((row.get(0).during(OP)?, id));
            }
            drop(rows);
            let Some((last_collection, last_id)) = last_row else {
                break;
            };
            moves.sort_unstable_by(|a, b| (a.0, &a.1, a.2).cmp(&(b.0, &b.1, b.2)));
            // Per index and key: the entry before the first move goes, the one after the
            // last comes (a covering index's comes again with the document as it is now).
            let (mut removals, mut additions) = (Vec::new(), Vec::new());
            for same in moves.chunk_by(|a, b| (a.0, &a.1) == (b.0, &b.1)) {
                let (Some(first), Some(last)) = (same.first(), same.last()) else {
                    continue;
                };
                let (index, key) = (first.0, &first.1);
                let (before, after) = (&first.3.old, &last.3.new);
                let Some((_, kept, _, _)) = statements.get(&index) else {
                    continue;
                };
                if before == after && !(kept.covering && after.is_some()) {
                    continue;
                }
                if let Some(before) = before.as_ref().filter(|b| Some(*b) != after.as_ref()) {
                    removals.push((index, before, key));
                }
                if let Some(after) = after {
                    additions.push((index, after, key));
                }
            }
            removals.sort_unstable();
            additions.sort_unstable();
            for (index, entry, key) in removals {
                if let Some((_, _, remove, _)) = statements.get_mut(&index) {
                    remove.execute(params![entry, key]).during(OP)?;
                }
            }
            for (index, entry, key) in additions {
                if let Some((collection, kept, _, add)) = statements.get_mut(&index) {
                    kept.add(add, entry, key, collection).during(OP)?;
                }
            }
            conn.prepare_cached("DELETE FROM index_pending WHERE (collection, id) <= (?1, ?2)")
                .and_then(|mut s| s.execute(params![last_collection, last_id]))
                .during(OP)?;
        }
        self.pending.set(0);
        Ok(())
    }

    /// The value `collection/key` holds now, if its collection has indexes (what
    /// [`IndexSet::record`] takes as `old`).
    pub(crate) fn held(
        &self,
        conn: &Connection,
        collection: &str,
        key: &str,
    ) -> rusqlite::Result<Option<String>> {
        if !self.covers(collection) {
            return Ok(None);
        }
        Ok(conn
            .prepare_cached("SELECT value FROM documents WHERE collection = ?1 AND key = ?2")?
            .query_row(params![collection, key], |r| r.get::<_, Option<String>>(0))
            .optional()?
            .flatten())
    }
}

/// One index's entry of a document before and after a write (`None`: none), as a
/// pending row of `index_pending` holds it.
#[derive(Debug, PartialEq)]
struct Move {
    index: i64,
    old: Option<Vec<u8>>,
    new: Option<Vec<u8>>,
}

impl Move {
    /// Appends this move: the index id (8 bytes, little-endian), then the entry before
    /// and after, each `0` when there is none or `1`, its length (4 bytes) and its bytes.
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.index.to_le_bytes());
        for entry in [&self.old, &self.new] {
            match entry {
                None => out.push(0),
                Some(bytes) => {
                    out.push(1);
                    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
                    out.extend_from_slice(&len.to_le_bytes());
                    out.extend_from_slice(bytes);
                }
            }
        }
    }

    /// The moves of one pending row, in the order [`Move::encode`] appended them.
    fn decode_all(mut bytes: &[u8]) -> Result<Vec<Self>, StoreError> {
        fn take<'b>(bytes: &mut &'b [u8], n: usize) -> Result<&'b [u8], StoreError> {
            if bytes.len() < n {
                return Err(StoreError::Corrupt {
                    operation: "folding pending writes into the indexes",
                    detail: "a pending row of index_pending ends early".into(),
                });
            }
            let (head, rest) = bytes.split_at(n);
            *bytes = rest;
            Ok(head)
        }
        fn entry(bytes: &mut &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
            if take(bytes, 1)? == [0] {
                return Ok(None);
            }
            let mut len = [0u8; 4];
            len.copy_from_slice(take(bytes, 4)?);
            let len = usize::try_from(u32::from_le_bytes(len)).unwrap_or(usize::MAX);
            Ok(Some(take(bytes, len)?.to_vec()))
        }
        let mut moves = Vec::new();
        while !bytes.is_empty() {
            let mut index = [0u8; 8];
            index.copy_from_slice(take(&mut bytes, 8)?);
            moves.push(Move {
                index: i64::from_le_bytes(index),
                old: entry(&mut bytes)?,
                new: entry(&mut bytes)?,
            });
        }
        Ok(moves)
    }
}

/// An index as recorded in `indexes`.
struct Recorded {
    id: i64,
    definition: IndexDefinition,
    building: bool,
    done: u64,
    total: u64,
}

fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn recorded(conn: &Connection) -> Result<Vec<Recorded>, StoreError> {
    const OP: &str = "reading the indexes";
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, collection, fields, building, done, total, covering, copied
             FROM indexes ORDER BY id",
        )
        .during(OP)?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, bool>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, bool>(6)?,
                r.get::<_, i64>(7)?,
            ))
        })
        .during(OP)?;
    let mut out = Vec::new();
    for row in rows {
        let (id, collection, fields, building, done, total, covering, copied) = row.during(OP)?;
        let fields: Vec<String> =
            serde_json::from_str(&fields).map_err(|e| StoreError::Corrupt {
                operation: OP,
                detail: format!("the fields of index {id}: {e}"),
            })?;
        out.push(Recorded {
            id,
            definition: IndexDefinition {
                collection,
                fields,
                covering,
            },
            building,
            // A covering index's build passes over its documents twice (entries, then
            // copies): each pass is half of it.
            done: if covering {
                (to_u64(done) + to_u64(copied)) / 2
            } else {
                to_u64(done)
            },
            total: to_u64(total),
        });
    }
    Ok(out)
}

fn paths(definition: &IndexDefinition) -> Result<Vec<Path>, StoreError> {
    definition
        .fields
        .iter()
        .map(|f| Path::parse(f))
        .collect::<Result<_, _>>()
        .map_err(|e| StoreError::Corrupt {
            operation: "reading the indexes",
            detail: format!("index {}: {e}", definition.name()),
        })
}

/// Makes the recorded indexes exactly `wanted`, in the caller's transaction; the writer
/// loads its [`IndexSet`] again once it commits.
pub(crate) fn declare(conn: &Connection, wanted: &[IndexDefinition]) -> Result<(), StorageError> {
    const OP: &str = "declaring the indexes";
    let held = recorded(conn)?;
    for index in held.iter().filter(|i| !wanted.contains(&i.definition)) {
        let id = index.id;
        conn.execute_batch(&format!(
            "DROP TABLE index_{id};
             DROP TABLE IF EXISTS index_{id}_stage;
             DELETE FROM indexes WHERE id = {id};"
        ))
        .during(OP)?;
        tracing::info!(index = %index.definition.name(), "index dropped");
    }
    for definition in wanted {
        if held.iter().any(|i| &i.definition == definition) {
            continue;
        }
        if let Some(bad) = definition.fields.iter().find_map(|f| Path::parse(f).err()) {
            return Err(StorageError::Backend {
                operation: OP,
                message: format!("index {}: {bad}", definition.name()),
            });
        }
        let fields =
            serde_json::to_string(&definition.fields).map_err(|e| StorageError::Backend {
                operation: OP,
                message: e.to_string(),
            })?;
        let total: i64 = conn
            .prepare_cached(
                "SELECT count(*) FROM documents WHERE collection = ?1 AND value IS NOT NULL",
            )
            .and_then(|mut s| s.query_row([&definition.collection], |r| r.get(0)))
            .during(OP)?;
        conn.prepare_cached(
            "INSERT INTO indexes (collection, fields, building, done, total, covering)
             VALUES (?1, ?2, 1, 0, ?3, ?4)",
        )
        .and_then(|mut s| {
            s.execute(params![
                definition.collection,
                fields,
                total,
                definition.covering
            ])
        })
        .during(OP)?;
        let id = conn.last_insert_rowid();
        // A covering index's entry holds its document as `documents` does.
        let copy = if definition.covering {
            "value       TEXT NOT NULL,
             hlc_wall    INTEGER NOT NULL,
             hlc_counter INTEGER NOT NULL,
             hlc_node    TEXT NOT NULL,"
        } else {
            ""
        };
        conn.execute_batch(&format!(
            "CREATE TABLE index_{id} (
                 entry BLOB NOT NULL,
                 key   TEXT NOT NULL,
                 {copy}
                 PRIMARY KEY (entry, key)
             ) WITHOUT ROWID;"
        ))
        .during(OP)?;
        if definition.covering {
            // Its entries first, small rows in key order; then the copies, in entry order
            // (see `build`): a covering index filled in key order writes a page at a
            // random place of a large table for every document.
            conn.execute_batch(&format!(
                "CREATE TABLE index_{id}_stage (
                     entry BLOB NOT NULL,
                     key   TEXT NOT NULL,
                     PRIMARY KEY (entry, key)
                 ) WITHOUT ROWID;"
            ))
            .during(OP)?;
        }
        tracing::info!(index = %definition.name(), documents = total, "index declared; building it");
    }
    Ok(())
}

/// Adds the entries of up to `budget` documents to the first index still being built,
/// in the caller's transaction. Returns the indexes still being built after it.
pub(crate) fn build(
    conn: &Connection,
    budget: usize,
) -> Result<Vec<IndexDefinition>, StorageError> {
    const OP: &str = "building an index";
    let Some(index) = recorded(conn)?.into_iter().find(|i| i.building) else {
        return Ok(Vec::new());
    };
    let id = index.id;
    let copying: bool = conn
        .prepare_cached("SELECT copying FROM indexes WHERE id = ?1")
        .and_then(|mut s| s.query_row([id], |r| r.get(0)))
        .during(OP)?;
    let done = if copying {
        copy_step(conn, &index, budget)?
    } else {
        entries_step(conn, &index, budget)?
    };
    let building: Vec<IndexDefinition> = recorded(conn)?
        .into_iter()
        .filter(|i| i.building)
        .map(|i| i.definition)
        .collect();
    if done {
        tracing::info!(index = %index.definition.name(), building = building.len(), "index built");
    }
    Ok(building)
}

/// Adds the entries of up to `budget` documents, in key order, to the index (to its
/// stage if it is covering). Whether the index is built.
fn entries_step(conn: &Connection, index: &Recorded, budget: usize) -> Result<bool, StoreError> {
    const OP: &str = "building an index";
    let id = index.id;
    let fields = paths(&index.definition)?;
    let pruner = Pruner::new(&fields);
    let kept = Kept::new(id, &index.definition)?;
    let after: Option<String> = conn
        .prepare_cached("SELECT built_after FROM indexes WHERE id = ?1")
        .and_then(|mut s| s.query_row([id], |r| r.get(0)))
        .during(OP)?;
    let mut read = conn
        .prepare_cached(
            "SELECT key, value FROM documents WHERE collection = ?1 AND key > ?2
             ORDER BY key LIMIT ?3",
        )
        .during(OP)?;
    let mut rows = read
        .query(params![
            index.definition.collection,
            after.unwrap_or_default(),
            i64::try_from(budget.max(1)).unwrap_or(i64::MAX)
        ])
        .during(OP)?;
    let covering = index.definition.covering;
    let mut add = if covering {
        conn.prepare_cached(&format!(
            "INSERT OR IGNORE INTO index_{id}_stage (entry, key) VALUES (?1, ?2)"
        ))
    } else {
        conn.prepare_cached(&kept.add)
    }
    .during(OP)?;
    let (mut seen, mut live) = (0usize, 0i64);
    let mut last = String::new();
    while let Some(row) = rows.next().during(OP)? {
        seen += 1;
        last = row.get(0).during(OP)?;
        // A tombstone has no entry.
        let value: Option<String> = row.get(1).during(OP)?;
        let Some(value) = value else {
            continue;
        };
        let document = pruner.parse(&value).unwrap_or(serde_json::Value::Null);
        let entry = cbddc_query::index::entry(&fields, &document);
        if covering {
            add.execute(params![entry, last]).during(OP)?;
        } else {
            kept.add(&mut add, &entry, &last, &index.definition.collection)
                .during(OP)?;
        }
        live += 1;
    }
    let read_all = seen < budget.max(1);
    // A covering index goes on to copy its documents; another is built.
    conn.prepare_cached(
        "UPDATE indexes SET built_after = ?2, done = done + ?3, building = ?4, copying = ?5
         WHERE id = ?1",
    )
    .and_then(|mut s| {
        s.execute(params![
            id,
            (!read_all).then_some(last),
            live,
            !read_all || covering,
            read_all && covering
        ])
    })
    .during(OP)?;
    Ok(read_all && !covering)
}

/// Copies up to `budget` entries of a covering index's stage, in entry order, with their
/// documents as they are now: each lands after the last, so the index's pages are
/// written once. An entry its document no longer has is skipped: the write that moved
/// it left a pending move, folded into the index. Whether the index is built.
fn copy_step(conn: &Connection, index: &Recorded, budget: usize) -> Result<bool, StoreError> {
    const OP: &str = "copying documents into a covering index";
    let id = index.id;
    let fields = paths(&index.definition)?;
    let pruner = Pruner::new(&fields);
    let (after_entry, after_key): (Option<Vec<u8>>, Option<String>) = conn
        .prepare_cached("SELECT copied_entry, copied_key FROM indexes WHERE id = ?1")
        .and_then(|mut s| s.query_row([id], |r| Ok((r.get(0)?, r.get(1)?))))
        .during(OP)?;
    // From the start, or after the last copied (a condition SQLite seeks to).
    let resume = if after_entry.is_some() {
        "(s.entry, s.key) > (?2, ?3)"
    } else {
        "?2 IS NULL AND ?3 IS NULL"
    };
    let mut read = conn
        .prepare_cached(&format!(
            "SELECT s.entry, s.key, d.value, d.hlc_wall, d.hlc_counter, d.hlc_node
             FROM index_{id}_stage s
             LEFT JOIN documents d ON d.collection = ?1 AND d.key = s.key
             WHERE {resume}
             ORDER BY s.entry, s.key LIMIT ?4"
        ))
        .during(OP)?;
    let mut rows = read
        .query(params![
            index.definition.collection,
            after_entry,
            after_key,
            i64::try_from(budget.max(1)).unwrap_or(i64::MAX)
        ])
        .during(OP)?;
    let mut add = conn
        .prepare_cached(&format!(
            "INSERT OR REPLACE INTO index_{id}
                 (entry, key, value, hlc_wall, hlc_counter, hlc_node)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
        ))
        .during(OP)?;
    let (mut seen, mut copied) = (0usize, 0i64);
    let mut last: Option<(Vec<u8>, String)> = None;
    while let Some(row) = rows.next().during(OP)? {
        seen += 1;
        let entry: Vec<u8> = row.get(0).during(OP)?;
        let key: String = row.get(1).during(OP)?;
        let value: Option<String> = row.get(2).during(OP)?;
        if let Some(value) = &value {
            let document = pruner.parse(value).unwrap_or(serde_json::Value::Null);
            if cbddc_query::index::entry(&fields, &document) == entry {
                let stamp: (i64, i64, String) = (
                    row.get(3).during(OP)?,
                    row.get(4).during(OP)?,
                    row.get(5).during(OP)?,
                );
                add.execute(params![entry, key, value, stamp.0, stamp.1, stamp.2])
                    .during(OP)?;
                copied += 1;
            }
        }
        last = Some((entry, key));
    }
    let copied_all = seen < budget.max(1);
    let (last_entry, last_key) = last.unzip();
    conn.prepare_cached(
        "UPDATE indexes SET copied = copied + ?2, copied_entry = ?3, copied_key = ?4,
             building = ?5, copying = ?5
         WHERE id = ?1",
    )
    .and_then(|mut s| s.execute(params![id, copied, last_entry, last_key, !copied_all]))
    .during(OP)?;
    if copied_all {
        conn.execute_batch(&format!("DROP TABLE index_{id}_stage;"))
            .during(OP)?;
    }
    Ok(copied_all)
}

/// The indexes recorded: a built one with its entries counted, one being built with the
/// documents it has read so far.
pub(crate) fn list(conn: &Connection) -> Result<Vec<IndexStatus>, StoreError> {
    recorded(conn)?
        .into_iter()
        .map(|index| {
            let entries = if index.building {
                index.done
            } else {
                let counted: i64 = conn
                    .query_row(
                        &format!("SELECT count(*) FROM index_{}", index.id),
                        [],
                        |r| r.get(0),
                    )
                    .during("counting an index's entries")?;
                to_u64(counted)
            };
            Ok(IndexStatus {
                definition: index.definition,
                entries,
                building: index.building.then_some(IndexBuild {
                    done: index.done.min(index.total),
                    total: index.total,
                }),
            })
        })
        .collect()
}

/// A page of a built index's range, each entry with its live document, in one read
/// transaction; [`IndexLookup::Behind`] when writes are pending in it.
pub(crate) fn read(conn: &Connection, read: &IndexRead) -> Result<IndexLookup, StoreError> {
    crate::rows::consistently(conn, "reading an index", |c| {
        // Only this collection's pending writes concern its indexes.
        let behind: bool = c
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM index_pending WHERE collection = ?1)")
            .and_then(|mut s| s.query_row([&read.index.collection], |r| r.get(0)))
            .during("reading an index")?;
        if behind {
            return Ok(IndexLookup::Behind);
        }
        Ok(match read_page(c, read)? {
            Some(page) => IndexLookup::Page(page),
            None => IndexLookup::NotBuilt,
        })
    })
}

/// [`read`] once no write is pending; `None` when the index is not built (or not held).
fn read_page(conn: &Connection, read: &IndexRead) -> Result<Option<IndexPage>, StoreError> {
    const OP: &str = "reading an index";
    let Ok(fields) = serde_json::to_string(&read.index.fields) else {
        return Ok(None);
    };
    let held: Option<(i64, bool)> = conn
        .prepare_cached(
            "SELECT id, covering FROM indexes
             WHERE collection = ?1 AND fields = ?2 AND NOT building",
        )
        .and_then(|mut s| {
            s.query_row(params![read.index.collection, fields], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
        })
        .during(OP)?;
    let Some((id, covering)) = held else {
        return Ok(None);
    };
    // Resuming after an entry and key starts right there, even among many equal entries.
    // Where a page resumes, that bound replaces the range's own on that side: given both,
    // SQLite may seek by the range's and filter by the resume point, rereading every
    // earlier page of the range.
    let resumes = read.after.as_ref().filter(|(entry, _)| {
        if read.reverse {
            read.high.as_ref().is_none_or(|high| entry < high)
        } else {
            entry >= &read.low
        }
    });
    let mut conditions = Vec::new();
    if resumes.is_none() || read.reverse {
        conditions.push("i.entry >= :low");
    }
    if read.high.is_some() && (resumes.is_none() || !read.reverse) {
        conditions.push("i.entry < :high");
    }
    if resumes.is_some() {
        conditions.push(if read.reverse {
            "(i.entry, i.key) < (:after_entry, :after_key)"
        } else {
            "(i.entry, i.key) > (:after_entry, :after_key)"
        });
    }
    let order = if read.reverse {
        "i.entry DESC, i.key DESC"
    } else {
        "i.entry, i.key"
    };
    // A covering index holds its documents; another's are looked up one by one.
    let (columns, from) = if covering {
        (
            "i.entry, i.key, i.value, i.hlc_wall, i.hlc_counter, i.hlc_node",
            format!("index_{id} i"),
        )
    } else {
        conditions.push("d.value IS NOT NULL");
        (
            "i.entry, i.key, d.value, d.hlc_wall, d.hlc_counter, d.hlc_node",
            format!(
                "index_{id} i JOIN documents d ON d.collection = :collection AND d.key = i.key"
            ),
        )
    };
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {columns} FROM {from} WHERE {} ORDER BY {order} LIMIT :limit",
            conditions.join(" AND ")
        ))
        .during(OP)?;
    let limit = i64::try_from(read.limit).unwrap_or(i64::MAX);
    let mut bind = |name: &str, value: &dyn rusqlite::ToSql| -> rusqlite::Result<()> {
        if let Some(at) = stmt.parameter_index(name)? {
            stmt.raw_bind_parameter(at, value)?;
        }
        Ok(())
    };
    bind(":collection", &read.index.collection).during(OP)?;
    bind(":limit", &limit).during(OP)?;
    bind(":low", &read.low).during(OP)?;
    bind(":high", &read.high).during(OP)?;
    if let Some((entry, key)) = resumes {
        bind(":after_entry", entry).during(OP)?;
        bind(":after_key", key).during(OP)?;
    }
    let mut rows = stmt.raw_query();
    let mut page = IndexPage::default();
    // The last row's entry, in one buffer reused row after row.
    let mut entry: Vec<u8> = Vec::new();
    while let Some(r) = rows.next().during(OP)? {
        let key: String = r.get(1).during(OP)?;
        let value: String = r.get(2).during(OP)?;
        let (wall, counter): (i64, u32) = (r.get(3).during(OP)?, r.get(4).during(OP)?);
        let replica = r
            .get_ref(5)
            .during(OP)?
            .as_str()
            .map_err(|e| StoreError::Corrupt {
                operation: OP,
                detail: format!("a stamp's replica is not text: {e}"),
            })?;
        // Documents written by the replica of the one before share its checked id.
        let hlc = match page.documents.last() {
            Some(last) if last.hlc.replica.as_str() == replica => cbddc_core::Hlc {
                wall_ms: crate::rows::wall_clock(wall)?,
                counter,
                replica: last.hlc.replica.clone(),
            },
            _ => stamp(wall, counter, replica)?,
        };
        entry.clear();
        entry.extend_from_slice(r.get_ref(0).during(OP)?.as_blob().unwrap_or_default());
        page.documents.push(Document {
            collection: read.index.collection.clone(),
            key,
            value,
            hlc,
        });
    }
    page.last = page.documents.last().map(|d| (entry, d.key.clone()));
    Ok(Some(page))
}

#[cfg(test)]
mod tests {
    use super::Move;

    #[test]
    fn a_pending_row_decodes_to_the_moves_encoded_and_refuses_a_cut_one() {
        let moves = vec![
            Move {
                index: 3,
                old: None,
                new: Some(vec![4, 0, 1]),
            },
            Move {
                index: -1,
                old: Some(vec![]),
                new: None,
            },
            Move {
                index: i64::MAX,
                old: Some(vec![9; 300]),
                new: Some(vec![5]),
            },
        ];
        let mut bytes = Vec::new();
        for m in &moves {
            m.encode(&mut bytes);
        }
        assert_eq!(Move::decode_all(&bytes).unwrap(), moves);
        for cut in 1..bytes.len() {
            let decoded = Move::decode_all(&bytes[..cut]);
            assert!(
                decoded.is_err() || decoded.unwrap().len() < moves.len(),
                "a row cut at {cut} decodes whole"
            );
        }
    }
}
