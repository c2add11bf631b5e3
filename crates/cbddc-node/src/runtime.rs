//! Everything a node runs for one database: the store, the server, the request handler
//! and the sync tasks. A node id change replaces the whole runtime; other changes are
//! applied to it in place (see `reconfigure`).

use crate::NodeError;
use crate::handler::NodeHandler;
use crate::peers::PeerBook;
use crate::sync::{SyncContext, SyncSupervisor};
use cbddc_config::PeerNodeConfiguration;
use cbddc_core::{PageLimits, PeerStore};
use cbddc_net::{ClientSettings, ClusterKey, ServerSettings, TcpSyncServer};
use cbddc_store::{SqliteStore, StoreOptions};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How long stopping waits for sessions and sync tasks to finish what they are doing.
pub(crate) const GRACE: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub(crate) struct Runtime {
    /// The configuration in force (fields that could not be applied keep their old values).
    pub(crate) config: Arc<PeerNodeConfiguration>,
    pub(crate) store: Arc<SqliteStore>,
    pub(crate) server: TcpSyncServer,
    pub(crate) handler: Arc<NodeHandler>,
    pub(crate) sync: Arc<SyncSupervisor>,
    pub(crate) token: CancellationToken,
}

pub(crate) async fn open_store(
    config: &PeerNodeConfiguration,
) -> Result<Arc<SqliteStore>, NodeError> {
    let options = StoreOptions {
        durability: match config.durability {
            cbddc_config::Durability::Full => cbddc_store::Durability::Full,
            cbddc_config::Durability::Normal => cbddc_store::Durability::Normal,
        },
        max_clock_drift_ms: config.max_clock_drift_ms,
        ..StoreOptions::default()
    };
    Ok(Arc::new(
        SqliteStore::open(&config.data_dir, config.node_id.clone(), options).await?,
    ))
}

pub(crate) async fn bind(address: SocketAddr) -> Result<TcpListener, NodeError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| NodeError::Bind { address, source })
}

pub(crate) fn server_settings(config: &PeerNodeConfiguration) -> ServerSettings {
    ServerSettings::new(
        config.node_id.clone(),
        ClusterKey::derive(&config.cluster_key),
    )
}

impl Runtime {
    /// Starts serving `listener` and syncing from `store` under `config`. On failure the
    /// store is closed.
    pub(crate) async fn start(
        config: Arc<PeerNodeConfiguration>,
        store: Arc<SqliteStore>,
        listener: TcpListener,
        token: CancellationToken,
    ) -> Result<Self, NodeError> {
        match Self::start_inner(config, store.clone(), listener, token).await {
            Ok(runtime) => Ok(runtime),
            Err(e) => {
                store.close().await;
                Err(e)
            }
        }
    }

    async fn start_inner(
        config: Arc<PeerNodeConfiguration>,
        store: Arc<SqliteStore>,
        listener: TcpListener,
        token: CancellationToken,
    ) -> Result<Self, NodeError> {
        store
            .replace_configured_peers(config.known_peers.clone())
            .await?;
        let listen = listener.local_addr().map_err(|source| NodeError::Bind {
            address: config.listen_address(),
            source,
        })?;
        let sync = Arc::new(SyncSupervisor::new(
            SyncContext {
                node_id: config.node_id.clone(),
                store: store.clone(),
                key: ClusterKey::derive(&config.cluster_key),
                book: Arc::new(PeerBook::default()),
                interval: Duration::from_millis(config.sync_interval_ms),
                limits: PageLimits::default(),
                client: ClientSettings::default(),
            },
            token.child_token(),
        ));
        let handler = Arc::new(NodeHandler {
            store: store.clone(),
            peers: store.clone(),
            book: sync.book(),
            sync: sync.clone(),
            listen: Mutex::new(listen),
        });
        let server = TcpSyncServer::start(
            listener,
            server_settings(&config),
            handler.clone(),
            token.child_token(),
        )?;
        sync.reconcile(&store.list_peers().await?);
        tracing::info!(node = %config.node_id, address = %listen, "node services started");
        Ok(Self {
            config,
            store,
            server,
            handler,
            sync,
            token,
        })
    }

    pub(crate) fn listen(&self) -> SocketAddr {
        self.handler.listen()
    }

    /// Stops syncing and serving, then closes the store. Returns the still-bound listener.
    pub(crate) async fn stop(&self) -> Option<TcpListener> {
        self.sync.stop(GRACE).await;
        let (listener, _) = self.server.stop_keeping_listener(GRACE).await;
        self.token.cancel();
        self.store.close().await;
        listener
    }
}
