#![warn(missing_docs)]
//! The control plane of a node with a `[cluster]` section: the members of the cluster,
//! agreed through OmniPaxos ([`cbddc_election::membership`]), changed by reconfiguration,
//! and used to fence the data plane (only members and cloud remotes sync) and the
//! election (only members lead).
//!
//! - `plane`: the thread that owns the membership and its SQLite logs;
//! - `links`: ordered links carrying control frames to other members, and invitations;
//! - `gate`: whether this node may take writes (only as a member);
//! - `handover`: a retired node hands the writes it took as a member over to the cluster;
//! - `wire`: the control plane's values as `cbddc_net::proto` control messages.
//!
//! What it needs from the data plane (a newcomer's copy, a departing member's hand-over)
//! it asks through one seam, [`DataPlane`] (implemented by [`cbddc_sync::SyncOrchestrator`],
//! one level down); the node above it
//! follows its view ([`ControlPlane::watch`]) and asks its write gate before every write.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use cbddc_control::{ControlPlane, Timers};
//! use cbddc_election::membership::Configuration;
//! use std::time::Duration;
//! let local = cbddc_core::NodeId::new("node-a")?;
//! let store = cbddc_store::SqliteStore::open(
//!     std::path::Path::new("./data"),
//!     local.clone(),
//!     Default::default(),
//! )
//! .await?;
//! // A cluster of one, bootstrapped as configuration 1.
//! let first = Configuration::new(1, vec![(local.clone(), "127.0.0.1:25000".into())])?;
//! let identity = cbddc_net::LocalIdentity::node(local.clone(), cbddc_net::NodeKey::generate()?, None);
//! let plane = ControlPlane::start(
//!     local,
//!     store.control_database(),
//!     Some(first),
//!     cbddc_control::Link {
//!         key: cbddc_net::ClusterKey::derive("secret"),
//!         client: Default::default(),
//!         identity,
//!         connector: std::sync::Arc::new(cbddc_net::TcpConnector),
//!     },
//!     Timers { tick: Duration::from_millis(50), election_ticks: 20 },
//!     tokio_util::sync::CancellationToken::new(),
//! )?;
//! println!("{:?}", plane.status()?);
//! plane.stop().await;
//! # Ok(()) }
//! ```

mod command;
mod data_plane;
mod error;
mod gate;
mod handover;
mod links;
mod plane;
mod view;
mod wire;

pub use command::FramesAnswer;
pub use data_plane::DataPlane;
pub use error::ControlPlaneError;
use gate::{GateState, WriteGate};
pub use gate::{WritePermit, WriteRefused};
pub use handover::Handover;
pub use view::{ClusterStatus, ClusterView};
pub use wire::{
    configuration_from_wire, configuration_to_wire, departed_from_wire, entries_from_wire,
    entries_to_wire, frames_from_wire, frames_to_wire, status_to_wire,
};

use cbddc_core::{KnownPeer, NodeId, PeerType};
use cbddc_election::membership::{Configuration, ControlEntry, ControlFrame};
use command::Command;
use links::{LinkSettings, Links};
use plane::PlaneSettings;
pub use plane::Timers;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;

/// How the control plane's links reach the other members.
#[derive(Debug, Clone)]
pub struct Link {
    /// The cluster key the links prove (changed live with [`ControlPlane::set_cluster_key`]).
    pub key: cbddc_net::ClusterKey,
    /// Timeouts, and whether this node says it may lead.
    pub client: cbddc_net::ClientSettings,
    /// This node's id and key, and the pins it checks peers against.
    pub identity: cbddc_net::LocalIdentity,
    /// Opens the stream under every link (TCP for a node).
    pub connector: Arc<dyn cbddc_net::Connector>,
}

/// How long stopping waits for the control plane's tasks.
const GRACE: Duration = Duration::from_secs(10);

/// How long `reconfigure` waits for its seal to be decided.
/// Shorter than a server's request limit (30 s), so the caller hears that the change was
/// not decided, not that its request took too long.
pub const RECONFIGURE_DEADLINE: Duration = Duration::from_secs(25);

