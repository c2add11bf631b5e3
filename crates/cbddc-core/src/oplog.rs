use crate::field_merge::{Edit, FieldWrite};
use crate::{CoreError, Hlc, NodeId, ReplicaId};
use serde::{Deserialize, Serialize};

/// Longest collection name, in bytes.
pub const MAX_COLLECTION_LEN: usize = 128;
/// Longest document key, in bytes.
pub const MAX_KEY_LEN: usize = 1024;
/// Largest document value (JSON text), in bytes.
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;

/// What an oplog entry does to its document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Operation {
    /// Set the document to this JSON text.
    Put {
        /// The document, as validated JSON text.
        value: String,
    },
    /// Delete the document. Kept as a tombstone that competes by HLC like any write.
    Delete,
    /// A write merged into its document path by path (the `field-merge` format; see
    /// [`crate::field_merge`]): a patch, an increment, or a put or delete that carries the
    /// counters its writer had seen.
    Merge {
        /// What it does.
        write: FieldWrite,
    },
}

impl Operation {
    /// The document this operation leaves when it is a whole-document write: the put's
    /// JSON parsed, `None` for a delete (or for text that is not JSON, which a validated
    /// entry never holds). A field-level write leaves a merge: its change in the feed
    /// carries the document (see `Change::document`).
    pub fn document(&self) -> Option<serde_json::Value> {
        match self {
            Operation::Put { value } => serde_json::from_str(value).ok(),
            Operation::Merge {
                write: FieldWrite::Put { value, .. },
            } => Some(value.clone()),
            Operation::Delete | Operation::Merge { .. } => None,
        }
    }

    /// The entry as stored in the oplog: the value column (JSON text of a put) and the
    /// field column (JSON of a field-level write).
    pub fn to_columns(&self) -> (Option<String>, Option<String>) {
        match self {
            Operation::Put { value } => (Some(value.clone()), None),
            Operation::Delete => (None, None),
            Operation::Merge { write } => (None, serde_json::to_string(write).ok()),
        }
    }

    /// The operation stored in those columns; `None` when the field column does not hold
    /// a field-level write.
    pub fn from_columns(value: Option<String>, field: Option<&str>) -> Option<Self> {
        Some(match (value, field) {
            (_, Some(field)) => Operation::Merge {
                write: serde_json::from_str(field).ok()?,
            },
            (Some(value), None) => Operation::Put { value },
            (None, None) => Operation::Delete,
        })
    }
}

/// One write by one origin replica: the unit of sync.
///
/// `seq` numbers the origin's entries 1, 2, 3, … without gaps, so a receiver applies an
/// origin's entries in order and can never miss one; `hlc` decides which of two writes to
/// the same `(collection, key)` wins. `node` names the node whose replica wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OplogEntry {
    /// The replica that made the write (see [`ReplicaId`]).
    pub origin: ReplicaId,
    /// The node whose replica `origin` is.
    pub node: NodeId,
    /// The origin's sequence number for this entry, starting at 1.
    pub seq: u64,
    /// Collection of the document.
    pub collection: String,
    /// Key of the document within its collection.
    pub key: String,
    /// Put or delete.
    pub op: Operation,
    /// When the origin made the write.
    pub hlc: Hlc,
}

impl OplogEntry {
    /// An estimate of the entry's size on the wire and on disk, for paging by bytes.
    pub fn approx_size(&self) -> usize {
        let value = match &self.op {
            Operation::Put { value } => value.len(),
            Operation::Delete => 0,
            Operation::Merge { write } => match write {
                FieldWrite::Put { value, observed } => json_len(value) + 64 * observed.len(),
                FieldWrite::Patch { patch, observed } => json_len(patch) + 64 * observed.len(),
                FieldWrite::Increment { path, .. } => {
                    16 + path.iter().map(String::len).sum::<usize>()
                }
                FieldWrite::Delete { observed } => 64 * observed.len(),
            },
        };
        48 + 2 * self.origin.as_str().len()
            + self.node.as_str().len()
            + self.collection.len()
            + self.key.len()
            + value
    }

    /// Checks every field that came from outside the process.
    pub fn validate(&self) -> Result<(), CoreError> {
        validate_collection(&self.collection)?;
        validate_key(&self.key)?;
        match &self.op {
            Operation::Put { value } => validate_json_value(value)?,
            Operation::Delete => {}
            Operation::Merge { write } => {
                let invalid = |reason: String| CoreError::InvalidValue {
                    reason: format!("{}/{}: {reason}", self.collection, self.key),
                };
                write.check().map_err(|e| invalid(e.to_string()))?;
                let size = match write {
                    FieldWrite::Put { value, .. } => json_len(value),
                    FieldWrite::Patch { patch, .. } => json_len(patch),
                    _ => 0,
                };
                if size > MAX_VALUE_BYTES {
                    return Err(invalid(format!(
                        "the {} is {size} bytes; the limit is {MAX_VALUE_BYTES} bytes",
                        write.kind()
                    )));
                }
            }
        }
        if self.seq == 0 {
            return Err(CoreError::InvalidValue {
                reason: "an oplog entry's sequence number starts at 1".into(),
            });
        }
        if self.hlc.replica != self.origin {
            return Err(CoreError::InvalidValue {
                reason: format!(
                    "entry {} of {} carries a stamp of {}",
                    self.seq, self.origin, self.hlc.replica
                ),
            });
        }
        Ok(())
    }
}

/// The bytes `value` takes as JSON text, counted without writing it out.
fn json_len(value: &serde_json::Value) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // Writing to a counter cannot fail, nor can a `Value` fail to serialize.
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0
}

