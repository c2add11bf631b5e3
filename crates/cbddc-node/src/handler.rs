//! Answers the requests of peers and tools on behalf of the node.

use crate::NodeError;
use crate::cluster::{ControlCall, ControlPlane, ControlPlaneError, ControlReply};
use crate::peers::PeerBook;
use crate::sync::SyncOrchestrator;
use async_trait::async_trait;
use cbddc_core::{
    DocumentStore, KnownPeer, LocalWrite, NodeId, OplogEntry, PageLimits, PeerStore, PeerType,
    StorageError, VersionVector,
};
use cbddc_election::membership::Configuration;
use cbddc_net::convert::{
    coverage_from_wire, coverage_to_wire, document_to_wire, entries_from_wire, entry_to_wire,
    hlc_to_wire, vv_from_wire, vv_to_wire,
};
use cbddc_net::proto::{self, ErrorCode, request::Body as Req, response::Body as Res};
use cbddc_net::{RequestHandler, SessionInfo, error_body};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// Pages served to a pull never exceed these, whatever the puller asks for.
const MAX_PULL_ENTRIES: usize = 10_000;
const MAX_PULL_BYTES: usize = 8 * 1024 * 1024;
const MAX_LIST_LIMIT: u32 = 1_000;
const DEFAULT_LIST_LIMIT: u32 = 100;
/// A page of the change feed holds at most this many changes.
const MAX_CHANGES_LIMIT: u32 = 1_000;
/// A change-feed long poll waits at most this long, well inside the request timeout.
const MAX_CHANGES_WAIT: std::time::Duration = std::time::Duration::from_secs(20);
/// A batch written by a tool holds at most this many writes.
const MAX_BATCH_WRITES: usize = 10_000;

/// The node side of every session.
#[derive(Debug)]
pub(crate) struct NodeHandler {
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
    pub(crate) pins: Arc<crate::pins::KeyPins>,
}

fn storage_error(err: StorageError) -> Res {
    let code = match &err {
        StorageError::Invalid(_)
        | StorageError::Clock(_)
        | StorageError::OwnReplica { .. }
        | StorageError::NotReplicated { .. } => ErrorCode::InvalidRequest,
        StorageError::Closed => ErrorCode::Unavailable,
        StorageError::Backend { .. } => ErrorCode::Storage,
    };
    error_body(code, &err.to_string())
}

/// The one place a node's errors become wire error codes.
fn write_error(err: NodeError) -> Res {
    match err {
        NodeError::Storage(e) => storage_error(e),
        NodeError::Retired { .. } | NodeError::NotAdmitted => {
            error_body(ErrorCode::NotAMember, &err.to_string())
        }
        NodeError::ControlPlane(e) => control_error(e),
        other => error_body(ErrorCode::Unspecified, &other.to_string()),
    }
}

fn control_error(err: ControlPlaneError) -> Res {
    let code = match &err {
        ControlPlaneError::NotConfigured => ErrorCode::Forbidden,
        ControlPlaneError::Refused { .. } => ErrorCode::InvalidRequest,
        ControlPlaneError::NotDecided { .. } => ErrorCode::Timeout,
        ControlPlaneError::Stopped { .. }
        | ControlPlaneError::Restarted
        | ControlPlaneError::Start { .. } => ErrorCode::Unavailable,
    };
    error_body(code, &err.to_string())
}

/// Peer management is for operators' tools, not for other nodes.
fn forbid_nodes(session: &SessionInfo) -> Result<(), Res> {
    match &session.peer {
        None => Ok(()),
        Some(node) => Err(error_body(
            ErrorCode::Forbidden,
            &format!("node {node} may not change this node's peers; use the cbddc CLI"),
        )),
    }
}

fn clamp(requested: u32, max: usize) -> usize {
    match requested {
        0 => max,
        n => (n as usize).min(max),
    }
}