/// A handle on the control-plane thread.
#[derive(Debug)]
pub struct ControlPlane {
    local: NodeId,
    commands: Sender<Command>,
    view: watch::Receiver<ClusterView>,
    /// Writes are taken only while this node is a member.
    gate: WriteGate,
    handover: watch::Sender<Option<Handover>>,
    joining: AtomicBool,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    links: Arc<Links>,
    /// Every task of the control plane (links, invitations, hand-over, joining, and the
    /// node's followers of its view); [`ControlPlane::stop`] waits for them.
    tasks: tokio_util::task::TaskTracker,
    token: CancellationToken,
}

impl ControlPlane {
    /// Starts the control thread on the node's database (the store's write connection).
    pub fn start(
        local: NodeId,
        database: cbddc_store::ControlDatabase,
        bootstrap: Option<Configuration>,
        link: Link,
        timers: plane::Timers,
        token: CancellationToken,
    ) -> Result<Arc<Self>, ControlPlaneError> {
        let (commands, receiver) = std::sync::mpsc::channel();
        let (view_tx, view) = watch::channel(ClusterView::default());
        let tasks = tokio_util::task::TaskTracker::new();
        let links = Arc::new(Links::new(
            LinkSettings {
                local: local.clone(),
                key: Arc::new(std::sync::RwLock::new(link.key)),
                client: link.client,
                identity: link.identity,
                connector: link.connector,
            },
            tokio::runtime::Handle::current(),
            tasks.clone(),
            token.clone(),
            commands.clone(),
        ));
        let settings = PlaneSettings {
            local: local.clone(),
            database,
            bootstrap,
            token: token.clone(),
            timers,
        };
        let thread = std::thread::Builder::new()
            .name(format!("cbddc-control-{local}"))
            .spawn({
                let links = links.clone();
                move || plane::run(settings, receiver, links, view_tx)
            })
            .map_err(|e| ControlPlaneError::Start {
                reason: format!("cannot start its thread: {e}"),
            })?;
        Ok(Arc::new(Self {
            local,
            commands,
            view,
            gate: WriteGate::new(GateState::NotAdmitted),
            handover: watch::Sender::new(None),
            joining: AtomicBool::new(false),
            thread: Mutex::new(Some(thread)),
            links,
            tasks,
            token,
        }))
    }

    /// The view the control thread publishes, as it changes.
    pub fn watch(&self) -> watch::Receiver<ClusterView> {
        self.view.clone()
    }

    /// What `cbddc cluster status` shows, or why the control plane stopped.
    pub fn status(&self) -> Result<ClusterStatus, ControlPlaneError> {
        let view = self.view.borrow();
        match &view.failure {
            Some(failure) => Err(ControlPlaneError::Stopped {
                reason: failure.clone(),
            }),
            None => Ok(ClusterStatus {
                handover: self.handover.borrow().clone(),
                ..view.status.clone()
            }),
        }
    }

