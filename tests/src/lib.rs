//! A harness for CBDDC scenarios: nodes in this process, each with its own temp dir, on
//! ports picked free, and bounded polling instead of sleeps.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use cbddc_config::{PeerNodeConfiguration, StaticProvider};
use cbddc_core::{KnownPeer, NodeId, PeerType};
use cbddc_node::Node;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Polls `condition` every 20 ms until it holds; panics naming `what` after `deadline`.
pub async fn wait_until<F, Fut>(what: &str, deadline: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if condition().await {
            return;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[path = "../support/ports.rs"]
mod ports;
pub use ports::free_port;

pub fn node_id(name: &str) -> NodeId {
    NodeId::new(name).unwrap()
}

/// A node under test: it owns its data directory and can be stopped and started again.
#[derive(Debug)]
pub struct TestNode {
    pub config: PeerNodeConfiguration,
    pub node: Option<Node>,
    /// Changing the configuration through it reconfigures the running node.
    pub provider: Arc<StaticProvider>,
    _dir: tempfile::TempDir,
}

impl TestNode {
    /// The configuration a test node starts from: a fresh temp dir, a free port, a fast sync interval.
    pub fn configure(name: &str) -> (PeerNodeConfiguration, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let mut config = PeerNodeConfiguration::new(node_id(name), dir.path().join("data"));
        config.tcp_port = free_port();
        config.cluster_key = "test-cluster".into();
        config.sync_interval_ms = 100;
        (config, dir)
    }

    pub async fn start(config: PeerNodeConfiguration, dir: tempfile::TempDir) -> Self {
        let provider = Arc::new(StaticProvider::new(config.clone()).unwrap());
        let node = Node::start_with_provider(provider.clone()).await.unwrap();
        Self {
            config,
            node: Some(node),
            provider,
            _dir: dir,
        }
    }

    /// Starts a node as a build that reads exactly `features` (an older release: none).
    pub async fn start_reading_only(
        config: PeerNodeConfiguration,
        dir: tempfile::TempDir,
        features: &[&str],
    ) -> Self {
        let provider = Arc::new(StaticProvider::new(config.clone()).unwrap());
        let features = features.iter().map(|f| f.to_string()).collect();
        let node = Node::start_reading(provider.clone(), features)
            .await
            .unwrap();
        Self {
            config,
            node: Some(node),
            provider,
            _dir: dir,
        }
    }

    /// Hands the running node a changed configuration (it applies it in the background).
    pub fn reconfigure(&mut self, change: impl FnOnce(&mut PeerNodeConfiguration)) {
        change(&mut self.config);
        self.provider.set(self.config.clone()).unwrap();
    }

    /// Starts a node named `name`, after `adjust` has changed its configuration.
    pub async fn spawn(name: &str, adjust: impl FnOnce(&mut PeerNodeConfiguration)) -> Self {
        let (mut config, dir) = Self::configure(name);
        adjust(&mut config);
        Self::start(config, dir).await
    }

    /// Who this node says leads, by node id.
    pub async fn leader(&self) -> Option<String> {
        self.node()
            .status()
            .await
            .unwrap()
            .leader
            .map(|l| l.to_string())
    }

    pub fn node(&self) -> &Node {
        self.node.as_ref().expect("the node is stopped")
    }

    /// The address the node listens on now.
    pub fn address(&self) -> String {
        self.node().local_addr().to_string()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.config.data_dir.clone()
    }

    /// This node as a static peer of another.
    pub fn as_peer(&self) -> KnownPeer {
        KnownPeer::new(
            self.config.node_id.clone(),
            self.address(),
            PeerType::StaticRemote,
        )
        .unwrap()
    }

    pub async fn stop(&mut self) {
        if let Some(node) = self.node.take() {
            node.shutdown().await;
        }
    }

    /// Starts the node again on `config` (same data dir).
    pub async fn restart_with(&mut self, config: PeerNodeConfiguration) {
        self.stop().await;
        self.config = config;
        self.provider = Arc::new(StaticProvider::new(self.config.clone()).unwrap());
        self.node = Some(
            Node::start_with_provider(self.provider.clone())
                .await
                .unwrap(),
        );
    }

    /// Starts the node again on its configuration as a build that reads `features` beside
    /// what this build reads (a newer build, for mixed-version scenarios; none: this
    /// build).
    pub async fn restart_reading(&mut self, features: &[&str]) {
        self.stop().await;
        self.provider = Arc::new(StaticProvider::new(self.config.clone()).unwrap());
        let features = cbddc_net::version::READABLE_FEATURES
            .iter()
            .chain(features)
            .map(|f| f.to_string())
            .collect();
        self.node = Some(
            Node::start_reading(self.provider.clone(), features)
                .await
                .unwrap(),
        );
    }

    /// Every document of `collection` as (key, value) pairs in key order.
    pub async fn documents(&self, collection: &str) -> Vec<(String, String)> {
        self.node()
            .list_all(collection)
            .await
            .unwrap()
            .into_iter()
            .map(|d| (d.key, d.value))
            .collect()
    }
}

/// The identity `node` proves in its sessions: its id and the key in its data dir.
pub fn identity_of(node: &TestNode) -> cbddc_net::LocalIdentity {
    let key = cbddc_net::NodeKey::load_or_create(&node.data_dir().join("node.key")).unwrap();
    cbddc_net::LocalIdentity::node(node.config.node_id.clone(), key, None)
}

/// A process holding the cluster key that claims `name` with a key of its own.
pub fn claiming(name: &str) -> cbddc_net::LocalIdentity {
    cbddc_net::LocalIdentity::node(node_id(name), cbddc_net::NodeKey::generate().unwrap(), None)
}

/// Two nodes that know each other.
pub async fn two_peers(a: &str, b: &str) -> (TestNode, TestNode) {
    let (mut ca, da) = TestNode::configure(a);
    let (mut cb, db) = TestNode::configure(b);
    ca.known_peers.push(
        KnownPeer::new(
            cb.node_id.clone(),
            format!("127.0.0.1:{}", cb.tcp_port),
            PeerType::StaticRemote,
        )
        .unwrap(),
    );
    cb.known_peers.push(
        KnownPeer::new(
            ca.node_id.clone(),
            format!("127.0.0.1:{}", ca.tcp_port),
            PeerType::StaticRemote,
        )
        .unwrap(),
    );
    (TestNode::start(ca, da).await, TestNode::start(cb, db).await)
}

/// Nodes that all know each other, each configuration changed by `adjust(name, config)`
/// before the start.
pub async fn mesh(
    names: &[&str],
    adjust: impl Fn(&str, &mut PeerNodeConfiguration),
) -> Vec<TestNode> {
    TestCluster::mesh(names)
        .adjust(|config| adjust(&config.node_id.to_string(), config))
        .start()
        .await
}

/// A set of nodes for one scenario, configured before any starts: every node knows every
/// other as a static peer; a test adds a `[cluster]` section or changes settings, then
/// starts them in order.
#[derive(Debug)]
pub struct TestCluster {
    /// Each node's configuration and data dir, in the order the names were given.
    pub configs: Vec<(PeerNodeConfiguration, tempfile::TempDir)>,
}

impl TestCluster {
    /// Nodes named `names`, each with all the others as static peers.
    pub fn mesh(names: &[&str]) -> Self {
        let mut configs: Vec<_> = names.iter().map(|n| TestNode::configure(n)).collect();
        let peers: Vec<KnownPeer> = configs
            .iter()
            .map(|(c, _)| {
                KnownPeer::new(
                    c.node_id.clone(),
                    format!("127.0.0.1:{}", c.tcp_port),
                    PeerType::StaticRemote,
                )
                .unwrap()
            })
            .collect();
        for (config, _) in configs.iter_mut() {
            config.known_peers = peers
                .iter()
                .filter(|p| p.node_id != config.node_id)
                .cloned()
                .collect();
        }
        Self { configs }
    }

    /// Like [`TestCluster::mesh`], but every link to or from node `behind` runs through a
    /// relay of `switch` (bound before the nodes' ports are picked, so they cannot
    /// collide), so the test can cut or freeze that node off.
    pub async fn mesh_with_one_behind(names: &[&str], switch: &Switch, behind: usize) -> Self {
        let mut relays = Vec::new();
        for _ in names {
            relays.push(switch.relay().await);
        }
        let relayed: Vec<String> = relays.iter().map(|r| r.address.clone()).collect();
        let mut cluster = Self::mesh(names);
        let direct: Vec<String> = cluster
            .configs
            .iter()
            .map(|(c, _)| format!("127.0.0.1:{}", c.tcp_port))
            .collect();
        for (relay, target) in relays.into_iter().zip(&direct) {
            relay.forward_to(target.clone());
        }
        let ids: Vec<NodeId> = cluster
            .configs
            .iter()
            .map(|(c, _)| c.node_id.clone())
            .collect();
        for (index, (config, _)) in cluster.configs.iter_mut().enumerate() {
            config.known_peers = (0..names.len())
                .filter(|other| *other != index)
                .map(|other| {
                    let address = if index == behind || other == behind {
                        relayed[other].clone()
                    } else {
                        direct[other].clone()
                    };
                    KnownPeer::new(ids[other].clone(), address, PeerType::StaticRemote).unwrap()
                })
                .collect();
        }
        cluster
    }

    /// The first `members` nodes bootstrap configuration 1 of themselves; the others
    /// wait to be invited (`join`).
    pub fn with_members(mut self, members: usize) -> Self {
        let names: Vec<NodeId> = self.configs[..members]
            .iter()
            .map(|(c, _)| c.node_id.clone())
            .collect();
        for (index, (config, _)) in self.configs.iter_mut().enumerate() {
            config.cluster = Some(cbddc_config::ClusterConfig {
                configuration_id: 1,
                members: if index < members {
                    names.clone()
                } else {
                    Vec::new()
                },
                join: index >= members,
                ..Default::default()
            });
        }
        self
    }

    /// Election timers short enough for a test: leadership settles in about a second.
    pub fn fast_election(self) -> Self {
        self.adjust(|config| {
            config.election.interval_ms = 100;
            config.election.peer_timeout_ms = 600;
        })
    }

    /// Changes every node's configuration.
    pub fn adjust(mut self, change: impl Fn(&mut PeerNodeConfiguration)) -> Self {
        for (config, _) in self.configs.iter_mut() {
            change(config);
        }
        self
    }

    /// Starts every node, in order.
    pub async fn start(self) -> Vec<TestNode> {
        let mut nodes = Vec::new();
        for (config, dir) in self.configs {
            nodes.push(TestNode::start(config, dir).await);
        }
        nodes
    }
}

/// What a [`Switch`] does to the traffic through its relays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Carries everything.
    Open,
    /// Closes every connection, old and new (a refused link: peers notice at once).
    Cut,
    /// Carries nothing and closes nothing (a paused peer, or a black-holed link: what
    /// was in flight is lost, and peers notice only by silence).
    Frozen,
}

/// A network switch for in-process partitions: nodes reach each other through relays
/// ([`Switch::relay`]) that stop carrying anything while the switch is cut or frozen.
#[derive(Debug, Clone)]
pub struct Switch {
    state: Arc<tokio::sync::watch::Sender<LinkState>>,
}

impl Default for Switch {
    fn default() -> Self {
        Self::new()
    }
}

impl Switch {
    pub fn new() -> Self {
        Self {
            state: Arc::new(tokio::sync::watch::Sender::new(LinkState::Open)),
        }
    }

    /// Cuts every link through this switch: open connections are closed, new ones are
    /// closed as soon as they arrive.
    pub fn cut(&self) {
        self.state.send_replace(LinkState::Cut);
    }

    /// Freezes every link through this switch: nothing is carried and nothing closed.
    pub fn freeze(&self) {
        self.state.send_replace(LinkState::Frozen);
    }

    /// Carries traffic again (links frozen meanwhile are closed, as their streams lost
    /// bytes).
    pub fn heal(&self) {
        self.state.send_replace(LinkState::Open);
    }

    /// A loopback address that will relay through this switch: bound now (so ports the
    /// test picks later cannot collide with it), forwarding once given its target.
    pub async fn relay(&self) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Relay {
            address: listener.local_addr().unwrap().to_string(),
            listener,
            state: self.state.clone(),
        }
    }
}

