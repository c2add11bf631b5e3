use crate::CoreError;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// The name of a node: 1 to 64 characters from `A-Z a-z 0-9 . _ -`.
///
/// Ordering is byte-wise lexicographic; the bully election elects the smallest id.
/// Every oplog entry names its writer's: a copy shares the text rather than allocating
/// it again.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NodeId(Arc<str>);

impl NodeId {
    /// Longest accepted node id, in bytes.
    pub const MAX_LEN: usize = 64;

    /// Validates `value` as a node id.
    pub fn new(value: impl Into<String>) -> Result<Self, CoreError> {
        let value = value.into();
        match broken_name_rule(&value) {
            Some(reason) => Err(CoreError::InvalidNodeId { value, reason }),
            None => Ok(Self(value.into())),
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Which rule `value` breaks as a name (node ids and replica ids follow the same rules):
/// 1 to 64 characters from `A-Z a-z 0-9 . _ -`.
pub(crate) fn broken_name_rule(value: &str) -> Option<&'static str> {
    if value.is_empty() {
        Some("it is empty")
    } else if value.len() > NodeId::MAX_LEN {
        Some("it is longer than 64 characters")
    } else if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Some("it contains a character outside the allowed set")
    } else {
        None
    }
}

impl TryFrom<String> for NodeId {
    type Error = CoreError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<NodeId> for String {
    fn from(id: NodeId) -> Self {
        id.0.to_string()
    }
}

impl std::str::FromStr for NodeId {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_allowed_alphabet() {
        assert!(NodeId::new("node-A_1.2").is_ok());
        assert!(NodeId::new("x".repeat(64)).is_ok());
    }

    #[test]
    fn rejects_empty_long_and_odd_characters() {
        for bad in ["", "has space", "slash/", "colon:", "é", &"x".repeat(65)] {
            assert!(NodeId::new(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn orders_byte_wise() {
        let ids: Vec<NodeId> = ["b", "B", "a", "aa", "A"]
            .into_iter()
            .map(|s| NodeId::new(s).unwrap())
            .collect();
        let mut sorted = ids.clone();
        sorted.sort();
        let names: Vec<&str> = sorted.iter().map(NodeId::as_str).collect();
        assert_eq!(names, ["A", "B", "a", "aa", "b"]);
    }

    #[test]
    fn deserializing_validates() {
        assert!(serde_json::from_str::<NodeId>("\"ok\"").is_ok());
        assert!(serde_json::from_str::<NodeId>("\"not ok\"").is_err());
    }
}
