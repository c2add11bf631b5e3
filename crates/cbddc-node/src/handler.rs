//! The RPC adapter: decodes the requests of peers and tools, calls the node's service
//! layer (`service`), and encodes its answers. Errors become wire codes in one place,
//! [`error_response`].

use crate::NodeError;
use crate::service::{AddPeer, NodeService, NodeStatus};
use async_trait::async_trait;
use cbddc_control::{self as cluster, ControlPlaneError};
use cbddc_core::{LocalWrite, PageLimits, StorageError};
use cbddc_net::convert::{
    coverage_from_wire, coverage_to_wire, document_to_wire, entries_from_wire, entry_to_wire,
    hlc_to_wire, vv_from_wire, vv_to_wire,
};
use cbddc_net::proto::{
    self, ErrorCode, control_request::Call, control_response::Reply, request::Body as Req,
    response::Body as Res,
};
use cbddc_net::{RequestHandler, SessionInfo};
use cbddc_sync::PeerReport;
use std::sync::Arc;

/// Pages served to a pull never exceed these, whatever the puller asks for.
const MAX_PULL_ENTRIES: usize = 10_000;
const MAX_PULL_BYTES: usize = 8 * 1024 * 1024;
/// A snapshot chunk holds at most this many documents.
const MAX_SNAPSHOT_DOCUMENTS: usize = 16_384;
const MAX_LIST_LIMIT: u32 = 1_000;
const DEFAULT_LIST_LIMIT: u32 = 100;
/// A page of the change feed holds at most this many changes.
const MAX_CHANGES_LIMIT: u32 = 1_000;
/// A change-feed long poll waits at most this long, well inside the request timeout.
const MAX_CHANGES_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// The node side of every session.
#[derive(Debug)]
pub(crate) struct NodeHandler {
    service: Arc<NodeService>,
}

fn storage_code(err: &StorageError) -> ErrorCode {
    match err {
        StorageError::Invalid(_)
        | StorageError::Clock(_)
        | StorageError::OwnReplica { .. }
        | StorageError::NotReplicated { .. } => ErrorCode::InvalidRequest,
        StorageError::Closed | StorageError::IndexUnavailable { .. } => ErrorCode::Unavailable,
        StorageError::Backend { .. } => ErrorCode::Storage,
        StorageError::FeedCompacted { .. } => ErrorCode::FeedCompacted,
    }
}

fn control_code(err: &ControlPlaneError) -> ErrorCode {
    match err {
        ControlPlaneError::NotConfigured => ErrorCode::Forbidden,
        ControlPlaneError::Refused { .. } | ControlPlaneError::Malformed { .. } => {
            ErrorCode::InvalidRequest
        }
        ControlPlaneError::NotDecided { .. } => ErrorCode::Timeout,
        ControlPlaneError::Stopped { .. }
        | ControlPlaneError::Restarted
        | ControlPlaneError::Start { .. } => ErrorCode::Unavailable,
    }
}

/// The one place a node's errors become wire error codes: each variant says whether
/// the request was wrong (`INVALID_REQUEST`, `FORBIDDEN`, `NOT_A_MEMBER`), the node or
/// a peer could not serve it now (`UNAVAILABLE`, `TIMEOUT`: try again), its storage
/// failed (`STORAGE`), or the feed lost what was asked (`FEED_COMPACTED`). No wildcard:
/// a new variant must choose.
fn error_code(err: &NodeError) -> ErrorCode {
    match err {
        NodeError::Storage(e) => storage_code(e),
        NodeError::Store(_) => ErrorCode::Storage,
        NodeError::Config(_) | NodeError::InvalidRequest { .. } => ErrorCode::InvalidRequest,
        NodeError::Retired { .. } | NodeError::NotAdmitted => ErrorCode::NotAMember,
        NodeError::ControlPlane(e) => control_code(e),
        NodeError::Forbidden { .. } => ErrorCode::Forbidden,
        NodeError::FeedCompacted { .. } => ErrorCode::FeedCompacted,
        // The node could not listen where it was asked to: a moment, not the request.
        NodeError::Bind { .. } => ErrorCode::Unavailable,
        NodeError::Net(e) => net_code(e),
    }
}

