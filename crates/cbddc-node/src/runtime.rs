//! Everything a node runs for one database: the store, the server, the request handler
//! and the sync tasks. A node id change replaces the whole runtime; other changes are
//! applied to it in place (see `reconfigure`).

use crate::NodeError;
use crate::handler::NodeHandler;
use crate::service::NodeService;
use crate::signals::Signals;
use cbddc_config::PeerNodeConfiguration;
use cbddc_control::{self as cluster, ControlPlane};
use cbddc_core::PeerDirectory;
use cbddc_core::{DocumentStore, PageLimits, PeerStore};
use cbddc_election::{ElectionService, ElectionSettings};
use cbddc_net::ProtocolRange;
use cbddc_net::discovery::{self, BeaconSettings, DiscoveryKey};
use cbddc_net::{ClientSettings, ClusterKey, LocalIdentity, ServerSettings, TcpSyncServer};
use cbddc_observe::MeteredStore;
use cbddc_store::{SqliteStore, StoreOptions};
use cbddc_sync::PeerBook;
use cbddc_sync::features::FeatureLevel;
use cbddc_sync::pins::KeyPins;
use cbddc_sync::{SyncContext, SyncOrchestrator};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long stopping waits for sessions and sync tasks to finish what they are doing.
pub(crate) const GRACE: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub(crate) struct Runtime {
    /// The configuration in force (fields that could not be applied keep their old values).
    pub(crate) config: Arc<PeerNodeConfiguration>,
    pub(crate) store: Arc<SqliteStore>,
    pub(crate) server: TcpSyncServer,
    pub(crate) service: Arc<NodeService>,
    pub(crate) sync: Arc<SyncOrchestrator>,
    pub(crate) control: Control,
    /// The control plane, with a `[cluster]` section.
    pub(crate) cluster: Option<Arc<ControlPlane>>,
    /// The node's announcements, which outlive this runtime.
    pub(crate) signals: Arc<Signals>,
    /// Our node id, key and pins, for the servers this runtime starts.
    pub(crate) identity: LocalIdentity,
    /// The formats this node's build reads (kept for the runtime that replaces this one).
    pub(crate) readable: Arc<BTreeSet<String>>,
    pub(crate) token: CancellationToken,
}

/// The protocol versions this node speaks: its build's, from `min_protocol_version` on.
fn protocols(config: &PeerNodeConfiguration) -> Result<ProtocolRange, NodeError> {
    let Some(oldest) = config.min_protocol_version else {
        return Ok(ProtocolRange::THIS_BUILD);
    };
    ProtocolRange::this_build_from(oldest).ok_or_else(|| {
        NodeError::Config(cbddc_config::ConfigError::Invalid {
            source_name: "the configuration".into(),
            field: "min_protocol_version".into(),
            message: format!(
                "must be from {} to {}, the protocol versions cbddc {} speaks",
                ProtocolRange::THIS_BUILD.oldest(),
                ProtocolRange::THIS_BUILD.newest(),
                cbddc_net::RELEASE
            ),
        })
    })
}

/// Discovery and election: restarted whenever their settings, the port, the key or the
/// node id change.
#[derive(Debug)]
pub(crate) struct Control {
    token: CancellationToken,
    /// Discovery, beacons, the election and its follower: [`Control::stop`] waits for
    /// them, so their UDP port and their view are let go before a new `Control` starts.
    tasks: TaskTracker,
    _election: ElectionService,
}

/// Whether this node may lead, as the election's one input: its configuration says it
/// may, and with a control plane it is a member of the running configuration (followed
/// by one task as the membership changes).
fn eligibility(
    config: &PeerNodeConfiguration,
    cluster: Option<Arc<ControlPlane>>,
    tasks: &TaskTracker,
    token: &CancellationToken,
) -> tokio::sync::watch::Receiver<bool> {
    let configured = config.election.eligible;
    let local = config.node_id.clone();
    let member =
        |plane: &Option<Arc<ControlPlane>>| plane.as_ref().is_none_or(|p| p.is_member(&local));
    let (tx, rx) = tokio::sync::watch::channel(configured && member(&cluster));
    let Some(plane) = cluster else {
        return rx;
    };
    let token = token.clone();
    tasks.spawn(async move {
        let mut view = plane.watch();
        loop {
            let now = configured && plane.is_member(&local);
            crate::signals::set_if_changed(&tx, now);
            tokio::select! {
                _ = token.cancelled() => return,
                changed = view.changed() => if changed.is_err() { return },
            }
        }
    });
    rx
}