/// A relay of a [`Switch`], bound but not forwarding yet.
#[derive(Debug)]
pub struct Relay {
    pub address: String,
    listener: tokio::net::TcpListener,
    state: Arc<tokio::sync::watch::Sender<LinkState>>,
}

/// Carries `from` to `to` while the link is open; stops carrying (keeping both open)
/// while it is frozen; ends when it is cut, or healed after a freeze.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut state: tokio::sync::watch::Receiver<LinkState>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let now = *state.borrow_and_update();
        match now {
            LinkState::Cut => return,
            LinkState::Frozen => {
                // Hold the connection, silently, until the switch moves on.
                let _ = state.wait_for(|s| *s != LinkState::Frozen).await;
                return;
            }
            LinkState::Open => {}
        }
        tokio::select! {
            read = from.read(&mut buf) => {
                let n = match read {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                if *state.borrow() != LinkState::Open {
                    continue;
                }
                if to.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
            _ = state.changed() => {}
        }
    }
}

impl Relay {
    /// Relays every connection to `target` as the switch says.
    pub fn forward_to(self, target: String) {
        let Relay {
            listener, state, ..
        } = self;
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let mut watch = state.subscribe();
                let now = *watch.borrow_and_update();
                match now {
                    LinkState::Cut => continue,
                    LinkState::Frozen => {
                        // Accepted by the kernel, answered by nobody.
                        tokio::spawn(async move {
                            let _held = inbound;
                            let _ = watch.wait_for(|s| *s != LinkState::Frozen).await;
                        });
                        continue;
                    }
                    LinkState::Open => {}
                }
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(outbound) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    let (in_read, in_write) = inbound.into_split();
                    let (out_read, out_write) = outbound.into_split();
                    tokio::join!(
                        pump(in_read, out_write, watch.clone()),
                        pump(out_read, in_write, watch),
                    );
                });
            }
        });
    }
}

