//! Declaring indexes and building them in the background: entries in key order, a batch
//! per transaction; a covering index in two passes (entries into a stage, then copies in
//! entry order).

use super::catalog::{Kept, Recorded, paths, recorded, to_u64};
use crate::error::{SqlContext, StoreError};
use cbddc_core::{IndexBuild, IndexDefinition, IndexStatus, StorageError};
use cbddc_query::Path;
use cbddc_query::pruned::Pruner;
use rusqlite::{Connection, params};

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
/// documents it has read so far; each with the writes to its collection not yet folded.
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
            let pending: i64 = conn
                .prepare_cached("SELECT count(*) FROM index_pending WHERE collection = ?1")
                .and_then(|mut s| s.query_row([&index.definition.collection], |r| r.get(0)))
                .during("counting the writes pending in an index")?;
            Ok(IndexStatus {
                pending: to_u64(pending),
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
