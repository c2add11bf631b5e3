//! The formats this database's node writes (its feature level): a set kept in meta
//! `features_in_force` that only grows, so a node restarted on an older view of its peers
//! never falls back to writing what it wrote before a peer could read the new format.

use crate::error::{SqlContext, StoreError};
use rusqlite::{Connection, OptionalExtension};
use std::collections::BTreeSet;

const KEY: &str = "features_in_force";

/// The features in force, as recorded.
pub(crate) fn in_force(conn: &Connection) -> Result<BTreeSet<String>, StoreError> {
    let text: Option<String> = conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [KEY], |row| {
            row.get(0)
        })
        .optional()
        .during("reading the features in force")?;
    Ok(text
        .map(|text| {
            text.split(',')
                .filter(|f| !f.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default())
}

/// Adds `features` to the set in force; never removes one.
pub(crate) fn raise(
    conn: &Connection,
    features: &BTreeSet<String>,
) -> Result<(), cbddc_core::StorageError> {
    let mut all = in_force(conn)?;
    let before = all.len();
    all.extend(features.iter().cloned());
    if all.len() == before {
        return Ok(());
    }
    let text = all.into_iter().collect::<Vec<_>>().join(",");
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [KEY, text.as_str()],
    )
    .during("raising the features in force")?;
    Ok(())
}
