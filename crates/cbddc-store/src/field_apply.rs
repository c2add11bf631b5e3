//! Writing a document merged field by field: its state (`field_states`, see
//! `cbddc_core::field_merge`) read, the write applied to it, and the document row, the
//! state, the index entries and the change written back.
//!
//! A document keeps a state only once a field-level write reached it: until then it is
//! what its last whole write made, and [`FieldState::from_whole`] of that row stands for
//! its state. Every write to a document with a state goes through here, whole ones too
//! (as a put or delete that saw no counters), so the state never falls behind its row.
//!
//! The row keeps the stamp, entry and change of the latest write the state took in; a
//! write stamped before it can still change fields nobody wrote later: it changes the
//! row's value and gets a change of its own, and is queued for compaction at once (its
//! document's latest write is another).

use crate::error::StoreError;
use crate::indexes::IndexSet;
use cbddc_core::field_merge::{FieldState, FieldWrite, changed_paths};
use cbddc_core::{Hlc, Operation, ReplicaId, StorageError};
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

fn sql(operation: &'static str) -> impl FnOnce(rusqlite::Error) -> StorageError {
    move |source| StoreError::Sqlite { operation, source }.into()
}

fn corrupt(detail: String) -> StorageError {
    StoreError::Corrupt {
        operation: "reading a document's field state",
        detail,
    }
    .into()
}

/// The field-level write an entry's operation is: a whole put or delete is one that saw
/// no counters.
pub(crate) fn as_field_write(op: &Operation) -> FieldWrite {
    match op {
        Operation::Put { value } => FieldWrite::Put {
            // Validated JSON on the way in; a stored value that is not reads as `null`.
            value: serde_json::from_str(value).unwrap_or(Value::Null),
            observed: Default::default(),
        },
        Operation::Delete => FieldWrite::Delete {
            observed: Default::default(),
        },
        Operation::Merge { write } => write.clone(),
    }
}

/// Whether `(collection, key)` keeps a field state.
pub(crate) fn has_state(conn: &Connection, collection: &str, key: &str) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT 1 FROM field_states WHERE collection = ?1 AND key = ?2")?
        .query_row(params![collection, key], |_| Ok(()))
        .optional()
        .map(|found| found.is_some())
}

pub(crate) use cbddc_core::field_merge::FEATURE;

/// What the writer knows of field-level merge in this database.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct FieldMerge {
    /// This node writes field-level entries (the feature is in force).
    pub in_force: bool,
    /// Some document keeps a state: whole writes look for one before taking the fast
    /// path. Only ever set while the store is open.
    pub any_state: bool,
}

impl FieldMerge {
    pub(crate) fn load(conn: &Connection) -> Result<Self, StoreError> {
        Ok(Self {
            in_force: crate::features::in_force(conn)?.contains(FEATURE),
            any_state: conn
                .query_row("SELECT EXISTS (SELECT 1 FROM field_states)", [], |r| {
                    r.get(0)
                })
                .map_err(|source| StoreError::Sqlite {
                    operation: "looking for field states",
                    source,
                })?,
        })
    }

    /// Whether a write of `(collection, key)` goes through its field state.
    pub(crate) fn has_state(
        &self,
        conn: &Connection,
        collection: &str,
        key: &str,
    ) -> rusqlite::Result<bool> {
        if !self.any_state {
            return Ok(false);
        }
        has_state(conn, collection, key)
    }
}

/// The most a document's state may take as text: its fields' stamps take several times
/// the document's bytes.
pub(crate) const MAX_STATE_BYTES: usize = 8 * cbddc_core::MAX_VALUE_BYTES;

/// A field state that came from a peer (a snapshot's), checked: a message says what is
/// wrong with it.
/// `document` is the value sent with it, which holds the values the state leaves out.
pub(crate) fn parse_state(text: &str, document: Option<&Value>) -> Result<FieldState, String> {
    if text.len() > MAX_STATE_BYTES {
        return Err(format!(
            "its field state is {} bytes; the limit is {MAX_STATE_BYTES} bytes",
            text.len()
        ));
    }
    FieldState::from_json_beside(text, document).ok_or_else(|| {
        "its field state is not one, or leaves out a value its document lacks".to_string()
    })
}

