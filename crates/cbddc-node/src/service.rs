//! The node's service layer: what a node does for its embedder ([`crate::Node`]) and for
//! peers and tools (the RPC adapter in `handler`), with typed errors and domain types.
//! Nothing here knows the wire; `handler` maps its errors to wire codes in one place.

use crate::NodeError;
use cbddc_control::{ControlPlane, ControlPlaneError, FramesAnswer};
use cbddc_core::{
    ApplyOutcome, Coverage, Document, DocumentStore, EntryPage, KnownPeer, LocalWrite, NodeId,
    OplogEntry, PageLimits, PeerStore, PeerType, ReplicaId, StorageError, VersionVector,
};
use cbddc_election::membership::{Configuration, ControlEntry, ControlFrame};
use cbddc_net::SessionInfo;
use cbddc_sync::SyncOrchestrator;
use cbddc_sync::{PeerBook, PeerReport};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// A batch written by a tool holds at most this many writes.
pub(crate) const MAX_BATCH_WRITES: usize = 10_000;

/// A node's state, as `cbddc status` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeStatus {
    /// The node id.
    pub node_id: NodeId,
    /// The replica this opening of the database writes as.
    pub replica: ReplicaId,
    /// This node's public key (64 hex digits) and its short fingerprint.
    pub node_key: String,
    /// See [`NodeStatus::node_key`].
    pub key_fingerprint: String,
    /// Notices of this node's id running as two live processes.
    pub duplicates: Vec<String>,
    /// Replicas folded into floors, and version vector entries left beside them.
    pub folded_replicas: u64,
    /// See [`NodeStatus::folded_replicas`].
    pub live_version_vector_entries: u64,
    /// Where the node listens.
    pub listen: SocketAddr,
    /// The address the configuration asks for, while it cannot be bound.
    pub wanted_listen: Option<SocketAddr>,
    /// Live documents and oplog entries in the database.
    pub documents: u64,
    /// See [`NodeStatus::documents`].
    pub oplog_entries: u64,
    /// What the database holds, per origin replica.
    pub version_vector: VersionVector,
    /// Known peers and peers seen inbound, by node id.
    pub peers: Vec<PeerReport>,
    /// Who leads (the gateway to the cloud), as the election last said.
    pub leader: Option<NodeId>,
    /// This node leads.
    pub is_leader: bool,
    /// Oplog compaction, and a snapshot being received.
    pub compaction: crate::CompactionReport,
    /// The change feed: what it keeps for consumers, and its named consumers.
    pub feed: crate::FeedReport,
    /// This node's release and the protocol versions it speaks.
    pub release: String,
    /// See [`NodeStatus::release`].
    pub protocols: cbddc_net::ProtocolRange,
    /// The formats this node writes, and those it reads but holds back (and who holds
    /// each back).
    pub features: cbddc_sync::features::FeatureReport,
    /// The indexes this node keeps, built or being built.
    pub indexes: Vec<cbddc_core::IndexStatus>,
}

/// What a pull served: the page, the server's holdings and floors, and a notice for the
/// puller if its node id runs as two processes.
#[derive(Debug)]
pub(crate) struct ServedPull {
    pub(crate) page: EntryPage,
    pub(crate) holder: VersionVector,
    pub(crate) floors: Vec<u8>,
    pub(crate) notice: Option<String>,
}

/// What a push did here.
#[derive(Debug)]
pub(crate) struct AcceptedPush {
    pub(crate) outcome: ApplyOutcome,
    pub(crate) holder: VersionVector,
    pub(crate) floors: Vec<u8>,
}

/// A known peer to add, as a tool asks for it.
#[derive(Debug)]
pub(crate) struct AddPeer {
    pub(crate) node_id: String,
    pub(crate) address: String,
    /// `static`, `cloud`, or empty for static.
    pub(crate) peer_type: String,
    pub(crate) disabled: bool,
}

fn forbidden(reason: impl Into<String>) -> NodeError {
    NodeError::Forbidden {
        reason: reason.into(),
    }
}

fn invalid(reason: impl Into<String>) -> NodeError {
    NodeError::InvalidRequest {
        reason: reason.into(),
    }
}

/// Peer management is for operators' tools, not for other nodes.
fn forbid_nodes(session: &SessionInfo) -> Result<(), NodeError> {
    match &session.peer {
        None => Ok(()),
        Some(node) => Err(forbidden(format!(
            "node {node} may not change this node's peers; use the cbddc CLI"
        ))),
    }
}

