//! Writing a page's entries of documents merged field by field. An entry that makes a
//! document this store does not hold yet (the whole of a newcomer's catch-up) merges
//! into an empty state, so its row, state and change need no read and go in multi-row
//! statements, as whole entries do (`batch_apply`); every other entry merges one by one
//! through its document's state (`field_apply`).

use crate::batch_apply::{ROWS, insert_rows, multi_row};
use crate::document_write::{DocumentRow, INSERT_DOCUMENT};
use crate::error::{SqlContext, StoreError};
use crate::field_apply::{self, Arriving, Merging};
use crate::indexes::IndexSet;
use crate::rows::{APPEND_OPLOG, QUEUE_TOMBSTONE};
use cbddc_core::field_merge::{FieldState, FieldWrite, changed_paths};
use cbddc_core::{Operation, OplogEntry, StorageError};
use rusqlite::{Connection, ToSql, params};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::OnceLock;

/// An entry to merge: the document row its stamp and change position make (its value is
/// the merge's to decide), and the entry.
pub(crate) struct MergingEntry<'e> {
    pub document: DocumentRow<'e>,
    pub entry: &'e OplogEntry,
}

/// What an entry merged into an empty state makes.
struct Fresh {
    /// The document, `None` for a delete.
    text: Option<String>,
    state: String,
    /// The change's `merged` column: every path of the document changed.
    paths: String,
}

impl Fresh {
    fn of(entry: &OplogEntry, write: &FieldWrite) -> Self {
        let mut state = FieldState::default();
        state.apply(&entry.hlc, &entry.origin, write);
        let made;
        let after = match write {
            // A patch that removes nothing makes itself out of nothing: no need to build it.
            FieldWrite::Patch { patch, .. } if patch.is_object() && !removes_a_field(patch) => {
                debug_assert_eq!(Some(patch), state.value().as_ref());
                Some(patch)
            }
            _ => {
                made = state.value();
                made.as_ref()
            }
        };
        Fresh {
            text: after.map(serde_json::Value::to_string),
            state: state.to_json_beside(after),
            paths: serde_json::json!({ "paths": changed_paths(None, after) }).to_string(),
        }
    }
}

/// Whether a patch sets some field to `null` (removes it), at any depth.
fn removes_a_field(patch: &serde_json::Value) -> bool {
    patch.as_object().is_some_and(|fields| {
        fields
            .values()
            .any(|value| value.is_null() || removes_a_field(value))
    })
}

/// Appends the entries to the oplog and merges each into its document, recording a
/// change for every entry that changed its document. Returns the last such change's
/// position.
pub(crate) fn write(
    conn: &Connection,
    indexes: &IndexSet,
    rows: &[MergingEntry<'_>],
) -> Result<Option<i64>, StorageError> {
    static OPLOG: OnceLock<String> = OnceLock::new();
    let columns: Vec<(Option<String>, Option<String>)> =
        rows.iter().map(|r| r.entry.op.to_columns()).collect();
    let ids: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r.entry.origin.as_str(), r.entry.node.as_str()))
        .collect();
    let oplog: Vec<[&dyn ToSql; 9]> = rows
        .iter()
        .zip(&columns)
        .zip(&ids)
        .map(|((r, (value, field)), (origin, node))| {
            let d = &r.document;
            [
                origin as &dyn ToSql,
                &d.seq,
                &d.collection,
                &d.key,
                value,
                &d.wall,
                &d.counter,
                node,
                field,
            ]
        })
        .collect();
    insert_rows(conn, &OPLOG, APPEND_OPLOG, &oplog).during("appending to the oplog")?;

    // Rows come in the order of their change positions: the last change is the last row
    // that made one.
    let mut last_changed = None;
    let created = create(conn, indexes, rows)?;
    for (r, created) in rows.iter().zip(&created) {
        if *created {
            last_changed = Some(r.document.position);
            continue;
        }
        let entry = r.entry;
        let current = field_apply::read(conn, &entry.collection, &entry.key)?;
        let merged = field_apply::write(
            conn,
            indexes,
            current,
            &Merging {
                collection: &entry.collection,
                key: &entry.key,
                stamp: &entry.hlc,
                seq: Some(r.document.seq),
                position: r.document.position,
                arriving: Arriving::Write {
                    origin: &entry.origin,
                    write: &field_write(&entry.op),
                },
            },
            None,
        )?;
        if merged.changed {
            last_changed = Some(r.document.position);
        }
    }
    Ok(last_changed)
}

