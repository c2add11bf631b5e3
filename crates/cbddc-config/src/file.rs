use crate::{ConfigError, PeerNodeConfiguration, resolve_node_id};
use cbddc_core::{KnownPeer, NodeId, PeerType};
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

pub use cbddc_core::Durability;

/// The type of a configured peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerEntryType {
    /// A member of the same cluster.
    #[default]
    Static,
    /// A cloud gateway.
    Cloud,
}

/// One `known_peers` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerEntry {
    /// The peer's node id.
    pub node_id: String,
    /// `host:port`.
    pub address: String,
    /// `static` (default) or `cloud`.
    #[serde(default, rename = "type")]
    pub peer_type: PeerEntryType,
    /// A disabled peer is kept but never contacted (default: true).
    pub enabled: Option<bool>,
}

/// One `[[indexes]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexEntry {
    /// The collection indexed.
    pub collection: String,
    /// The dotted paths indexed, in order.
    pub fields: Vec<String>,
    /// Whether each entry keeps a copy of its document (default: false); see
    /// [`cbddc_core::IndexDefinition::covering`].
    pub covering: Option<bool>,
}

/// `[discovery]` as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoverySection {
    /// See [`crate::DiscoveryConfig::enabled`].
    pub enabled: Option<bool>,
    /// See [`crate::DiscoveryConfig::port`].
    pub port: Option<u16>,
    /// See [`crate::DiscoveryConfig::interval_ms`].
    pub interval_ms: Option<u64>,
    /// See [`crate::DiscoveryConfig::targets`]: `IP:PORT` each.
    pub targets: Option<Vec<String>>,
}

/// `[election]` as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElectionSection {
    /// See [`crate::ElectionConfig::eligible`].
    pub eligible: Option<bool>,
    /// See [`crate::ElectionConfig::interval_ms`].
    pub interval_ms: Option<u64>,
    /// See [`crate::ElectionConfig::peer_timeout_ms`].
    pub peer_timeout_ms: Option<u64>,
}

/// `[cluster]` as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// See [`crate::ClusterConfig::configuration_id`].
    pub configuration_id: Option<u32>,
    /// See [`crate::ClusterConfig::members`].
    #[serde(default)]
    pub members: Vec<String>,
    /// See [`crate::ClusterConfig::join`].
    pub join: Option<bool>,
    /// See [`crate::ClusterConfig::tick_ms`].
    pub tick_ms: Option<u64>,
    /// See [`crate::ClusterConfig::election_timeout_ms`].
    pub election_timeout_ms: Option<u64>,
}

/// A configuration file as written: every field optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// See [`PeerNodeConfiguration::node_id`]; generated when absent.
    pub node_id: Option<String>,
    /// See [`PeerNodeConfiguration::tcp_port`].
    pub tcp_port: Option<u16>,
    /// See [`PeerNodeConfiguration::bind_address`].
    pub bind_address: Option<String>,
    /// See [`PeerNodeConfiguration::data_dir`].
    pub data_dir: Option<PathBuf>,
    /// See [`PeerNodeConfiguration::cluster_key`].
    pub cluster_key: Option<String>,
    /// See [`PeerNodeConfiguration::known_peers`].
    #[serde(default)]
    pub known_peers: Vec<PeerEntry>,
    /// See [`PeerNodeConfiguration::durability`].
    pub durability: Option<Durability>,
    /// See [`PeerNodeConfiguration::sync_interval_ms`].
    pub sync_interval_ms: Option<u64>,
    /// See [`PeerNodeConfiguration::max_clock_drift_ms`].
    pub max_clock_drift_ms: Option<u64>,
    /// See [`PeerNodeConfiguration::oplog_retention_ms`].
    pub oplog_retention_ms: Option<u64>,
    /// See [`PeerNodeConfiguration::feed_retention_ms`].
    pub feed_retention_ms: Option<u64>,
    /// See [`PeerNodeConfiguration::discovery`].
    pub discovery: Option<DiscoverySection>,
    /// See [`PeerNodeConfiguration::election`].
    pub election: Option<ElectionSection>,
    /// See [`PeerNodeConfiguration::cluster`].
    pub cluster: Option<ClusterSection>,
    /// See [`PeerNodeConfiguration::metrics_address`].
    pub metrics_address: Option<String>,
    /// See [`PeerNodeConfiguration::collections`].
    pub collections: Option<Vec<String>>,
    /// See [`PeerNodeConfiguration::advertise_address`].
    pub advertise_address: Option<String>,
    /// See [`PeerNodeConfiguration::node_key_file`].
    pub node_key_file: Option<PathBuf>,
    /// See [`PeerNodeConfiguration::min_protocol_version`].
    pub min_protocol_version: Option<u32>,
    /// See [`PeerNodeConfiguration::indexes`].
    pub indexes: Option<Vec<IndexEntry>>,
    /// The file (or source) this came from, for error messages.
    #[serde(skip)]
    pub source_name: String,
}

