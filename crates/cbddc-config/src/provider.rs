use crate::{ConfigError, PeerNodeConfiguration};
use std::sync::Arc;
use tokio::sync::{broadcast, watch};

/// What a provider announces.
#[derive(Debug, Clone)]
pub enum ConfigEvent {
    /// A new, validated configuration is in force.
    Changed(Arc<PeerNodeConfiguration>),
    /// A new configuration was refused; the previous one stays in force.
    Rejected {
        /// Where it came from (a file, a URL, "environment").
        source: String,
        /// Why, naming the field when there is one.
        message: String,
    },
}

/// A source of node configuration that may change while the node runs.
///
/// Contract: [`ConfigProvider::current`] is always a validated configuration — the last
/// good one. Every change of it is announced once, in order, as [`ConfigEvent::Changed`];
/// a candidate that fails to load or validate is announced as [`ConfigEvent::Rejected`]
/// and changes nothing. A subscriber that lags re-reads `current`.
pub trait ConfigProvider: Send + Sync + std::fmt::Debug {
    /// The configuration in force.
    fn current(&self) -> Arc<PeerNodeConfiguration>;
    /// Events from now on.
    fn subscribe(&self) -> broadcast::Receiver<ConfigEvent>;
}

/// The shared state of a provider: the value in force (a `watch`) and the events (a
/// `broadcast`). Providers feed it candidates with [`ConfigCell::offer`].
#[derive(Debug)]
pub struct ConfigCell {
    current: watch::Sender<Arc<PeerNodeConfiguration>>,
    events: broadcast::Sender<ConfigEvent>,
}

impl ConfigCell {
    /// A cell holding `initial`.
    pub fn new(initial: PeerNodeConfiguration) -> Self {
        Self {
            current: watch::Sender::new(Arc::new(initial)),
            events: broadcast::channel(64).0,
        }
    }

    /// The configuration in force.
    pub fn current(&self) -> Arc<PeerNodeConfiguration> {
        self.current.borrow().clone()
    }

    /// Events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ConfigEvent> {
        self.events.subscribe()
    }

    /// Puts `candidate` in force if it is valid and differs from the current one; refuses
    /// it with an event and a log line otherwise. Returns true when it changed.
    pub fn offer(
        &self,
        candidate: Result<PeerNodeConfiguration, ConfigError>,
        source: &str,
    ) -> bool {
        match candidate {
            Ok(config) => {
                if *self.current.borrow().as_ref() == config {
                    return false;
                }
                let config = Arc::new(config);
                self.current.send_replace(config.clone());
                tracing::info!(source, node = %config.node_id, "configuration changed");
                let _ = self.events.send(ConfigEvent::Changed(config));
                true
            }
            Err(e) => {
                self.reject(source, &e);
                false
            }
        }
    }

    /// Announces that a candidate from `source` was refused; nothing changes.
    pub fn reject(&self, source: &str, error: &ConfigError) {
        tracing::error!(source, %error, "configuration refused; the last good configuration stays in force");
        let _ = self.events.send(ConfigEvent::Rejected {
            source: source.to_string(),
            message: error.to_string(),
        });
    }
}

/// Implements [`ConfigProvider`] for a provider whose state is a [`ConfigCell`] at `field`.
macro_rules! backed_by_cell {
    ($provider:ty, $($field:ident).+) => {
        impl $crate::ConfigProvider for $provider {
            fn current(&self) -> std::sync::Arc<$crate::PeerNodeConfiguration> {
                self.$($field).+.current()
            }
            fn subscribe(&self) -> tokio::sync::broadcast::Receiver<$crate::ConfigEvent> {
                self.$($field).+.subscribe()
            }
        }
    };
}
pub(crate) use backed_by_cell;

/// A configuration set by the program (embedders and tests).
#[derive(Debug)]
pub struct StaticProvider {
    cell: ConfigCell,
}

impl StaticProvider {
    /// A provider holding `config`, after validating it.
    pub fn new(config: PeerNodeConfiguration) -> Result<Self, ConfigError> {
        config.validate("(static)")?;
        Ok(Self {
            cell: ConfigCell::new(config),
        })
    }

    /// Replaces the configuration; an invalid one is refused (and announced) and the
    /// current one stays.
    pub fn set(&self, config: PeerNodeConfiguration) -> Result<(), ConfigError> {
        match config.validate("(static)") {
            Ok(()) => {
                self.cell.offer(Ok(config), "(static)");
                Ok(())
            }
            Err(e) => {
                self.cell.reject("(static)", &e);
                Err(e)
            }
        }
    }
}

crate::provider::backed_by_cell!(StaticProvider, cell);

#[cfg(test)]
mod tests {
    use super::*;
    use cbddc_core::{KnownPeer, NodeId, PeerType};

    fn config(dir: &std::path::Path) -> PeerNodeConfiguration {
        PeerNodeConfiguration::new(NodeId::new("a").unwrap(), dir)
    }

    #[test]
    fn a_static_provider_announces_changes_once_and_refuses_invalid_ones() {
        let dir = tempfile::tempdir().unwrap();
        let provider = StaticProvider::new(config(dir.path())).unwrap();
        let mut events = provider.subscribe();

        let mut changed = config(dir.path());
        changed.tcp_port = 26000;
        provider.set(changed.clone()).unwrap();
        provider.set(changed.clone()).unwrap();
        match events.try_recv().unwrap() {
            ConfigEvent::Changed(c) => assert_eq!(c.tcp_port, 26000),
            other => panic!("{other:?}"),
        }
        assert!(
            events.try_recv().is_err(),
            "setting the same configuration again is not a change"
        );

        let mut invalid = changed.clone();
        invalid.known_peers.push(
            KnownPeer::new(NodeId::new("a").unwrap(), "h:1", PeerType::StaticRemote).unwrap(),
        );
        let err = provider.set(invalid).unwrap_err();
        assert!(err.to_string().contains("known_peers[0].node_id"), "{err}");
        assert!(matches!(
            events.try_recv().unwrap(),
            ConfigEvent::Rejected { .. }
        ));
        assert_eq!(provider.current().tcp_port, 26000);
    }
}
