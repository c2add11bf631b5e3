//! The feature level: which formats this node writes, and the gate every peer passes.
//!
//! A node reads every format its build knows, and writes a new one (a "feature") only once
//! every peer it syncs with — its enabled known peers, the peers it discovered and, with a
//! control plane, every member of the running configuration — has said in a handshake
//! that it reads it. The set in force is kept in the database and only grows: a node that
//! restarts knowing fewer peers never falls back. From then on a peer that cannot read a
//! feature in force is refused at the handshake, with the release to upgrade it to.

use cbddc_core::{DocumentStore, NodeId, PeerDirectory, PeerStore, StorageError};
use cbddc_net::{FeatureGate, PeerBuild};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How often the level is reconsidered when no handshake wakes it (the set of peers can
/// change without one: a peer removed from the configuration).
const RECONSIDER: Duration = Duration::from_secs(5);

/// A feature this node reads but does not write yet, and who holds it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingFeature {
    /// The feature.
    pub feature: String,
    /// Each peer that holds it back: its node id, and its release as it last said it
    /// (`None`: not heard from since this node started).
    pub held_back_by: Vec<(NodeId, Option<String>)>,
}

/// The level's state for status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeatureReport {
    /// The features this node writes.
    pub in_force: BTreeSet<String>,
    /// The features it reads and does not write yet.
    pub pending: Vec<PendingFeature>,
}

/// This node's feature level (see the module documentation).
#[derive(Debug)]
pub struct FeatureLevel {
    local: NodeId,
    readable: BTreeSet<String>,
    in_force: RwLock<BTreeSet<String>>,
    /// What each peer said of its build in its last handshake with this node.
    heard: Mutex<BTreeMap<NodeId, PeerBuild>>,
    wake: Notify,
}

impl FeatureLevel {
    /// The level recorded in `store`, for a build that reads `readable`.
    pub async fn load(
        local: NodeId,
        readable: BTreeSet<String>,
        store: &dyn DocumentStore,
    ) -> Result<Arc<Self>, StorageError> {
        let in_force = store.features_in_force().await?;
        Ok(Arc::new(Self {
            local,
            readable,
            in_force: RwLock::new(in_force),
            heard: Mutex::new(BTreeMap::new()),
            wake: Notify::new(),
        }))
    }

    /// Whether this node writes `feature`.
    pub fn in_force(&self, feature: &str) -> bool {
        self.in_force
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(feature)
    }

