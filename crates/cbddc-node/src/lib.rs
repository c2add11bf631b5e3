//! A running CBDDC node: its store, its sync server and its sync tasks, composed, and
//! reconfigured live from a [`ConfigProvider`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use cbddc_config::{PeerNodeConfiguration, StaticProvider};
//! use cbddc_core::NodeId;
//! use cbddc_node::Node;
//! use std::sync::Arc;
//!
//! let mut config = PeerNodeConfiguration::new(NodeId::new("node-a")?, "./data-a");
//! config.tcp_port = 0; // any free port
//! let provider = Arc::new(StaticProvider::new(config.clone())?);
//! let node = Node::start_with_provider(provider.clone()).await?;
//! node.put("users", "alice", r#"{"age":30}"#).await?;
//!
//! config.tcp_port = 26000; // move to another port without a restart
//! provider.set(config)?;
//! node.shutdown().await;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod error;
mod feed;
mod handler;
mod indexes;
mod live;
mod query;
mod reconfigure;
mod runtime;
mod service;
mod signals;
mod state;
mod store_view;

pub use cbddc_control::{ClusterStatus, ControlPlaneError, Handover, RECONFIGURE_DEADLINE};
pub use cbddc_election::Leadership;
pub use cbddc_query::live::Match;
pub use cbddc_query::{Query, QueryError, Sort};
pub use cbddc_sync::{CompactionReport, PeerActivity, PeerBook, PeerReport};
pub use error::NodeError;
pub use feed::{ChangeFeed, ChangeFilter, ConsumerReport, FeedReport, FeedStart};
pub use live::{QueryChange, QueryFeed};
pub use query::Found;
pub use service::NodeStatus;
pub use signals::ClusterMembership;
pub use store_view::StoreView;

use cbddc_config::{ConfigProvider, PeerNodeConfiguration, StaticProvider};
use cbddc_core::{Document, DocumentStore, KnownPeer, LocalWrite, NodeId, OplogEntry, PeerStore};
use cbddc_store::SqliteStore;
use runtime::Runtime;
use service::NodeService;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// What a node announces about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeEvent {
    /// A new configuration was applied.
    Reconfigured {
        /// The node id in force.
        node_id: NodeId,
        /// The address listened on.
        listen: SocketAddr,
        /// What changed.
        applied: Vec<String>,
        /// Changes that could not be applied, and why.
        not_applied: Vec<String>,
    },
    /// Applying a configuration failed; the node runs as before.
    ReconfigurationFailed {
        /// Why.
        reason: String,
    },
    /// The provider refused a configuration (it never reached the node).
    ConfigRefused {
        /// Where it came from.
        source: String,
        /// Why.
        message: String,
    },
    /// The elected leader changed (see [`Node::leadership`]).
    LeadershipChanged {
        /// The leader, if any node may lead.
        leader: Option<NodeId>,
        /// Whether this node leads (and syncs with cloud remotes).
        is_leader: bool,
    },
    /// The cluster's configuration, or this node's place in it, changed (nodes with a
    /// `[cluster]` section; see [`Node::membership`]).
    ClusterChanged {
        /// The running configuration, if this node is a member of one.
        configuration_id: Option<u32>,
        /// Its members.
        members: Vec<NodeId>,
        /// This node was removed from the cluster.
        retired: bool,
    },
}

/// What the public API reads, replaced whenever the node is reconfigured.
#[derive(Debug, Clone)]
struct Snapshot {
    config: Arc<PeerNodeConfiguration>,
    listen: SocketAddr,
    store: Arc<SqliteStore>,
    service: Arc<NodeService>,
}

#[derive(Debug)]
struct Shared {
    provider: Arc<dyn ConfigProvider>,
    snapshot: RwLock<Snapshot>,
    runtime: tokio::sync::Mutex<Runtime>,
    signals: Arc<signals::Signals>,
    /// `/metrics` and the cluster page, while `metrics_address` is set.
    observe: tokio::sync::Mutex<Option<cbddc_observe::ObserveServer>>,
    root: CancellationToken,
}

