//! What a running node may take from a source that changed: only a configuration it
//! would have been started with on purpose.
//!
//! A file that is being rewritten is, for a moment, empty or cut short. Parsed as it
//! stands, it would fall back to a generated node id, the well-known cluster key and the
//! default data directory, and the node would serve strangers under another name. So a
//! live candidate is refused when it is empty, or when a field that fixes the node's
//! identity (`node_id`, `cluster_key`, `data_dir`) is set in the configuration in force
//! and missing from the candidate. Every other field may change freely.

use crate::{ConfigError, ConfigFile, PeerNodeConfiguration};
use std::sync::Mutex;

/// A field that fixes a node's identity, with what a node falls back to without it.
struct IdentityField {
    name: &'static str,
    fallback: &'static str,
    is_set: fn(&ConfigFile) -> bool,
}

const IDENTITY_FIELDS: [IdentityField; 3] = [
    IdentityField {
        name: "node_id",
        fallback: "a generated node id",
        is_set: |f| f.node_id.is_some(),
    },
    IdentityField {
        name: "cluster_key",
        fallback: "the default cluster key",
        is_set: |f| f.cluster_key.is_some(),
    },
    IdentityField {
        name: "data_dir",
        fallback: "the default data directory",
        is_set: |f| f.data_dir.is_some(),
    },
];

/// Refuses `candidate` (already overlaid) as the successor of `in_force`: see the module
/// docs. `text` is what the source gave.
pub fn check_live_successor(
    in_force: &ConfigFile,
    text: &str,
    candidate: &ConfigFile,
    source_name: &str,
) -> Result<(), ConfigError> {
    if text.trim().is_empty() {
        return Err(ConfigError::Empty {
            source_name: source_name.to_string(),
        });
    }
    for field in IDENTITY_FIELDS {
        if (field.is_set)(in_force) && !(field.is_set)(candidate) {
            return Err(ConfigError::Vanished {
                source_name: source_name.to_string(),
                field: field.name,
                fallback: field.fallback,
            });
        }
    }
    Ok(())
}

/// The layer in force of a live source, and the one gate every new version passes.
#[derive(Debug)]
pub(crate) struct LiveSource {
    in_force: Mutex<ConfigFile>,
    overrides: ConfigFile,
}

impl LiveSource {
    /// `initial` is the source's first version as parsed (before `overrides`).
    pub(crate) fn new(initial: &ConfigFile, overrides: ConfigFile) -> Self {
        Self {
            in_force: Mutex::new(initial.clone().overlay(&overrides)),
            overrides,
        }
    }

    /// The configuration of a new version of the source's `text`, refused if a running
    /// node must not adopt it. Nothing is resolved (so nothing is created on disk) for a
    /// refused version; an accepted one becomes the version in force.
    pub(crate) fn candidate(
        &self,
        text: &str,
        source_name: &str,
        parse: impl FnOnce(&str) -> Result<ConfigFile, ConfigError>,
    ) -> Result<PeerNodeConfiguration, ConfigError> {
        let layered = parse(text)?.overlay(&self.overrides);
        let mut in_force = self.in_force.lock().unwrap_or_else(|p| p.into_inner());
        check_live_successor(&in_force, text, &layered, source_name)?;
        let config = layered.resolve()?;
        *in_force = layered;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{parse_json, parse_str};
    use proptest::prelude::*;

    fn full_toml(dir: &str) -> String {
        format!(
            "node_id = \"node-a\"\ntcp_port = 26001\ndata_dir = {dir:?}\ncluster_key = \"my-cluster-secret\"\nsync_interval_ms = 500\nknown_peers = [{{ node_id = \"node-b\", address = \"127.0.0.1:26002\" }}]\n\n[election]\neligible = true\n"
        )
    }

    fn full_json(dir: &str) -> String {
        format!(
            "{{\"node_id\": \"node-a\", \"tcp_port\": 26001, \"data_dir\": {dir:?}, \"cluster_key\": \"my-cluster-secret\", \"known_peers\": [{{\"node_id\": \"node-b\", \"address\": \"127.0.0.1:26002\"}}]}}"
        )
    }

    fn source(text: &str, name: &str) -> LiveSource {
        LiveSource::new(&parse_str(text, name).unwrap(), ConfigFile::default())
    }

    #[test]
    fn an_empty_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let text = full_toml(&dir.path().display().to_string());
        let live = source(&text, "n.toml");
        for empty in ["", "\n", "  \n\t"] {
            let err = live
                .candidate(empty, "n.toml", |t| parse_str(t, "n.toml"))
                .unwrap_err();
            assert!(matches!(err, ConfigError::Empty { .. }), "{err}");
            assert!(err.to_string().contains("n.toml"), "{err}");
        }
    }