impl NodeHandler {
    async fn answer(&self, session: &SessionInfo, request: Req) -> Result<Res, Res> {
        Ok(match request {
            Req::Pull(pull) => {
                self.admit(session)?;
                let have = vv_from_wire(pull.have)
                    .map_err(|e| error_body(ErrorCode::InvalidRequest, &e.to_string()))?;
                let floors = self.sync.fold().floors();
                let shared = floors.shared_with(&pull.floors);
                let have = if shared { floors.expand(&have) } else { have };
                let limits = PageLimits {
                    max_entries: clamp(pull.max_entries, MAX_PULL_ENTRIES),
                    max_bytes: clamp(pull.max_bytes, MAX_PULL_BYTES),
                };
                let page = self
                    .store
                    .entries_for(have, limits, session.peer_interest.clone())
                    .await
                    .map_err(storage_error)?;
                let holder = self.store.version_vector().await.map_err(storage_error)?;
                let holder = if shared {
                    floors.compress(&holder)
                } else {
                    holder
                };
                let notice = self.record(session);
                Res::Pull(Box::new(proto::PullResponse {
                    entries: page.entries.iter().map(entry_to_wire).collect(),
                    more: page.more,
                    holder: Some(vv_to_wire(&holder)),
                    notice: notice.unwrap_or_default(),
                    floors: floors.digest().to_vec(),
                    coverage: coverage_to_wire(&page.coverage),
                }))
            }
            Req::Push(push) => {
                if session.peer.is_none() {
                    return Err(error_body(
                        ErrorCode::Forbidden,
                        "only nodes may push oplog entries",
                    ));
                }
                let handover = self.admit_push(session)?;
                let entries = entries_from_wire(push.entries)
                    .map_err(|e| error_body(ErrorCode::InvalidRequest, &e.to_string()))?;
                if let Some(departed) = handover
                    && let Some(foreign) = entries.iter().find(|e| &e.node != departed)
                {
                    return Err(error_body(
                        ErrorCode::Forbidden,
                        &format!(
                            "node {departed} left the cluster and may hand over only its own writes, not {}'s",
                            foreign.node
                        ),
                    ));
                }
                let coverage = coverage_from_wire(push.coverage)
                    .map_err(|e| error_body(ErrorCode::InvalidRequest, &e.to_string()))?;
                let outcome = self
                    .store
                    .apply_covered(entries, coverage)
                    .await
                    .map_err(storage_error)?;
                self.record(session);
                let floors = self.sync.fold().floors();
                let holder = if floors.shared_with(&push.floors) {
                    floors.compress(&outcome.version_vector)
                } else {
                    outcome.version_vector
                };
                Res::Push(proto::PushResponse {
                    applied: outcome.applied as u64,
                    duplicates: outcome.duplicates as u64,
                    out_of_order: outcome.out_of_order as u64,
                    holder: Some(vv_to_wire(&holder)),
                    floors: floors.digest().to_vec(),
                })
            }
            Req::Put(put) => {
                self.write(LocalWrite::put(put.collection, put.key, put.value))
                    .await?
            }
            Req::Delete(delete) => {
                self.write(LocalWrite::delete(delete.collection, delete.key))
                    .await?
            }
            Req::Get(get) => {
                let doc = self
                    .store
                    .get(&get.collection, &get.key)
                    .await
                    .map_err(storage_error)?;
                Res::Get(proto::GetResponse {
                    document: doc.as_ref().map(document_to_wire),
                })
            }
            Req::List(list) => {
                let limit = if list.limit == 0 {
                    DEFAULT_LIST_LIMIT
                } else {
                    list.limit.min(MAX_LIST_LIMIT)
                } as usize;
                let after = (!list.after_key.is_empty()).then_some(list.after_key);
                let mut docs = self
                    .store
                    .list(&list.collection, after, limit + 1)
                    .await
                    .map_err(storage_error)?;
                let more = docs.len() > limit;
                docs.truncate(limit);
                Res::List(proto::ListResponse {
                    documents: docs.iter().map(document_to_wire).collect(),
                    more,
                })
            }
            Req::Changes(ask) => self.changes(ask).await?,
            Req::WriteBatch(batch) => {
                if batch.writes.len() > MAX_BATCH_WRITES {
                    return Err(error_body(
                        ErrorCode::InvalidRequest,
                        &format!(
                            "a batch of {} writes is more than the {MAX_BATCH_WRITES} a batch may hold; split it",
                            batch.writes.len()
                        ),
                    ));
                }
                let writes = batch
                    .writes
                    .into_iter()
                    .map(|w| LocalWrite {
                        collection: w.collection,
                        key: w.key,
                        value: w.value,
                    })
                    .collect();
                let entries = self.write_local(writes).await.map_err(write_error)?;
                Res::WrittenBatch(proto::WriteBatchResponse {
                    written: entries.len() as u64,
                    last_seq: entries.last().map(|e| e.seq).unwrap_or_default(),
                })
            }
            Req::Control(control) => self.control(session, &control.payload).await?,
            Req::Status(_) => Res::Status(Box::new(self.status().await.map_err(storage_error)?)),
            Req::ListPeers(_) => self.peers_answer().await?,
            Req::AddPeer(add) => {
                forbid_nodes(session)?;
                let invalid = |message: String| error_body(ErrorCode::InvalidRequest, &message);
                let node_id = NodeId::new(add.node_id).map_err(|e| invalid(e.to_string()))?;
                if &node_id == self.store.node_id() {
                    return Err(invalid(format!("{node_id} is this node itself")));
                }
                let peer_type = match add.peer_type.as_str() {
                    "" => PeerType::StaticRemote,
                    text => PeerType::parse(text)
                        .filter(|t| *t != PeerType::LanDiscovered)
                        .ok_or_else(|| {
                            invalid(format!("peer type {text:?} is not static or cloud"))
                        })?,
                };
                let mut peer = KnownPeer::new(node_id, add.address, peer_type)
                    .map_err(|e| invalid(e.to_string()))?;
                peer.enabled = !add.disabled;
                tracing::info!(peer = %peer.node_id, address = %peer.address, enabled = peer.enabled, "known peer added");
                self.peers.save_peer(peer).await.map_err(storage_error)?;
                self.follow_peer_store().await.map_err(storage_error)?;
                self.peers_answer().await?
            }
            Req::RepinPeer(repin) => {
                forbid_nodes(session)?;
                let node_id = NodeId::new(repin.node_id)
                    .map_err(|e| error_body(ErrorCode::InvalidRequest, &e.to_string()))?;
                if !self.pins.repin(&node_id).await.map_err(storage_error)? {
                    return Err(error_body(
                        ErrorCode::InvalidRequest,
                        &format!(
                            "no key is pinned for {node_id}: it will be pinned at its first contact"
                        ),
                    ));
                }
                tracing::warn!(peer = %node_id, "pinned key forgotten: the next session of this node id pins the key it presents");
                self.peers_answer().await?
            }
            Req::RemovePeer(remove) => {
                forbid_nodes(session)?;
                let node_id = NodeId::new(remove.node_id)
                    .map_err(|e| error_body(ErrorCode::InvalidRequest, &e.to_string()))?;
                if !self
                    .peers
                    .remove_peer(node_id.clone())
                    .await
                    .map_err(storage_error)?
                {
                    return Err(error_body(
                        ErrorCode::InvalidRequest,
                        &format!("{node_id} is not a known peer"),
                    ));
                }
                tracing::info!(peer = %node_id, "known peer removed");
                self.follow_peer_store().await.map_err(storage_error)?;
                self.peers_answer().await?
            }
        })
    }