/// Reads and parses a configuration file (JSON if the name ends in `.json`, else TOML).
pub fn load_file(path: &Path) -> Result<ConfigFile, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_str(&text, &path.display().to_string())
}

/// Parses configuration text; `source_name` ending in `.json` selects JSON.
pub fn parse_str(text: &str, source_name: &str) -> Result<ConfigFile, ConfigError> {
    if source_name.ends_with(".json") {
        parse_json(text, source_name)
    } else {
        parse_toml(text, source_name)
    }
}

/// Parses JSON configuration text.
pub fn parse_json(text: &str, source_name: &str) -> Result<ConfigFile, ConfigError> {
    finish_parse(
        serde_json::from_str::<ConfigFile>(text).map_err(|e| e.to_string()),
        source_name,
    )
}

/// Parses TOML configuration text.
pub fn parse_toml(text: &str, source_name: &str) -> Result<ConfigFile, ConfigError> {
    let parsed =
        toml::from_str::<ConfigFile>(text).map_err(|e| e.to_string().trim_end().to_string());
    finish_parse(parsed, source_name)
}

fn finish_parse(
    parsed: Result<ConfigFile, String>,
    source_name: &str,
) -> Result<ConfigFile, ConfigError> {
    let mut file = parsed.map_err(|message| ConfigError::Parse {
        source_name: source_name.to_string(),
        message,
    })?;
    file.source_name = source_name.to_string();
    Ok(file)
}

