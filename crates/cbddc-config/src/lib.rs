//! Node configuration: the file format, validation into [`PeerNodeConfiguration`], and the
//! embedded defaults. (Live providers that watch files and other sources build on this.)
//!
//! A configuration file is TOML, or JSON when its name ends in `.json`. Every field is
//! optional; unknown fields are refused:
//!
//! ```toml
//! node_id = "node-a"            # default: generated once and kept in data_dir/node-id
//! tcp_port = 25000              # 0 picks a free port
//! bind_address = "127.0.0.1"
//! data_dir = "./cbddc-data"
//! cluster_key = "change-me"     # default: a well-known key, with a warning
//! durability = "full"           # or "normal"
//! sync_interval_ms = 1000
//! max_clock_drift_ms = 60000
//! oplog_retention_ms = 604800000  # a peer silent this long (7 days) no longer holds oplog entries back
//! feed_retention_ms = 604800000   # a delete stays in the change feed this long (7 days) after compaction
//! known_peers = [{ node_id = "node-b", address = "127.0.0.1:25001", type = "static" }]
//! # metrics_address = "127.0.0.1:9100"  # /metrics (Prometheus) and a live page at /; off by default
//! # collections = ["users", "orders"]   # replicate only these (default: every collection)
//! # advertise_address = "node-a.lan:25000"  # where the cluster reaches this node (NAT, several interfaces)
//! # node_key_file = "/run/secrets/cbddc-node.key"  # keep the node key apart from data_dir (default: data_dir/node.key)
//! # min_protocol_version = 5    # refuse peers and tools older than this protocol (default: the oldest this build speaks)
//!
//! [[indexes]]                   # kept by this node for `cbddc find`; built in the background
//! collection = "orders"
//! fields = ["shop", "total"]    # dotted paths; a query narrowed by the first fields uses it
//! covering = false              # true: entries keep a copy of each document (faster reads,
//!                               # the space and write time of the copy)
//!
//! [discovery]                   # UDP beacons on the LAN
//! enabled = false
//! port = 25001
//! interval_ms = 1000
//! targets = []                  # default: 255.255.255.255:<port>
//!
//! [election]                    # bully election of the gateway to the cloud
//! eligible = true
//! interval_ms = 1000
//! peer_timeout_ms = 3000
//!
//! [cluster]                     # a control plane agreeing on members (absent: none)
//! configuration_id = 1
//! members = ["node-a", "node-b", "node-c"]   # addresses from known_peers
//! # join = true                 # instead of members: wait to be invited by a cluster
//! tick_ms = 50                  # the control plane's clock
//! election_timeout_ms = 1000    # no news of its leader for this long: elect another
//! ```
//!
//! ```
//! let config = cbddc_config::parse_str("node_id = \"a\"\ntcp_port = 0", "inline.toml").unwrap();
//! let config = config.resolve().unwrap();
//! assert_eq!(config.node_id.as_str(), "a");
//! ```
#![warn(missing_docs)]

mod env;
mod error;
mod file;
mod node_id_file;
mod provider;
mod remote;
mod successor;
mod watched;

pub use env::{ENV_VARS, EnvProvider, env_layer};
pub use error::ConfigError;
pub use file::{
    ClusterSection, ConfigFile, Durability, PeerEntry, PeerEntryType, load_file, parse_json,
    parse_str, parse_toml,
};
pub use node_id_file::{NODE_ID_FILE, resolve_node_id};
pub use provider::{ConfigCell, ConfigEvent, ConfigProvider, StaticProvider};
pub use remote::{RemoteOptions, RemoteProvider};
pub use successor::check_live_successor;
pub use watched::FileProvider;

use cbddc_core::{KnownPeer, NodeId};
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// The cluster key used when none is configured. Anyone can join a cluster that uses it.
pub const DEFAULT_CLUSTER_KEY: &str = "cbddc-default-cluster-key";
/// The port used when none is configured.
pub const DEFAULT_TCP_PORT: u16 = 25000;

/// How long a silent peer holds oplog entries back by default: seven days.
pub const DEFAULT_OPLOG_RETENTION_MS: u64 = 7 * 24 * 3_600_000;
/// The longest retention accepted: ten years.
pub const MAX_OPLOG_RETENTION_MS: u64 = 10 * 365 * 24 * 3_600_000;
/// The data directory used when none is configured.
pub const DEFAULT_DATA_DIR: &str = "./cbddc-data";

