//! Writing one document row by last-writer-wins, queueing the entry it displaces for
//! compaction.
//!
//! The writer does this itself rather than through a trigger: an `UPDATE` trigger on
//! `documents` makes every upsert into it a multi-row statement, with a statement
//! journal of its own, which cost catch-up about a third of its SQLite time. A fresh key
//! (the whole of a catch-up or an import) is one plain insert; an existing one is read
//! and, if the new stamp wins, updated.

use crate::indexes::IndexSet;
use rusqlite::{CachedStatement, Connection, OptionalExtension, ToSql, params};

/// A document row as an oplog entry writes it.
pub(crate) struct DocumentRow<'a> {
    pub collection: &'a str,
    pub key: &'a str,
    /// `None`: a delete (the row stays as the tombstone).
    pub value: Option<&'a str>,
    pub wall: i64,
    pub counter: u32,
    pub replica: &'a str,
    pub seq: i64,
    pub position: i64,
}

impl DocumentRow<'_> {
    /// The row's columns, in the order of the documents table's inserts and updates:
    /// collection, key, value, hlc_wall, hlc_counter, hlc_node, seq, position.
    pub(crate) fn columns(&self) -> [&dyn ToSql; 8] {
        [
            &self.collection,
            &self.key,
            &self.value,
            &self.wall,
            &self.counter,
            &self.replica,
            &self.seq,
            &self.position,
        ]
    }
}

/// Inserts a document row unless its key has one ([`DocumentRow::columns`] order).
pub(crate) const INSERT_DOCUMENT: &str = "INSERT OR IGNORE INTO documents
     (collection, key, value, hlc_wall, hlc_counter, hlc_node, seq, position)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";

/// Whether a write over an existing row needs the greater stamp.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Overwrite {
    /// A local write: its stamp was just ticked past everything this node holds.
    Always,
    /// A remote write: last writer wins.
    IfNewer,
}

/// What became of the write.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Written {
    /// The key had no row.
    Inserted,
    /// It displaced an older write.
    Replaced,
    /// The row holds a newer (or the same) write; nothing changed.
    Lost,
}

impl Written {
    pub(crate) fn changed(&self) -> bool {
        !matches!(self, Written::Lost)
    }
}

/// The stamp and entry of the write a document row holds.
struct Held {
    wall: i64,
    counter: u32,
    replica: String,
    seq: Option<i64>,
    position: Option<i64>,
}

/// The statements of [`DocumentWriter::write`], prepared once for a command's writes,
/// and the indexes each changed document keeps current.
pub(crate) struct DocumentWriter<'c> {
    conn: &'c Connection,
    indexes: &'c IndexSet,
    insert: CachedStatement<'c>,
    read: CachedStatement<'c>,
    update: CachedStatement<'c>,
    supersede: CachedStatement<'c>,
}

impl<'c> DocumentWriter<'c> {
    pub(crate) fn new(conn: &'c Connection, indexes: &'c IndexSet) -> rusqlite::Result<Self> {
        Ok(Self {
            conn,
            indexes,
            insert: conn.prepare_cached(INSERT_DOCUMENT)?,
            read: conn.prepare_cached(
                "SELECT hlc_wall, hlc_counter, hlc_node, seq, position FROM documents
                 WHERE collection = ?1 AND key = ?2",
            )?,
            update: conn.prepare_cached(
                "UPDATE documents SET value = ?3, hlc_wall = ?4, hlc_counter = ?5,
                     hlc_node = ?6, seq = ?7, position = ?8
                 WHERE collection = ?1 AND key = ?2",
            )?,
            // It may have been queued as a tombstone: now it is only superseded.
            supersede: conn.prepare_cached(
                "INSERT OR REPLACE INTO collectable (origin, seq, position, tombstone)
                 VALUES (?1, ?2, ?3, 0)",
            )?,
        })
    }

    /// Writes `row`; a displaced winner that came from an oplog entry is queued in
    /// `collectable` as superseded.
    pub(crate) fn write(
        &mut self,
        row: &DocumentRow<'_>,
        overwrite: Overwrite,
    ) -> rusqlite::Result<Written> {
        if self.insert.execute(&row.columns()[..])? == 1 {
            self.indexes
                .record(self.conn, row.collection, row.key, None, row.value)?;
            return Ok(Written::Inserted);
        }
        self.settle(row, overwrite, false)
    }

    /// The rest of [`DocumentWriter::write`] once `row`'s insert was tried (alone or in a
    /// multi-row statement): reads what the key holds and writes over it if `row` wins.
    /// With `tried_here`, a stored row that is `row` itself was inserted by that try.
    pub(crate) fn settle(
        &mut self,
        row: &DocumentRow<'_>,
        overwrite: Overwrite,
        tried_here: bool,
    ) -> rusqlite::Result<Written> {
        let held = self
            .read
            .query_row(params![row.collection, row.key], |r| {
                Ok(Held {
                    wall: r.get(0)?,
                    counter: r.get(1)?,
                    replica: r.get(2)?,
                    seq: r.get(3)?,
                    position: r.get(4)?,
                })
            })
            .optional()?;
        let Some(Held {
            wall,
            counter,
            replica,
            seq,
            position,
        }) = held
        else {
            // Only a NOT NULL violation ignores an insert of an absent key, and every
            // such column is bound: unreachable, but nothing was written.
            return Ok(Written::Lost);
        };
        if tried_here
            && (wall, counter, replica.as_str(), seq)
                == (row.wall, row.counter, row.replica, Some(row.seq))
        {
            self.indexes
                .record(self.conn, row.collection, row.key, None, row.value)?;
            return Ok(Written::Inserted);
        }
        // The same order as `cbddc_core::Hlc` and the stored text's (bytewise).
        let newer = (row.wall, row.counter, row.replica) > (wall, counter, replica.as_str());
        if overwrite == Overwrite::IfNewer && !newer {
            return Ok(Written::Lost);
        }
        let replaced = self.indexes.held(self.conn, row.collection, row.key)?;
        self.update.execute(&row.columns()[..])?;
        self.indexes.record(
            self.conn,
            row.collection,
            row.key,
            replaced.as_deref(),
            row.value,
        )?;
        if let Some(seq) = seq {
            self.supersede.execute(params![replica, seq, position])?;
        }
        Ok(Written::Replaced)
    }
}