/// The peer a tool's request names, checked: only tools manage peers.
fn tool_names(session: &SessionInfo, node_id: String) -> Result<NodeId, NodeError> {
    forbid_nodes(session)?;
    NodeId::new(node_id).map_err(|e| invalid(e.to_string()))
}

/// The node's services for one database (see the module docs).
#[derive(Debug)]
pub(crate) struct NodeService {
    /// The control plane, with a `[cluster]` section: then only members (and cloud
    /// remotes) may pull and push.
    pub(crate) cluster: Option<Arc<ControlPlane>>,
    pub(crate) store: Arc<dyn DocumentStore>,
    pub(crate) peers: Arc<dyn PeerStore>,
    pub(crate) book: Arc<PeerBook>,
    pub(crate) sync: Arc<SyncOrchestrator>,
    /// Changes when the node moves to another port.
    pub(crate) listen: Mutex<SocketAddr>,
    /// The address the configuration asks for, while it cannot be bound.
    pub(crate) wanted_listen: Mutex<Option<SocketAddr>>,
    /// `advertise_address` in force.
    pub(crate) advertise: Mutex<Option<String>>,
    /// Who leads, as the election last said, and the node's other announcements.
    pub(crate) signals: Arc<crate::signals::Signals>,
    /// This node's public key.
    pub(crate) node_key: cbddc_net::PublicKey,
    /// The keys pinned for peers' node ids.
    pub(crate) pins: Arc<cbddc_sync::pins::KeyPins>,
    /// What this node says of its build, and its feature level.
    pub(crate) versions: cbddc_net::Versions,
    pub(crate) features: Arc<cbddc_sync::features::FeatureLevel>,
    /// The indexes this node keeps, and which are built.
    pub(crate) indexes: Arc<crate::indexes::Indexes>,
}

impl NodeService {
    /// Writes a batch of local writes in one transaction, if this node may take writes
    /// (with a control plane: only as a member of the running configuration).
    pub(crate) async fn write_local(
        &self,
        writes: Vec<LocalWrite>,
    ) -> Result<Vec<OplogEntry>, NodeError> {
        let _permit = match &self.cluster {
            Some(cluster) => Some(cluster.admit_write().await?),
            None => None,
        };
        Ok(self.store.write(writes).await?)
    }

    /// A tool's batch: like [`NodeService::write_local`], bounded in size.
    pub(crate) async fn write_batch(
        &self,
        writes: Vec<LocalWrite>,
    ) -> Result<Vec<OplogEntry>, NodeError> {
        if writes.len() > MAX_BATCH_WRITES {
            return Err(invalid(format!(
                "a batch of {} writes is more than the {MAX_BATCH_WRITES} a batch may hold; split it",
                writes.len()
            )));
        }
        self.write_local(writes).await
    }

    /// One write; the entry it became.
    pub(crate) async fn write_one(&self, write: LocalWrite) -> Result<OplogEntry, NodeError> {
        self.write_local(vec![write])
            .await?
            .pop()
            .ok_or_else(|| StorageError::Backend {
                operation: "writing a document",
                message: "the store acknowledged no entry".into(),
            })
            .map_err(NodeError::from)
    }

    /// Up to `limit` documents of `collection` after `after`, and whether more follow.
    pub(crate) async fn list_page(
        &self,
        collection: &str,
        after: Option<String>,
        limit: usize,
    ) -> Result<(Vec<Document>, bool), NodeError> {
        let mut docs = self.store.list(collection, after, limit + 1).await?;
        let more = docs.len() > limit;
        docs.truncate(limit);
        Ok((docs, more))
    }

    /// A page of `query`'s results in `collection` after the cursor `after` (see
    /// [`crate::query`]).
    pub(crate) async fn find(
        &self,
        collection: &str,
        query: &cbddc_query::Query,
        after: Option<&str>,
    ) -> Result<crate::query::Found, NodeError> {
        crate::query::find(self.store.as_ref(), &self.indexes, collection, query, after).await
    }