impl Control {
    pub(crate) async fn start(
        config: &PeerNodeConfiguration,
        listen: SocketAddr,
        sync: Arc<SyncOrchestrator>,
        signals: Arc<Signals>,
        cluster: Option<Arc<ControlPlane>>,
        parent: &CancellationToken,
    ) -> Result<Self, NodeError> {
        let token = parent.child_token();
        let tasks = TaskTracker::new();
        let book = sync.book();
        book.set_timeout(config.election.peer_timeout());
        if config.discovery.enabled {
            let address = SocketAddr::new(config.bind_address, config.discovery.port);
            let socket = tokio::net::UdpSocket::bind(address)
                .await
                .map_err(|source| NodeError::Bind { address, source })?;
            let settings = BeaconSettings {
                node_id: config.node_id.clone(),
                tcp_port: listen.port(),
                eligible: config.election.eligible,
                key: DiscoveryKey::derive(&config.cluster_key),
                targets: config.discovery.effective_targets(),
                interval: Duration::from_millis(config.discovery.interval_ms),
                max_age: Duration::from_secs(60),
            };
            let (heard_tx, mut heard_rx) = tokio::sync::mpsc::channel(256);
            tasks.spawn(discovery::run(socket, settings, heard_tx, token.clone()));
            let beacons_book = book.clone();
            tasks.spawn(async move {
                while let Some(heard) = heard_rx.recv().await {
                    beacons_book.beacon(&heard.node_id, heard.address, heard.eligible);
                }
            });
            tracing::info!(%address, targets = ?config.discovery.effective_targets(), "discovery started");
        }
        let interval = Duration::from_millis(config.election.interval_ms);
        let eligible = eligibility(config, cluster.clone(), &tasks, &token);
        let election = ElectionService::start(
            config.node_id.clone(),
            ElectionSettings::new(
                config.election.eligible,
                interval,
                config.election.peer_timeout(),
            ),
            book.clone(),
            eligible,
            &tasks,
            token.child_token(),
        );
        let mut led = election.watch();
        let mut changes = book.changes();
        let follower_token = token.clone();
        tasks.spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            loop {
                tokio::select! {
                    _ = follower_token.cancelled() => return,
                    _ = ticker.tick() => {}
                    _ = led.changed() => {}
                    _ = changes.changed() => {}
                }
                let now = led.borrow_and_update().clone();
                sync.set_leader(now.is_leader);
                signals.set_leadership(now);
                sync.set_discovered(book.discovered_alive());
            }
        });
        Ok(Self {
            token,
            tasks,
            _election: election,
        })
    }

    /// Stops discovery and election and waits (bounded) until their tasks have ended.
    pub(crate) async fn stop(&self) {
        self.token.cancel();
        self.tasks.close();
        if tokio::time::timeout(GRACE, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("discovery and election did not stop within the grace period");
        }
    }
}

