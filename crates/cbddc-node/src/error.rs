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
    /// The control plane (cluster membership) refused or failed.
    #[error("control plane: {0}")]
    ControlPlane(String),
}