/// Writes the documents that field-level entries create, for each entry of `rows`
/// whether it did. An entry can create its document when it is the page's only entry
/// of it and the store holds no row of it, which the insert itself finds out.
fn create(
    conn: &Connection,
    indexes: &IndexSet,
    rows: &[MergingEntry<'_>],
) -> Result<Vec<bool>, StorageError> {
    const OP: &str = "writing documents field-level entries create";
    static DOCUMENTS: OnceLock<String> = OnceLock::new();
    static STATES: OnceLock<String> = OnceLock::new();
    static CHANGES: OnceLock<String> = OnceLock::new();
    const INSERT_STATE: &str =
        "INSERT INTO field_states (collection, key, state) VALUES (?1, ?2, ?3)";
    const RECORD_MERGED_CHANGE: &str =
        "INSERT INTO changes (position, origin, seq, merged) VALUES (?1, ?2, ?3, ?4)";

    let mut entries_of: HashMap<(&str, &str), u32> = HashMap::with_capacity(rows.len());
    for r in rows {
        *entries_of
            .entry((r.document.collection, r.document.key))
            .or_default() += 1;
    }
    let candidates: Vec<(usize, Fresh)> = rows
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match &r.entry.op {
            Operation::Merge { write }
                if entries_of[&(r.document.collection, r.document.key)] == 1 =>
            {
                Some((i, Fresh::of(r.entry, write)))
            }
            _ => None,
        })
        .collect();

    let mut created = vec![false; rows.len()];
    let mut values: Vec<&dyn ToSql> = Vec::with_capacity(ROWS * 8);
    for chunk in candidates.chunks(ROWS) {
        let document = |candidate| document_columns(rows, candidate);
        if chunk.len() == ROWS {
            values.clear();
            values.extend(chunk.iter().flat_map(document));
            let inserted = conn
                .prepare_cached(multi_row(&DOCUMENTS, INSERT_DOCUMENT))
                .and_then(|mut insert| insert.execute(&values[..]))
                .during(OP)?;
            for (i, _) in chunk {
                created[*i] = inserted == ROWS || holds(conn, &rows[*i].document)?;
            }
        } else {
            let mut insert = conn.prepare_cached(INSERT_DOCUMENT).during(OP)?;
            for candidate in chunk {
                created[candidate.0] = insert.execute(&document(candidate)[..]).during(OP)? == 1;
            }
        }
    }

    let made: Vec<&(usize, Fresh)> = candidates.iter().filter(|(i, _)| created[*i]).collect();
    let mut tombstone = conn.prepare_cached(QUEUE_TOMBSTONE).during(OP)?;
    for (i, fresh) in &made {
        let d = &rows[*i].document;
        indexes
            .record(conn, d.collection, d.key, None, fresh.text.as_deref())
            .during(OP)?;
        if fresh.text.is_none() {
            // A delete that saw counters, of a document never written here: its tombstone.
            tombstone
                .execute(params![d.replica, d.seq, d.position])
                .during(OP)?;
        }
    }
    let states: Vec<[&dyn ToSql; 3]> = made
        .iter()
        .map(|(i, fresh)| {
            let d = &rows[*i].document;
            [&d.collection as &dyn ToSql, &d.key, &fresh.state]
        })
        .collect();
    insert_rows(conn, &STATES, INSERT_STATE, &states).during(OP)?;
    let changes: Vec<[&dyn ToSql; 4]> = made
        .iter()
        .map(|(i, fresh)| {
            let d = &rows[*i].document;
            [&d.position as &dyn ToSql, &d.replica, &d.seq, &fresh.paths]
        })
        .collect();
    insert_rows(conn, &CHANGES, RECORD_MERGED_CHANGE, &changes).during(OP)?;
    Ok(created)
}

/// Whether the documents row of `document`'s key is the one `document` makes (a
/// multi-row insert that skipped some rows does not say which): a row written before
/// holds another write, since every entry applies once.
fn holds(conn: &Connection, document: &DocumentRow<'_>) -> Result<bool, StoreError> {
    conn.prepare_cached(
        "SELECT 1 FROM documents WHERE collection = ?1 AND key = ?2 AND hlc_wall = ?3
             AND hlc_counter = ?4 AND hlc_node = ?5 AND seq IS ?6",
    )
    .and_then(|mut s| {
        s.exists(params![
            document.collection,
            document.key,
            document.wall,
            document.counter,
            document.replica,
            document.seq
        ])
    })
    .during("looking for a document a field-level entry created")
}

/// The documents row a created document takes ([`DocumentRow::columns`] order).
fn document_columns<'a>(
    rows: &'a [MergingEntry<'_>],
    (i, fresh): &'a (usize, Fresh),
) -> [&'a dyn ToSql; 8] {
    let d = &rows[*i].document;
    [
        &d.collection,
        &d.key,
        &fresh.text,
        &d.wall,
        &d.counter,
        &d.replica,
        &d.seq,
        &d.position,
    ]
}

/// The field-level write an entry's operation is, borrowed where it is one already.
fn field_write(op: &Operation) -> Cow<'_, FieldWrite> {
    match op {
        Operation::Merge { write } => Cow::Borrowed(write),
        other => Cow::Owned(field_apply::as_field_write(other)),
    }
}