/// A failure talking to another node while serving a request: that node's own answer
/// where it gave one, otherwise "unavailable, try again".
fn net_code(err: &cbddc_net::NetError) -> ErrorCode {
    match err {
        cbddc_net::NetError::Remote { code, .. } => *code,
        cbddc_net::NetError::FeedCompacted { .. } => ErrorCode::FeedCompacted,
        cbddc_net::NetError::Timeout { .. } => ErrorCode::Timeout,
        _ => ErrorCode::Unavailable,
    }
}

fn error_response(err: NodeError) -> Res {
    let feed_oldest = match &err {
        NodeError::FeedCompacted { oldest, .. }
        | NodeError::Storage(StorageError::FeedCompacted { oldest, .. })
        | NodeError::Net(cbddc_net::NetError::FeedCompacted { oldest, .. }) => *oldest,
        _ => 0,
    };
    Res::Error(proto::ErrorResponse {
        code: error_code(&err) as i32,
        message: err.to_string(),
        feed_oldest,
    })
}

fn unreadable(what: &str, e: impl std::fmt::Display) -> NodeError {
    NodeError::InvalidRequest {
        reason: format!("{what}: {e}"),
    }
}

fn clamp(requested: u32, max: usize) -> usize {
    match requested {
        0 => max,
        n => (n as usize).min(max),
    }
}

pub(crate) fn peer_to_wire(p: PeerReport) -> proto::PeerStatus {
    proto::PeerStatus {
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
        key_fingerprint: p.key_fingerprint.unwrap_or_default(),
        lag_entries: p.lag_entries,
        protocol_version: p.build.as_ref().map_or(0, |b| b.protocol),
        release: p
            .build
            .as_ref()
            .map(|b| b.release.clone())
            .unwrap_or_default(),
        features: p
            .build
            .map(|b| b.features.into_iter().collect())
            .unwrap_or_default(),
    }
}

fn features_to_wire(report: cbddc_sync::features::FeatureReport) -> proto::FeatureStatus {
    proto::FeatureStatus {
        in_force: report.in_force.into_iter().collect(),
        pending: report
            .pending
            .into_iter()
            .map(|p| proto::PendingFeature {
                feature: p.feature,
                held_back_by: p
                    .held_back_by
                    .into_iter()
                    .map(|(node, release)| proto::FeatureHolder {
                        node_id: node.to_string(),
                        release: release.unwrap_or_default(),
                    })
                    .collect(),
            })
            .collect(),
    }
}

fn feed_to_wire(feed: &crate::FeedReport) -> proto::FeedStatus {
    proto::FeedStatus {
        retention_ms: feed.retention_ms,
        feed_entries: feed.feed_entries,
        oldest_position: feed.oldest_position,
        last_position: feed.last_position,
        consumers: feed
            .consumers
            .iter()
            .map(|c| proto::FeedConsumerStatus {
                name: c.name.clone(),
                position: c.position,
                lag: c.lag,
                acked_age_ms: c.acked_age_ms,
                holding_back: c.holding_back,
            })
            .collect(),
    }
}