impl ConfigFile {
    fn invalid(&self, field: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            source_name: self.display_name(),
            field: field.into(),
            message: message.into(),
        }
    }

    /// This layer with every field that `top` sets replaced by `top`'s value
    /// (`known_peers` when `top` lists any).
    pub fn overlay(mut self, top: &ConfigFile) -> ConfigFile {
        fn pick<T: Clone>(base: &mut Option<T>, top: &Option<T>) {
            if top.is_some() {
                base.clone_from(top);
            }
        }
        pick(&mut self.node_id, &top.node_id);
        pick(&mut self.tcp_port, &top.tcp_port);
        pick(&mut self.bind_address, &top.bind_address);
        pick(&mut self.data_dir, &top.data_dir);
        pick(&mut self.cluster_key, &top.cluster_key);
        pick(&mut self.durability, &top.durability);
        pick(&mut self.sync_interval_ms, &top.sync_interval_ms);
        pick(&mut self.max_clock_drift_ms, &top.max_clock_drift_ms);
        pick(&mut self.oplog_retention_ms, &top.oplog_retention_ms);
        pick(&mut self.feed_retention_ms, &top.feed_retention_ms);
        pick(&mut self.discovery, &top.discovery);
        pick(&mut self.election, &top.election);
        pick(&mut self.cluster, &top.cluster);
        pick(&mut self.metrics_address, &top.metrics_address);
        pick(&mut self.collections, &top.collections);
        pick(&mut self.advertise_address, &top.advertise_address);
        pick(&mut self.node_key_file, &top.node_key_file);
        pick(&mut self.min_protocol_version, &top.min_protocol_version);
        pick(&mut self.indexes, &top.indexes);
        if !top.known_peers.is_empty() {
            self.known_peers.clone_from(&top.known_peers);
        }
        if !top.source_name.is_empty() {
            self.source_name = if self.source_name.is_empty() {
                top.source_name.clone()
            } else {
                format!("{} + {}", self.source_name, top.source_name)
            };
        }
        self
    }

    /// Validates every field and fills in defaults. A missing node id is read from (or
    /// generated into) `data_dir/node-id`.
    pub fn resolve(&self) -> Result<PeerNodeConfiguration, ConfigError> {
        let source = self.display_name();
        let data_dir = self
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(crate::DEFAULT_DATA_DIR));
        if data_dir.as_os_str().is_empty() {
            return Err(self.invalid("data_dir", "must not be empty"));
        }
        let node_id = match &self.node_id {
            Some(text) => {
                NodeId::new(text.as_str()).map_err(|e| self.invalid("node_id", e.to_string()))?
            }
            None => resolve_node_id(&data_dir)?,
        };
        let mut config = PeerNodeConfiguration::new(node_id, data_dir);
        if let Some(port) = self.tcp_port {
            config.tcp_port = port;
        }
        if let Some(address) = &self.bind_address {
            config.bind_address = address.parse::<IpAddr>().map_err(|_| {
                self.invalid(
                    "bind_address",
                    format!("{address:?} is not an IP address (e.g. 127.0.0.1 or 0.0.0.0)"),
                )
            })?;
        }
        if let Some(key) = &self.cluster_key {
            config.cluster_key = key.clone();
        }
        if let Some(durability) = self.durability {
            config.durability = durability;
        }
        if let Some(interval) = self.sync_interval_ms {
            config.sync_interval_ms = interval;
        }
        if let Some(drift) = self.max_clock_drift_ms {
            config.max_clock_drift_ms = drift;
        }
        if let Some(retention) = self.oplog_retention_ms {
            config.oplog_retention_ms = retention;
        }
        if let Some(retention) = self.feed_retention_ms {
            config.feed_retention_ms = retention;
        }
        if let Some(address) = &self.metrics_address {
            config.metrics_address = Some(address.parse::<SocketAddr>().map_err(|_| {
                self.invalid(
                    "metrics_address",
                    format!("{address:?} is not IP:PORT (e.g. 127.0.0.1:9100)"),
                )
            })?);
        }
        if let Some(collections) = &self.collections {
            config.collections = Some(collections.iter().cloned().collect());
        }
        if let Some(address) = &self.advertise_address {
            config.advertise_address = Some(address.clone());
        }
        if let Some(path) = &self.node_key_file {
            config.node_key_file = Some(path.clone());
        }
        config.min_protocol_version = self.min_protocol_version;
        config.indexes = self
            .indexes
            .iter()
            .flatten()
            .map(|entry| cbddc_core::IndexDefinition {
                collection: entry.collection.clone(),
                fields: entry.fields.clone(),
                covering: entry.covering.unwrap_or(false),
            })
            .collect();
        if let Some(section) = &self.discovery {
            let d = &mut config.discovery;
            d.enabled = section.enabled.unwrap_or(d.enabled);
            d.port = section.port.unwrap_or(d.port);
            d.interval_ms = section.interval_ms.unwrap_or(d.interval_ms);
            for (index, target) in section.targets.iter().flatten().enumerate() {
                d.targets.push(target.parse().map_err(|_| {
                    self.invalid(
                        format!("discovery.targets[{index}]"),
                        format!("{target:?} is not IP:PORT"),
                    )
                })?);
            }
        }
        if let Some(section) = &self.election {
            let e = &mut config.election;
            e.eligible = section.eligible.unwrap_or(e.eligible);
            e.interval_ms = section.interval_ms.unwrap_or(e.interval_ms);
            e.peer_timeout_ms = section.peer_timeout_ms.unwrap_or(e.peer_timeout_ms);
        }
        if let Some(section) = &self.cluster {
            let mut members = Vec::new();
            for (index, member) in section.members.iter().enumerate() {
                members.push(NodeId::new(member.as_str()).map_err(|e| {
                    self.invalid(format!("cluster.members[{index}]"), e.to_string())
                })?);
            }
            let defaults = crate::ClusterConfig::default();
            config.cluster = Some(crate::ClusterConfig {
                configuration_id: section.configuration_id.unwrap_or(1),
                members,
                join: section.join.unwrap_or(false),
                tick_ms: section.tick_ms.unwrap_or(defaults.tick_ms),
                election_timeout_ms: section
                    .election_timeout_ms
                    .unwrap_or(defaults.election_timeout_ms),
            });
        }
        for (index, entry) in self.known_peers.iter().enumerate() {
            let field = |name: &str| format!("known_peers[{index}].{name}");
            let id = NodeId::new(entry.node_id.as_str())
                .map_err(|e| self.invalid(field("node_id"), e.to_string()))?;
            let peer_type = match entry.peer_type {
                PeerEntryType::Static => PeerType::StaticRemote,
                PeerEntryType::Cloud => PeerType::CloudRemote,
            };
            let mut peer = KnownPeer::new(id, entry.address.as_str(), peer_type)
                .map_err(|e| self.invalid(field("address"), e.to_string()))?;
            peer.enabled = entry.enabled.unwrap_or(true);
            config.known_peers.push(peer);
        }
        config.validate(&source)?;
        Ok(config)
    }

    fn display_name(&self) -> String {
        if self.source_name.is_empty() {
            "(defaults)".to_string()
        } else {
            self.source_name.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(text: &str, name: &str) -> Result<PeerNodeConfiguration, ConfigError> {
        parse_str(text, name)?.resolve()
    }

    #[test]
    fn a_full_toml_file_resolves() {
        let config = resolve(
            r#"
            node_id = "node-a"
            tcp_port = 26000
            bind_address = "0.0.0.0"
            data_dir = "/tmp/x"
            cluster_key = "secret"
            durability = "normal"
            known_peers = [
              { node_id = "node-b", address = "127.0.0.1:26001" },
              { node_id = "gw", address = "gw.example:443", type = "cloud" },
            ]
            "#,
            "a.toml",
        )
        .unwrap();
        assert_eq!(config.node_id.as_str(), "node-a");
        assert_eq!(config.listen_address().to_string(), "0.0.0.0:26000");
        assert_eq!(config.durability, Durability::Normal);
        assert_eq!(config.known_peers.len(), 2);
        assert_eq!(config.known_peers[1].peer_type, PeerType::CloudRemote);
        assert!(!config.uses_default_cluster_key());
    }

    #[test]
    fn json_is_chosen_by_the_file_name() {
        let config = resolve(
            r#"{"node_id":"a","known_peers":[{"node_id":"b","address":"h:1","type":"static"}]}"#,
            "c.json",
        )
        .unwrap();
        assert_eq!(config.known_peers[0].node_id.as_str(), "b");
    }

    #[test]
    fn unknown_fields_are_refused_naming_the_field_and_the_file() {
        let err = resolve("node_id = \"a\"\ntcp_prot = 1", "conf.toml").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("conf.toml") && text.contains("tcp_prot"),
            "{text}"
        );
        let err = resolve(r#"{"node_id":"a","extra":1}"#, "c.json").unwrap_err();
        assert!(err.to_string().contains("extra"), "{err}");
    }

    #[test]
    fn bad_values_name_their_field() {
        for (text, field) in [
            ("node_id = \"bad id\"", "node_id"),
            ("node_id = \"a\"\ntcp_port = 70000", "tcp_port"),
            (
                "node_id = \"a\"\nbind_address = \"nowhere\"",
                "bind_address",
            ),
            ("node_id = \"a\"\ncluster_key = \"\"", "cluster_key"),
            ("node_id = \"a\"\nsync_interval_ms = 1", "sync_interval_ms"),
            (
                "node_id = \"a\"\nknown_peers = [{ node_id = \"b\", address = \"nohost\" }]",
                "known_peers[0].address",
            ),
            (
                "node_id = \"a\"\nknown_peers = [{ node_id = \"a\", address = \"h:1\" }]",
                "known_peers[0].node_id",
            ),
            (
                "node_id = \"a\"\nknown_peers = [{ node_id = \"b\", address = \"h:1\" }, { node_id = \"b\", address = \"h:2\" }]",
                "known_peers[1].node_id",
            ),
            (
                "node_id = \"a\"\nknown_peers = [{ node_id = \"b\", address = \"h:1\", type = \"lan\" }]",
                "type",
            ),
        ] {
            let err = resolve(text, "f.toml").unwrap_err().to_string();
            assert!(
                err.contains(field) && err.contains("f.toml"),
                "{text:?} gave {err}"
            );
        }
    }

    #[test]
    fn indexes_are_declared_in_order_and_bad_ones_name_the_part() {
        let dir = tempfile::tempdir().unwrap();
        let head = format!(
            "node_id = \"a\"\ndata_dir = {:?}\n",
            dir.path().display().to_string()
        );
        let config = resolve(
            &format!(
                "{head}[[indexes]]\ncollection = \"orders\"\nfields = [\"shop\", \"addr.city\"]\n\
                 [[indexes]]\ncollection = \"users\"\nfields = [\"age\"]\ncovering = true\n"
            ),
            "f.toml",
        )
        .unwrap();
        config.validate("f.toml").unwrap();
        assert_eq!(
            config.indexes,
            vec![
                cbddc_core::IndexDefinition::new("orders", &["shop", "addr.city"]),
                cbddc_core::IndexDefinition::new("users", &["age"]).covering_documents(),
            ]
        );
        for (index, field, words) in [
            (
                "collection = \"o\"\nfields = []",
                "indexes[0].fields",
                "1 to 8",
            ),
            (
                "collection = \"o\"\nfields = [\"a..b\"]",
                "indexes[0].fields[0]",
                "dotted path",
            ),
            (
                "collection = \"o\"\nfields = [\"$a\"]",
                "indexes[0].fields[0]",
                "operator",
            ),
            (
                "collection = \"o\"\nfields = [\"a\", \"a\"]",
                "indexes[0].fields[1]",
                "twice",
            ),
            (
                "collection = \"\"\nfields = [\"a\"]",
                "indexes[0].collection",
                "empty",
            ),
            (
                "collection = \"o\"\nfields = [\"a\"]\nunique = true",
                "unique",
                "",
            ),
        ] {
            let text = format!("{head}[[indexes]]\n{index}\n");
            let err = resolve(&text, "f.toml")
                .and_then(|c| c.validate("f.toml").map(|_| c))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(field) && err.contains(words) && err.contains("f.toml"),
                "{index:?} gave {err}"
            );
        }
        let twice = format!(
            "{head}[[indexes]]\ncollection = \"o\"\nfields = [\"a\"]\n[[indexes]]\ncollection = \"o\"\nfields = [\"a\"]\ncovering = true\n"
        );
        let err = resolve(&twice, "f.toml")
            .and_then(|c| c.validate("f.toml").map(|_| c))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("indexes[1]") && err.contains("o(a) is declared twice"),
            "{err}"
        );
        let elsewhere = format!(
            "{head}collections = [\"users\"]\n[[indexes]]\ncollection = \"o\"\nfields = [\"a\"]\n"
        );
        let err = resolve(&elsewhere, "f.toml")
            .and_then(|c| c.validate("f.toml").map(|_| c))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not among the collections"), "{err}");
    }

    #[test]
    fn an_empty_file_means_the_defaults_with_a_generated_id() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!("data_dir = {:?}", dir.path().display().to_string());
        let first = resolve(&text, "f.toml").unwrap();
        assert_eq!(first.tcp_port, crate::DEFAULT_TCP_PORT);
        assert!(first.uses_default_cluster_key());
        assert_eq!(resolve(&text, "f.toml").unwrap().node_id, first.node_id);
    }

    #[test]
    fn a_data_dir_that_cannot_be_created_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("a-file");
        std::fs::write(&blocker, "").unwrap();
        let text = format!(
            "node_id = \"a\"\ndata_dir = {:?}",
            blocker.join("data").display().to_string()
        );
        let err = resolve(&text, "f.toml").unwrap_err().to_string();
        assert!(
            err.contains("data_dir") && err.contains("cannot create"),
            "{err}"
        );
    }

    #[test]
    fn discovery_and_election_sections() {
        let dir = tempfile::tempdir().unwrap();
        let base = format!(
            "node_id = \"a\"\ndata_dir = {:?}\n",
            dir.path().display().to_string()
        );
        let config = resolve(
            &format!("{base}[discovery]\nenabled = true\ntargets = [\"127.0.0.1:7001\"]\n[election]\neligible = false\npeer_timeout_ms = 5000\n"),
            "f.toml",
        )
        .unwrap();
        assert!(config.discovery.enabled && !config.election.eligible);
        assert_eq!(
            config.discovery.effective_targets(),
            vec!["127.0.0.1:7001".parse().unwrap()]
        );
        assert_eq!(
            crate::DiscoveryConfig::default().effective_targets()[0].to_string(),
            "255.255.255.255:25001"
        );
        for (section, field) in [
            (
                "[discovery]\ntargets = [\"somewhere\"]",
                "discovery.targets[0]",
            ),
            ("[discovery]\nbogus = 1", "bogus"),
            (
                "[election]\npeer_timeout_ms = 100",
                "election.peer_timeout_ms",
            ),
        ] {
            let err = resolve(&format!("{base}{section}\n"), "f.toml")
                .unwrap_err()
                .to_string();
            assert!(err.contains(field), "{section}: {err}");
        }
    }

    #[test]
    fn the_cluster_section_bootstraps_or_joins_and_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let base = format!(
            "node_id = \"a\"\ndata_dir = {:?}\nknown_peers = [{{ node_id = \"b\", address = \"127.0.0.1:7002\" }}]\n",
            dir.path().display().to_string()
        );
        let config = resolve(
            &format!("{base}[cluster]\nmembers = [\"a\", \"b\"]\n"),
            "f.toml",
        )
        .unwrap();
        let cluster = config.cluster.unwrap();
        assert_eq!(cluster.configuration_id, 1);
        assert_eq!(cluster.members.len(), 2);
        assert!(!cluster.join);
        assert_eq!(
            (cluster.tick_ms, cluster.election_timeout_ticks()),
            (50, 20)
        );
        let timed = resolve(
            &format!(
                "{base}[cluster]\nmembers = [\"a\"]\ntick_ms = 20\nelection_timeout_ms = 300\n"
            ),
            "f.toml",
        )
        .unwrap()
        .cluster
        .unwrap();
        assert_eq!((timed.tick_ms, timed.election_timeout_ticks()), (20, 15));
        let joining = resolve(&format!("{base}[cluster]\njoin = true\n"), "f.toml").unwrap();
        assert!(joining.cluster.unwrap().join);
        assert_eq!(resolve(&base, "f.toml").unwrap().cluster, None);
        for (section, expected) in [
            ("members = [\"b\"]", "must name this node"),
            ("members = [\"a\", \"c\"]", "add it to known_peers"),
            ("members = [\"a\", \"a\"]", "listed twice"),
            (
                "members = [\"a\"]\njoin = true",
                "remove `members` or `join`",
            ),
            ("members = [\"a\"]\nconfiguration_id = 0", "start at 1"),
            ("members = [\"no spaces\"]", "cluster.members[0]"),
            ("members = [\"a\"]\ntick_ms = 0", "cluster.tick_ms"),
            (
                "members = [\"a\"]\ntick_ms = 50\nelection_timeout_ms = 60",
                "at least two ticks",
            ),
        ] {
            let err = resolve(&format!("{base}[cluster]\n{section}\n"), "f.toml")
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{section}: {err}");
        }
    }
}