/// `[discovery]`: finding peers on the LAN with UDP beacons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryConfig {
    /// Off by default.
    pub enabled: bool,
    /// UDP port beacons are received on (bound on `bind_address`).
    pub port: u16,
    /// Time between beacons.
    pub interval_ms: u64,
    /// Where beacons go; empty means the broadcast address on `port`.
    pub targets: Vec<SocketAddr>,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            port: 25001,
            interval_ms: 1_000,
            targets: Vec::new(),
        }
    }
}

impl DiscoveryConfig {
    /// The targets in force: the configured ones, or `255.255.255.255:port`.
    pub fn effective_targets(&self) -> Vec<SocketAddr> {
        if self.targets.is_empty() {
            vec![SocketAddr::from(([255, 255, 255, 255], self.port))]
        } else {
            self.targets.clone()
        }
    }
}

/// `[election]`: the bully election of the gateway to the cloud.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElectionConfig {
    /// Whether this node may lead.
    pub eligible: bool,
    /// How often leadership is re-evaluated (it also is on every change of the peer view).
    pub interval_ms: u64,
    /// A peer not heard from (beacon or successful exchange) for this long counts as dead;
    /// two failed exchanges in a row count too. This bounds how long a dead leader is
    /// followed.
    pub peer_timeout_ms: u64,
}

impl Default for ElectionConfig {
    fn default() -> Self {
        Self {
            eligible: true,
            interval_ms: 1_000,
            peer_timeout_ms: 3_000,
        }
    }
}

impl ElectionConfig {
    /// `peer_timeout_ms` as a duration.
    pub fn peer_timeout(&self) -> Duration {
        Duration::from_millis(self.peer_timeout_ms)
    }
}

/// `[cluster]`: the control plane that agrees on the cluster's members (OmniPaxos).
///
/// Used only when the node's database holds no cluster state yet: after that the stored
/// configurations (and the reconfigurations decided since) are in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// The id of the bootstrapped configuration (1 unless restoring an older cluster).
    pub configuration_id: u32,
    /// The bootstrapped configuration's members, this node among them; the others'
    /// addresses come from `known_peers`. Empty with `join`.
    pub members: Vec<NodeId>,
    /// Wait to be invited into a cluster by one of its members instead of bootstrapping.
    pub join: bool,
    /// The control plane's clock: how often OmniPaxos ticks.
    pub tick_ms: u64,
    /// Without news of the control-plane leader for this long, a member starts an
    /// election (rounded down to whole ticks, at least two). Every member also sends a
    /// heartbeat to every other once per timeout, so this is what an idle cluster costs:
    /// the default keeps a 16-member cluster's idle traffic small, and only membership
    /// changes wait on it (the data plane and the gateway election never do).
    pub election_timeout_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            configuration_id: 1,
            members: Vec::new(),
            join: false,
            tick_ms: 50,
            election_timeout_ms: 1_000,
        }
    }
}

impl ClusterConfig {
    /// [`ClusterConfig::election_timeout_ms`] in ticks.
    pub fn election_timeout_ticks(&self) -> u64 {
        (self.election_timeout_ms / self.tick_ms.max(1)).max(2)
    }
}