/// A stored or received document's text as JSON; one that is not reads as `null`
/// (every way in validates it).
pub(crate) fn parse_document(text: Option<&str>) -> Option<Value> {
    text.map(|text| serde_json::from_str(text).unwrap_or(Value::Null))
}

/// A document row as the merge reads it.
struct Held {
    value: Option<String>,
    stamp: Hlc,
    seq: Option<i64>,
    position: Option<i64>,
}

/// A document's row and state, as held before a write.
pub(crate) struct Current {
    held: Option<Held>,
    /// The state, or the one its row stands for.
    pub state: FieldState,
    /// The document its state makes, when it keeps one (its row holds it, written from
    /// the state).
    merged: Option<Option<Value>>,
}

impl Current {
    /// The document as merged now.
    pub(crate) fn value(&self) -> Option<Value> {
        match &self.merged {
            Some(document) => document.clone(),
            None => self.state.value(),
        }
    }

    /// [`Current::value`], taking the document read rather than copying it.
    fn take_value(&mut self) -> Option<Value> {
        match self.merged.take() {
            Some(document) => document,
            None => self.state.value(),
        }
    }
}

/// Reads `(collection, key)`'s row and state.
pub(crate) fn read(
    conn: &Connection,
    collection: &str,
    key: &str,
) -> Result<Current, StorageError> {
    const OP: &str = "reading a document to merge into";
    let held = conn
        .prepare_cached(
            "SELECT value, hlc_wall, hlc_counter, hlc_node, seq, position FROM documents
             WHERE collection = ?1 AND key = ?2",
        )
        .map_err(sql(OP))?
        .query_row(params![collection, key], |r| {
            Ok((
                r.get::<_, Option<String>>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, u32>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, Option<i64>>(4)?,
                r.get::<_, Option<i64>>(5)?,
            ))
        })
        .optional()
        .map_err(sql(OP))?;
    let held = match held {
        Some((value, wall, counter, replica, seq, position)) => Some(Held {
            value,
            stamp: crate::rows::stamp(wall, counter, &replica)?,
            seq,
            position,
        }),
        None => None,
    };
    let stored: Option<String> = conn
        .prepare_cached("SELECT state FROM field_states WHERE collection = ?1 AND key = ?2")
        .map_err(sql(OP))?
        .query_row(params![collection, key], |r| r.get(0))
        .optional()
        .map_err(sql(OP))?;
    let document = parse_document(held.as_ref().and_then(|h| h.value.as_deref()));
    let (state, merged) = match (&stored, &held) {
        (Some(text), _) => {
            let state = FieldState::from_json_beside(text, document.as_ref()).ok_or_else(|| {
                corrupt(format!(
                    "{collection}/{key}: not a field state of the document it is kept with"
                ))
            })?;
            (state, Some(document))
        }
        (None, Some(held)) => (FieldState::from_whole(document.as_ref(), &held.stamp), None),
        (None, None) => (FieldState::default(), None),
    };
    Ok(Current {
        held,
        state,
        merged,
    })
}

/// What reaches a document's state.
pub(crate) enum Arriving<'a> {
    /// An oplog entry's write, by its origin.
    Write {
        origin: &'a ReplicaId,
        write: &'a FieldWrite,
    },
    /// The state a snapshot's source keeps (or the one its whole document stands for).
    State(&'a FieldState),
}

/// Something to merge into `(collection, key)`, stamped `stamp` (the entry's, or the
/// snapshot document's), written by entry `seq` of the stamp's replica (`None`: unknown,
/// a snapshot's), taking change position `position` if it changes the document.
pub(crate) struct Merging<'a> {
    pub collection: &'a str,
    pub key: &'a str,
    pub stamp: &'a Hlc,
    pub seq: Option<i64>,
    pub position: i64,
    pub arriving: Arriving<'a>,
}

/// What a merge did to its document.
#[derive(Debug)]
pub(crate) struct MergeOutcome {
    /// An entry's change was recorded at its position.
    pub changed: bool,
}

/// Keeps `state` beside `document`, the document it makes.
fn upsert_state(
    conn: &Connection,
    (collection, key): (&str, &str),
    state: &FieldState,
    document: Option<&Value>,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO field_states (collection, key, state) VALUES (?1, ?2, ?3)
         ON CONFLICT (collection, key) DO UPDATE SET state = excluded.state",
    )?
    .execute(params![collection, key, state.to_json_beside(document)])
    .map(|_| ())
}

