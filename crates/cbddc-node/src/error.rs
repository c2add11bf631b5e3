use std::net::SocketAddr;

/// Starting or running a node failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] cbddc_config::ConfigError),
    /// The database could not be opened.
    #[error(transparent)]
    Store(#[from] cbddc_store::StoreError),
    /// A storage call failed.
    #[error(transparent)]
    Storage(#[from] cbddc_core::StorageError),
    /// The listening socket could not be bound.
    #[error("cannot listen on {address}: {source}; is another node already using this port?")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The network layer failed.
    #[error(transparent)]
    Net(#[from] cbddc_net::NetError),
    /// This node was removed from its cluster: it refuses writes (they could reach
    /// nobody); reads still work.
    #[error(
        "this node was removed from the cluster in configuration {configuration_id} (its last configuration was {last_member_of}) and takes no writes: write to a member of the cluster (`cbddc cluster status` on this node names them), or add this node back with `cbddc cluster reconfigure` on a member"
    )]
    Retired {
        /// The configuration that removed it.
        configuration_id: u32,
        /// The last configuration it was a member of.
        last_member_of: u32,
    },
    /// This node waits to be invited into a cluster (`[cluster] join = true`) and takes
    /// no writes until it is admitted.
    #[error(
        "this node waits to be invited into a cluster and takes no writes until it is admitted: add it with `cbddc cluster reconfigure --members <members>,<this node>` on a member"
    )]
    NotAdmitted,
    /// A peer or tool asked for what it may not do (the reason says who may).
    #[error("{reason}")]
    Forbidden {
        /// Why, in words.
        reason: String,
    },
    /// A request that cannot be carried out as asked (the reason says what to change).
    #[error("{reason}")]
    InvalidRequest {
        /// Why, in words.
        reason: String,
    },
    /// A change feed was asked to resume after a position whose following changes it no
    /// longer holds whole (see [`crate::FeedStart`]): resume after `oldest` or later, or
    /// resync with [`crate::FeedStart::Current`].
    #[error(
        "the change feed no longer holds everything after position {after} (deletes left it past feed_retention_ms, or a snapshot replaced documents): resync from the current state (`cbddc watch --from start`, `FeedStart::Current`), or resume after position {oldest} or later if missing what came between is acceptable"
    )]
    FeedCompacted {
        /// The position asked for.
        after: u64,
        /// The oldest position the feed can resume after.
        oldest: u64,
    },
    /// The control plane (cluster membership) refused or failed.
    #[error(transparent)]
    ControlPlane(#[from] cbddc_control::ControlPlaneError),
}

impl From<cbddc_control::WriteRefused> for NodeError {
    fn from(refused: cbddc_control::WriteRefused) -> Self {
        match refused {
            cbddc_control::WriteRefused::Retired {
                configuration_id,
                last_member_of,
            } => NodeError::Retired {
                configuration_id,
                last_member_of,
            },
            cbddc_control::WriteRefused::NotAdmitted => NodeError::NotAdmitted,
        }
    }
}