fn status_to_wire(status: NodeStatus) -> proto::StatusResponse {
    let c = &status.compaction;
    let compaction = proto::CompactionStatus {
        retention_ms: c.retention_ms,
        collectable: c.collectable,
        collected: c.collected,
        holding_back: c.holding_back,
        oldest_unacknowledged_peer: c
            .oldest_unacknowledged
            .as_ref()
            .map(|(p, _)| p.to_string())
            .unwrap_or_default(),
        oldest_unacknowledged_age_ms: c.oldest_unacknowledged.as_ref().map_or(0, |(_, a)| *a),
        snapshot_from: c
            .snapshot
            .as_ref()
            .map(|(p, _)| p.to_string())
            .unwrap_or_default(),
        snapshot_staged: c.snapshot.as_ref().map_or(0, |(_, n)| *n),
        field_states: c.field_states,
    };
    proto::StatusResponse {
        compaction: Some(compaction),
        feed: Some(feed_to_wire(&status.feed)),
        node_id: status.node_id.to_string(),
        replica: status.replica.to_string(),
        node_key: status.node_key,
        key_fingerprint: status.key_fingerprint,
        duplicates: status.duplicates,
        folded_replicas: status.folded_replicas,
        live_version_vector_entries: status.live_version_vector_entries,
        tcp_port: u32::from(status.listen.port()),
        bind_address: status.listen.ip().to_string(),
        documents: status.documents,
        oplog_entries: status.oplog_entries,
        version_vector: Some(vv_to_wire(&status.version_vector)),
        peers: status.peers.into_iter().map(peer_to_wire).collect(),
        protocol_version: status.protocols.newest(),
        oldest_protocol_version: status.protocols.oldest(),
        release: status.release,
        whole_document_edits: !status
            .features
            .in_force
            .contains(cbddc_net::version::FIELD_MERGE),
        features: Some(features_to_wire(status.features)),
        indexes: status
            .indexes
            .into_iter()
            .map(|i| proto::IndexState {
                collection: i.definition.collection,
                fields: i.definition.fields,
                covering: i.definition.covering,
                pending: i.pending,
                entries: i.entries,
                building: i.building.is_some(),
                built: i.building.map_or(0, |b| b.done),
                to_build: i.building.map_or(0, |b| b.total),
            })
            .collect(),
        leader: status.leader.map(|l| l.to_string()).unwrap_or_default(),
        is_leader: status.is_leader,
        wanted_listen: status
            .wanted_listen
            .map(|a| a.to_string())
            .unwrap_or_default(),
    }
}

impl NodeHandler {
    pub(crate) fn new(service: Arc<NodeService>) -> Self {
        Self { service }
    }