/// Merges `merging` into `current` (the document's, read by [`read`]) and writes the
/// row, the state, index entries, the change (for an entry that changed the document)
/// and what compaction may collect. With `max_bytes`, a merge that would make a larger
/// document is refused before anything is written (a local write; a peer's write or
/// snapshot merges whatever it makes, as every other replica does).
pub(crate) fn write(
    conn: &Connection,
    indexes: &IndexSet,
    mut current: Current,
    merging: &Merging<'_>,
    max_bytes: Option<usize>,
) -> Result<MergeOutcome, StorageError> {
    const OP: &str = "writing a merged document";
    let (collection, key) = (merging.collection, merging.key);
    let before = current.take_value();
    match &merging.arriving {
        Arriving::Write { origin, write } => current.state.apply(merging.stamp, origin, write),
        Arriving::State(state) => current.state.join(state),
    }
    let after = current.state.value();
    let text = after.as_ref().map(Value::to_string);
    if let (Some(limit), Some(text)) = (max_bytes, &text)
        && text.len() > limit
    {
        return Err(StorageError::Invalid(cbddc_core::CoreError::InvalidValue {
            reason: format!(
                "{collection}/{key}: the document this write makes is {} bytes; the limit is \
                 {limit} bytes",
                text.len()
            ),
        }));
    }
    let changed = before != after;
    let entry = matches!(merging.arriving, Arriving::Write { .. });
    let latest = current
        .held
        .as_ref()
        .is_none_or(|held| merging.stamp > &held.stamp);
    // An entry that changed the document, or became its latest write, gets a change (as a
    // whole write that wins does): the feed always holds one for the document's latest
    // state, whatever compaction collects. A position only where a change is recorded:
    // compaction drops the change at the position queued with an entry.
    let position = ((changed || latest) && entry).then_some(merging.position);
    let replica = merging.stamp.replica.as_str();
    let wall = i64::try_from(merging.stamp.wall_ms).unwrap_or(i64::MAX);
    let counter = merging.stamp.counter;
    let held_text = current.held.as_ref().and_then(|h| h.value.as_deref());
    if current.held.is_none() || held_text != text.as_deref() {
        let replaced = indexes.held(conn, collection, key).map_err(sql(OP))?;
        let columns = params![
            collection,
            key,
            text,
            wall,
            counter,
            replica,
            merging.seq,
            position
        ];
        let written = match (&current.held, latest) {
            (None, _) => conn
                .prepare_cached(crate::document_write::INSERT_DOCUMENT)
                .and_then(|mut s| s.execute(columns)),
            (Some(_), true) => conn
                .prepare_cached(
                    "UPDATE documents SET value = ?3, hlc_wall = ?4, hlc_counter = ?5,
                         hlc_node = ?6, seq = ?7, position = ?8
                     WHERE collection = ?1 AND key = ?2",
                )
                .and_then(|mut s| s.execute(columns)),
            // The row keeps its latest write; only the value changes.
            (Some(_), false) => conn
                .prepare_cached(
                    "UPDATE documents SET value = ?3 WHERE collection = ?1 AND key = ?2",
                )
                .and_then(|mut s| s.execute(params![collection, key, text])),
        };
        written.map_err(sql(OP))?;
        indexes
            .record(conn, collection, key, replaced.as_deref(), text.as_deref())
            .map_err(sql(OP))?;
    } else if latest {
        conn.prepare_cached(
            "UPDATE documents SET hlc_wall = ?3, hlc_counter = ?4, hlc_node = ?5, seq = ?6,
                 position = ?7
             WHERE collection = ?1 AND key = ?2",
        )
        .and_then(|mut s| {
            s.execute(params![
                collection,
                key,
                wall,
                counter,
                replica,
                merging.seq,
                position
            ])
        })
        .map_err(sql(OP))?;
    }
    upsert_state(conn, (collection, key), &current.state, after.as_ref()).map_err(sql(OP))?;

    let queue = |seq: &Option<i64>, replica: &str, position: Option<i64>, tombstone: bool| {
        let Some(seq) = seq else { return Ok(()) };
        conn.prepare_cached(
            "INSERT OR REPLACE INTO collectable (origin, seq, position, tombstone)
             VALUES (?1, ?2, ?3, ?4)",
        )
        .and_then(|mut s| s.execute(params![replica, seq, position, tombstone]))
        .map(|_| ())
        .map_err(sql(OP))
    };
    if latest {
        // The write the row held before is superseded; this one is the document's
        // tombstone if it left it deleted.
        if let Some(held) = &current.held {
            queue(&held.seq, held.stamp.replica.as_str(), held.position, false)?;
        }
        if after.is_none() {
            queue(&merging.seq, replica, position, true)?;
        }
    } else {
        // Its document's latest write is another: collectable once every peer has it.
        queue(&merging.seq, replica, position, false)?;
    }
    if let (Some(position), Some(seq)) = (position, merging.seq) {
        // The paths only: the feed reads the document from its row.
        let merged = serde_json::json!({
            "paths": changed_paths(before.as_ref(), after.as_ref()),
        });
        conn.prepare_cached(
            "INSERT INTO changes (position, origin, seq, merged) VALUES (?1, ?2, ?3, ?4)",
        )
        .and_then(|mut s| s.execute(params![position, replica, seq, merged.to_string()]))
        .map_err(sql(OP))?;
    }
    Ok(MergeOutcome {
        changed: position.is_some(),
    })
}