/// A validated node configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerNodeConfiguration {
    /// This node's id.
    pub node_id: NodeId,
    /// TCP port of the sync server (0 picks a free port).
    pub tcp_port: u16,
    /// Address the sync server binds.
    pub bind_address: IpAddr,
    /// Directory holding the node's database(s).
    pub data_dir: PathBuf,
    /// The cluster's shared secret.
    pub cluster_key: String,
    /// Peers to sync with.
    pub known_peers: Vec<KnownPeer>,
    /// Commit durability.
    pub durability: Durability,
    /// Period of the catch-up pull with each peer.
    pub sync_interval_ms: u64,
    /// Remote stamps further ahead than this are refused.
    pub max_clock_drift_ms: u64,
    /// A peer that has not acknowledged this node's entries for this long no longer holds
    /// compaction back; when it returns it takes a snapshot.
    pub oplog_retention_ms: u64,
    /// How long the change feed keeps a delete after compaction collected its tombstone,
    /// and how long a named consumer that stopped acknowledging still holds deletes it
    /// has not read. A consumer resuming from before a delete that left the feed is told
    /// to resync (`FEED_COMPACTED`) instead of missing it. 0: deletes leave the feed as
    /// soon as compaction collects them.
    pub feed_retention_ms: u64,
    /// LAN discovery.
    pub discovery: DiscoveryConfig,
    /// Leader election.
    pub election: ElectionConfig,
    /// The control plane; `None` runs without one (any holder of the key may sync).
    pub cluster: Option<ClusterConfig>,
    /// Where `/metrics` (Prometheus text) and the live cluster page are served; `None`
    /// (the default) serves neither.
    pub metrics_address: Option<SocketAddr>,
    /// The collections this node replicates; `None` (the default): every collection.
    /// The node pulls and accepts only these, and peers do not push it the rest.
    pub collections: Option<BTreeSet<String>>,
    /// Where the other members reach this node (`host:port`), for nodes behind NAT or
    /// with several interfaces. `None`: the listen address, or for a node bound to every
    /// interface, its address on the route to its peers.
    pub advertise_address: Option<String>,
    /// Where the node's static key is kept; `None`: `data_dir/node.key`. A key kept apart
    /// (a secret volume) outlives the data dir: a node restarted on a wiped or replaced
    /// disk keeps its key, and peers that pinned it take it back with no `repin`. Created
    /// on first start if missing; read at start only (a live change is not applied).
    pub node_key_file: Option<PathBuf>,
    /// The oldest protocol version this node speaks; `None`: the oldest its build speaks
    /// (the previous release's). Raising it to the build's newest ends a rolling upgrade:
    /// peers and tools of the previous release are refused. Read at start only.
    pub min_protocol_version: Option<u32>,
    /// Indexes this node keeps on its own documents, so queries read a range instead of a
    /// collection. Live: an added index is built in the background (progress in status),
    /// a removed one dropped. Never sent to peers: every node builds its own.
    pub indexes: Vec<cbddc_core::IndexDefinition>,
}

/// The most `[[indexes]]` a node keeps.
pub const MAX_INDEXES: usize = 64;

