use crate::CoreError;

/// The clock refused a remote stamp.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClockError {
    /// A stamp lies further in the future than the configured maximum drift allows.
    #[error(
        "refused a stamp from replica {origin} that is {ahead_ms} ms ahead of the local clock \
         (maximum drift {max_drift_ms} ms); check the clock of the node that wrote it or raise the maximum drift"
    )]
    TooFarAhead {
        /// Replica whose stamp it is.
        origin: crate::ReplicaId,
        /// How far ahead of the local wall clock it is.
        ahead_ms: u64,
        /// The configured limit.
        max_drift_ms: u64,
    },
}

/// What a [`crate::DocumentStore`] or [`crate::PeerStore`] call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The caller passed something invalid; nothing was stored.
    #[error(transparent)]
    Invalid(#[from] CoreError),
    /// A remote entry was refused by the clock; nothing of its batch was stored.
    #[error(transparent)]
    Clock(#[from] ClockError),
    /// A remote batch held an entry of the receiver's own running replica: nobody else
    /// can hold such writes, so the batch is forged; nothing of it was stored.
    #[error(
        "refused entry {seq} of replica {replica}: that is this node's own running replica, which no peer can hold; the sender is forging entries (or relays a forged batch)"
    )]
    OwnReplica {
        /// The receiver's replica.
        replica: crate::ReplicaId,
        /// The entry's sequence number.
        seq: u64,
    },
    /// A local write names a collection this node does not replicate; nothing of its
    /// batch was stored.
    #[error(
        "this node replicates only {interest}, not {collection}: write it to a node that replicates it, or add it to `collections` in a new data dir"
    )]
    NotReplicated {
        /// The collection written.
        collection: String,
        /// What the node replicates.
        interest: String,
    },
    /// A change feed was asked to resume after a position whose following changes it no
    /// longer holds whole: deletes after it left the feed (past the feed retention), or a
    /// snapshot replaced documents without feed positions. Nothing was read.
    #[error(
        "the change feed no longer holds everything after position {after}: it can resume only after position {oldest} or later; resync by reading the current state and following from there (`cbddc watch --from start`, or `FeedStart::Current`)"
    )]
    FeedCompacted {
        /// The position asked for.
        after: u64,
        /// The oldest position the feed can resume after.
        oldest: u64,
    },
    /// An index was read that is not built (or not held): the query scans instead.
    #[error(
        "the index {index} is not built on this node (declare it under [[indexes]] and wait until `cbddc index list` shows it built)"
    )]
    IndexUnavailable {
        /// The index, as `collection(fields)`.
        index: String,
    },
    /// The store has been closed (the node is stopping or changing identity).
    #[error("the store is closed; the node is stopping or reopening its database")]
    Closed,
    /// The storage engine failed.
    #[error("storage failed while {operation}: {message}")]
    Backend {
        /// What the store was doing.
        operation: &'static str,
        /// The engine's own message.
        message: String,
    },
}