/// A live document as a store returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Document {
    /// Collection of the document.
    pub collection: String,
    /// Key within the collection.
    pub key: String,
    /// The document, as JSON text.
    pub value: String,
    /// Stamp of the write that produced this value.
    pub hlc: Hlc,
}

/// One write in a local batch.
///
/// Until field-level merge is in force on a cluster, a patch or an increment is resolved
/// on the node that takes it, in the write's transaction, into the whole document it
/// makes: peers receive a put of that document (see [`crate::field_merge`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalWrite {
    /// Collection of the document.
    pub collection: String,
    /// Key within the collection.
    pub key: String,
    /// What it does.
    pub edit: Edit,
}

impl LocalWrite {
    /// A put of `value` (JSON text).
    pub fn put(
        collection: impl Into<String>,
        key: impl Into<String>,
        value: impl Into<String>,
    ) -> Self {
        Self {
            collection: collection.into(),
            key: key.into(),
            edit: Edit::Put(value.into()),
        }
    }

    /// A delete.
    pub fn delete(collection: impl Into<String>, key: impl Into<String>) -> Self {
        Self {
            collection: collection.into(),
            key: key.into(),
            edit: Edit::Delete,
        }
    }

    /// A JSON Merge Patch of the document (`patch` is JSON text of an object).
    pub fn patch(
        collection: impl Into<String>,
        key: impl Into<String>,
        patch: impl Into<String>,
    ) -> Self {
        Self {
            collection: collection.into(),
            key: key.into(),
            edit: Edit::Patch(patch.into()),
        }
    }

    /// An increment of the integer at the dotted `path` by `by`.
    pub fn increment(
        collection: impl Into<String>,
        key: impl Into<String>,
        path: impl Into<String>,
        by: i64,
    ) -> Self {
        Self {
            collection: collection.into(),
            key: key.into(),
            edit: Edit::Increment {
                path: path.into(),
                by,
            },
        }
    }

    /// Checks the collection, key and what the edit carries (JSON text, a patch that is
    /// an object, a path).
    pub fn validate(&self) -> Result<(), CoreError> {
        validate_collection(&self.collection)?;
        validate_key(&self.key)?;
        let invalid = |e: crate::field_merge::MergeError| CoreError::InvalidValue {
            reason: e.to_string(),
        };
        match &self.edit {
            Edit::Put(value) => validate_json_value(value),
            Edit::Delete => Ok(()),
            Edit::Patch(patch) => {
                validate_json_value(patch)?;
                crate::field_merge::parse_patch(patch)
                    .map(|_| ())
                    .map_err(invalid)
            }
            Edit::Increment { path, .. } => crate::field_merge::parse_path(path)
                .map(|_| ())
                .map_err(invalid),
        }
    }
}

/// A collection name: 1 to 128 bytes, no control characters.
pub fn validate_collection(name: &str) -> Result<(), CoreError> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > MAX_COLLECTION_LEN {
        Some("it is longer than 128 bytes")
    } else if name.chars().any(char::is_control) {
        Some("it contains a control character")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(CoreError::InvalidCollection {
            value: name.chars().take(MAX_COLLECTION_LEN).collect(),
            reason,
        }),
        None => Ok(()),
    }
}

/// A document key: 1 to 1024 bytes, no control characters.
pub fn validate_key(key: &str) -> Result<(), CoreError> {
    let reason = if key.is_empty() {
        Some("it is empty")
    } else if key.len() > MAX_KEY_LEN {
        Some("it is longer than 1024 bytes")
    } else if key.chars().any(char::is_control) {
        Some("it contains a control character")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(CoreError::InvalidKey { reason }),
        None => Ok(()),
    }
}

/// A document value: well-formed JSON text of at most [`MAX_VALUE_BYTES`].
pub fn validate_json_value(value: &str) -> Result<(), CoreError> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(CoreError::InvalidValue {
            reason: format!(
                "it is {} bytes; the limit is {MAX_VALUE_BYTES} bytes",
                value.len()
            ),
        });
    }
    serde_json::from_str::<serde::de::IgnoredAny>(value)
        .map(|_| ())
        .map_err(|e| CoreError::InvalidValue {
            reason: format!("it is not valid JSON ({e})"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_values_are_checked() {
        assert!(validate_json_value(r#"{"a":[1,2,{"b":null}]}"#).is_ok());
        assert!(validate_json_value("42").is_ok());
        assert!(validate_json_value("{").is_err());
        assert!(validate_json_value("").is_err());
        assert!(validate_json_value(&format!("\"{}\"", "x".repeat(MAX_VALUE_BYTES))).is_err());
    }

    #[test]
    fn names_and_keys_are_checked() {
        assert!(validate_collection("users").is_ok());
        assert!(validate_collection("").is_err());
        assert!(validate_collection("a\nb").is_err());
        assert!(validate_key("k/1 ü").is_ok());
        assert!(validate_key(&"k".repeat(MAX_KEY_LEN + 1)).is_err());
    }

    #[test]
    fn an_entry_must_carry_its_origins_stamp() {
        let origin = ReplicaId::new("a").unwrap();
        let mut entry = OplogEntry {
            origin: origin.clone(),
            node: NodeId::new("a").unwrap(),
            seq: 1,
            collection: "c".into(),
            key: "k".into(),
            op: Operation::Delete,
            hlc: Hlc {
                wall_ms: 1,
                counter: 0,
                replica: origin,
            },
        };
        assert!(entry.validate().is_ok());
        entry.hlc.replica = ReplicaId::new("b").unwrap();
        assert!(entry.validate().is_err());
    }
}