    /// Serves a node's pull: entries beyond `have` (with floors expanded when both sides
    /// share them) for the collections its session named.
    pub(crate) async fn serve_pull(
        &self,
        session: &SessionInfo,
        have: VersionVector,
        their_floors: &[u8],
        limits: PageLimits,
    ) -> Result<ServedPull, NodeError> {
        self.admit(session)?;
        let floors = self.sync.fold().floors();
        let shared = floors.shared_with(their_floors);
        let have = if shared { floors.expand(&have) } else { have };
        if let Some(peer) = &session.peer {
            self.sync.compactor().acknowledged(peer, &have);
        }
        let page = self
            .store
            .entries_for(have, limits, session.peer_interest.clone())
            .await?;
        let holder = self.store.version_vector().await?;
        let holder = if shared {
            floors.compress(&holder)
        } else {
            holder
        };
        let notice = self.record(session);
        Ok(ServedPull {
            page,
            holder,
            floors: floors.digest().to_vec(),
            notice,
        })
    }

    /// Serves a chunk of this node's snapshot to a node that may pull. The first chunk's
    /// version vector counts as the puller's acknowledgement: compaction keeps what it
    /// will pull next.
    pub(crate) async fn serve_snapshot(
        &self,
        session: &SessionInfo,
        after: Option<(String, String)>,
        limits: PageLimits,
    ) -> Result<cbddc_core::SnapshotChunk, NodeError> {
        let Some(peer) = &session.peer else {
            return Err(forbidden("only nodes take snapshots; tools read with list"));
        };
        self.admit(session)?;
        let chunk = self
            .sync
            .read_ahead()
            .chunk(
                &self.store,
                session.address,
                after,
                limits,
                session.peer_interest.clone(),
            )
            .await?;
        if let Some(vv) = &chunk.version_vector {
            self.sync.compactor().acknowledged(peer, vv);
        }
        self.record(session);
        Ok(chunk)
    }

    /// Applies a node's push, if it may push here: a member, or a departed member handing
    /// over its own writes.
    pub(crate) async fn accept_push(
        &self,
        session: &SessionInfo,
        entries: Vec<OplogEntry>,
        coverage: Coverage,
        their_floors: &[u8],
    ) -> Result<AcceptedPush, NodeError> {
        if session.peer.is_none() {
            return Err(forbidden("only nodes may push oplog entries"));
        }
        let handover = self.admit_push(session)?;
        if let Some(departed) = handover
            && let Some(foreign) = entries.iter().find(|e| &e.node != departed)
        {
            return Err(forbidden(format!(
                "node {departed} left the cluster and may hand over only its own writes, not {}'s",
                foreign.node
            )));
        }
        let outcome = self.store.apply_covered(entries, coverage).await?;
        self.record(session);
        let floors = self.sync.fold().floors();
        let holder = if floors.shared_with(their_floors) {
            floors.compress(&outcome.version_vector)
        } else {
            outcome.version_vector.clone()
        };
        Ok(AcceptedPush {
            outcome,
            holder,
            floors: floors.digest().to_vec(),
        })
    }

    /// Forgets a named feed consumer for a tool; unknown names are refused.
    pub(crate) async fn forget_consumer_for(
        &self,
        session: &SessionInfo,
        name: String,
    ) -> Result<(), NodeError> {
        if let Some(node) = &session.peer {
            return Err(forbidden(format!(
                "node {node} may not forget this node's feed consumers; use the cbddc CLI"
            )));
        }
        if self.store.forget_feed_consumer(name.clone()).await? {
            Ok(())
        } else {
            Err(invalid(format!(
                "no feed consumer is named {name:?}: `cbddc status` lists them"
            )))
        }
    }

    /// A node may sync if the admission says so (with a control plane: the members of the
    /// running configuration), or as a cloud remote; tools always may.
    fn admit(&self, session: &SessionInfo) -> Result<(), NodeError> {
        let Some(peer) = &session.peer else {
            return Ok(());
        };
        if self.book.is_cloud_remote(peer) {
            return Ok(());
        }
        self.admission().may_sync(peer).map_err(forbidden)
    }

    /// Who may sync: the control plane's members, or everyone without one.
    fn admission(&self) -> Arc<dyn cbddc_sync::SyncAdmission> {
        match &self.cluster {
            Some(cluster) => cluster.clone(),
            None => Arc::new(cbddc_sync::OpenAdmission),
        }
    }