    /// Admits one local write, or says why this node takes none (retired, or not admitted
    /// yet). Keep the permit until the write committed: a retiring node's gate closes only
    /// after the writes it admitted, so what it hands over is final.
    pub async fn admit_write(&self) -> Result<WritePermit<'_>, WriteRefused> {
        self.gate.enter().await
    }

    /// Sets the write gate from the view the control thread published, once it is ready
    /// and before the first write can arrive; from then on it follows the view itself.
    pub async fn open_gate_from_view(&self) {
        let initial = self.view.borrow().gate_state();
        self.gate.set(initial).await;
    }

    /// Waits (bounded) until the control thread has opened its state, so the write gate
    /// starts right: a retired node must not take writes in its first moments either.
    pub async fn ready(&self, within: Duration) -> Result<(), ControlPlaneError> {
        let mut view = self.view.clone();
        let opened =
            tokio::time::timeout(within, view.wait_for(|v| v.ready || v.failure.is_some())).await;
        match opened {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(ControlPlaneError::Start {
                reason: "its thread stopped while opening".into(),
            }),
            Err(_) => Err(ControlPlaneError::Start {
                reason: format!("it did not open its state within {within:?}"),
            }),
        }
    }

    /// Whether `node` may hand over the writes it took as a member: it departed a
    /// configuration known here, and this node runs the cluster's configuration now.
    pub fn accepts_handover_from(&self, node: &NodeId) -> bool {
        let view = self.view.borrow();
        view.configuration
            .as_ref()
            .is_some_and(|c| c.member(node).is_none())
            && view.departed.contains_key(node)
    }

    /// Follows the view with the write gate and, once retired, the hand-over.
    pub async fn follow_membership(
        self: Arc<Self>,
        data: Arc<dyn DataPlane>,
        pins: Arc<cbddc_sync::pins::KeyPins>,
    ) {
        let mut view = self.view.clone();
        let mut handing_over: Option<(u32, CancellationToken)> = None;
        loop {
            let (state, successor, configuration) = {
                let v = view.borrow_and_update();
                (v.gate_state(), v.successor.clone(), v.configuration.clone())
            };
            if let Some(configuration) = &configuration {
                pins.pin_members(&self.local, configuration).await;
            }
            if self.gate.state().await != state {
                tracing::info!(node = %self.local, ?state, "write gate");
                // Waits for writes in flight: what is handed over below is final.
                self.gate.set(state).await;
            }
            match (state, successor) {
                (GateState::Retired { .. }, Some(successor)) => {
                    let to = successor.configuration_id;
                    if handing_over.as_ref().is_none_or(|(id, _)| *id != to) {
                        if let Some((_, previous)) = handing_over.take() {
                            previous.cancel();
                        }
                        let token = self.token.child_token();
                        self.tasks.spawn(handover::run(
                            data.clone(),
                            successor,
                            self.handover.clone(),
                            token.clone(),
                        ));
                        handing_over = Some((to, token));
                    }
                }
                _ => {
                    if let Some((_, previous)) = handing_over.take() {
                        previous.cancel();
                        self.handover.send_replace(None);
                    }
                }
            }
            tokio::select! {
                _ = self.token.cancelled() => return,
                changed = view.changed() => if changed.is_err() { return },
            }
        }
    }

    /// The running configuration, if this node is in one.
    pub fn configuration(&self) -> Option<Configuration> {
        self.view.borrow().configuration.clone()
    }

    /// Whether `node` is a member of the running configuration here.
    pub fn is_member(&self, node: &NodeId) -> bool {
        self.view
            .borrow()
            .configuration
            .as_ref()
            .is_some_and(|c| c.member(node).is_some())
    }

    fn command<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<oneshot::Receiver<T>, ControlPlaneError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(make(reply))
            .map_err(|_| ControlPlaneError::Stopped {
                reason: "the node is stopping".into(),
            })?;
        Ok(answer)
    }

    /// Hands frames from `from` to the membership.
    pub async fn frames(
        &self,
        from: NodeId,
        frames: Vec<ControlFrame>,
    ) -> Result<FramesAnswer, ControlPlaneError> {
        let answer = self.command(|reply| Command::Frames {
            from,
            frames,
            reply: Some(reply),
        })?;
        answer.await.map_err(|_| ControlPlaneError::Restarted)
    }

    /// Proposes the next configuration and waits until its seal is decided.
    pub async fn reconfigure(
        &self,
        members: Vec<(NodeId, String)>,
        keys: BTreeMap<NodeId, String>,
    ) -> Result<Configuration, ControlPlaneError> {
        let answer = self.command(|reply| Command::Reconfigure {
            members,
            keys,
            reply,
        })?;
        match tokio::time::timeout(RECONFIGURE_DEADLINE, answer).await {
            Ok(Ok(result)) => result.map_err(|reason| ControlPlaneError::Refused { reason }),
            Ok(Err(_)) => Err(ControlPlaneError::Restarted),
            Err(_) => Err(ControlPlaneError::NotDecided {
                after: RECONFIGURE_DEADLINE,
            }),
        }
    }

    /// Accepts an invitation from `from` into `configuration`: copies the cluster's data
    /// from it, then stores the sealed log and starts the configuration, in the
    /// background (the inviter offers again until this node speaks).
    pub fn accept_offer(
        self: &Arc<Self>,
        from: NodeId,
        configuration: Configuration,
        sealed_log: Vec<ControlEntry>,
        departed: Vec<(NodeId, u32)>,
        data: Arc<dyn DataPlane>,
    ) -> Result<(), String> {
        if configuration.member(&self.local).is_none() {
            return Err(format!(
                "this node ({}) is not a member of configuration {}",
                self.local, configuration.configuration_id
            ));
        }
        let Some(inviter) = configuration.member(&from).cloned() else {
            return Err(format!(
                "{from} is not a member of the configuration it invites to"
            ));
        };
        let running = self.view.borrow().status.configuration_id;
        if running.is_some_and(|id| id >= configuration.configuration_id) {
            return Ok(());
        }
        if self.joining.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let plane = self.clone();
        self.tasks.spawn(async move {
            let id = configuration.configuration_id;
            tracing::info!(inviter = %from, configuration = id, "invited into the cluster: copying its data first");
            let joined = async {
                let copy = data.copy_from(&inviter.node_id, &inviter.address);
                let applied = tokio::select! {
                    _ = plane.token.cancelled() => return Err("the node is stopping".to_string()),
                    copied = copy => copied?,
                };
                let answer = plane.command(|reply| Command::Join {
                    configuration,
                    sealed_log,
                    departed,
                    reply,
                })
                .map_err(|e| e.to_string())?;
                answer
                    .await
                    .map_err(|_| "the control plane restarted".to_string())??;
                Ok::<u64, String>(applied)
            }
            .await;
            match joined {
                Ok(applied) => {
                    tracing::info!(configuration = id, applied, "joined the cluster")
                }
                Err(e) => {
                    tracing::warn!(configuration = id, error = %e, "joining the cluster failed; waiting for the next invitation")
                }
            }
            plane.joining.store(false, Ordering::SeqCst);
        });
        Ok(())
    }

    /// Stops the thread and waits for it (its SQLite connections close with it).
    pub async fn stop(&self) {
        let _ = self.commands.send(Command::Stop);
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        self.token.cancel();
        self.tasks.close();
        if tokio::time::timeout(GRACE, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(node = %self.local, "control-plane tasks did not stop within the grace period");
        }
    }

    /// Control links use `key` from now on (the node's `cluster_key` changed).
    pub fn set_cluster_key(&self, key: cbddc_net::ClusterKey) {
        self.links.set_key(key);
    }

    /// Runs `task` as one of the control plane's, awaited by [`ControlPlane::stop`].
    pub fn spawn<F>(&self, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(task);
    }
}