pub(crate) async fn open_store(
    config: &PeerNodeConfiguration,
) -> Result<Arc<SqliteStore>, NodeError> {
    let options = StoreOptions {
        durability: config.durability,
        max_clock_drift_ms: config.max_clock_drift_ms,
        interest: config.interest(),
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

pub(crate) fn server_settings(
    config: &PeerNodeConfiguration,
    identity: &LocalIdentity,
) -> ServerSettings {
    let mut settings = ServerSettings::new(
        config.node_id.clone(),
        identity.key.clone(),
        ClusterKey::derive(&config.cluster_key),
    );
    settings.verifier = identity.verifier.clone();
    settings.replica = identity.replica.clone();
    settings.eligible = config.election.eligible;
    settings.meter = identity.meter.clone();
    settings.interest = identity.interest.clone();
    settings.versions = identity.versions.clone();
    settings
}

/// The node's static key, kept in its data directory (created on first start).
pub(crate) const NODE_KEY_FILE: &str = "node.key";

/// This node's identity for every session: its node id, its key (`node_key_file`, or
/// from the data dir) and the keys it pinned for its peers.
async fn identity(
    config: &PeerNodeConfiguration,
    store: &Arc<SqliteStore>,
) -> Result<(LocalIdentity, Arc<KeyPins>), NodeError> {
    let path = config
        .node_key_file
        .clone()
        .unwrap_or_else(|| config.data_dir.join(NODE_KEY_FILE));
    let key = tokio::task::spawn_blocking(move || cbddc_net::NodeKey::load_or_create(&path))
        .await
        .map_err(|e| cbddc_control::ControlPlaneError::Start {
            reason: format!("loading the node key stopped: {e}"),
        })??;
    let pins = Arc::new(KeyPins::load(store.clone()).await?);
    let verifier: Arc<dyn cbddc_net::PeerVerifier> = pins.clone();
    let mut identity = LocalIdentity::node(config.node_id.clone(), key, Some(verifier));
    identity.replica = Some(cbddc_core::DocumentStore::replica(store.as_ref()).clone());
    Ok((identity, pins))
}

impl Runtime {
    /// Starts serving `listener` and syncing from `store` under `config`. On failure the
    /// store is closed.
    pub(crate) async fn start(
        config: Arc<PeerNodeConfiguration>,
        store: Arc<SqliteStore>,
        listener: TcpListener,
        signals: Arc<Signals>,
        readable: Arc<BTreeSet<String>>,
        token: CancellationToken,
    ) -> Result<Self, NodeError> {
        match Self::start_inner(config, store.clone(), listener, signals, readable, token).await {
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
        signals: Arc<Signals>,
        readable: Arc<BTreeSet<String>>,
        token: CancellationToken,
    ) -> Result<Self, NodeError> {
        let protocols = protocols(&config)?;
        store
            .replace_configured_peers(config.known_peers.clone())
            .await?;
        let listen = listener.local_addr().map_err(|source| NodeError::Bind {
            address: config.listen_address(),
            source,
        })?;
        let (mut identity, pins) = identity(&config, &store).await?;
        identity.meter = Some(signals.metrics.net.clone());
        identity.interest = config.interest();
        let features =
            FeatureLevel::load(config.node_id.clone(), (*readable).clone(), store.as_ref()).await?;
        identity.versions = cbddc_net::Versions {
            protocols,
            release: cbddc_net::RELEASE.to_string(),
            features: (*readable).clone(),
            gate: Some(features.clone()),
        };
        let book = Arc::new(PeerBook::new(config.election.peer_timeout()));
        let data: Arc<dyn DocumentStore> =
            Arc::new(MeteredStore::new(store.clone(), signals.metrics.clone()));
        let sync = Arc::new(SyncOrchestrator::new(
            SyncContext {
                node_id: config.node_id.clone(),
                identity: identity.clone(),
                store: data.clone(),
                key: ClusterKey::derive(&config.cluster_key),
                book,
                interval: Duration::from_millis(config.sync_interval_ms),
                limits: PageLimits::default(),
                client: client_settings(&config),
                connector: Arc::new(cbddc_net::TcpConnector),
                fan_out: Arc::new(Semaphore::new(cbddc_sync::FAN_OUT)),
                duplicates: Default::default(),
                fold: Arc::new(cbddc_sync::fold::FoldTracker::load(store.as_ref()).await?),
                compactor: Arc::new(
                    cbddc_sync::compaction::Compactor::load(
                        store.as_ref(),
                        config.oplog_retention_ms,
                        config.feed_retention_ms,
                    )
                    .await?,
                ),
                metrics: signals.metrics.clone(),
            },
            token.child_token(),
        ));
        sync.start_compaction();
        let cluster = match &config.cluster {
            Some(section) => Some(
                start_cluster(
                    &config,
                    section,
                    store.control_database(),
                    listen,
                    &sync,
                    (identity.clone(), pins.clone()),
                    &token,
                )
                .await?,
            ),
            None => None,
        };
        let indexes = Arc::new(crate::indexes::Indexes::new(data.clone()));
        indexes.declare(config.indexes.clone()).await?;
        let service = Arc::new(NodeService {
            cluster,
            store: data,
            peers: store.clone(),
            book: sync.book(),
            sync: sync.clone(),
            listen: Mutex::new(listen),
            wanted_listen: Mutex::new(None),
            advertise: Mutex::new(config.advertise_address.clone()),
            signals: signals.clone(),
            node_key: identity.key.public(),
            pins,
            versions: identity.versions.clone(),
            features,
            indexes,
        });
        let server = TcpSyncServer::start(
            listener,
            server_settings(&config, &identity),
            Arc::new(NodeHandler::new(service.clone())),
            token.child_token(),
        )?;
        service.follow_peer_store().await?;
        let control = match Control::start(
            &config,
            listen,
            sync.clone(),
            signals.clone(),
            service.cluster.clone(),
            &token,
        )
        .await
        {
            Ok(control) => control,
            Err(e) => {
                if let Some(cluster) = &service.cluster {
                    cluster.stop().await;
                }
                sync.stop(GRACE).await;
                server.stop(GRACE).await;
                return Err(e);
            }
        };
        tokio::spawn(service.indexes.clone().run(token.child_token()));
        // Raised from here on, once everything it reads from is running.
        tokio::spawn(service.features.clone().run(
            store.clone(),
            sync.book(),
            store.clone(),
            token.child_token(),
        ));
        let cluster = service.cluster.clone();
        match &cluster {
            Some(cluster) => signals.follow_cluster(cluster, token.child_token()),
            None => signals.set_membership(None),
        }
        tracing::info!(node = %config.node_id, address = %listen, "node services started");
        Ok(Self {
            config,
            store,
            server,
            service,
            sync,
            control,
            cluster,
            signals,
            identity,
            readable,
            token,
        })
    }

    pub(crate) fn listen(&self) -> SocketAddr {
        self.service.listen()
    }

    /// Stops syncing and serving, then closes the store. Returns the still-bound listener.
    /// Starts discovery and election again on the current configuration and port.
    pub(crate) async fn restart_control(&mut self) -> Result<(), NodeError> {
        self.control.stop().await;
        self.control = Control::start(
            &self.config,
            self.listen(),
            self.sync.clone(),
            self.signals.clone(),
            self.cluster.clone(),
            &self.token,
        )
        .await?;
        Ok(())
    }

    pub(crate) async fn stop(&self) -> Option<TcpListener> {
        self.control.stop().await;
        if let Some(cluster) = &self.cluster {
            cluster.stop().await;
        }
        self.sync.stop(GRACE).await;
        let (listener, _) = self.server.stop_keeping_listener(GRACE).await;
        self.token.cancel();
        self.store.close().await;
        listener
    }
}

/// How this node's clients (sync sessions and control links) connect: they tell peers
/// whether this node may lead.
pub(crate) fn client_settings(config: &PeerNodeConfiguration) -> ClientSettings {
    ClientSettings {
        eligible: config.election.eligible,
        ..ClientSettings::default()
    }
}

/// Starts the control plane of a `[cluster]` node, and keeps the data plane (sync peers)
/// and the election (eligible peers) on the members of its running configuration.
async fn start_cluster(
    config: &PeerNodeConfiguration,
    section: &cbddc_config::ClusterConfig,
    database: cbddc_store::ControlDatabase,
    listen: SocketAddr,
    sync: &Arc<SyncOrchestrator>,
    (identity, pins): (LocalIdentity, Arc<KeyPins>),
    token: &CancellationToken,
) -> Result<Arc<ControlPlane>, NodeError> {
    let bootstrap = if section.join {
        None
    } else {
        let mut members = Vec::new();
        for member in &section.members {
            let address = if member == &config.node_id {
                let peers: Vec<String> = config
                    .known_peers
                    .iter()
                    .map(|p| p.address.clone())
                    .collect();
                cluster::advertised(config.advertise_address.as_deref(), listen, &peers)
            } else {
                config
                    .known_peers
                    .iter()
                    .find(|p| &p.node_id == member)
                    .map(|p| p.address.clone())
                    .ok_or_else(|| cbddc_control::ControlPlaneError::Start {
                        reason: format!(
                            "cluster member {member} has no address: add it to known_peers"
                        ),
                    })?
            };
            members.push((member.clone(), address));
        }
        Some(
            cbddc_election::membership::Configuration::new(section.configuration_id, members)
                .map_err(|e| cbddc_control::ControlPlaneError::Start {
                    reason: e.to_string(),
                })?,
        )
    };
    let plane = ControlPlane::start(
        config.node_id.clone(),
        database,
        bootstrap,
        cluster::Link {
            key: ClusterKey::derive(&config.cluster_key),
            client: client_settings(config),
            identity,
            connector: Arc::new(cbddc_net::TcpConnector),
        },
        cluster::Timers {
            tick: Duration::from_millis(section.tick_ms),
            election_ticks: section.election_timeout_ticks(),
        },
        token.child_token(),
    )?;
    if let Err(e) = plane.ready(Duration::from_secs(30)).await {
        plane.stop().await;
        return Err(e.into());
    }
    // The gate is right before the first write can arrive; then it follows the view.
    plane.open_gate_from_view().await;
    plane.spawn(plane.clone().follow_membership(sync.clone(), pins));
    let mut view = plane.watch();
    let local = config.node_id.clone();
    let sync = sync.clone();
    let follow = token.clone();
    // Until the first view, sync with nobody: a node that waits to join has no members.
    sync.set_members(Some(Vec::new()));
    sync.book().set_members(Some(Default::default()));
    plane.spawn(async move {
        loop {
            let configuration = view.borrow_and_update().configuration.clone();
            let (peers, addresses) = match &configuration {
                Some(c) => (
                    cluster::member_peers(&local, c),
                    cluster::member_addresses(c),
                ),
                None => (Vec::new(), Default::default()),
            };
            sync.set_members(Some(peers));
            sync.book().set_members(Some(addresses));
            tokio::select! {
                _ = follow.cancelled() => return,
                changed = view.changed() => if changed.is_err() { return },
            }
        }
    });
    Ok(plane)
}