    async fn answer(&self, session: &SessionInfo, request: Req) -> Result<Res, NodeError> {
        let service = &self.service;
        Ok(match request {
            Req::Pull(pull) => {
                let have = vv_from_wire(pull.have).map_err(|e| unreadable("have", e))?;
                let limits = PageLimits {
                    max_entries: clamp(pull.max_entries, MAX_PULL_ENTRIES),
                    max_bytes: clamp(pull.max_bytes, MAX_PULL_BYTES),
                };
                let served = service
                    .serve_pull(session, have, &pull.floors, limits)
                    .await?;
                let mut page = served.page;
                if let Some(features) = &session.peer_features {
                    // Nothing the peer would misread: entries of a format it lacks wait
                    // for its upgrade (and the page says there is no more meanwhile).
                    let (entries, coverage, withheld) =
                        cbddc_net::formats::readable_by(page.entries, page.coverage, features);
                    if withheld {
                        tracing::debug!(peer = ?session.peer, "entries in a format the peer cannot read wait for its upgrade");
                        page.more = false;
                    }
                    (page.entries, page.coverage) = (entries, coverage);
                }
                Res::Pull(Box::new(proto::PullResponse {
                    entries: page.entries.iter().map(entry_to_wire).collect(),
                    more: page.more,
                    holder: Some(vv_to_wire(&served.holder)),
                    notice: served.notice.unwrap_or_default(),
                    floors: served.floors,
                    coverage: coverage_to_wire(&page.coverage),
                    behind: page.behind,
                }))
            }
            Req::Snapshot(ask) => {
                let after = (!ask.after_collection.is_empty() || !ask.after_key.is_empty())
                    .then_some((ask.after_collection, ask.after_key));
                let limits = PageLimits {
                    max_entries: clamp(ask.max_documents, MAX_SNAPSHOT_DOCUMENTS),
                    max_bytes: clamp(ask.max_bytes, MAX_PULL_BYTES),
                };
                let chunk = service.serve_snapshot(session, after, limits).await?;
                Res::Snapshot(proto::SnapshotResponse {
                    documents: chunk
                        .documents
                        .into_iter()
                        .map(cbddc_net::convert::snapshot_document_to_wire)
                        .collect(),
                    version_vector: chunk.version_vector.as_ref().map(vv_to_wire),
                    more: chunk.more,
                })
            }
            Req::Push(push) => {
                let entries =
                    entries_from_wire(push.entries).map_err(|e| unreadable("entries", e))?;
                let coverage =
                    coverage_from_wire(push.coverage).map_err(|e| unreadable("coverage", e))?;
                let accepted = service
                    .accept_push(session, entries, coverage, &push.floors)
                    .await?;
                Res::Push(proto::PushResponse {
                    applied: accepted.outcome.applied as u64,
                    duplicates: accepted.outcome.duplicates as u64,
                    out_of_order: accepted.outcome.out_of_order as u64,
                    holder: Some(vv_to_wire(&accepted.holder)),
                    floors: accepted.floors,
                })
            }
            Req::Put(put) => written(
                service
                    .write_one(LocalWrite::put(put.collection, put.key, put.value))
                    .await?,
                false,
            ),
            Req::Edit(edit) => {
                let Some(change) = edit_of(edit.patch, edit.increment_path, edit.increment_by)?
                else {
                    return Err(NodeError::InvalidRequest {
                        reason: "an edit carries neither a patch nor an increment".into(),
                    });
                };
                let entry = service
                    .write_one(LocalWrite {
                        collection: edit.collection,
                        key: edit.key,
                        edit: change,
                    })
                    .await?;
                // Until field-level merge is in force, an edit is resolved into its
                // whole document.
                let whole = !matches!(entry.op, cbddc_core::Operation::Merge { .. });
                written(entry, whole)
            }
            Req::Find(find) => {
                let query = find
                    .sort
                    .iter()
                    .map(|s| cbddc_query::Sort::parse(s))
                    .collect::<Result<Vec<_>, _>>()
                    .and_then(|sort| {
                        let limit = if find.limit == 0 {
                            100
                        } else {
                            find.limit as usize
                        };
                        cbddc_query::Query::parse(&find.selector, &sort, limit)
                    })
                    .map_err(|e| NodeError::InvalidRequest {
                        reason: e.to_string(),
                    })?;
                let after = (!find.after.is_empty()).then_some(find.after.as_str());
                let found = service.find(&find.collection, &query, after).await?;
                Res::Found(proto::FindResponse {
                    documents: found.documents.iter().map(document_to_wire).collect(),
                    next: found.next.unwrap_or_default(),
                    plan: found.plan,
                })
            }
            Req::Delete(delete) => written(
                service
                    .write_one(LocalWrite::delete(delete.collection, delete.key))
                    .await?,
                false,
            ),
            Req::Get(get) => {
                let doc = service.store.get(&get.collection, &get.key).await?;
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
                let (docs, more) = service.list_page(&list.collection, after, limit).await?;
                Res::List(proto::ListResponse {
                    documents: docs.iter().map(document_to_wire).collect(),
                    more,
                })
            }
            Req::Changes(ask) => self.changes(session, ask).await?,
            Req::WriteBatch(batch) => {
                let writes = batch
                    .writes
                    .into_iter()
                    .map(batch_write)
                    .collect::<Result<Vec<_>, _>>()?;
                let entries = service.write_batch(writes).await?;
                Res::WrittenBatch(proto::WriteBatchResponse {
                    written: entries.len() as u64,
                    last_seq: entries.last().map(|e| e.seq).unwrap_or_default(),
                })
            }
            Req::Control(control) => Res::Control(proto::ControlResponse {
                reply: Some(self.control(session, control.call).await?),
            }),
            // The server answers keepalives itself; this only keeps the match whole.
            Req::Ping(_) => Res::Pong(proto::PongResponse {}),
            Req::Status(_) => Res::Status(Box::new(status_to_wire(service.status().await?))),
            Req::ListPeers(_) => self.peers_answer().await?,
            Req::AddPeer(add) => {
                let add = AddPeer {
                    node_id: add.node_id,
                    address: add.address,
                    peer_type: add.peer_type,
                    disabled: add.disabled,
                };
                service.add_peer(session, add).await?;
                self.peers_answer().await?
            }
            Req::RepinPeer(repin) => {
                service.repin_peer(session, repin.node_id).await?;
                self.peers_answer().await?
            }
            Req::RemovePeer(remove) => {
                service.remove_peer_for(session, remove.node_id).await?;
                self.peers_answer().await?
            }
            Req::ForgetConsumer(forget) => {
                service.forget_consumer_for(session, forget.name).await?;
                Res::Feed(feed_to_wire(&service.status().await?.feed))
            }
        })
    }

