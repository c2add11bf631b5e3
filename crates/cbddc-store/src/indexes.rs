//! Indexes on documents: a table of entries per index (see [`cbddc_query::index`] for
//! what an entry holds), kept current by the writer and built in the background in key
//! order.
//!
//! - **Kept current on every path.** Each place the writer changes a document's value
//!   (local writes, sync, snapshots) hands the key, the value it held and the value it
//!   holds now to [`IndexSet::record`], which moves the key's entry in each index of its
//!   collection. A table `index_<id>` is keyed by (entry, key): one b-tree, read by range.
//!   Writes to a collection without an index cost nothing more (a trigger on `documents`
//!   would have cost every write, of every collection, about a fifth).
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
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::HashMap;

/// One index as the writer keeps it current.
#[derive(Debug)]
struct Kept {
    fields: Vec<Path>,
    add: String,
    remove: String,
}

/// The indexes of each collection, as the writer keeps them current.
#[derive(Debug, Default)]
pub(crate) struct IndexSet {
    by_collection: HashMap<String, Vec<Kept>>,
}

impl IndexSet {
    /// The indexes recorded in the database.
    pub(crate) fn load(conn: &Connection) -> Result<Self, StoreError> {
        let mut set = Self::default();
        for index in recorded(conn)? {
            let id = index.id;
            set.by_collection
                .entry(index.definition.collection.clone())
                .or_default()
                .push(Kept {
                    fields: paths(&index.definition)?,
                    add: format!("INSERT OR IGNORE INTO index_{id} (entry, key) VALUES (?1, ?2)"),
                    remove: format!("DELETE FROM index_{id} WHERE entry = ?1 AND key = ?2"),
                });
        }
        Ok(set)
    }

    /// Whether `collection` has indexes (a writer replacing a document of it reads the
    /// value it replaces, for [`IndexSet::record`]).
    pub(crate) fn covers(&self, collection: &str) -> bool {
        self.by_collection.contains_key(collection)
    }

    /// Keeps the indexes of `collection` current after `key` went from holding `old` to
    /// holding `new` (`None`: no document, or a tombstone). Nothing to do for a
    /// collection without indexes.
    pub(crate) fn record(
        &self,
        conn: &Connection,
        collection: &str,
        key: &str,
        old: Option<&str>,
        new: Option<&str>,
    ) -> rusqlite::Result<()> {
        let Some(indexes) = self.by_collection.get(collection) else {
            return Ok(());
        };
        // Stored documents were checked on the way in; one that does not parse indexes
        // as if it held none of the fields rather than failing the write.
        let parse = |v: &str| serde_json::from_str(v).unwrap_or(serde_json::Value::Null);
        let (old, new) = (old.map(parse), new.map(parse));
        for index in indexes {
            let old = old
                .as_ref()
                .map(|d| cbddc_query::index::entry(&index.fields, d));
            let new = new
                .as_ref()
                .map(|d| cbddc_query::index::entry(&index.fields, d));
            if old == new {
                continue;
            }
            if let Some(old) = old {
                conn.prepare_cached(&index.remove)?
                    .execute(params![old, key])?;
            }
            if let Some(new) = new {
                conn.prepare_cached(&index.add)?
                    .execute(params![new, key])?;
            }
        }
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

/// Makes the recorded indexes exactly `wanted`, in the caller's transaction; the writer
/// loads its [`IndexSet`] again once it commits.
pub(crate) fn declare(conn: &Connection, wanted: &[IndexDefinition]) -> Result<(), StorageError> {
    const OP: &str = "declaring the indexes";
    let held = recorded(conn)?;
    for index in held.iter().filter(|i| !wanted.contains(&i.definition)) {
        let id = index.id;
        conn.execute_batch(&format!(
            "DROP TABLE index_{id};
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
    let fields = paths(&index.definition)?;
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
    let mut add = conn
        .prepare_cached(&format!(
            "INSERT OR IGNORE INTO index_{id} (entry, key) VALUES (?1, ?2)"
        ))
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
        let document = serde_json::from_str(&value).unwrap_or(serde_json::Value::Null);
        add.execute(params![cbddc_query::index::entry(&fields, &document), last])
            .during(OP)?;
        live += 1;
    }
    let done = seen < budget.max(1);
    conn.prepare_cached(
        "UPDATE indexes SET built_after = ?2, done = done + ?3, building = ?4 WHERE id = ?1",
    )
    .and_then(|mut s| s.execute(params![id, (!done).then_some(last), live, !done]))
    .during(OP)?;
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
pub(crate) fn read(conn: &Connection, read: &IndexRead) -> Result<Option<IndexPage>, StoreError> {
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
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT i.entry, i.key, d.value, d.hlc_wall, d.hlc_counter, d.hlc_node
             FROM index_{id} i JOIN documents d ON d.collection = :collection AND d.key = i.key
             WHERE {} AND d.value IS NOT NULL
             ORDER BY {order} LIMIT :limit",
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
