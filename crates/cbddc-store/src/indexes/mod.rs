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
//! - **Built beside writes** (`build`). A new index is recorded, then its build walks the
//!   collection in key order, a batch per transaction, adding entries; a document written
//!   meanwhile has its entry from its write, and the build adds the same entry again as a
//!   no-op. A covering index (its entries keep a copy of their document) is built in two
//!   passes: its entries into a stage table, then copied with their documents in entry
//!   order, so that each copy lands after the last.
//! - **Read** (`read`) a range at a time, with each entry's live document: looked up in
//!   `documents`, or the index's own copy for a covering index.
//! - **Local.** Nothing here is in the oplog or in a snapshot: every node builds its own.

mod build;
mod catalog;
mod read;
pub(crate) use build::{build, declare, list};
pub(crate) use read::{IndexLookup, read};

use catalog::{Kept, recorded, to_u64};

use crate::error::{SqlContext, StoreError};
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

/// The indexes of one collection, and the fields they read (all a write's entries need).
#[derive(Debug)]
struct Collection {
    indexes: Vec<Kept>,
    pruner: Pruner,
}

/// The indexes of each collection, as the writer keeps them current.
#[derive(Debug, Default)]
pub(crate) struct IndexSet {
    by_collection: HashMap<String, Collection>,
    /// Rows in `index_pending` (at least: a rolled-back fold leaves more).
    pending: Cell<u64>,
    /// The id of the next pending row: ids rise in the order written.
    next_pending: Cell<i64>,
    /// When the last of them was recorded.
    last_recorded: Cell<Option<Instant>>,
}

impl IndexSet {
    /// The indexes recorded in the database.
    pub(crate) fn load(conn: &Connection) -> Result<Self, StoreError> {
        let mut kept: HashMap<String, Vec<Kept>> = HashMap::new();
        for index in recorded(conn)? {
            kept.entry(index.definition.collection.clone())
                .or_default()
                .push(Kept::new(index.id, &index.definition)?);
        }
        let by_collection = kept
            .into_iter()
            .map(|(collection, indexes)| {
                let pruner = Pruner::new(indexes.iter().flat_map(|k| &k.fields));
                (collection, Collection { indexes, pruner })
            })
            .collect();
        let (pending, last): (i64, i64) = conn
            .query_row(
                "SELECT count(*), COALESCE(MAX(id), 0) FROM index_pending",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .during("counting the index entries pending")?;
        let set = Self {
            by_collection,
            pending: Cell::new(to_u64(pending)),
            next_pending: Cell::new(last + 1),
            last_recorded: Cell::new(None),
        };
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

    /// Counts the pending writes again after a rollback: a fold rolled back leaves its
    /// rows, and writes rolled back leave none.
    pub(crate) fn recount(&self, conn: &Connection) {
        match conn.query_row("SELECT count(*) FROM index_pending", [], |r| r.get(0)) {
            Ok(pending) => self.pending.set(to_u64(pending)),
            // Unknown: the next transaction folds, and sets the count right.
            Err(_) => self.pending.set(FOLD_AT),
        }
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
        let Some(Collection { indexes, pruner }) = self.by_collection.get(collection) else {
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
        for (collection, held) in &self.by_collection {
            for kept in &held.indexes {
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
