//! Indexes on documents: a table of entries per index (see [`cbddc_query::index`] for
//! what an entry holds), kept current by temporary triggers on the writer connection and
//! built in the background in key order.
//!
//! - **Kept current on every path.** The triggers fire on every change to `documents`
//!   (local writes, sync, snapshots, compaction), so no write path can forget an index.
//!   They are temporary: they live on the writer connection, the only one that writes
//!   documents, and call `cbddc_index_entry`, a function only that connection has.
//! - **Built beside writes.** A new index's triggers exist from the transaction that
//!   declares it; the build then walks the collection in key order, a batch per
//!   transaction, adding entries that are not there. A document written meanwhile has its
//!   entry from its trigger, and the build adds the same entry again as a no-op.
//! - **Local.** Nothing here is in the oplog or in a snapshot: every node builds its own.

use crate::error::{SqlContext, StoreError};
use crate::rows::stamp;
use cbddc_core::{
    Document, IndexBuild, IndexDefinition, IndexPage, IndexRead, IndexStatus, StorageError,
};
use cbddc_query::Path;
use rusqlite::functions::FunctionFlags;
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// The fields of each index by id: what `cbddc_index_entry` reads.
pub(crate) type Registry = Arc<RwLock<HashMap<i64, Vec<Path>>>>;

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
            "SELECT id, collection, fields, building, done, total FROM indexes ORDER BY id",
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
            ))
        })
        .during(OP)?;
    let mut out = Vec::new();
    for row in rows {
        let (id, collection, fields, building, done, total) = row.during(OP)?;
        let fields: Vec<String> =
            serde_json::from_str(&fields).map_err(|e| StoreError::Corrupt {
                operation: OP,
                detail: format!("the fields of index {id}: {e}"),
            })?;
        out.push(Recorded {
            id,
            definition: IndexDefinition { collection, fields },
            building,
            done: to_u64(done),
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

/// Gives the writer connection `cbddc_index_entry(index id, document)`, and the
/// triggers of every recorded index.
pub(crate) fn open(conn: &Connection, registry: &Registry) -> Result<(), StoreError> {
    let fields = Arc::clone(registry);
    conn.create_scalar_function(
        "cbddc_index_entry",
        2,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        move |ctx| {
            let id: i64 = ctx.get(0)?;
            let text = ctx.get_raw(1).as_str().map_err(|e| {
                rusqlite::Error::UserFunctionError(format!("a document is not text: {e}").into())
            })?;
            // Stored documents were checked on the way in; one that does not parse indexes
            // as if it held none of the fields rather than failing the write.
            let document: serde_json::Value =
                serde_json::from_str(text).unwrap_or(serde_json::Value::Null);
            let registry = fields.read().unwrap_or_else(|p| p.into_inner());
            let paths = registry.get(&id).ok_or_else(|| {
                rusqlite::Error::UserFunctionError(format!("index {id} is not loaded").into())
            })?;
            Ok(cbddc_query::index::entry(paths, &document))
        },
    )
    .during("registering the index function")?;
    for index in recorded(conn)? {
        registry
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(index.id, paths(&index.definition)?);
        create_triggers(conn, index.id, &index.definition.collection)?;
    }
    Ok(())
}

fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn create_triggers(conn: &Connection, id: i64, collection: &str) -> Result<(), StoreError> {
    let c = literal(collection);
    conn.execute_batch(&format!(
        "CREATE TEMP TRIGGER index_{id}_insert AFTER INSERT ON main.documents
             WHEN new.collection = {c} AND new.value IS NOT NULL
         BEGIN
             INSERT OR IGNORE INTO index_{id} (entry, key)
                 VALUES (cbddc_index_entry({id}, new.value), new.key);
         END;
         CREATE TEMP TRIGGER index_{id}_update AFTER UPDATE OF value ON main.documents
             WHEN new.collection = {c} AND new.value IS NOT old.value
         BEGIN
             DELETE FROM index_{id} WHERE old.value IS NOT NULL
                 AND entry = cbddc_index_entry({id}, old.value) AND key = old.key;
             INSERT OR IGNORE INTO index_{id} (entry, key)
                 SELECT cbddc_index_entry({id}, new.value), new.key WHERE new.value IS NOT NULL;
         END;
         CREATE TEMP TRIGGER index_{id}_delete AFTER DELETE ON main.documents
             WHEN old.collection = {c} AND old.value IS NOT NULL
         BEGIN
             DELETE FROM index_{id}
                 WHERE entry = cbddc_index_entry({id}, old.value) AND key = old.key;
         END;"
    ))
    .during("creating an index's triggers")
}

/// Makes the recorded indexes exactly `wanted`, in the caller's transaction. Returns the
/// ids dropped, to forget once it commits.
pub(crate) fn declare(
    conn: &Connection,
    registry: &Registry,
    wanted: &[IndexDefinition],
) -> Result<Vec<i64>, StorageError> {
    const OP: &str = "declaring the indexes";
    let held = recorded(conn)?;
    let mut dropped = Vec::new();
    for index in held.iter().filter(|i| !wanted.contains(&i.definition)) {
        let id = index.id;
        conn.execute_batch(&format!(
            "DROP TRIGGER temp.index_{id}_insert;
             DROP TRIGGER temp.index_{id}_update;
             DROP TRIGGER temp.index_{id}_delete;
             DROP TABLE index_{id};
             DELETE FROM indexes WHERE id = {id};"
        ))
        .during(OP)?;
        tracing::info!(index = %index.definition.name(), "index dropped");
        dropped.push(id);
    }
    for definition in wanted {
        if held.iter().any(|i| &i.definition == definition) {
            continue;
        }
        let paths = definition
            .fields
            .iter()
            .map(|f| Path::parse(f))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StorageError::Backend {
                operation: OP,
                message: format!("index {}: {e}", definition.name()),
            })?;
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
            "INSERT INTO indexes (collection, fields, building, done, total)
             VALUES (?1, ?2, 1, 0, ?3)",
        )
        .and_then(|mut s| s.execute(params![definition.collection, fields, total]))
        .during(OP)?;
        let id = conn.last_insert_rowid();
        conn.execute_batch(&format!(
            "CREATE TABLE index_{id} (
                 entry BLOB NOT NULL,
                 key   TEXT NOT NULL,
                 PRIMARY KEY (entry, key)
             ) WITHOUT ROWID;"
        ))
        .during(OP)?;
        // Ids are never reused (AUTOINCREMENT), so an id left here by a rolled-back
        // declaration names nothing.
        registry
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, paths);
        create_triggers(conn, id, &definition.collection)?;
        tracing::info!(index = %definition.name(), documents = total, "index declared; building it");
    }
    Ok(dropped)
}

