//! The indexes the database records, and the statements that keep each one's entries.

use crate::error::{SqlContext, StoreError};
use cbddc_core::IndexDefinition;
use cbddc_query::Path;
use rusqlite::{CachedStatement, Connection, params};

/// One index as the writer keeps it current.
#[derive(Debug)]
pub(super) struct Kept {
    pub(super) id: i64,
    pub(super) fields: Vec<Path>,
    pub(super) covering: bool,
    /// Adds an entry: `?1` the entry, `?2` the key, and for a covering index `?3` the
    /// collection, whose document is copied as it is now.
    pub(super) add: String,
    pub(super) remove: String,
}

impl Kept {
    pub(super) fn new(id: i64, definition: &IndexDefinition) -> Result<Self, StoreError> {
        Ok(Self {
            id,
            fields: paths(definition)?,
            covering: definition.covering,
            add: add_entry(id, definition.covering),
            remove: format!("DELETE FROM index_{id} WHERE entry = ?1 AND key = ?2"),
        })
    }

    /// Runs [`Kept::add`] for `key` of `collection` under `entry`.
    pub(super) fn add(
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

/// An index as recorded in `indexes`.
pub(super) struct Recorded {
    pub(super) id: i64,
    pub(super) definition: IndexDefinition,
    pub(super) building: bool,
    pub(super) done: u64,
    pub(super) total: u64,
}

pub(super) fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

pub(super) fn recorded(conn: &Connection) -> Result<Vec<Recorded>, StoreError> {
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

pub(super) fn paths(definition: &IndexDefinition) -> Result<Vec<Path>, StoreError> {
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