    async fn control(&self, session: &SessionInfo, call: Option<Call>) -> Result<Reply, NodeError> {
        let service = &self.service;
        let call = call.ok_or_else(|| {
            NodeError::from(ControlPlaneError::Malformed {
                reason: "a control call without a body (a node speaking an older protocol?)".into(),
            })
        })?;
        Ok(match call {
            Call::Frames(frames) => {
                let frames = cluster::frames_from_wire(frames.frames)?;
                let answer = service.control_frames(session, frames).await?;
                match answer.superseded {
                    Some((configuration_id, decided)) => {
                        Reply::Superseded(proto::ControlSuperseded {
                            configuration_id,
                            decided: cluster::entries_to_wire(&decided),
                        })
                    }
                    None => Reply::Accepted(proto::ControlFrames {
                        frames: cluster::frames_to_wire(&answer.frames),
                    }),
                }
            }
            Call::Offer(offer) => {
                let configuration =
                    cluster::configuration_from_wire(offer.configuration.ok_or_else(|| {
                        ControlPlaneError::Malformed {
                            reason: "an offer without its configuration".into(),
                        }
                    })?)?;
                let sealed_log = cluster::entries_from_wire(offer.sealed_log)?;
                let departed = cluster::departed_from_wire(offer.departed)?;
                service.accept_offer(session, configuration, sealed_log, departed)?;
                Reply::Accepted(proto::ControlFrames::default())
            }
            Call::Status(_) => Reply::Status(cluster::status_to_wire(&service.cluster_status()?)),
            Call::Reconfigure(reconfigure) => {
                let configuration = service
                    .reconfigure_for(session, reconfigure.members)
                    .await?;
                Reply::Reconfigured(cluster::configuration_to_wire(&configuration))
            }
        })
    }

    async fn peers_answer(&self) -> Result<Res, NodeError> {
        let peers = self.service.peer_statuses().await?;
        Ok(Res::Peers(proto::PeersResponse {
            peers: peers.into_iter().map(peer_to_wire).collect(),
        }))
    }