    #[test]
    fn a_vanished_identity_field_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let text = full_toml(&dir.path().display().to_string());
        let live = source(&text, "n.toml");
        for field in ["node_id", "cluster_key", "data_dir"] {
            let without: String = text
                .lines()
                .filter(|l| !l.starts_with(field))
                .map(|l| format!("{l}\n"))
                .collect();
            let err = live
                .candidate(&without, "n.toml", |t| parse_str(t, "n.toml"))
                .unwrap_err();
            let message = err.to_string();
            assert!(
                matches!(err, ConfigError::Vanished { field: f, .. } if f == field),
                "{message}"
            );
            assert!(
                message.contains(field) && message.contains("n.toml"),
                "{message}"
            );
        }
        // Other fields may go: the port falls back to its default on purpose.
        let without_port = text.replace("tcp_port = 26001\n", "");
        let config = live
            .candidate(&without_port, "n.toml", |t| parse_str(t, "n.toml"))
            .unwrap();
        assert_eq!(config.tcp_port, crate::DEFAULT_TCP_PORT);
    }

    #[test]
    fn a_field_given_by_an_override_may_vanish_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let text = full_toml(&dir.path().display().to_string());
        let env =
            crate::env_layer(|name| (name == "CBDDC_CLUSTER_KEY").then(|| "from-env".to_string()))
                .unwrap();
        let live = LiveSource::new(&parse_str(&text, "n.toml").unwrap(), env);
        let without = text.replace("cluster_key = \"my-cluster-secret\"\n", "");
        let config = live
            .candidate(&without, "n.toml", |t| parse_str(t, "n.toml"))
            .unwrap();
        assert_eq!(config.cluster_key, "from-env");
    }

    #[test]
    fn a_refused_version_creates_nothing_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let text = full_toml(&data.display().to_string());
        let live = source(&text, "n.toml");
        let cwd_default = std::path::Path::new(crate::DEFAULT_DATA_DIR);
        let existed = cwd_default.exists();
        assert!(
            live.candidate("tcp_port = 1", "n.toml", |t| parse_str(t, "n.toml"))
                .is_err()
        );
        assert_eq!(cwd_default.exists(), existed);
    }

    /// What the node would run on after the source showed `text` (a cut or half-written
    /// version of a valid file), if anything.
    fn adopted(live: &LiveSource, text: &str, name: &str) -> Option<PeerNodeConfiguration> {
        live.candidate(text, name, |t| parse_str(t, name)).ok()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Random truncations, and writes cut into pieces, of a valid TOML or JSON file
        /// never change the running node id, cluster key or data directory.
        #[test]
        fn cut_and_partial_versions_never_change_the_identity(
            json in any::<bool>(),
            cuts in proptest::collection::vec(0.0f64..1.0, 1..4),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let dir_text = dir.path().join("data").display().to_string();
            let (text, name) = if json {
                (full_json(&dir_text), "n.json")
            } else {
                (full_toml(&dir_text), "n.toml")
            };
            let first = if json { parse_json(&text, name) } else { parse_str(&text, name) };
            let original = first.unwrap().resolve().unwrap();
            let live = source(&text, name);
            // Each cut is a moment at which a writer had written this much of the file
            // (a truncate-then-write, or a write in several pieces).
            let mut points: Vec<usize> = cuts
                .iter()
                .map(|c| ((text.len() as f64) * c) as usize)
                .collect();
            points.sort_unstable();
            for point in points.into_iter().chain([text.len()]) {
                let Some(seen) = text.get(..point) else { continue };
                if let Some(config) = adopted(&live, seen, name) {
                    prop_assert_eq!(&config.node_id, &original.node_id, "after {:?}", seen);
                    prop_assert_eq!(&config.cluster_key, &original.cluster_key, "after {:?}", seen);
                    prop_assert_eq!(&config.data_dir, &original.data_dir, "after {:?}", seen);
                }
            }
            // The whole file is always accepted again.
            prop_assert!(adopted(&live, &text, name).is_some());
        }
    }
}