/// A local write to a document merged field by field: with field-level entries in
/// force, the write travels as what it says (a patch, an increment, a put or delete
/// with the counters it saw); before, resolved into the whole document it makes.
pub(crate) fn local(
    conn: &Connection,
    indexes: &IndexSet,
    in_force: bool,
    write: &cbddc_core::LocalWrite,
    hlc: &cbddc_core::Hlc,
    (seq, position): (i64, i64),
) -> Result<Operation, StorageError> {
    use cbddc_core::field_merge::{self, FieldWrite};
    let current = read(conn, &write.collection, &write.key)?;
    let invalid = |e: field_merge::MergeError| {
        StorageError::Invalid(cbddc_core::CoreError::InvalidValue {
            reason: format!("{}/{}: {e}", write.collection, write.key),
        })
    };
    let op = if in_force {
        let field_write = match &write.edit {
            cbddc_core::Edit::Put(value) => FieldWrite::Put {
                value: serde_json::from_str(value).map_err(|e| {
                    StorageError::Invalid(cbddc_core::CoreError::InvalidValue {
                        reason: format!("it is not valid JSON ({e})"),
                    })
                })?,
                observed: Default::default(),
            },
            cbddc_core::Edit::Delete => FieldWrite::Delete {
                observed: Default::default(),
            },
            cbddc_core::Edit::Patch(text) => FieldWrite::Patch {
                patch: field_merge::parse_patch(text).map_err(invalid)?,
                observed: Default::default(),
            },
            cbddc_core::Edit::Increment { path, by } => FieldWrite::Increment {
                path: field_merge::parse_path(path).map_err(invalid)?,
                by: *by,
            },
        };
        match (
            current.state.prepare(field_write).map_err(invalid)?,
            &write.edit,
        ) {
            (FieldWrite::Put { observed, .. }, cbddc_core::Edit::Put(value))
                if observed.is_empty() =>
            {
                Operation::Put {
                    value: value.clone(),
                }
            }
            (FieldWrite::Delete { observed }, _) if observed.is_empty() => Operation::Delete,
            (prepared, _) => Operation::Merge { write: prepared },
        }
    } else {
        let held = current.value().map(|v| v.to_string());
        match field_merge::resolve_whole(held.as_deref(), &write.edit).map_err(invalid)? {
            Some(value) => {
                cbddc_core::validate_json_value(&value)?;
                Operation::Put { value }
            }
            None => Operation::Delete,
        }
    };
    let field_write = as_field_write(&op);
    self::write(
        conn,
        indexes,
        current,
        &Merging {
            collection: &write.collection,
            key: &write.key,
            stamp: hlc,
            seq: Some(seq),
            position,
            arriving: Arriving::Write {
                origin: &hlc.replica,
                write: &field_write,
            },
        },
        Some(cbddc_core::MAX_VALUE_BYTES),
    )?;
    Ok(op)
}
