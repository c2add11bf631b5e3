//! The one error of values that came from outside the process: a leaf, so every type
//! that validates itself can name it without depending on the others.

/// A value from outside the process failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoreError {
    /// A node id broke the naming rules.
    #[error("invalid node id {value:?}: {reason} (use 1-64 characters from A-Z a-z 0-9 . _ -)")]
    InvalidNodeId {
        /// The rejected text.
        value: String,
        /// Which rule it broke.
        reason: &'static str,
    },
    /// A replica id broke the naming rules.
    #[error("invalid replica id {value:?}: {reason} (1-64 characters from A-Z a-z 0-9 . _ -)")]
    InvalidReplicaId {
        /// The rejected text.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The operating system gave no random bytes.
    #[error("cannot draw random bytes from the operating system: {reason}")]
    Random {
        /// The operating system's error.
        reason: String,
    },
    /// A collection name broke the naming rules.
    #[error("invalid collection name {value:?}: {reason}")]
    InvalidCollection {
        /// The rejected text.
        value: String,
        /// Which rule it broke.
        reason: &'static str,
    },
    /// A document key broke the rules.
    #[error("invalid document key: {reason}")]
    InvalidKey {
        /// Which rule it broke.
        reason: &'static str,
    },
    /// A document value is not acceptable JSON.
    #[error("invalid document value: {reason}")]
    InvalidValue {
        /// What is wrong with it.
        reason: String,
    },
    /// A peer address is not `host:port`.
    #[error("invalid peer address {value:?}: {reason} (expected HOST:PORT, e.g. 127.0.0.1:25000)")]
    InvalidAddress {
        /// The rejected text.
        value: String,
        /// Which rule it broke.
        reason: &'static str,
    },
}