    async fn changes(
        &self,
        session: &SessionInfo,
        ask: proto::ChangesRequest,
    ) -> Result<Res, NodeError> {
        let collection = (!ask.collection.is_empty()).then_some(ask.collection);
        let consumer = (!ask.consumer.is_empty()).then_some(ask.consumer);
        let limit = match ask.limit {
            0 => MAX_CHANGES_LIMIT,
            n => n.min(MAX_CHANGES_LIMIT),
        } as usize;
        let wait = std::time::Duration::from_millis(u64::from(ask.wait_ms)).min(MAX_CHANGES_WAIT);
        let store = self.service.store.clone();
        let mut feed = match ask.listing {
            Some(listing) => {
                let last = *store.watch_changes().borrow();
                if listing.position > last {
                    return Err(NodeError::InvalidRequest {
                        reason: format!(
                            "the listing stands for position {} but the feed ends at {last}: pass back the listing this node answered",
                            listing.position
                        ),
                    });
                }
                let after = (!listing.after_collection.is_empty() || !listing.after_key.is_empty())
                    .then_some((listing.after_collection, listing.after_key));
                crate::ChangeFeed::continuing(
                    store.clone(),
                    collection,
                    crate::feed::Listing {
                        position: listing.position,
                        after,
                        read_all: false,
                    },
                )
            }
            None => {
                let start = if ask.resume {
                    crate::FeedStart::Acknowledged
                } else if ask.current {
                    crate::FeedStart::Current
                } else if ask.from_end {
                    crate::FeedStart::Now
                } else {
                    crate::FeedStart::After(ask.after)
                };
                let filter = crate::ChangeFilter {
                    collection,
                    start,
                    consumer: consumer.clone(),
                };
                let feed = crate::ChangeFeed::open(store.clone(), filter).await?;
                if let (Some(name), crate::FeedStart::After(after)) = (&consumer, start)
                    && after > 0
                {
                    // Asking after a position says every change up to it is processed.
                    store.acknowledge_feed(name.clone(), after).await?;
                }
                feed
            }
        };
        let was_listing = feed.listing().is_some();
        // A stopping node answers a waiting poll at once rather than holding its stop.
        let changes = tokio::select! {
            page = feed.next_page(limit, wait) => {
                page?.ok_or(NodeError::Storage(StorageError::Closed))?
            }
            _ = session.stopping.cancelled() => Vec::new(),
        };
        let listing = feed.listing().map(|l| {
            let (after_collection, after_key) = l.after.unwrap_or_default();
            proto::FeedListing {
                position: l.position,
                after_collection,
                after_key,
            }
        });
        Ok(Res::Changes(proto::ChangesResponse {
            changes: changes
                .iter()
                .map(|c| proto::Change {
                    position: c.position,
                    entry: Some(entry_to_wire(&c.entry)),
                    merged: c.merged.is_some(),
                    document: c.merged.as_ref().and_then(|m| m.document.clone()),
                    paths: c
                        .merged
                        .as_ref()
                        .map(|m| m.paths.clone())
                        .unwrap_or_default(),
                })
                .collect(),
            resume_after: feed.position(),
            synced: was_listing && listing.is_none(),
            listing,
        }))
    }
}

/// The answer to a write; `whole_document` for an edit resolved into the document it made.
fn written(entry: cbddc_core::OplogEntry, whole_document: bool) -> Res {
    Res::Written(proto::WriteResponse {
        seq: entry.seq,
        hlc: Some(hlc_to_wire(&entry.hlc)),
        whole_document,
    })
}

/// What a patch or an increment asks for; at most one of them.
fn edit_of(
    patch: String,
    increment_path: String,
    by: i64,
) -> Result<Option<cbddc_core::Edit>, NodeError> {
    match (patch.is_empty(), increment_path.is_empty()) {
        (true, true) => Ok(None),
        (false, true) => Ok(Some(cbddc_core::Edit::Patch(patch))),
        (true, false) => Ok(Some(cbddc_core::Edit::Increment {
            path: increment_path,
            by,
        })),
        (false, false) => Err(NodeError::InvalidRequest {
            reason: "a write carries a patch and an increment: send one of them".into(),
        }),
    }
}

fn batch_write(w: proto::BatchWrite) -> Result<LocalWrite, NodeError> {
    let edit = match edit_of(w.patch, w.increment_path, w.increment_by)? {
        Some(_) if w.value.is_some() => {
            return Err(NodeError::InvalidRequest {
                reason: format!(
                    "the write of {}/{} carries a value and a patch or an increment: send one of them",
                    w.collection, w.key
                ),
            });
        }
        Some(edit) => edit,
        None => match w.value {
            Some(value) => cbddc_core::Edit::Put(value),
            None => cbddc_core::Edit::Delete,
        },
    };
    Ok(LocalWrite {
        collection: w.collection,
        key: w.key,
        edit,
    })
}

