//! Writing a page of remote entries that the writer has already decided to apply, in
//! multi-row statements: each statement call costs about as much again as the row it
//! inserts (binding, stepping, resetting), so a page pays it once per [`ROWS`] entries.

use crate::document_write::{DocumentRow, DocumentWriter, INSERT_DOCUMENT, Overwrite, Written};
use crate::indexes::IndexSet;
use crate::rows::{APPEND_OPLOG, QUEUE_TOMBSTONE, RECORD_CHANGE};
use rusqlite::{Connection, ToSql, params};
use std::sync::OnceLock;

/// Rows per multi-row statement; a page's last few go one by one.
pub(crate) const ROWS: usize = 64;

/// An entry to apply: the document row it writes (with its change position, used if
/// the write wins), and who wrote it.
pub(crate) struct Applying<'e> {
    pub document: DocumentRow<'e>,
    /// The entry's origin replica (its stamp's replica is the document's).
    pub origin: &'e str,
    pub node: &'e str,
}

/// `single`, a one-row `INSERT ... VALUES (?1, ...)`, for [`ROWS`] rows: its values
/// tuple repeated, each parameter anonymous so the rows bind one after another.
pub(crate) fn multi_row(cache: &'static OnceLock<String>, single: &str) -> &'static str {
    cache.get_or_init(|| {
        let (head, row) = single.rsplit_once("VALUES").unwrap_or((single, "()"));
        let mut anonymous = String::with_capacity(row.len());
        let mut chars = row.trim().chars().peekable();
        while let Some(c) = chars.next() {
            anonymous.push(c);
            if c == '?' {
                while chars.next_if(char::is_ascii_digit).is_some() {}
            }
        }
        format!("{head}VALUES {}", vec![anonymous; ROWS].join(", "))
    })
}

/// Inserts `rows` by `single`, a one-row `INSERT`: [`ROWS`] at a time through its
/// multi-row form (kept in `cache`), the last few one by one.
pub(crate) fn insert_rows<const N: usize>(
    conn: &Connection,
    cache: &'static OnceLock<String>,
    single: &str,
    rows: &[[&dyn ToSql; N]],
) -> rusqlite::Result<()> {
    let mut values: Vec<&dyn ToSql> = Vec::with_capacity(ROWS * N);
    for chunk in rows.chunks(ROWS) {
        if chunk.len() == ROWS {
            values.clear();
            values.extend(chunk.iter().flatten().copied());
            conn.prepare_cached(multi_row(cache, single))?
                .execute(&values[..])?;
        } else {
            let mut insert = conn.prepare_cached(single)?;
            for row in chunk {
                insert.execute(&row[..])?;
            }
        }
    }
    Ok(())
}

/// Appends the entries to the oplog and writes their documents by last-writer-wins, with
/// a change for every write that won, the tombstones that won and the entries that lost
/// queued for compaction. Returns the last winning change's position.
pub(crate) fn write(
    conn: &Connection,
    rows: &[Applying<'_>],
    indexes: &IndexSet,
) -> rusqlite::Result<Option<i64>> {
    static OPLOG: OnceLock<String> = OnceLock::new();
    static DOCUMENTS: OnceLock<String> = OnceLock::new();
    static CHANGES: OnceLock<String> = OnceLock::new();
    fn oplog_row<'a>(r: &'a Applying<'_>) -> [&'a dyn ToSql; 9] {
        let d = &r.document;
        [
            &r.origin,
            &d.seq,
            &d.collection,
            &d.key,
            &d.value,
            &d.wall,
            &d.counter,
            &r.node,
            // Whole-document writes only: field-level ones merge (`field_apply`).
            &rusqlite::types::Null,
        ]
    }
    fn document_row<'a>(r: &'a Applying<'_>) -> [&'a dyn ToSql; 8] {
        r.document.columns()
    }

    let oplog: Vec<[&dyn ToSql; 9]> = rows.iter().map(oplog_row).collect();
    insert_rows(conn, &OPLOG, APPEND_OPLOG, &oplog)?;
    let mut values: Vec<&dyn ToSql> = Vec::with_capacity(ROWS * 8);

    // Queued as each write settles: a tombstone a later entry of the page overwrites is
    // then re-queued as merely superseded, in that order.
    let mut tombstone = conn.prepare_cached(QUEUE_TOMBSTONE)?;
    let mut superseded = conn.prepare_cached(
        "INSERT OR IGNORE INTO collectable (origin, seq, position, tombstone)
         VALUES (?1, ?2, NULL, 0)",
    )?;
    let mut queue = |r: &Applying<'_>, w: &Written| -> rusqlite::Result<()> {
        match (w.changed(), r.document.value) {
            // A winning delete is its document's tombstone.
            (true, None) => {
                tombstone.execute(params![r.origin, r.document.seq, r.document.position])?
            }
            (true, Some(_)) => 0,
            // Lost on arrival: superseded already, compaction's to collect.
            (false, _) => superseded.execute(params![r.origin, r.document.seq])?,
        };
        Ok(())
    };
    let mut documents = DocumentWriter::new(conn, indexes)?;
    let mut written = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(ROWS) {
        let all_inserted = chunk.len() == ROWS && {
            values.clear();
            values.extend(chunk.iter().flat_map(document_row));
            conn.prepare_cached(multi_row(&DOCUMENTS, INSERT_DOCUMENT))?
                .execute(&values[..])?
                == ROWS
        };
        for r in chunk {
            let w = if all_inserted {
                // Every key was new (a catch-up): every write won.
                let d = &r.document;
                indexes.record(conn, d.collection, d.key, None, d.value)?;
                Written::Inserted
            } else if chunk.len() == ROWS {
                documents.settle(&r.document, Overwrite::IfNewer, true)?
            } else {
                documents.write(&r.document, Overwrite::IfNewer)?
            };
            queue(r, &w)?;
            written.push(w);
        }
    }

    let winners: Vec<&Applying<'_>> = rows
        .iter()
        .zip(&written)
        .filter(|(_, w)| w.changed())
        .map(|(r, _)| r)
        .collect();
    let changes: Vec<[&dyn ToSql; 3]> = winners
        .iter()
        .map(|r| {
            [
                &r.document.position as &dyn ToSql,
                &r.origin,
                &r.document.seq,
            ]
        })
        .collect();
    insert_rows(conn, &CHANGES, RECORD_CHANGE, &changes)?;

    Ok(winners.last().map(|r| r.document.position))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_one_row_insert_becomes_rows_of_anonymous_parameters() {
        static CACHE: OnceLock<String> = OnceLock::new();
        let sql = multi_row(&CACHE, "INSERT INTO t (a, b) VALUES (?1, ?12)");
        let row = "(?, ?)";
        assert_eq!(
            sql,
            format!("INSERT INTO t (a, b) VALUES {}", vec![row; ROWS].join(", "))
        );
    }
}