impl Shared {
    /// Serves `/metrics` and the page at `wanted` (none: serves neither), moving or
    /// stopping the server as needed; `Ok(true)` if that changed anything.
    async fn observe_at(self: &Arc<Self>, wanted: Option<SocketAddr>) -> Result<bool, NodeError> {
        let mut running = self.observe.lock().await;
        let now = running.as_ref().map(|s| s.address());
        let same = match (wanted, now) {
            (None, None) => true,
            (Some(w), Some(n)) => w == n || (w.port() == 0 && w.ip() == n.ip()),
            _ => false,
        };
        if same {
            return Ok(false);
        }
        let fresh = match wanted {
            Some(address) => {
                let current = Arc::new(state::CurrentState {
                    shared: Arc::downgrade(self),
                    metrics: self.signals.metrics.clone(),
                });
                // Bound before the old one stops: a refused address keeps the old server.
                Some(
                    cbddc_observe::ObserveServer::start(
                        address,
                        current,
                        self.signals.metrics.clone(),
                        self.root.child_token(),
                    )
                    .await
                    .map_err(
                        |cbddc_observe::ObserveError::Bind { address, source }| NodeError::Bind {
                            address,
                            source,
                        },
                    )?,
                )
            }
            None => None,
        };
        if let Some(old) = std::mem::replace(&mut *running, fresh) {
            old.stop().await;
        }
        Ok(true)
    }

    fn publish(&self, runtime: &Runtime) {
        *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) = Snapshot {
            config: runtime.config.clone(),
            listen: runtime.listen(),
            store: runtime.store.clone(),
            service: runtime.service.clone(),
        };
    }
}

/// A running node. Stop it with [`Node::shutdown`].
#[derive(Debug)]
pub struct Node {
    shared: Arc<Shared>,
    reconfigurator: Option<tokio::task::JoinHandle<()>>,
}

impl Node {
    /// Starts a node on a fixed configuration.
    pub async fn start(config: PeerNodeConfiguration) -> Result<Self, NodeError> {
        Self::start_with_provider(Arc::new(StaticProvider::new(config)?)).await
    }

    /// Starts a node on the provider's configuration and follows its changes.
    ///
    /// Opens the node's database, saves the configured peers (merged with peers added at
    /// run time), starts listening and starts syncing.
    pub async fn start_with_provider(provider: Arc<dyn ConfigProvider>) -> Result<Self, NodeError> {
        let readable = cbddc_net::version::READABLE_FEATURES
            .iter()
            .map(|f| f.to_string())
            .collect();
        Self::start_reading(provider, readable).await
    }

    /// Starts a node whose build reads `features` (and writes each once every peer reads
    /// it): how tests and the mixed-version harness stand in for a newer build.
    #[doc(hidden)]
    pub async fn start_reading(
        provider: Arc<dyn ConfigProvider>,
        features: std::collections::BTreeSet<String>,
    ) -> Result<Self, NodeError> {
        let config = provider.current();
        let store = runtime::open_store(&config).await?;
        let listener = match runtime::bind(config.listen_address()).await {
            Ok(listener) => listener,
            Err(e) => {
                store.close().await;
                return Err(e);
            }
        };
        let root = CancellationToken::new();
        let signals = Arc::new(signals::Signals::new());
        let runtime = Runtime::start(
            config,
            store,
            listener,
            signals.clone(),
            Arc::new(features),
            root.child_token(),
        )
        .await?;
        let snapshot = Snapshot {
            config: runtime.config.clone(),
            listen: runtime.listen(),
            store: runtime.store.clone(),
            service: runtime.service.clone(),
        };
        let shared = Arc::new(Shared {
            provider,
            snapshot: RwLock::new(snapshot),
            runtime: tokio::sync::Mutex::new(runtime),
            signals,
            observe: tokio::sync::Mutex::new(None),
            root: root.clone(),
        });
        if let Err(e) = shared
            .observe_at(shared.provider.current().metrics_address)
            .await
        {
            root.cancel();
            shared.runtime.lock().await.stop().await;
            return Err(e);
        }
        let reconfigurator = tokio::spawn(reconfigure::run(shared.clone(), root.child_token()));
        Ok(Self {
            shared,
            reconfigurator: Some(reconfigurator),
        })
    }