    /// What each peer said of its build in its last handshake with this node.
    pub fn peer_builds(&self) -> BTreeMap<NodeId, PeerBuild> {
        self.heard.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The peers whose reading decides the level: the enabled known peers as stored (so a
    /// node that just started, whose directory is still empty, decides nothing from an
    /// empty set), and the peers of `directory` (discovered ones, members).
    pub async fn deciding(
        &self,
        known: &dyn PeerStore,
        directory: &dyn PeerDirectory,
    ) -> Result<BTreeSet<NodeId>, StorageError> {
        let mut deciding: BTreeSet<NodeId> = known
            .list_peers()
            .await?
            .into_iter()
            .filter(|p| p.enabled)
            .map(|p| p.node_id)
            .collect();
        deciding.extend(directory.peers().into_iter().map(|p| p.node_id));
        deciding.remove(&self.local);
        Ok(deciding)
    }

    /// The level now, and who of `deciding` holds each feature back.
    pub fn report(&self, deciding: &BTreeSet<NodeId>) -> FeatureReport {
        let in_force = self
            .in_force
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let heard = self.peer_builds();
        let pending = self
            .readable
            .iter()
            .filter(|f| !in_force.contains(*f))
            .map(|feature| PendingFeature {
                feature: feature.clone(),
                held_back_by: deciding
                    .iter()
                    .filter_map(|peer| match heard.get(peer) {
                        Some(build) if build.features.contains(feature) => None,
                        Some(build) => Some((peer.clone(), Some(build.release.clone()))),
                        None => Some((peer.clone(), None)),
                    })
                    .collect(),
            })
            .collect();
        FeatureReport { in_force, pending }
    }

    /// Raises the level to every pending feature nobody holds back: durably first, then
    /// in memory, so what this node writes is never ahead of its record.
    pub async fn raise(
        &self,
        deciding: &BTreeSet<NodeId>,
        store: &dyn DocumentStore,
    ) -> Result<(), StorageError> {
        let ready: BTreeSet<String> = self
            .report(deciding)
            .pending
            .into_iter()
            .filter(|p| p.held_back_by.is_empty())
            .map(|p| p.feature)
            .collect();
        if ready.is_empty() {
            return Ok(());
        }
        store.raise_features(ready.clone()).await?;
        tracing::info!(features = ?ready, "every peer reads these formats now: this node writes them from here on");
        self.in_force
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .extend(ready);
        Ok(())
    }

    /// Raises the level after every handshake and every few seconds, until `token`.
    pub async fn run(
        self: Arc<Self>,
        known: Arc<dyn PeerStore>,
        directory: Arc<dyn PeerDirectory>,
        store: Arc<dyn DocumentStore>,
        token: CancellationToken,
    ) {
        if self.readable.is_empty() {
            return;
        }
        loop {
            let raised = match self.deciding(known.as_ref(), directory.as_ref()).await {
                Ok(deciding) => self.raise(&deciding, store.as_ref()).await,
                Err(e) => Err(e),
            };
            if let Err(e) = raised {
                tracing::warn!(error = %e, "the feature level could not be recorded; retrying");
            }
            tokio::select! {
                _ = token.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(RECONSIDER) => {}
            }
        }
    }
}

impl FeatureGate for FeatureLevel {
    fn admit(&self, peer: &NodeId, build: &PeerBuild) -> Result<(), String> {
        self.heard
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(peer.clone(), build.clone());
        self.wake.notify_one();
        let in_force = self.in_force.read().unwrap_or_else(|p| p.into_inner());
        let missing: Vec<&str> = in_force
            .iter()
            .filter(|f| !build.features.contains(*f))
            .map(String::as_str)
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(format!(
            "{local} writes {features} since every peer it knew could read it; {peer} runs cbddc \
             {release}, which cannot: upgrade {peer} to a release that reads {features} (this \
             node runs cbddc {ours}), or let it sync from an empty data dir once upgraded",
            local = self.local,
            features = missing.join(", "),
            release = build.release,
            ours = cbddc_net::RELEASE,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cbddc_core::{KnownPeer, PeerState, PeerType};
    use cbddc_store::SqliteStore;

    #[derive(Debug)]
    struct Directory(Vec<&'static str>);

    impl PeerDirectory for Directory {
        fn peers(&self) -> Vec<PeerState> {
            self.0
                .iter()
                .map(|name| PeerState {
                    node_id: NodeId::new(*name).unwrap(),
                    peer_type: PeerType::LanDiscovered,
                    address: "127.0.0.1:1".into(),
                    eligible: true,
                    alive_since: None,
                })
                .collect()
        }

        fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
            tokio::sync::watch::channel(0).1
        }
    }

    /// Who decides: the directory's peers and the store's known peers, less this node.
    async fn deciding(
        level: &FeatureLevel,
        store: &SqliteStore,
        peers: &Directory,
    ) -> BTreeSet<NodeId> {
        level.deciding(store, peers).await.unwrap()
    }

    fn build(release: &str, features: &[&str]) -> PeerBuild {
        PeerBuild {
            protocol: 5,
            release: release.into(),
            features: features.iter().map(|f| f.to_string()).collect(),
        }
    }

    fn id(name: &str) -> NodeId {
        NodeId::new(name).unwrap()
    }

    async fn store(dir: &std::path::Path) -> SqliteStore {
        SqliteStore::open(dir, id("a"), Default::default())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_feature_goes_into_force_once_every_peer_reads_it_and_never_falls_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path()).await;
        let readable: BTreeSet<String> = ["merge".to_string()].into();
        let level = FeatureLevel::load(id("a"), readable.clone(), &store)
            .await
            .unwrap();
        let peers = Directory(vec!["a", "b", "c"]);
        let deciding = deciding(&level, &store, &peers).await;
        assert_eq!(deciding, [id("b"), id("c")].into());

        level.admit(&id("b"), &build("0.3.0", &["merge"])).unwrap();
        level.admit(&id("c"), &build("0.2.0", &[])).unwrap();
        level.raise(&deciding, &store).await.unwrap();
        assert!(!level.in_force("merge"), "c cannot read it yet");
        let report = level.report(&deciding);
        assert_eq!(
            report.pending[0].held_back_by,
            [(id("c"), Some("0.2.0".into()))]
        );

        // c is upgraded and comes back.
        level.admit(&id("c"), &build("0.3.0", &["merge"])).unwrap();
        level.raise(&deciding, &store).await.unwrap();
        assert!(level.in_force("merge"));

        // c rolled back to the older release: refused, naming what to do.
        let refused = level.admit(&id("c"), &build("0.2.0", &[])).unwrap_err();
        assert!(refused.contains("writes merge"), "{refused}");
        assert!(refused.contains("cbddc 0.2.0"), "{refused}");

        // A restart on a database that recorded the level keeps it, whatever it knows.
        store.close().await;
        let store = self::store(dir.path()).await;
        let again = FeatureLevel::load(id("a"), readable, &store).await.unwrap();
        assert!(again.in_force("merge"));
        assert!(again.admit(&id("d"), &build("0.2.0", &[])).is_err());
        store.close().await;
    }

    #[tokio::test]
    async fn a_known_peer_not_heard_from_holds_a_feature_back_before_the_directory_knows_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path()).await;
        let silent = KnownPeer::new(id("silent"), "127.0.0.1:1", PeerType::StaticRemote).unwrap();
        store.replace_configured_peers(vec![silent]).await.unwrap();
        let level = FeatureLevel::load(id("a"), ["merge".to_string()].into(), &store)
            .await
            .unwrap();
        // Just started: the directory is empty, the stored peers still decide.
        let deciding = deciding(&level, &store, &Directory(vec![])).await;
        level.raise(&deciding, &store).await.unwrap();
        assert!(!level.in_force("merge"));
        let peers = Directory(vec!["b"]);
        let deciding = self::deciding(&level, &store, &peers).await;
        level.admit(&id("b"), &build("0.3.0", &["merge"])).unwrap();
        level.raise(&deciding, &store).await.unwrap();
        assert!(!level.in_force("merge"));
        assert_eq!(
            level.report(&deciding).pending[0].held_back_by,
            [(id("silent"), None)]
        );
        store.close().await;
    }
}