impl PeerNodeConfiguration {
    /// Defaults for everything but the node id and the data directory.
    pub fn new(node_id: NodeId, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            node_id,
            tcp_port: DEFAULT_TCP_PORT,
            bind_address: IpAddr::from([127, 0, 0, 1]),
            data_dir: data_dir.into(),
            cluster_key: DEFAULT_CLUSTER_KEY.to_string(),
            known_peers: Vec::new(),
            durability: Durability::Full,
            sync_interval_ms: 1_000,
            max_clock_drift_ms: 60_000,
            oplog_retention_ms: DEFAULT_OPLOG_RETENTION_MS,
            feed_retention_ms: DEFAULT_OPLOG_RETENTION_MS,
            discovery: DiscoveryConfig::default(),
            election: ElectionConfig::default(),
            cluster: None,
            metrics_address: None,
            collections: None,
            advertise_address: None,
            node_key_file: None,
            min_protocol_version: None,
            indexes: Vec::new(),
        }
    }

    /// The socket address the sync server binds.
    pub fn listen_address(&self) -> SocketAddr {
        SocketAddr::new(self.bind_address, self.tcp_port)
    }

    /// Whether this node replicates `collection` (see [`PeerNodeConfiguration::collections`]).
    pub fn replicates(&self, collection: &str) -> bool {
        self.collections
            .as_ref()
            .is_none_or(|wanted| wanted.contains(collection))
    }

    /// [`PeerNodeConfiguration::collections`] as the store and the wire take it.
    pub fn interest(&self) -> cbddc_core::Interest {
        match &self.collections {
            None => cbddc_core::Interest::all(),
            Some(set) => cbddc_core::Interest::only(set.iter().cloned()),
        }
    }

    /// True when the cluster key is the well-known default.
    pub fn uses_default_cluster_key(&self) -> bool {
        self.cluster_key == DEFAULT_CLUSTER_KEY
    }

    /// The one place every configuration is checked, whatever its source (`source_name`
    /// appears in the errors). Creates the data directory if it does not exist yet.
    pub fn validate(&self, source_name: &str) -> Result<(), ConfigError> {
        let invalid = |field: String, message: String| ConfigError::Invalid {
            source_name: source_name.to_string(),
            field,
            message,
        };
        if self.cluster_key.is_empty() || self.cluster_key.len() > 1024 {
            return Err(invalid(
                "cluster_key".into(),
                "must be 1 to 1024 characters".into(),
            ));
        }
        if !(50..=3_600_000).contains(&self.sync_interval_ms) {
            return Err(invalid(
                "sync_interval_ms".into(),
                "must be from 50 to 3600000 (one hour)".into(),
            ));
        }
        if !(1..=86_400_000).contains(&self.max_clock_drift_ms) {
            return Err(invalid(
                "max_clock_drift_ms".into(),
                "must be from 1 to 86400000 (one day)".into(),
            ));
        }
        if !(1_000..=MAX_OPLOG_RETENTION_MS).contains(&self.oplog_retention_ms) {
            return Err(invalid(
                "oplog_retention_ms".into(),
                "must be from 1000 (one second) to 315360000000 (ten years)".into(),
            ));
        }
        if self.feed_retention_ms > MAX_OPLOG_RETENTION_MS {
            return Err(invalid(
                "feed_retention_ms".into(),
                "must be from 0 to 315360000000 (ten years)".into(),
            ));
        }
        if self
            .node_key_file
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty() || p.is_dir())
        {
            return Err(invalid(
                "node_key_file".into(),
                "must name a file (the node key), not be empty or a directory".into(),
            ));
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir".into(), "must not be empty".into()));
        }
        if let Err(e) = std::fs::create_dir_all(&self.data_dir) {
            return Err(invalid(
                "data_dir".into(),
                format!("cannot create {}: {e}", self.data_dir.display()),
            ));
        }
        if !(50..=60_000).contains(&self.discovery.interval_ms) {
            return Err(invalid(
                "discovery.interval_ms".into(),
                "must be from 50 to 60000".into(),
            ));
        }
        if !(50..=60_000).contains(&self.election.interval_ms) {
            return Err(invalid(
                "election.interval_ms".into(),
                "must be from 50 to 60000".into(),
            ));
        }
        let heartbeat = if self.discovery.enabled {
            self.sync_interval_ms.max(self.discovery.interval_ms)
        } else {
            self.sync_interval_ms
        };
        if self.election.peer_timeout_ms < 2 * heartbeat
            || self.election.peer_timeout_ms > 3_600_000
        {
            return Err(invalid(
                "election.peer_timeout_ms".into(),
                format!(
                    "must be at least twice the sync and beacon intervals ({} ms) so one lost beacon \
                     or sync round does not make a peer look dead, and at most one hour",
                    2 * heartbeat
                ),
            ));
        }
        if let Some(collections) = &self.collections {
            if collections.is_empty() {
                return Err(invalid(
                    "collections".into(),
                    "lists no collection: remove the field to replicate every collection".into(),
                ));
            }
            for collection in collections {
                cbddc_core::validate_collection(collection)
                    .map_err(|e| invalid("collections".into(), e.to_string()))?;
            }
        }
        if let Some(address) = &self.advertise_address {
            cbddc_core::validate_peer_address(address)
                .map_err(|e| invalid("advertise_address".into(), e.to_string()))?;
        }
        if let Some(address) = self.metrics_address
            && address.port() != 0
            && address == self.listen_address()
        {
            return Err(invalid(
                "metrics_address".into(),
                "is the sync server's address: give the metrics their own port".into(),
            ));
        }
        let mut seen = BTreeSet::new();
        for (index, peer) in self.known_peers.iter().enumerate() {
            let field = |name: &str| format!("known_peers[{index}].{name}");
            if peer.node_id == self.node_id {
                return Err(invalid(
                    field("node_id"),
                    format!("{} is this node itself", peer.node_id),
                ));
            }
            if !seen.insert(peer.node_id.clone()) {
                return Err(invalid(
                    field("node_id"),
                    format!("{} is listed twice", peer.node_id),
                ));
            }
            cbddc_core::validate_peer_address(&peer.address)
                .map_err(|e| invalid(field("address"), e.to_string()))?;
        }
        if let Some(cluster) = &self.cluster {
            self.validate_cluster(cluster, &invalid)?;
        }
        self.validate_indexes(&invalid)
    }

    fn validate_indexes(
        &self,
        invalid: &dyn Fn(String, String) -> ConfigError,
    ) -> Result<(), ConfigError> {
        if self.indexes.len() > MAX_INDEXES {
            return Err(invalid(
                "indexes".into(),
                format!(
                    "declares {} indexes; at most {MAX_INDEXES}",
                    self.indexes.len()
                ),
            ));
        }
        let mut seen = BTreeSet::new();
        for (at, index) in self.indexes.iter().enumerate() {
            let field = |name: &str| format!("indexes[{at}].{name}");
            cbddc_core::validate_collection(&index.collection)
                .map_err(|e| invalid(field("collection"), e.to_string()))?;
            if !self.replicates(&index.collection) {
                return Err(invalid(
                    field("collection"),
                    format!(
                        "{} is not among the collections this node replicates: it would stay empty",
                        index.collection
                    ),
                ));
            }
            let max = cbddc_query::index::MAX_INDEX_FIELDS;
            if index.fields.is_empty() || index.fields.len() > max {
                return Err(invalid(
                    field("fields"),
                    format!("must list 1 to {max} dotted paths"),
                ));
            }
            let mut fields = BTreeSet::new();
            for (i, path) in index.fields.iter().enumerate() {
                let here = format!("indexes[{at}].fields[{i}]");
                cbddc_query::Path::parse(path).map_err(|e| invalid(here.clone(), e.to_string()))?;
                if path.starts_with('$') {
                    return Err(invalid(
                        here,
                        format!(
                            "{path:?} cannot be indexed: a query reads a name starting with $ as an operator, never as a field"
                        ),
                    ));
                }
                if !fields.insert(path) {
                    return Err(invalid(here, format!("{path:?} is listed twice")));
                }
            }
            // Covering or not, one index per collection and fields.
            if !seen.insert((&index.collection, &index.fields)) {
                return Err(invalid(
                    field("fields"),
                    format!("{} is declared twice", index.name()),
                ));
            }
        }
        Ok(())
    }
}