    /// With a control plane, a node may sync only if it is a member of the running
    /// configuration or a cloud remote; tools always may.
    fn admit(&self, session: &SessionInfo) -> Result<(), Res> {
        let (Some(cluster), Some(peer)) = (&self.cluster, &session.peer) else {
            return Ok(());
        };
        if cluster.is_member(peer) || self.book.is_cloud_remote(peer) {
            return Ok(());
        }
        let configuration = cluster
            .configuration()
            .map(|c| format!("configuration {}", c.configuration_id))
            .unwrap_or_else(|| "any configuration here".into());
        Err(error_body(
            ErrorCode::Forbidden,
            &format!("node {peer} is not a member of {configuration}; only members sync"),
        ))
    }

    /// Admits a push: from a member as [`NodeHandler::admit`] does (`Ok(None)`), or from a
    /// member that departed the cluster, handing over its own writes (`Ok(Some(it))`).
    fn admit_push<'s>(&self, session: &'s SessionInfo) -> Result<Option<&'s NodeId>, Res> {
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
            return Err(error_body(
                ErrorCode::NotAMember,
                &format!("this node retired from the cluster after configuration {after}"),
            ));
        }
        Err(refused)
    }

    async fn control(&self, session: &SessionInfo, payload: &[u8]) -> Result<Res, Res> {
        let invalid = |message: String| error_body(ErrorCode::InvalidRequest, &message);
        let call: ControlCall = serde_json::from_slice(payload)
            .map_err(|e| invalid(format!("an unreadable control message: {e}")))?;
        let Some(cluster) = &self.cluster else {
            return Err(control_error(ControlPlaneError::NotConfigured));
        };
        let reply = match call {
            ControlCall::Frames { frames } => {
                let from = session.peer.clone().ok_or_else(|| {
                    error_body(ErrorCode::Forbidden, "only nodes send control frames")
                })?;
                cluster.frames(from, frames).await.map_err(control_error)?
            }
            ControlCall::Offer {
                configuration,
                sealed_log,
                departed,
            } => {
                let from = session.peer.clone().ok_or_else(|| {
                    error_body(ErrorCode::Forbidden, "only cluster members invite nodes")
                })?;
                cluster
                    .accept_offer(
                        from,
                        configuration,
                        sealed_log,
                        departed,
                        self.sync.context(),
                    )
                    .map_err(invalid)?;
                ControlReply::Accepted
            }
            ControlCall::Status => ControlReply::Status(cluster.status().map_err(control_error)?),
            ControlCall::Reconfigure { members } => {
                forbid_nodes(session)?;
                let configuration = self
                    .reconfigure_cluster(members)
                    .await
                    .map_err(write_error)?;
                ControlReply::Reconfigured { configuration }
            }
        };
        let payload = serde_json::to_vec(&reply)
            .map_err(|e| error_body(ErrorCode::Unspecified, &e.to_string()))?;
        Ok(Res::Control(proto::ControlResponse { payload }))
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
                crate::cluster::advertised(advertise.as_deref(), self.listen(), &peers)
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

    async fn peers_answer(&self) -> Result<Res, Res> {
        Ok(Res::Peers(proto::PeersResponse {
            peers: self.peer_statuses().await.map_err(storage_error)?,
        }))
    }

    /// Points the sync tasks at the peers the store now lists.
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

    /// Writes a batch of local writes in one transaction, if this node may take writes
    /// (with a control plane: only as a member of the running configuration).
    pub(crate) async fn write_local(
        &self,
        writes: Vec<LocalWrite>,
    ) -> Result<Vec<OplogEntry>, NodeError> {
        let _permit = match &self.cluster {
            Some(cluster) => Some(cluster.gate.enter().await?),
            None => None,
        };
        Ok(self.store.write(writes).await?)
    }

    async fn changes(&self, ask: proto::ChangesRequest) -> Result<Res, Res> {
        let filter = crate::ChangeFilter {
            collection: (!ask.collection.is_empty()).then_some(ask.collection),
            start: if ask.from_end {
                crate::FeedStart::Now
            } else {
                crate::FeedStart::After(ask.after)
            },
        };
        let limit = match ask.limit {
            0 => MAX_CHANGES_LIMIT,
            n => n.min(MAX_CHANGES_LIMIT),
        } as usize;
        let wait = std::time::Duration::from_millis(u64::from(ask.wait_ms)).min(MAX_CHANGES_WAIT);
        let mut feed = crate::ChangeFeed::open(self.store.clone(), filter)
            .await
            .map_err(write_error)?;
        let changes = feed
            .next_page(limit, wait)
            .await
            .map_err(write_error)?
            .ok_or_else(|| error_body(ErrorCode::Unavailable, "the node closed its database"))?;
        Ok(Res::Changes(proto::ChangesResponse {
            changes: changes
                .iter()
                .map(|c| proto::Change {
                    position: c.position,
                    entry: Some(entry_to_wire(&c.entry)),
                })
                .collect(),
            resume_after: feed.position(),
        }))
    }

    async fn write(&self, write: LocalWrite) -> Result<Res, Res> {
        let mut entries = self.write_local(vec![write]).await.map_err(write_error)?;
        let entry = entries
            .pop()
            .ok_or_else(|| error_body(ErrorCode::Storage, "the store acknowledged no entry"))?;
        Ok(Res::Written(proto::WriteResponse {
            seq: entry.seq,
            hlc: Some(hlc_to_wire(&entry.hlc)),
        }))
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

    pub(crate) async fn peer_statuses(&self) -> Result<Vec<proto::PeerStatus>, StorageError> {
        let known = self.peers.list_peers().await?;
        let ours = self.store.version_vector().await?;
        let fold = self.sync.fold();
        let mut statuses = Vec::new();
        for p in self.book.report(&known) {
            let pinned = self.pins.get(&p.node_id).await;
            let lag_entries = fold
                .holder(&p.node_id)
                .map(|theirs| crate::observe::view::entries_behind(&ours, &theirs));
            statuses.push(proto::PeerStatus {
                node_id: p.node_id.to_string(),
                address: p.address.unwrap_or_default(),
                peer_type: p
                    .peer_type
                    .map(|t| t.as_str())
                    .unwrap_or("inbound")
                    .to_string(),
                enabled: p.enabled,
                last_exchange_ms: p.last_exchange_ms.unwrap_or(0),
                last_error: p.last_error.unwrap_or_default(),
                key_fingerprint: pinned.map(|k| k.fingerprint()).unwrap_or_default(),
                lag_entries,
            });
        }
        Ok(statuses)
    }

    pub(crate) async fn status(&self) -> Result<proto::StatusResponse, StorageError> {
        let stats = self.store.stats().await?;
        let vv: VersionVector = self.store.version_vector().await?;
        let folded = self.sync.fold().floors();
        let peers = self.peer_statuses().await?;
        let listen = self.listen();
        let leadership = self.signals.leadership();
        Ok(proto::StatusResponse {
            node_id: self.store.node_id().to_string(),
            replica: self.store.replica().to_string(),
            node_key: self.node_key.to_hex(),
            key_fingerprint: self.node_key.fingerprint(),
            duplicates: self.sync.duplicates().report(),
            folded_replicas: folded.floors().len() as u64,
            live_version_vector_entries: folded.compress(&vv).len() as u64,
            tcp_port: u32::from(listen.port()),
            bind_address: listen.ip().to_string(),
            documents: stats.documents,
            oplog_entries: stats.oplog_entries,
            version_vector: Some(vv_to_wire(&vv)),
            peers,
            protocol_version: cbddc_net::PROTOCOL_VERSION,
            leader: leadership.leader.map(|l| l.to_string()).unwrap_or_default(),
            is_leader: leadership.is_leader,
            wanted_listen: self
                .wanted_listen
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .map(|a| a.to_string())
                .unwrap_or_default(),
        })
    }
}

#[async_trait]
impl RequestHandler for NodeHandler {
    async fn handle(&self, session: &SessionInfo, request: Req) -> Res {
        match self.answer(session, request).await {
            Ok(answer) | Err(answer) => answer,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(res: Res) -> ErrorCode {
        match res {
            Res::Error(e) => ErrorCode::try_from(e.code).unwrap_or(ErrorCode::Unspecified),
            other => panic!("not an error: {other:?}"),
        }
    }

    #[test]
    fn each_control_plane_failure_has_its_wire_code_and_says_what_to_do() {
        let cases = [
            (
                ControlPlaneError::NotConfigured,
                ErrorCode::Forbidden,
                "[cluster] section",
            ),
            (
                ControlPlaneError::Refused {
                    reason: "x is listed twice".into(),
                },
                ErrorCode::InvalidRequest,
                "listed twice",
            ),
            (
                ControlPlaneError::NotDecided {
                    after: std::time::Duration::from_secs(30),
                },
                ErrorCode::Timeout,
                "majority of the members",
            ),
            (
                ControlPlaneError::Restarted,
                ErrorCode::Unavailable,
                "try again",
            ),
        ];
        for (error, expected, words) in cases {
            let text = error.to_string();
            assert!(text.contains(words), "{text}");
            assert_eq!(code(write_error(NodeError::ControlPlane(error))), expected);
        }
        assert_eq!(
            code(write_error(NodeError::NotAdmitted)),
            ErrorCode::NotAMember
        );
    }
}
