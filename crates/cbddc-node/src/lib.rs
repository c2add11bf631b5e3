//! A running CBDDC node: its store, its sync server and its sync loop, composed.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use cbddc_config::PeerNodeConfiguration;
//! use cbddc_core::NodeId;
//! use cbddc_node::Node;
//!
//! let mut config = PeerNodeConfiguration::new(NodeId::new("node-a")?, "./data-a");
//! config.tcp_port = 0; // any free port
//! let node = Node::start(config).await?;
//! node.put("users", "alice", r#"{"age":30}"#).await?;
//! println!("listening on {}", node.local_addr());
//! node.shutdown().await;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod error;
mod handler;
mod peers;
mod sync;

pub use error::NodeError;
pub use peers::{PeerActivity, PeerBook, PeerReport};

use cbddc_config::PeerNodeConfiguration;
use cbddc_core::{Document, DocumentStore, LocalWrite, NodeId, OplogEntry, PageLimits, PeerStore};
use cbddc_net::{ClientSettings, ClusterKey, ServerSettings, TcpSyncServer, proto};
use cbddc_store::{SqliteStore, StoreOptions};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long shutdown waits for sessions and sync tasks to finish what they are doing.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A running node. Stop it with [`Node::shutdown`].
#[derive(Debug)]
pub struct Node {
    config: PeerNodeConfiguration,
    store: Arc<SqliteStore>,
    server: TcpSyncServer,
    handler: Arc<handler::NodeHandler>,
    token: CancellationToken,
    sync_tasks: TaskTracker,
}

impl Node {
    /// Opens the node's database, starts listening and starts syncing with its known peers.
    ///
    /// Peers named in the configuration are saved to the peer store, merged with peers
    /// saved earlier.
    pub async fn start(config: PeerNodeConfiguration) -> Result<Self, NodeError> {
        let options = StoreOptions {
            durability: match config.durability {
                cbddc_config::Durability::Full => cbddc_store::Durability::Full,
                cbddc_config::Durability::Normal => cbddc_store::Durability::Normal,
            },
            max_clock_drift_ms: config.max_clock_drift_ms,
            ..StoreOptions::default()
        };
        let store =
            Arc::new(SqliteStore::open(&config.data_dir, config.node_id.clone(), options).await?);
        match Self::start_services(config, store.clone()).await {
            Ok(node) => Ok(node),
            Err(e) => {
                store.close().await;
                Err(e)
            }
        }
    }

    async fn start_services(
        config: PeerNodeConfiguration,
        store: Arc<SqliteStore>,
    ) -> Result<Self, NodeError> {
        for peer in &config.known_peers {
            store.save_peer(peer.clone()).await?;
        }
        let address = config.listen_address();
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|source| NodeError::Bind { address, source })?;
        let listen = listener
            .local_addr()
            .map_err(|source| NodeError::Bind { address, source })?;
        let key = ClusterKey::derive(&config.cluster_key);
        let book = Arc::new(PeerBook::default());
        let handler = Arc::new(handler::NodeHandler {
            store: store.clone(),
            peers: store.clone(),
            book: book.clone(),
            listen,
        });
        let token = CancellationToken::new();
        let server = TcpSyncServer::start(
            listener,
            ServerSettings::new(config.node_id.clone(), key.clone()),
            handler.clone(),
            token.child_token(),
        )?;
        let sync_tasks = TaskTracker::new();
        let context = sync::SyncContext {
            node_id: config.node_id.clone(),
            store: store.clone(),
            key,
            book,
            interval: Duration::from_millis(config.sync_interval_ms),
            limits: PageLimits::default(),
            client: ClientSettings::default(),
        };
        for peer in store.list_peers().await? {
            if !peer.enabled {
                tracing::info!(peer = %peer.node_id, "known peer is disabled; not contacting it");
                continue;
            }
            sync_tasks.spawn(sync::run_peer(context.clone(), peer, token.child_token()));
        }
        tracing::info!(node = %config.node_id, address = %listen, "node started");
        Ok(Self {
            config,
            store,
            server,
            handler,
            token,
            sync_tasks,
        })
    }

    /// This node's id.
    pub fn node_id(&self) -> &NodeId {
        &self.config.node_id
    }

    /// The address the sync server listens on (with the real port when 0 was configured).
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// The configuration the node runs on.
    pub fn config(&self) -> &PeerNodeConfiguration {
        &self.config
    }

    /// The node's document store.
    pub fn store(&self) -> Arc<dyn DocumentStore> {
        self.store.clone()
    }

    /// The node's known-peer store.
    pub fn peer_store(&self) -> Arc<dyn PeerStore> {
        self.store.clone()
    }

    /// Writes a document (JSON text); it is pushed to connected peers once committed.
    pub async fn put(
        &self,
        collection: &str,
        key: &str,
        value: &str,
    ) -> Result<OplogEntry, NodeError> {
        self.write_one(LocalWrite::put(collection, key, value))
            .await
    }

    /// Deletes a document (a tombstone that syncs like a write).
    pub async fn delete(&self, collection: &str, key: &str) -> Result<OplogEntry, NodeError> {
        self.write_one(LocalWrite::delete(collection, key)).await
    }

    /// Writes a batch in one transaction.
    pub async fn write(&self, writes: Vec<LocalWrite>) -> Result<Vec<OplogEntry>, NodeError> {
        Ok(self.store.write(writes).await?)
    }

    async fn write_one(&self, write: LocalWrite) -> Result<OplogEntry, NodeError> {
        let mut entries = self.store.write(vec![write]).await?;
        entries.pop().ok_or_else(|| {
            NodeError::Storage(cbddc_core::StorageError::Backend {
                operation: "writing",
                message: "the store acknowledged no entry".into(),
            })
        })
    }

    /// Reads a live document.
    pub async fn get(&self, collection: &str, key: &str) -> Result<Option<Document>, NodeError> {
        Ok(self.store.get(collection, key).await?)
    }

    /// Every live document of a collection, in key order.
    pub async fn list_all(&self, collection: &str) -> Result<Vec<Document>, NodeError> {
        let mut out: Vec<Document> = Vec::new();
        loop {
            let after = out.last().map(|d| d.key.clone());
            let page = self.store.list(collection, after, 1_000).await?;
            let done = page.len() < 1_000;
            out.extend(page);
            if done {
                return Ok(out);
            }
        }
    }

    /// What `cbddc status` shows.
    pub async fn status(&self) -> Result<proto::StatusResponse, NodeError> {
        Ok(self.handler.status().await?)
    }

    /// Stops syncing and serving (letting requests in flight finish), then closes the database.
    pub async fn shutdown(self) {
        self.token.cancel();
        self.sync_tasks.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.sync_tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("sync tasks did not stop within the grace period");
        }
        self.server.stop(SHUTDOWN_GRACE).await;
        self.store.close().await;
        tracing::info!(node = %self.config.node_id, "node stopped");
    }
}