/// `GET path` on `address` over plain HTTP/1.1; returns the status code and the body.
pub fn http_get(address: std::net::SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&address, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no end of head in {answer:?}")))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status in {head:?}")))?;
    Ok((status, body.to_string()))
}

/// Samples of a Prometheus text exposition, by name with labels (`name{a="b"}`); panics
/// on any line that is not a comment, a blank or a well-formed sample.
pub fn parse_prometheus(text: &str) -> std::collections::BTreeMap<String, f64> {
    let mut samples = std::collections::BTreeMap::new();
    let mut typed = std::collections::BTreeSet::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix("# ") {
            let mut words = comment.split(' ');
            match (words.next(), words.next(), words.next()) {
                (Some("HELP"), Some(_), _) => {}
                (Some("TYPE"), Some(name), Some(kind)) => {
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                        "unknown type in {line:?}"
                    );
                    assert!(typed.insert(name.to_string()), "{name} typed twice");
                }
                (Some("EOF"), None, None) => {}
                _ => panic!("a malformed comment: {line:?}"),
            }
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("a sample without a value: {line:?}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("not a number in {line:?}")),
        };
        let name = series.split('{').next().unwrap_or_default();
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "a bad metric name in {line:?}"
        );
        if let Some(labels) = series.strip_prefix(name) {
            assert!(
                labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')),
                "bad labels in {line:?}"
            );
        }
        assert!(
            samples.insert(series.to_string(), value).is_none(),
            "{series} twice"
        );
    }
    samples
}