impl PeerNodeConfiguration {
    fn validate_cluster(
        &self,
        cluster: &ClusterConfig,
        invalid: &dyn Fn(String, String) -> ConfigError,
    ) -> Result<(), ConfigError> {
        if !(1..=1_000).contains(&cluster.tick_ms) {
            return Err(invalid(
                "cluster.tick_ms".into(),
                "must be from 1 to 1000".into(),
            ));
        }
        if cluster.election_timeout_ms < 2 * cluster.tick_ms
            || cluster.election_timeout_ms > 600_000
        {
            return Err(invalid(
                "cluster.election_timeout_ms".into(),
                format!(
                    "must be at least two ticks ({} ms) and at most 600000",
                    2 * cluster.tick_ms
                ),
            ));
        }
        if cluster.configuration_id == 0 {
            return Err(invalid(
                "cluster.configuration_id".into(),
                "configuration ids start at 1".into(),
            ));
        }
        if cluster.join {
            if !cluster.members.is_empty() {
                return Err(invalid(
                    "cluster.members".into(),
                    "a node that joins is told its members by the cluster: remove `members` or `join`"
                        .into(),
                ));
            }
            return Ok(());
        }
        if !cluster.members.contains(&self.node_id) {
            return Err(invalid(
                "cluster.members".into(),
                format!(
                    "must name this node ({}) to bootstrap a cluster; to be invited into one, set `join = true` instead",
                    self.node_id
                ),
            ));
        }
        let mut seen = BTreeSet::new();
        for (index, member) in cluster.members.iter().enumerate() {
            if !seen.insert(member) {
                return Err(invalid(
                    format!("cluster.members[{index}]"),
                    format!("{member} is listed twice"),
                ));
            }
            if member != &self.node_id && !self.known_peers.iter().any(|p| &p.node_id == member) {
                return Err(invalid(
                    format!("cluster.members[{index}]"),
                    format!("{member} has no address: add it to known_peers"),
                ));
            }
        }
        Ok(())
    }
}
