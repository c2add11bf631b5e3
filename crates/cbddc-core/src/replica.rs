use crate::CoreError;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// Who owns a line of oplog history: one incarnation of a node's database.
///
/// A node's store takes a fresh replica id every time it opens, so a database that was
/// wiped, restored from a backup or copied to a second machine can never issue a
/// sequence number that an earlier or a sibling incarnation already issued: every write
/// of every process is a distinct `(replica, seq)`. The node id stays the human name
/// (configuration, status, election); [`crate::OplogEntry::node`] says which node wrote.
///
/// Fresh ids are 32 lowercase hex digits (128 random bits). Histories written before
/// replica ids existed keep their node id as their replica id, so any 1 to 64 characters
/// from `A-Z a-z 0-9 . _ -` are accepted. Ordering is byte-wise (it breaks stamp ties).
///
/// Every stamp names one, and stamps are copied everywhere (each field of a merged
/// document keeps its own): a copy shares the text rather than allocating it again.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ReplicaId(Arc<str>);

impl ReplicaId {
    /// Longest accepted replica id, in bytes.
    pub const MAX_LEN: usize = 64;

    /// Validates `value` as a replica id.
    pub fn new(value: impl Into<String>) -> Result<Self, CoreError> {
        let value = value.into();
        match crate::node_id::broken_name_rule(&value) {
            Some(reason) => Err(CoreError::InvalidReplicaId { value, reason }),
            None => Ok(Self(value.into())),
        }
    }

    /// A replica id never issued before, from the operating system's random source.
    pub fn generate() -> Result<Self, CoreError> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).map_err(|e| CoreError::Random {
            reason: e.to_string(),
        })?;
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Ok(Self(hex.into()))
    }

    /// The replica id of a history written before replica ids existed: its node id.
    pub fn legacy(node: &crate::NodeId) -> Self {
        Self(node.as_str().into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first eight characters, enough to tell replicas apart in a log line.
    pub fn short(&self) -> &str {
        self.0.get(..8).unwrap_or(&self.0)
    }
}

impl TryFrom<String> for ReplicaId {
    type Error = CoreError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<ReplicaId> for String {
    fn from(id: ReplicaId) -> Self {
        id.0.to_string()
    }
}

impl std::str::FromStr for ReplicaId {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ReplicaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReplicaId({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_distinct_hex_and_legacy_ids_are_node_ids() {
        let a = ReplicaId::generate().unwrap();
        let b = ReplicaId::generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 32);
        assert!(a.as_str().bytes().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(ReplicaId::new(a.as_str()).unwrap(), a);
        let node = crate::NodeId::new("node-a").unwrap();
        assert_eq!(ReplicaId::legacy(&node).as_str(), "node-a");
        assert!(ReplicaId::new("").is_err());
        assert!(ReplicaId::new("no spaces").is_err());
        assert!(ReplicaId::new("x".repeat(65)).is_err());
    }
}