/// The other members of `configuration`, as peers to sync with.
pub fn member_peers(local: &NodeId, configuration: &Configuration) -> Vec<KnownPeer> {
    configuration
        .members
        .iter()
        .filter(|m| &m.node_id != local)
        .filter_map(|m| {
            KnownPeer::new(
                m.node_id.clone(),
                m.address.as_str(),
                PeerType::StaticRemote,
            )
            .ok()
        })
        .collect()
}

/// The members of `configuration` with their addresses.
pub fn member_addresses(configuration: &Configuration) -> BTreeMap<NodeId, String> {
    configuration
        .members
        .iter()
        .map(|m| (m.node_id.clone(), m.address.clone()))
        .collect()
}

/// Where other members reach this node: `advertise_address` if set; else its listen
/// address; for a node bound to every interface, its own address on the route to the
/// first of `peers` that routes (the interface those peers reach it through), and
/// loopback only when no peer routes anywhere else.
pub fn advertised(
    advertise: Option<&str>,
    listen: std::net::SocketAddr,
    peers: &[String],
) -> String {
    if let Some(address) = advertise {
        return address.to_string();
    }
    if !listen.ip().is_unspecified() {
        return listen.to_string();
    }
    let route = peers.iter().find_map(|peer| {
        // Addresses only: resolving a host name here would block the caller.
        let target = peer.parse::<std::net::SocketAddr>().ok()?;
        let probe = std::net::UdpSocket::bind((std::net::Ipv4Addr::UNSPECIFIED, 0)).ok()?;
        // Connecting a UDP socket sends nothing; it only picks the route and its source.
        probe.connect(target).ok()?;
        let ip = probe.local_addr().ok()?.ip();
        (!ip.is_unspecified()).then_some(ip)
    });
    let ip = route.unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
    std::net::SocketAddr::new(ip, listen.port()).to_string()
}

