use crate::provider::ConfigCell;
use crate::{ConfigError, ConfigFile};
use std::path::PathBuf;

/// The environment variables read, and the field each sets.
pub const ENV_VARS: [(&str, &str); 5] = [
    ("CBDDC_NODE_ID", "node_id"),
    ("CBDDC_TCP_PORT", "tcp_port"),
    ("CBDDC_BIND_ADDRESS", "bind_address"),
    ("CBDDC_DATA_DIR", "data_dir"),
    ("CBDDC_CLUSTER_KEY", "cluster_key"),
];

/// The configuration layer the environment sets, read through `lookup` (e.g.
/// `|name| std::env::var(name).ok()`). Empty variables count as unset.
pub fn env_layer(lookup: impl Fn(&str) -> Option<String>) -> Result<ConfigFile, ConfigError> {
    let get = |name: &str| lookup(name).filter(|v| !v.is_empty());
    let mut layer = ConfigFile {
        node_id: get("CBDDC_NODE_ID"),
        bind_address: get("CBDDC_BIND_ADDRESS"),
        data_dir: get("CBDDC_DATA_DIR").map(PathBuf::from),
        cluster_key: get("CBDDC_CLUSTER_KEY"),
        ..ConfigFile::default()
    };
    if let Some(port) = get("CBDDC_TCP_PORT") {
        layer.tcp_port = Some(
            port.trim()
                .parse::<u16>()
                .map_err(|_| ConfigError::Invalid {
                    source_name: "environment".into(),
                    field: "CBDDC_TCP_PORT".into(),
                    message: format!("{port:?} is not a port number from 0 to 65535"),
                })?,
        );
    }
    if ENV_VARS.iter().any(|(name, _)| get(name).is_some()) {
        layer.source_name = "environment".into();
    }
    Ok(layer)
}

/// A configuration from environment variables over the defaults. The environment of a
/// running process does not change, so this provider never announces a change.
#[derive(Debug)]
pub struct EnvProvider {
    cell: ConfigCell,
}

impl EnvProvider {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads variables through `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let config = ConfigFile::default()
            .overlay(&env_layer(lookup)?)
            .resolve()?;
        Ok(Self {
            cell: ConfigCell::new(config),
        })
    }
}

crate::provider::backed_by_cell!(EnvProvider, cell);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ConfigProvider;
    use std::collections::HashMap;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn every_variable_sets_its_field() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().display().to_string();
        let provider = EnvProvider::from_lookup(vars(&[
            ("CBDDC_NODE_ID", "env-node"),
            ("CBDDC_TCP_PORT", "26100"),
            ("CBDDC_BIND_ADDRESS", "0.0.0.0"),
            ("CBDDC_DATA_DIR", &data),
            ("CBDDC_CLUSTER_KEY", "from-env"),
        ]))
        .unwrap();
        let config = provider.current();
        assert_eq!(config.node_id.as_str(), "env-node");
        assert_eq!(config.listen_address().to_string(), "0.0.0.0:26100");
        assert_eq!(config.data_dir, dir.path());
        assert_eq!(config.cluster_key, "from-env");
    }

    #[test]
    fn a_bad_variable_is_named() {
        let err = EnvProvider::from_lookup(vars(&[("CBDDC_TCP_PORT", "eighty")])).unwrap_err();
        assert!(err.to_string().contains("CBDDC_TCP_PORT"), "{err}");
        let err = EnvProvider::from_lookup(vars(&[
            ("CBDDC_NODE_ID", "no spaces"),
            ("CBDDC_DATA_DIR", "/tmp"),
        ]))
        .unwrap_err();
        assert!(
            err.to_string().contains("node_id") && err.to_string().contains("environment"),
            "{err}"
        );
    }

    #[test]
    fn the_environment_overrides_a_file_layer() {
        let dir = tempfile::tempdir().unwrap();
        let file = crate::parse_str(
            &format!(
                "node_id = \"file\"\ntcp_port = 1\ndata_dir = {:?}",
                dir.path().display().to_string()
            ),
            "f.toml",
        )
        .unwrap();
        let layered = file
            .overlay(&env_layer(vars(&[("CBDDC_TCP_PORT", "2")])).unwrap())
            .resolve()
            .unwrap();
        assert_eq!((layered.node_id.as_str(), layered.tcp_port), ("file", 2));
    }
}