#[async_trait]
impl RequestHandler for NodeHandler {
    async fn handle(&self, session: &SessionInfo, request: Req) -> Res {
        match self.answer(session, request).await {
            Ok(answer) => answer,
            Err(e) => error_response(e),
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
            assert_eq!(
                code(error_response(NodeError::ControlPlane(error))),
                expected
            );
        }
        let node_errors = [
            (NodeError::NotAdmitted, ErrorCode::NotAMember),
            (
                NodeError::Retired {
                    configuration_id: 3,
                    last_member_of: 2,
                },
                ErrorCode::NotAMember,
            ),
            (
                NodeError::Forbidden {
                    reason: "only nodes push".into(),
                },
                ErrorCode::Forbidden,
            ),
            (
                NodeError::InvalidRequest {
                    reason: "split it".into(),
                },
                ErrorCode::InvalidRequest,
            ),
            (
                NodeError::ControlPlane(ControlPlaneError::Malformed { reason: "x".into() }),
                ErrorCode::InvalidRequest,
            ),
            (
                NodeError::Storage(StorageError::Closed),
                ErrorCode::Unavailable,
            ),
        ];
        for (error, expected) in node_errors {
            assert_eq!(code(error_response(error)), expected);
        }
    }
}

#[cfg(test)]
mod error_codes {
    use super::*;
    use cbddc_net::NetError;

    /// Every variant, with the code a client acts on: none is `UNSPECIFIED`.
    #[test]
    fn every_node_error_maps_to_a_code_a_client_can_act_on() {
        let io = || std::io::Error::other("x");
        let cases: Vec<(NodeError, ErrorCode)> = vec![
            (
                NodeError::Config(cbddc_config::ConfigError::Invalid {
                    source_name: "request".into(),
                    field: "address".into(),
                    message: "bad".into(),
                }),
                ErrorCode::InvalidRequest,
            ),
            (
                NodeError::Store(cbddc_store::StoreError::Corrupt {
                    operation: "reading",
                    detail: "x".into(),
                }),
                ErrorCode::Storage,
            ),
            (
                NodeError::Storage(StorageError::Closed),
                ErrorCode::Unavailable,
            ),
            (
                NodeError::Storage(StorageError::Backend {
                    operation: "x",
                    message: "y".into(),
                }),
                ErrorCode::Storage,
            ),
            (
                NodeError::Storage(StorageError::FeedCompacted {
                    after: 1,
                    oldest: 2,
                }),
                ErrorCode::FeedCompacted,
            ),
            (
                NodeError::Bind {
                    address: "127.0.0.1:1".parse().unwrap(),
                    source: io(),
                },
                ErrorCode::Unavailable,
            ),
            (NodeError::Net(NetError::Closed), ErrorCode::Unavailable),
            (
                NodeError::Net(NetError::Remote {
                    code: ErrorCode::Forbidden,
                    message: "no".into(),
                }),
                ErrorCode::Forbidden,
            ),
            (
                NodeError::Retired {
                    configuration_id: 2,
                    last_member_of: 1,
                },
                ErrorCode::NotAMember,
            ),
            (NodeError::NotAdmitted, ErrorCode::NotAMember),
            (
                NodeError::Forbidden {
                    reason: "no".into(),
                },
                ErrorCode::Forbidden,
            ),
            (
                NodeError::InvalidRequest {
                    reason: "no".into(),
                },
                ErrorCode::InvalidRequest,
            ),
            (
                NodeError::FeedCompacted {
                    after: 1,
                    oldest: 2,
                },
                ErrorCode::FeedCompacted,
            ),
            (
                NodeError::ControlPlane(ControlPlaneError::NotConfigured),
                ErrorCode::Forbidden,
            ),
        ];
        for (err, code) in cases {
            let text = err.to_string();
            assert_eq!(error_code(&err), code, "{text}");
            match error_response(err) {
                Res::Error(e) => {
                    assert_eq!(e.code, code as i32);
                    assert_eq!(e.message, text);
                    assert_eq!(
                        e.feed_oldest,
                        if code == ErrorCode::FeedCompacted {
                            2
                        } else {
                            0
                        }
                    );
                }
                other => panic!("{other:?}"),
            }
        }
    }
}