/// With a control plane, only the members of the running configuration sync.
impl cbddc_sync::SyncAdmission for ControlPlane {
    fn may_sync(&self, peer: &NodeId) -> Result<(), String> {
        if self.is_member(peer) {
            return Ok(());
        }
        let configuration = self
            .configuration()
            .map(|c| format!("configuration {}", c.configuration_id))
            .unwrap_or_else(|| "any configuration here".into());
        Err(format!(
            "node {peer} is not a member of {configuration}; only members sync"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_node_advertises_what_its_peers_can_reach() {
        let any = "0.0.0.0:25000".parse().unwrap();
        assert_eq!(
            advertised(Some("node-a.lan:26000"), any, &[]),
            "node-a.lan:26000",
            "advertise_address wins"
        );
        let bound = "127.0.0.7:25000".parse().unwrap();
        assert_eq!(advertised(None, bound, &[]), "127.0.0.7:25000");
        // Bound to every interface: the source address on the route to a peer.
        assert_eq!(
            advertised(
                None,
                any,
                &["peer.example:1".into(), "127.0.0.1:26001".into()]
            ),
            "127.0.0.1:25000"
        );
    }

    async fn wait_for(plane: &ControlPlane, what: &str, check: impl Fn(&ClusterStatus) -> bool) {
        let start = Instant::now();
        while !plane.status().is_ok_and(|s| check(&s)) {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "timed out: {what}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_crash_of_the_control_thread_is_rebuilt_from_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let local = NodeId::new("a").unwrap();
        let store = cbddc_store::SqliteStore::open(
            dir.path(),
            local.clone(),
            cbddc_store::StoreOptions::default(),
        )
        .await
        .unwrap();
        let first = Configuration::new(1, vec![(local.clone(), "127.0.0.1:1".into())]).unwrap();
        let token = CancellationToken::new();
        let plane = ControlPlane::start(
            local.clone(),
            store.control_database(),
            Some(first),
            Link {
                key: cbddc_net::ClusterKey::derive("k"),
                client: cbddc_net::ClientSettings::default(),
                identity: cbddc_net::LocalIdentity::node(
                    local.clone(),
                    cbddc_net::NodeKey::generate().unwrap(),
                    None,
                ),
                connector: Arc::new(cbddc_net::TcpConnector),
            },
            plane::Timers {
                tick: Duration::from_millis(10),
                election_ticks: 5,
            },
            token.clone(),
        )
        .unwrap();
        wait_for(&plane, "configuration 1", |s| s.configuration_id == Some(1)).await;
        let next = plane
            .reconfigure(vec![(local.clone(), "127.0.0.1:2".into())], BTreeMap::new())
            .await
            .unwrap();
        assert_eq!(next.configuration_id, 2);

        plane.commands.send(Command::Crash).unwrap();
        // Rebuilt from the database: configuration 2, decided before the crash, runs again
        // and the plane takes commands again.
        let next = plane
            .reconfigure(vec![(local.clone(), "127.0.0.1:3".into())], BTreeMap::new())
            .await
            .unwrap();
        assert_eq!(next.configuration_id, 3);
        wait_for(&plane, "configuration 3", |s| s.configuration_id == Some(3)).await;
        // The crashed step's transaction was rolled back, not left holding the store's
        // connection: the store still commits, and nothing of that step was kept.
        use cbddc_core::DocumentStore;
        store
            .write(vec![cbddc_core::LocalWrite::put("docs", "after", "1")])
            .await
            .unwrap();
        let departed = cbddc_store::ClusterRecords::on(store.control_database())
            .departed()
            .unwrap();
        assert!(departed.is_empty(), "{departed:?}");
        plane.stop().await;
        token.cancel();
        store.close().await;
    }
}