    #[cfg(test)]
    pub(crate) fn service_for_tests(&self) -> Arc<NodeService> {
        self.snapshot().service
    }

    fn snapshot(&self) -> Snapshot {
        self.shared
            .snapshot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Events: reconfigurations, leadership changes and cluster changes.
    pub fn subscribe(&self) -> broadcast::Receiver<NodeEvent> {
        self.shared.signals.events.subscribe()
    }

    /// Who leads, kept current: `borrow()` it, or await `changed()`.
    pub fn leadership(&self) -> tokio::sync::watch::Receiver<Leadership> {
        self.shared.signals.leadership.subscribe()
    }

    /// The cluster membership, kept current; `None` for a node without a `[cluster]`
    /// section (and until its control plane has opened its state).
    pub fn membership(&self) -> tokio::sync::watch::Receiver<Option<ClusterMembership>> {
        self.shared.signals.membership.subscribe()
    }

    /// The node id in force.
    pub fn node_id(&self) -> NodeId {
        self.snapshot().config.node_id.clone()
    }

    /// The address the sync server listens on (with the real port when 0 was configured).
    pub fn local_addr(&self) -> SocketAddr {
        self.snapshot().listen
    }

    /// The configuration in force (changes that could not be applied keep their old values).
    pub fn config(&self) -> Arc<PeerNodeConfiguration> {
        self.snapshot().config
    }

    /// Where `/metrics` and the cluster page are served, if they are
    /// (`metrics_address`), with the real port when 0 was configured.
    pub async fn metrics_addr(&self) -> Option<SocketAddr> {
        self.shared
            .observe
            .lock()
            .await
            .as_ref()
            .map(|s| s.address())
    }

    /// A read-only view of the node's document store (replaced by a node id change).
    /// Writes go through [`Node::put`], [`Node::delete`] and [`Node::write`].
    pub fn store(&self) -> StoreView {
        StoreView::new(self.snapshot().store)
    }

    /// The known peers this node keeps (configured and added at run time), by node id.
    /// They change through the configuration, [`Node::save_peer`] and
    /// [`Node::remove_peer`], which also move the sync tasks and the key pins with them.
    pub async fn known_peers(&self) -> Result<Vec<KnownPeer>, NodeError> {
        Ok(self.snapshot().store.list_peers().await?)
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

    /// Merges a JSON Merge Patch (RFC 7386: an object; `null` removes a field, an object
    /// merges into the field) into a document (an absent one is `{}`).
    ///
    /// Once field-level merge is in force (every peer reads it, see `status`), the entry
    /// is the patch itself ([`cbddc_core::Operation::Merge`]) and merges path by path on
    /// every node: a concurrent write of another field of the document survives. Until
    /// then the patch is resolved on this node, in the write's transaction, into the whole
    /// document it makes, and the entry is a put of it (a concurrent write of the same
    /// document on another node may win over it whole). A patch that is not an object,
    /// or too deep, is refused naming it.
    pub async fn patch(
        &self,
        collection: &str,
        key: &str,
        patch: &str,
    ) -> Result<OplogEntry, NodeError> {
        self.write_one(LocalWrite::patch(collection, key, patch))
            .await
    }

    /// Adds `by` to the integer at the dotted `path` of a document (a missing field counts
    /// from 0, missing objects on the way are created). Once field-level merge is in
    /// force, concurrent increments on different nodes all count, once each; until then
    /// it is resolved like [`Node::patch`].
    /// A path through a field that is not an object, a field that holds no integer, or a
    /// sum past 64 bits is refused naming the path, and nothing is stored.
    pub async fn increment(
        &self,
        collection: &str,
        key: &str,
        path: &str,
        by: i64,
    ) -> Result<OplogEntry, NodeError> {
        self.write_one(LocalWrite::increment(collection, key, path, by))
            .await
    }

    /// A page of the documents of `collection` that match `query`, in its order, after
    /// the cursor of the previous page (`None`: the first page). The page's `next` cursor
    /// resumes it; a document that did not change meanwhile is neither skipped nor
    /// repeated. A cursor of another query, or altered, is refused.
    ///
    /// The query reads through the built index that narrows it most, else scans the
    /// collection (`plan` says which); memory is bounded by the query's limit either way.
    /// Sorted one way by an index's fields after its equalities, a page reads about its
    /// limit of that index; otherwise time grows with the matches (or the collection).
    pub async fn find(
        &self,
        collection: &str,
        query: &Query,
        after: Option<&str>,
    ) -> Result<Found, NodeError> {
        self.snapshot().service.find(collection, query, after).await
    }

    /// The documents of `collection` as they enter, change within and leave `query`'s
    /// result, from `start`: with [`FeedStart::Current`], every current match first (as
    /// entering, at position 0), then every change. Started elsewhere (after a position,
    /// or now), what matched before is not known, and a change of a document that does
    /// not match is reported as leaving.
    pub async fn watch_query(
        &self,
        collection: &str,
        query: Query,
        start: FeedStart,
    ) -> Result<QueryFeed, NodeError> {
        let feed = self
            .changes(ChangeFilter::collection(collection).starting(start))
            .await?;
        let live = cbddc_query::live::LiveQuery::new(query, start == FeedStart::Current);
        Ok(QueryFeed::new(feed, live))
    }

    /// A page of a collection in key order after `after` (`None`: from the start), at
    /// most `limit` documents (1 to 10,000), and whether there are more.
    pub async fn list(
        &self,
        collection: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Document>, bool), NodeError> {
        if !(1..=cbddc_query::MAX_LIMIT).contains(&limit) {
            return Err(NodeError::InvalidRequest {
                reason: format!(
                    "a page holds 1 to {} documents, not {limit}",
                    cbddc_query::MAX_LIMIT
                ),
            });
        }
        self.snapshot()
            .service
            .list_page(collection, after.map(str::to_string), limit)
            .await
    }

    /// Deletes a document (a tombstone that syncs like a write).
    pub async fn delete(&self, collection: &str, key: &str) -> Result<OplogEntry, NodeError> {
        self.write_one(LocalWrite::delete(collection, key)).await
    }

    /// Writes a batch in one transaction.
    ///
    /// A node with a `[cluster]` section takes writes only as a member of the running
    /// configuration: a retired node refuses them with [`NodeError::Retired`], and one
    /// that waits to be invited with [`NodeError::NotAdmitted`].
    pub async fn write(&self, writes: Vec<LocalWrite>) -> Result<Vec<OplogEntry>, NodeError> {
        self.snapshot().service.write_local(writes).await
    }

    async fn write_one(&self, write: LocalWrite) -> Result<OplogEntry, NodeError> {
        let mut entries = self.snapshot().service.write_local(vec![write]).await?;
        entries.pop().ok_or_else(|| {
            NodeError::Storage(cbddc_core::StorageError::Backend {
                operation: "writing",
                message: "the store acknowledged no entry".into(),
            })
        })
    }

    /// Every change applied to this node's documents, local writes and peers' entries
    /// alike (deletes included), in apply order, from where `filter` says.
    ///
    /// A feed resumed after a position yields every document changed since in its latest
    /// state, deletes included, or fails with [`NodeError::FeedCompacted`] when a delete it
    /// would need left the feed (past `feed_retention_ms`): resync then with
    /// [`FeedStart::Current`], the current documents (at position 0) and then the changes.
    /// A named consumer keeps its position on the node:
    ///
    /// ```no_run
    /// # async fn demo(node: &cbddc_node::Node) -> Result<(), cbddc_node::NodeError> {
    /// use cbddc_node::ChangeFilter;
    /// // Where "indexer" left off; its first run starts with the current documents.
    /// let mut feed = node.changes(ChangeFilter::collection("users").consumer("indexer")).await?;
    /// while let Some(change) = feed.next().await? {
    ///     println!("{} {}", change.position, change.entry.key);
    ///     feed.acknowledge(change.position).await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn changes(&self, filter: ChangeFilter) -> Result<ChangeFeed, NodeError> {
        ChangeFeed::open(self.snapshot().store, filter).await
    }

    /// Forgets a named feed consumer: it holds no delete back any more. `Ok(false)` if
    /// the node did not know it.
    pub async fn forget_feed_consumer(&self, name: &str) -> Result<bool, NodeError> {
        Ok(self
            .snapshot()
            .store
            .forget_feed_consumer(name.to_string())
            .await?)
    }

    /// Reads a live document.
    pub async fn get(&self, collection: &str, key: &str) -> Result<Option<Document>, NodeError> {
        Ok(self.snapshot().store.get(collection, key).await?)
    }

    /// Every live document of a collection, in key order.
    pub async fn list_all(&self, collection: &str) -> Result<Vec<Document>, NodeError> {
        let store = self.snapshot().store;
        let mut out: Vec<Document> = Vec::new();
        loop {
            let after = out.last().map(|d| d.key.clone());
            let page = store.list(collection, after, 1_000).await?;
            let done = page.len() < 1_000;
            out.extend(page);
            if done {
                return Ok(out);
            }
        }
    }

    /// Saves a known peer (kept across restarts) and starts syncing with it if enabled.
    pub async fn save_peer(&self, peer: KnownPeer) -> Result<(), NodeError> {
        let snapshot = self.snapshot();
        snapshot.store.save_peer(peer).await?;
        Ok(snapshot.service.follow_peer_store().await?)
    }

    /// Forgets a known peer and stops syncing with it; `Ok(false)` if it was not known.
    pub async fn remove_peer(&self, node_id: NodeId) -> Result<bool, NodeError> {
        self.snapshot().service.remove_peer(&node_id).await
    }

    /// What `cbddc status` shows.
    pub async fn status(&self) -> Result<NodeStatus, NodeError> {
        Ok(self.snapshot().service.status().await?)
    }

    /// The control plane's state: `Err` for a node without a `[cluster]` section.
    pub fn cluster_status(&self) -> Result<ClusterStatus, NodeError> {
        self.snapshot().service.cluster_status()
    }

    /// Replaces the cluster's members (this node must be one) and returns once the
    /// reconfiguration is decided, or with an error after [`RECONFIGURE_DEADLINE`].
    /// Members are named by node id; each needs a known address (a member of the running
    /// configuration, or a known peer).
    pub async fn reconfigure_cluster(&self, members: Vec<NodeId>) -> Result<u32, NodeError> {
        let service = self.snapshot().service;
        let names = members.into_iter().map(|m| m.to_string()).collect();
        Ok(service.reconfigure_cluster(names).await?.configuration_id)
    }

    /// Stops following the configuration, syncing and serving (letting requests in flight
    /// finish), then closes the database.
    pub async fn shutdown(mut self) {
        self.shared.root.cancel();
        if let Some(task) = self.reconfigurator.take() {
            let _ = task.await;
        }
        if let Some(observe) = self.shared.observe.lock().await.take() {
            observe.stop().await;
        }
        let runtime = self.shared.runtime.lock().await;
        let node = runtime.config.node_id.clone();
        drop(runtime.stop().await);
        tracing::info!(%node, "node stopped");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // A node dropped without shutdown still stops its tasks; the store closes when
        // its last handle goes.
        self.shared.root.cancel();
    }
}