/// Forgets dropped indexes once their drop committed.
pub(crate) fn forget(registry: &Registry, dropped: &[i64]) {
    let mut registry = registry.write().unwrap_or_else(|p| p.into_inner());
    for id in dropped {
        registry.remove(id);
    }
}

/// Adds the entries of up to `budget` documents to the first index still being built,
/// in the caller's transaction. Returns the indexes still being built after it.
pub(crate) fn build(
    conn: &Connection,
    budget: usize,
) -> Result<Vec<IndexDefinition>, StorageError> {
    const OP: &str = "building an index";
    let next: Option<(i64, String, Option<String>)> = conn
        .prepare_cached(
            "SELECT id, collection, built_after FROM indexes WHERE building ORDER BY id LIMIT 1",
        )
        .and_then(|mut s| {
            s.query_row([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()
        })
        .during(OP)?;
    let Some((id, collection, after)) = next else {
        return Ok(Vec::new());
    };
    let after = after.unwrap_or_default();
    let budget = i64::try_from(budget.max(1)).unwrap_or(i64::MAX);
    // The last key of this batch; none: the batch runs to the end of the collection.
    let last: Option<String> = conn
        .prepare_cached(
            "SELECT key FROM documents WHERE collection = ?1 AND key > ?2
             ORDER BY key LIMIT 1 OFFSET ?3",
        )
        .and_then(|mut s| {
            s.query_row(params![collection, after, budget - 1], |r| r.get(0))
                .optional()
        })
        .during(OP)?;
    conn.execute(
        &format!(
            "INSERT OR IGNORE INTO index_{id} (entry, key)
             SELECT cbddc_index_entry({id}, value), key FROM documents
             WHERE collection = ?1 AND key > ?2 AND (?3 IS NULL OR key <= ?3)
               AND value IS NOT NULL"
        ),
        params![collection, after, last],
    )
    .during(OP)?;
    let read: i64 = conn
        .prepare_cached(
            "SELECT count(*) FROM documents
             WHERE collection = ?1 AND key > ?2 AND (?3 IS NULL OR key <= ?3)
               AND value IS NOT NULL",
        )
        .and_then(|mut s| s.query_row(params![collection, after, last], |r| r.get(0)))
        .during(OP)?;
    match &last {
        Some(last) => conn
            .prepare_cached("UPDATE indexes SET built_after = ?2, done = done + ?3 WHERE id = ?1")
            .and_then(|mut s| s.execute(params![id, last, read])),
        None => conn
            .prepare_cached(
                "UPDATE indexes SET building = 0, built_after = NULL, done = done + ?2
                 WHERE id = ?1",
            )
            .and_then(|mut s| s.execute(params![id, read])),
    }
    .during(OP)?;
    let building: Vec<IndexDefinition> = recorded(conn)?
        .into_iter()
        .filter(|i| i.building)
        .map(|i| i.definition)
        .collect();
    if last.is_none() {
        tracing::info!(index = id, collection = %collection, building = building.len(), "index built");
    }
    Ok(building)
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

/// A page of a built index's range, each entry with its live document; `None` when the
/// index is not built (or not held).
pub(crate) fn read(
    conn: &Connection,
    read: &IndexRead,
) -> Result<Option<IndexPage>, StoreError> {
    const OP: &str = "reading an index";
    let Ok(fields) = serde_json::to_string(&read.index.fields) else {
        return Ok(None);
    };
    let id: Option<i64> = conn
        .prepare_cached(
            "SELECT id FROM indexes WHERE collection = ?1 AND fields = ?2 AND NOT building",
        )
        .and_then(|mut s| {
            s.query_row(params![read.index.collection, fields], |r| r.get(0))
                .optional()
        })
        .during(OP)?;
    let Some(id) = id else {
        return Ok(None);
    };
    // Resuming after an entry and key starts right there, even among many equal entries.
    let start = match read.after {
        Some(_) => "(i.entry, i.key) > (?3, ?4)",
        None => "i.entry >= ?3 AND ?4 IS NULL",
    };
    let end = match read.high {
        Some(_) => "i.entry < ?5",
        None => "?5 IS NULL",
    };
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT i.entry, i.key, d.value, d.hlc_wall, d.hlc_counter, d.hlc_node
             FROM index_{id} i JOIN documents d ON d.collection = ?1 AND d.key = i.key
             WHERE {start} AND {end} AND d.value IS NOT NULL
             ORDER BY i.entry, i.key LIMIT ?2"
        ))
        .during(OP)?;
    let limit = i64::try_from(read.limit).unwrap_or(i64::MAX);
    let (from, after_key) = match &read.after {
        Some((entry, key)) => (entry, Some(key)),
        None => (&read.low, None),
    };
    let mut rows = stmt
        .query(params![read.index.collection, limit, from, after_key, read.high])
        .during(OP)?;
    let mut page = IndexPage::default();
    // The last row's entry, in one buffer reused row after row.
    let mut entry: Vec<u8> = Vec::new();
    while let Some(r) = rows.next().during(OP)? {
        let key: String = r.get(1).during(OP)?;
        let value: String = r.get(2).during(OP)?;
        let (wall, counter): (i64, u32) = (r.get(3).during(OP)?, r.get(4).during(OP)?);
        let replica = r.get_ref(5).during(OP)?.as_str().map_err(|e| StoreError::Corrupt {
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