    /// Admits a push: from a member as [`NodeService::admit`] does (`Ok(None)`), or from a
    /// member that departed the cluster, handing over its own writes (`Ok(Some(it))`).
    fn admit_push<'s>(&self, session: &'s SessionInfo) -> Result<Option<&'s NodeId>, NodeError> {
        let refused = match self.admit(session) {
            Ok(()) => return Ok(None),
            Err(refused) => refused,
        };
        let (Some(cluster), Some(peer)) = (&self.cluster, &session.peer) else {
            return Err(refused);
        };
        if cluster.accepts_handover_from(peer) {
            return Ok(Some(peer));
        }
        if let Some(after) = cluster.status().ok().and_then(|s| s.retired_after) {
            // The sender skips a retired node in its hand-over: it could keep nothing moving.
            return Err(NodeError::Retired {
                configuration_id: after + 1,
                last_member_of: after,
            });
        }
        Err(refused)
    }

    fn cluster(&self) -> Result<&Arc<ControlPlane>, ControlPlaneError> {
        self.cluster
            .as_ref()
            .ok_or(ControlPlaneError::NotConfigured)
    }

    /// OmniPaxos frames from a member.
    pub(crate) async fn control_frames(
        &self,
        session: &SessionInfo,
        frames: Vec<ControlFrame>,
    ) -> Result<FramesAnswer, NodeError> {
        let cluster = self.cluster()?;
        let from = session
            .peer
            .clone()
            .ok_or_else(|| forbidden("only nodes send control frames"))?;
        Ok(cluster.frames(from, frames).await?)
    }

    /// A member's invitation into `configuration`.
    pub(crate) fn accept_offer(
        &self,
        session: &SessionInfo,
        configuration: Configuration,
        sealed_log: Vec<ControlEntry>,
        departed: Vec<(NodeId, u32)>,
    ) -> Result<(), NodeError> {
        let cluster = self.cluster()?;
        let from = session
            .peer
            .clone()
            .ok_or_else(|| forbidden("only cluster members invite nodes"))?;
        cluster
            .accept_offer(from, configuration, sealed_log, departed, self.sync.clone())
            .map_err(|reason| ControlPlaneError::Refused { reason })?;
        Ok(())
    }

    /// The control plane's state.
    pub(crate) fn cluster_status(&self) -> Result<crate::ClusterStatus, NodeError> {
        Ok(self.cluster()?.status()?)
    }

    /// A tool's reconfiguration: see [`NodeService::reconfigure_cluster`].
    pub(crate) async fn reconfigure_for(
        &self,
        session: &SessionInfo,
        members: Vec<String>,
    ) -> Result<Configuration, NodeError> {
        forbid_nodes(session)?;
        self.reconfigure_cluster(members).await
    }

    /// Adds a known peer for a tool.
    pub(crate) async fn add_peer(
        &self,
        session: &SessionInfo,
        add: AddPeer,
    ) -> Result<(), NodeError> {
        forbid_nodes(session)?;
        let node_id = NodeId::new(add.node_id).map_err(|e| invalid(e.to_string()))?;
        if &node_id == self.store.node_id() {
            return Err(invalid(format!("{node_id} is this node itself")));
        }
        let peer_type = match add.peer_type.as_str() {
            "" => PeerType::StaticRemote,
            text => PeerType::parse(text)
                .filter(|t| *t != PeerType::LanDiscovered)
                .ok_or_else(|| invalid(format!("peer type {text:?} is not static or cloud")))?,
        };
        let mut peer =
            KnownPeer::new(node_id, add.address, peer_type).map_err(|e| invalid(e.to_string()))?;
        peer.enabled = !add.disabled;
        tracing::info!(peer = %peer.node_id, address = %peer.address, enabled = peer.enabled, "known peer added");
        self.peers.save_peer(peer).await?;
        Ok(self.follow_peer_store().await?)
    }

    /// Forgets the key pinned for a node id, for a tool.
    pub(crate) async fn repin_peer(
        &self,
        session: &SessionInfo,
        node_id: String,
    ) -> Result<(), NodeError> {
        let node_id = tool_names(session, node_id)?;
        if !self.pins.repin(&node_id).await? {
            return Err(invalid(format!(
                "no key is pinned for {node_id}: it will be pinned at its first contact"
            )));
        }
        tracing::warn!(peer = %node_id, "pinned key forgotten: the next session of this node id pins the key it presents");
        Ok(())
    }

    /// Removes a known peer, for a tool.
    pub(crate) async fn remove_peer_for(
        &self,
        session: &SessionInfo,
        node_id: String,
    ) -> Result<(), NodeError> {
        let node_id = tool_names(session, node_id)?;
        if !self.remove_peer(&node_id).await? {
            return Err(invalid(format!("{node_id} is not a known peer")));
        }
        Ok(())
    }

    /// Forgets a known peer: stops syncing with it, and it holds no oplog entries back.
    /// `Ok(false)` if it was not known.
    pub(crate) async fn remove_peer(&self, node_id: &NodeId) -> Result<bool, NodeError> {
        let removed = self.peers.remove_peer(node_id.clone()).await?;
        if removed {
            tracing::info!(peer = %node_id, "known peer removed");
        }
        self.follow_peer_store().await?;
        // After its sync task stopped, so no exchange in flight acknowledges it again.
        self.sync.compactor().forget(node_id);
        Ok(removed)
    }

    /// Replaces the running configuration with the named members; returns once the seal
    /// is decided.
    pub(crate) async fn reconfigure_cluster(
        &self,
        members: Vec<String>,
    ) -> Result<Configuration, NodeError> {
        let cluster = self
            .cluster
            .as_ref()
            .ok_or(ControlPlaneError::NotConfigured)?;
        let members = self.resolve_members(cluster, members).await?;
        // The next configuration carries every key known here, so each member pins them.
        let mut keys = std::collections::BTreeMap::new();
        for (node, _) in &members {
            let key = if node == self.store.node_id() {
                Some(self.node_key)
            } else {
                self.pins.get(node).await
            };
            if let Some(key) = key {
                keys.insert(node.clone(), key.to_hex());
            }
        }
        Ok(cluster.reconfigure(members, keys).await?)
    }

    /// The addresses of the named members: from the running configuration, else from the
    /// known peers.
    async fn resolve_members(
        &self,
        cluster: &ControlPlane,
        names: Vec<String>,
    ) -> Result<Vec<(NodeId, String)>, NodeError> {
        let invalid = |reason: String| ControlPlaneError::Refused { reason };
        let running = cluster.configuration();
        let known = self.peers.list_peers().await?;
        let mut members = Vec::new();
        for name in names {
            let node = NodeId::new(name.as_str()).map_err(|e| invalid(e.to_string()))?;
            let own = (&node == self.store.node_id()).then(|| {
                let peers: Vec<String> = known.iter().map(|p| p.address.clone()).collect();
                let advertise = self
                    .advertise
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                cbddc_control::advertised(advertise.as_deref(), self.listen(), &peers)
            });
            // Its own address, then a known peer's (which may be newer), then the one in
            // the running configuration.
            let address = own
                .or_else(|| {
                    known
                        .iter()
                        .find(|p| p.node_id == node)
                        .map(|p| p.address.clone())
                })
                .or_else(|| {
                    running
                        .as_ref()
                        .and_then(|c| c.member(&node).map(|m| m.address.clone()))
                })
                .ok_or_else(|| {
                    invalid(format!(
                        "{node} has no known address: add it first with `cbddc peers add {node} <address>`"
                    ))
                })?;
            members.push((node, address));
        }
        Ok(members)
    }

    /// Points the sync tasks (and the peer directory) at the peers the store now lists:
    /// the one way every change of known peers takes effect.
    pub(crate) async fn follow_peer_store(&self) -> Result<(), StorageError> {
        let peers = self.peers.list_peers().await?;
        self.sync.set_known(peers);
        Ok(())
    }

    pub(crate) fn listen(&self) -> SocketAddr {
        *self.listen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records an exchange with a node's session; returns the notice for it if its node
    /// id runs as two live processes.
    fn record(&self, session: &SessionInfo) -> Option<String> {
        let peer = session.peer.as_ref()?;
        let address = session.address.to_string();
        self.book
            .exchanged_inbound(peer, session.address, Some(session.peer_eligible));
        let replica = session.peer_replica.as_ref()?;
        self.sync.fold().live(peer, replica);
        self.sync.duplicates().observe(peer, replica, &address)
    }

    /// Known peers and peers seen inbound, with their pinned keys and how far behind
    /// they are.
    pub(crate) async fn peer_statuses(&self) -> Result<Vec<PeerReport>, StorageError> {
        let known = self.peers.list_peers().await?;
        let ours = self.store.version_vector().await?;
        let fold = self.sync.fold();
        let mut statuses = Vec::new();
        let builds = self.features.peer_builds();
        for mut report in self.book.report(&known) {
            report.build = builds.get(&report.node_id).cloned();
            report.key_fingerprint = self
                .pins
                .get(&report.node_id)
                .await
                .map(|k| k.fingerprint());
            report.lag_entries = fold
                .holder(&report.node_id)
                .map(|theirs| cbddc_observe::entries_behind(&ours, &theirs));
            statuses.push(report);
        }
        Ok(statuses)
    }

    pub(crate) async fn status(&self) -> Result<NodeStatus, StorageError> {
        let stats = self.store.stats().await?;
        let vv: VersionVector = self.store.version_vector().await?;
        let folded = self.sync.fold().floors();
        let leadership = self.signals.leadership();
        let wanted_listen = *self.wanted_listen.lock().unwrap_or_else(|p| p.into_inner());
        let mut compaction = self.sync.compactor().report();
        compaction.collectable = stats.collectable;
        compaction.collected = stats.collected;
        compaction.field_states = stats.field_states;
        compaction.snapshot = self
            .store
            .snapshot_progress()
            .await?
            .map(|p| (p.source, p.staged));
        let feed = crate::FeedReport::read(
            self.store.as_ref(),
            self.sync.compactor().feed_retention_ms(),
        )
        .await?;
        Ok(NodeStatus {
            node_id: self.store.node_id().clone(),
            replica: self.store.replica().clone(),
            node_key: self.node_key.to_hex(),
            key_fingerprint: self.node_key.fingerprint(),
            duplicates: self.sync.duplicates().report(),
            folded_replicas: folded.floors().len() as u64,
            live_version_vector_entries: folded.compress(&vv).len() as u64,
            listen: self.listen(),
            wanted_listen,
            documents: stats.documents,
            oplog_entries: stats.oplog_entries,
            peers: self.peer_statuses().await?,
            version_vector: vv,
            leader: leadership.leader,
            is_leader: leadership.is_leader,
            compaction,
            feed,
            release: self.versions.release.clone(),
            protocols: self.versions.protocols,
            features: self.features.report(
                &self
                    .features
                    .deciding(self.peers.as_ref(), self.book.as_ref())
                    .await?,
            ),
            indexes: self.indexes.status().await?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cbddc_config::PeerNodeConfiguration;

    fn session(peer: Option<&str>) -> SessionInfo {
        SessionInfo {
            peer: peer.map(|p| NodeId::new(p).unwrap()),
            peer_key: None,
            peer_replica: None,
            peer_eligible: false,
            peer_interest: cbddc_core::Interest::all(),
            peer_features: None,
            address: "127.0.0.1:9".parse().unwrap(),
            stopping: Default::default(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_service_refuses_with_typed_errors_and_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = PeerNodeConfiguration::new(NodeId::new("service-a").unwrap(), dir.path());
        config.tcp_port = 0;
        let node = crate::Node::start(config).await.unwrap();
        let service = node.service_for_tests();
        let add = || AddPeer {
            node_id: "b".into(),
            address: "127.0.0.1:1".into(),
            peer_type: String::new(),
            disabled: false,
        };

        // Nodes may not manage another node's peers; tools may.
        let refused = service.add_peer(&session(Some("b")), add()).await;
        assert!(
            matches!(&refused, Err(NodeError::Forbidden { reason }) if reason.contains("use the cbddc CLI")),
            "{refused:?}"
        );
        assert!(service.peers.list_peers().await.unwrap().is_empty());
        let bad_type = AddPeer {
            peer_type: "lan".into(),
            ..add()
        };
        assert!(matches!(
            service.add_peer(&session(None), bad_type).await,
            Err(NodeError::InvalidRequest { .. })
        ));
        service.add_peer(&session(None), add()).await.unwrap();
        assert_eq!(service.peers.list_peers().await.unwrap().len(), 1);

        // Only nodes push; an oversized batch is refused whole.
        let push = service
            .accept_push(&session(None), Vec::new(), Default::default(), &[])
            .await;
        assert!(matches!(push, Err(NodeError::Forbidden { .. })), "{push:?}");
        let writes = (0..=MAX_BATCH_WRITES)
            .map(|i| LocalWrite::put("docs", format!("k{i}"), "1"))
            .collect();
        let batch = service.write_batch(writes).await;
        assert!(
            matches!(&batch, Err(NodeError::InvalidRequest { reason }) if reason.contains("split it")),
            "{batch:?}"
        );
        assert_eq!(service.status().await.unwrap().documents, 0);

        // Without a [cluster] section, the control plane's calls say how to get one.
        let status = service.cluster_status();
        assert!(matches!(
            status,
            Err(NodeError::ControlPlane(ControlPlaneError::NotConfigured))
        ));
        node.shutdown().await;
    }
}
