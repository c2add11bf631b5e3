use std::time::Duration;

/// A network operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// No TCP connection could be made.
    #[error("cannot connect to {address}: {source}; is a cbddc node running there?")]
    Connect {
        /// The address dialled.
        address: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The other side holds a different cluster key.
    #[error(
        "the cluster key was refused by {peer}: both sides must use the same cluster key \
         (--cluster-key or CBDDC_CLUSTER_KEY)"
    )]
    WrongClusterKey {
        /// Who refused (an address, or "the peer").
        peer: String,
    },
    /// The two sides have no protocol version in common.
    #[error(
        "{}",
        crate::version::no_common_protocol(ours, our_release, theirs, their_release)
    )]
    VersionMismatch {
        /// The versions we speak.
        ours: crate::version::ProtocolRange,
        /// Our release.
        our_release: String,
        /// The versions the peer speaks.
        theirs: crate::version::ProtocolRange,
        /// The peer's release (inferred from its protocol when it did not say).
        their_release: String,
    },
    /// The peer's release does not know what was asked (the message names both releases).
    #[error("{message}")]
    Unsupported {
        /// What, who, and which release to upgrade to.
        message: String,
    },
    /// One side writes a format the other cannot read, so the session was refused.
    #[error("{message}")]
    FeatureMissing {
        /// Which format, which peer, and which release to upgrade to.
        message: String,
    },
    /// The other side's key is not the one pinned for the node id it claims (or ours is
    /// not the one it pinned for us).
    #[error("{message}")]
    KeyRefused {
        /// Who refused whom, with both fingerprints and what to do.
        message: String,
    },
    /// The node key file is unusable.
    #[error(
        "node key file {path}: {detail}; restore it from a backup, or delete it to make a new key (peers that pinned the old one must then re-pin this node)"
    )]
    KeyFile {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The node refused the connection: it is at its connection limit.
    #[error("the node is at its connection limit; try again shortly")]
    Busy,
    /// The handshake failed for another reason (garbage, a broken peer).
    #[error("handshake failed: {detail}")]
    Handshake {
        /// What went wrong.
        detail: String,
    },
    /// Something took longer than its limit.
    #[error("timed out after {after:?} while {during}")]
    Timeout {
        /// What was being waited for.
        during: &'static str,
        /// The limit.
        after: Duration,
    },
    /// A frame or message announced a size above the limit; nothing was allocated for it.
    #[error("a message of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Announced size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Bytes that are not a valid message, or a message with invalid fields.
    #[error("malformed message: {detail}")]
    Malformed {
        /// What was wrong.
        detail: String,
    },
    /// A frame failed authentication: tampered with, replayed or reordered.
    #[error(
        "a frame failed authentication (tampered with, replayed or out of order); the session is closed"
    )]
    Decrypt,
    /// The other side closed the connection.
    #[error("the connection was closed by the peer")]
    Closed,
    /// Reading or writing the socket failed.
    #[error("connection I/O failed: {0}")]
    Io(#[from] std::io::Error),
    /// The node's change feed no longer holds everything after the position asked for.
    #[error("{message}")]
    FeedCompacted {
        /// The oldest position the feed can resume after.
        oldest: u64,
        /// The node's message.
        message: String,
    },
    /// The peer answered the request with an error.
    #[error("the node refused the request: {message}{}", reason_of(*code))]
    Remote {
        /// The error class.
        code: crate::proto::ErrorCode,
        /// The node's message.
        message: String,
    },
}

/// Words for an error class, where the node's message may not say it already.
fn reason_of(code: crate::proto::ErrorCode) -> &'static str {
    use crate::proto::ErrorCode;
    match code {
        ErrorCode::Storage => " (its storage failed; see the node's log)",
        ErrorCode::Timeout => " (it took longer than the node's per-request limit)",
        ErrorCode::Unavailable => " (the node is stopping or reopening its database; try again)",
        ErrorCode::Forbidden => " (not allowed for this session)",
        ErrorCode::Unspecified
        | ErrorCode::InvalidRequest
        | ErrorCode::NotAMember
        | ErrorCode::FeedCompacted => "",
    }
}

impl NetError {
    /// True for failures of the handshake (key, version, garbage): retrying will not help.
    pub fn is_authentication_failure(&self) -> bool {
        matches!(
            self,
            NetError::WrongClusterKey { .. }
                | NetError::VersionMismatch { .. }
                | NetError::FeatureMissing { .. }
                | NetError::Handshake { .. }
        )
    }
}
