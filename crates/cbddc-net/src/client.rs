use crate::client_settings::ClientSettings;
use crate::connector::{Connector, TcpConnector, Transport};
use crate::convert::{entries_from_wire, entry_to_wire, hlc_from_wire, vv_from_wire, vv_to_wire};
use crate::floors::Floors;
use crate::identity::{LocalIdentity, PublicKey};
use crate::liveness::{LastHeard, Watched};
use crate::secure::{self, ClusterKey, SecureStream};
use crate::{NetError, proto};
use cbddc_core::{Document, Edit, Hlc, NodeId, OplogEntry, PageLimits, VersionVector};
use std::sync::Arc;
use std::time::Duration;

/// A page received by [`PeerClient::pull`].
#[derive(Debug, Clone, Default)]
pub struct PulledPage {
    /// Entries we lacked, each origin's in order.
    pub entries: Vec<OplogEntry>,
    /// More entries are waiting.
    pub more: bool,
    /// The peer's version vector.
    pub holder: VersionVector,
    /// The peer's warning that another live process runs under our node id.
    pub notice: Option<String>,
    /// What the entries speak for ([`cbddc_core::Coverage`]).
    pub coverage: cbddc_core::Coverage,
    /// We lack entries the peer has collected: take a snapshot
    /// ([`PeerClient::snapshot_chunk`]) first. The page is empty.
    pub behind: bool,
}

/// What the peer did with a [`PeerClient::push`].
#[derive(Debug, Clone, Default)]
pub struct PushOutcome {
    /// New to the peer.
    pub applied: u64,
    /// Already held.
    pub duplicates: u64,
    /// Skipped behind a gap: resend from `holder`.
    pub out_of_order: u64,
    /// The peer's version vector after applying.
    pub holder: VersionVector,
}

/// A session with one node: used by nodes to sync and by the CLI.
#[derive(Debug)]
pub struct PeerClient {
    stream: SecureStream<Watched<Box<dyn Transport>>>,
    /// When the stream last read bytes.
    heard: Arc<LastHeard>,
    liveness: Option<Duration>,
    remote: secure::Remote,
    address: String,
    next_id: u64,
    request_timeout: Duration,
    /// The digest of the floors the peer last reported.
    peer_floors: Vec<u8>,
}

impl PeerClient {
    /// Connects to `address` over TCP and runs the handshake as `local` (a node, or a
    /// tool), whose verifier checks the responder's node id and key.
    pub async fn connect(
        address: &str,
        key: &ClusterKey,
        local: &LocalIdentity,
        settings: ClientSettings,
    ) -> Result<Self, NetError> {
        Self::connect_with(&TcpConnector, address, key, local, settings).await
    }

    /// Like [`PeerClient::connect`], over the stream `connector` opens.
    pub async fn connect_with(
        connector: &dyn Connector,
        address: &str,
        key: &ClusterKey,
        local: &LocalIdentity,
        settings: ClientSettings,
    ) -> Result<Self, NetError> {
        let connect = async {
            let socket = connector
                .connect(address, &settings)
                .await
                .map_err(|source| NetError::Connect {
                    address: address.to_string(),
                    source,
                })?;
            let socket = Watched::new(socket);
            let heard = socket.heard();
            secure::initiate(socket, key, local, settings.eligible, address)
                .await
                .map(|(stream, remote)| (stream, remote, heard))
        };
        let (stream, remote, heard) = tokio::time::timeout(settings.connect_timeout, connect)
            .await
            .map_err(|_| NetError::Timeout {
                during: "connecting and running the handshake",
                after: settings.connect_timeout,
            })??;
        Ok(Self {
            stream,
            heard,
            liveness: settings.liveness,
            remote,
            address: address.to_string(),
            next_id: 1,
            request_timeout: settings.request_timeout,
            peer_floors: Vec::new(),
        })
    }

    /// The node id the peer proved in the handshake.
    pub fn remote_node(&self) -> &NodeId {
        &self.remote.node_id
    }

    /// The static key the peer proved.
    pub fn remote_key(&self) -> PublicKey {
        self.remote.key
    }

    /// The replica the peer writes as now, if it said.
    pub fn remote_replica(&self) -> Option<&cbddc_core::ReplicaId> {
        self.remote.replica.as_ref()
    }

    /// The collections the peer replicates.
    pub fn remote_interest(&self) -> &cbddc_core::Interest {
        &self.remote.interest
    }

    /// The protocol this session runs at, the peer's release and the formats it reads.
    pub fn remote_build(&self) -> &crate::version::PeerBuild {
        &self.remote.build
    }

    /// Whether the peer says it may lead.
    pub fn remote_eligible(&self) -> bool {
        self.remote.eligible
    }

    /// The address dialled.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Sends one request and waits for its answer; an error answer becomes [`NetError::Remote`].
    pub async fn call(
        &mut self,
        body: proto::request::Body,
    ) -> Result<proto::response::Body, NetError> {
        let id = self.next_id;
        self.next_id += 1;
        let is_ping = matches!(body, proto::request::Body::Ping(_));
        let (heard, liveness) = (self.heard.clone(), self.liveness);
        let stream = &mut self.stream;
        let exchange = async {
            stream
                .send(&proto::Request {
                    id,
                    body: Some(body),
                })
                .await?;
            heard.reset();
            let answer = async {
                loop {
                    let response = stream.recv::<proto::Response>().await?;
                    let progress = !is_ping
                        && response.id == id
                        && matches!(response.body, Some(proto::response::Body::Pong(_)));
                    if !progress {
                        return Ok::<_, NetError>(response);
                    }
                }
            };
            match liveness {
                Some(bound) => tokio::select! {
                    answer = answer => answer,
                    _ = crate::liveness::silence(&heard, bound) => Err(NetError::Timeout {
                        during: "waiting for an answer (the peer went silent: down, paused or cut off)",
                        after: bound,
                    }),
                },
                None => answer.await,
            }
        };
        let response = tokio::time::timeout(self.request_timeout, exchange)
            .await
            .map_err(|_| NetError::Timeout {
                during: "waiting for an answer",
                after: self.request_timeout,
            })??;
        if response.id != id {
            // Id 0 is the node's word on the session itself (an idle session closed, a
            // request it could not decode), sent just before it closes.
            if response.id == 0
                && let Some(proto::response::Body::Error(e)) = response.body
            {
                return Err(NetError::Remote {
                    code: proto::ErrorCode::try_from(e.code)
                        .unwrap_or(proto::ErrorCode::Unspecified),
                    message: e.message,
                });
            }
            return Err(NetError::Malformed {
                detail: format!("answer {} to request {id}", response.id),
            });
        }
        match response.body {
            Some(proto::response::Body::Error(e)) => {
                let code =
                    proto::ErrorCode::try_from(e.code).unwrap_or(proto::ErrorCode::Unspecified);
                Err(if code == proto::ErrorCode::FeedCompacted {
                    NetError::FeedCompacted {
                        oldest: e.feed_oldest,
                        message: e.message,
                    }
                } else {
                    NetError::Remote {
                        code,
                        message: e.message,
                    }
                })
            }
            Some(body) => Ok(body),
            None => Err(NetError::Malformed {
                detail: "an answer without a body".into(),
            }),
        }
    }

    /// Asks for the entries missing from `have`.
    pub async fn pull(
        &mut self,
        have: &VersionVector,
        limits: PageLimits,
    ) -> Result<PulledPage, NetError> {
        self.pull_with_floors(have, &Floors::default(), limits)
            .await
    }

    /// Like [`PeerClient::pull`], exchanging floors: `have` travels without the origins at
    /// our floors when the peer last reported the same floors, and the holder comes back
    /// complete (see [`Floors`]).
    pub async fn pull_with_floors(
        &mut self,
        have: &VersionVector,
        floors: &Floors,
        limits: PageLimits,
    ) -> Result<PulledPage, NetError> {
        let sent = if floors.shared_with(&self.peer_floors) {
            floors.compress(have)
        } else {
            have.clone()
        };
        let body = proto::request::Body::Pull(proto::PullRequest {
            have: Some(vv_to_wire(&sent)),
            max_entries: u32::try_from(limits.max_entries).unwrap_or(u32::MAX),
            max_bytes: u32::try_from(limits.max_bytes).unwrap_or(u32::MAX),
            floors: floors.digest().to_vec(),
        });
        match self.call(body).await? {
            proto::response::Body::Pull(page) => {
                let holder = vv_from_wire(page.holder)?;
                let holder = if floors.shared_with(&page.floors) {
                    floors.expand(&holder)
                } else {
                    holder
                };
                self.peer_floors = page.floors;
                Ok(PulledPage {
                    entries: entries_from_wire(page.entries)?,
                    more: page.more,
                    holder,
                    notice: (!page.notice.is_empty()).then_some(page.notice),
                    coverage: crate::convert::coverage_from_wire(page.coverage)?,
                    behind: page.behind,
                })
            }
            _ => Err(unexpected("pull")),
        }
    }

    /// A chunk of the peer's snapshot after `after` (`None`: the first, with the version
    /// vector the snapshot stands for), of at most `limits.max_entries` documents.
    pub async fn snapshot_chunk(
        &mut self,
        after: Option<&(String, String)>,
        limits: PageLimits,
    ) -> Result<cbddc_core::SnapshotChunk, NetError> {
        let (after_collection, after_key) = after.cloned().unwrap_or_default();
        let body = proto::request::Body::Snapshot(proto::SnapshotRequest {
            after_collection,
            after_key,
            max_documents: u32::try_from(limits.max_entries).unwrap_or(u32::MAX),
            max_bytes: u32::try_from(limits.max_bytes).unwrap_or(u32::MAX),
        });
        match self.call(body).await? {
            proto::response::Body::Snapshot(chunk) => {
                crate::convert::snapshot_chunk_from_wire(chunk)
            }
            _ => Err(unexpected("snapshot")),
        }
    }

    /// Sends entries for the peer to apply.
    pub async fn push(&mut self, entries: &[OplogEntry]) -> Result<PushOutcome, NetError> {
        self.push_with_floors(entries, &Floors::default()).await
    }

    /// Like [`PeerClient::push`], exchanging floors (see [`PeerClient::pull_with_floors`]).
    pub async fn push_with_floors(
        &mut self,
        entries: &[OplogEntry],
        floors: &Floors,
    ) -> Result<PushOutcome, NetError> {
        self.push_covered(entries, &cbddc_core::Coverage::default(), floors)
            .await
    }

    /// Like [`PeerClient::push_with_floors`], saying what the entries speak for.
    pub async fn push_covered(
        &mut self,
        entries: &[OplogEntry],
        coverage: &cbddc_core::Coverage,
        floors: &Floors,
    ) -> Result<PushOutcome, NetError> {
        // Nothing the peer would misread: entries of a format it lacks wait for it.
        let (entries, coverage, _) = crate::formats::readable_by(
            entries.to_vec(),
            coverage.clone(),
            &self.remote.build.features,
        );
        let body = proto::request::Body::Push(proto::PushRequest {
            entries: entries.iter().map(entry_to_wire).collect(),
            floors: floors.digest().to_vec(),
            coverage: crate::convert::coverage_to_wire(&coverage),
        });
        match self.call(body).await? {
            proto::response::Body::Push(ack) => {
                let holder = vv_from_wire(ack.holder)?;
                let holder = if floors.shared_with(&ack.floors) {
                    floors.expand(&holder)
                } else {
                    holder
                };
                self.peer_floors = ack.floors;
                Ok(PushOutcome {
                    applied: ack.applied,
                    duplicates: ack.duplicates,
                    out_of_order: ack.out_of_order,
                    holder,
                })
            }
            _ => Err(unexpected("push")),
        }
    }

    /// Writes a document on the peer (a client request); returns the entry's sequence number and stamp.
    pub async fn put(
        &mut self,
        collection: &str,
        key: &str,
        value: &str,
    ) -> Result<(u64, Hlc), NetError> {
        let body = proto::request::Body::Put(proto::PutRequest {
            collection: collection.into(),
            key: key.into(),
            value: value.into(),
        });
        self.written(body).await
    }

    /// Deletes a document on the peer.
    pub async fn delete(&mut self, collection: &str, key: &str) -> Result<(u64, Hlc), NetError> {
        let body = proto::request::Body::Delete(proto::DeleteRequest {
            collection: collection.into(),
            key: key.into(),
        });
        self.written(body).await
    }

    /// Fails before sending anything when the session runs below `protocol`, naming the
    /// peer's release and the one `what` needs.
    fn needs(&self, protocol: u32, what: &str) -> Result<(), NetError> {
        if self.remote.build.protocol >= protocol {
            return Ok(());
        }
        Err(NetError::Unsupported {
            message: format!(
                "{what} needs a node of cbddc {} or later (protocol {protocol}); {} runs cbddc {} (protocol {}): upgrade it",
                crate::version::release_introducing(protocol).unwrap_or("a later release"),
                self.remote.node_id,
                self.remote.build.release,
                self.remote.build.protocol
            ),
        })
    }

    /// Merges a JSON Merge Patch (RFC 7386) into a document on the peer. Returns the
    /// entry's sequence number and stamp, and whether the node resolved it into the whole
    /// document it made (it does while field-level merge is not in force).
    pub async fn patch(
        &mut self,
        collection: &str,
        key: &str,
        patch: &str,
    ) -> Result<(u64, Hlc, bool), NetError> {
        self.needs(5, "a patch")?;
        self.edit(proto::EditRequest {
            collection: collection.into(),
            key: key.into(),
            patch: patch.into(),
            ..Default::default()
        })
        .await
    }

    /// Adds `by` to the integer at the dotted `path` of a document on the peer; answered
    /// like [`PeerClient::patch`].
    pub async fn increment(
        &mut self,
        collection: &str,
        key: &str,
        path: &str,
        by: i64,
    ) -> Result<(u64, Hlc, bool), NetError> {
        self.needs(5, "an increment")?;
        self.edit(proto::EditRequest {
            collection: collection.into(),
            key: key.into(),
            increment_path: path.into(),
            increment_by: by,
            ..Default::default()
        })
        .await
    }

    /// A page of the documents of `collection` matching `selector` (JSON text), sorted by
    /// `sort` (`PATH`, `PATH:desc`) then key, at most `limit`, after the cursor `after`.
    pub async fn find(
        &mut self,
        collection: &str,
        selector: &str,
        sort: &[String],
        limit: u32,
        after: Option<&str>,
    ) -> Result<proto::FindResponse, NetError> {
        self.needs(5, "a query")?;
        let body = proto::request::Body::Find(proto::FindRequest {
            collection: collection.into(),
            selector: selector.into(),
            sort: sort.to_vec(),
            limit,
            after: after.unwrap_or_default().into(),
        });
        match self.call(body).await? {
            proto::response::Body::Found(found) => Ok(found),
            _ => Err(unexpected("find")),
        }
    }

    async fn edit(&mut self, edit: proto::EditRequest) -> Result<(u64, Hlc, bool), NetError> {
        self.written_whole(proto::request::Body::Edit(edit)).await
    }

    async fn written(&mut self, body: proto::request::Body) -> Result<(u64, Hlc), NetError> {
        let (seq, hlc, _) = self.written_whole(body).await?;
        Ok((seq, hlc))
    }

    /// A write's answer: its sequence number, its stamp, and whether the node resolved
    /// it into the whole document it made.
    async fn written_whole(
        &mut self,
        body: proto::request::Body,
    ) -> Result<(u64, Hlc, bool), NetError> {
        match self.call(body).await? {
            proto::response::Body::Written(w) => {
                Ok((w.seq, hlc_from_wire(w.hlc)?, w.whole_document))
            }
            _ => Err(unexpected("write")),
        }
    }

    /// Reads a document from the peer.
    pub async fn get(&mut self, collection: &str, key: &str) -> Result<Option<Document>, NetError> {
        let body = proto::request::Body::Get(proto::GetRequest {
            collection: collection.into(),
            key: key.into(),
        });
        match self.call(body).await? {
            proto::response::Body::Get(answer) => answer
                .document
                .map(|d| document_from_wire(collection, d))
                .transpose(),
            _ => Err(unexpected("get")),
        }
    }

    /// Lists a page of a collection; the flag says whether more follow.
    pub async fn list(
        &mut self,
        collection: &str,
        after_key: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<Document>, bool), NetError> {
        let body = proto::request::Body::List(proto::ListRequest {
            collection: collection.into(),
            after_key: after_key.unwrap_or_default().into(),
            limit,
        });
        match self.call(body).await? {
            proto::response::Body::List(page) => Ok((
                page.documents
                    .into_iter()
                    .map(|d| document_from_wire(collection, d))
                    .collect::<Result<_, _>>()?,
                page.more,
            )),
            _ => Err(unexpected("list")),
        }
    }

    /// A page of the node's change feed (see [`ChangesAsk`]), waiting up to `wait` for a
    /// change when none is available.
    pub async fn changes(
        &mut self,
        ask: ChangesAsk,
        wait: Duration,
    ) -> Result<ChangesPage, NetError> {
        let (after, from_end, current, listing, resume) = match ask.start {
            FeedFrom::After(position) => (position, false, false, None, false),
            FeedFrom::End => (0, true, false, None, false),
            FeedFrom::Current => (0, false, true, None, false),
            FeedFrom::Listing(listing) => (0, false, false, Some(listing), false),
            FeedFrom::Resume => (0, false, false, None, true),
        };
        let body = proto::request::Body::Changes(proto::ChangesRequest {
            collection: ask.collection.unwrap_or_default(),
            after,
            limit: 0,
            wait_ms: u32::try_from(wait.as_millis()).unwrap_or(u32::MAX),
            from_end,
            current,
            listing,
            consumer: ask.consumer.unwrap_or_default(),
            resume,
        });
        match self.call(body).await? {
            proto::response::Body::Changes(page) => {
                let mut changes = Vec::with_capacity(page.changes.len());
                for change in page.changes {
                    let entry = change.entry.ok_or_else(|| NetError::Malformed {
                        detail: "a change without its entry".into(),
                    })?;
                    let merged = change.merged.then_some(cbddc_core::MergedChange {
                        document: change.document,
                        paths: change.paths,
                    });
                    changes.push(cbddc_core::Change {
                        position: change.position,
                        entry: crate::convert::entry_from_wire(entry)?,
                        merged,
                    });
                }
                Ok(ChangesPage {
                    changes,
                    synced: page.synced,
                    next: match page.listing {
                        Some(listing) => FeedFrom::Listing(listing),
                        None => FeedFrom::After(page.resume_after),
                    },
                })
            }
            _ => Err(unexpected("changes")),
        }
    }

    /// Writes a batch in one transaction (`None`: a delete); returns how many were stored.
    pub async fn write_batch(
        &mut self,
        writes: Vec<cbddc_core::LocalWrite>,
    ) -> Result<u64, NetError> {
        if writes
            .iter()
            .any(|w| matches!(w.edit, Edit::Patch(_) | Edit::Increment { .. }))
        {
            // A protocol-4 node would read a patch or an increment as a delete.
            self.needs(5, "a batch with patches or increments")?;
        }
        let body = proto::request::Body::WriteBatch(proto::WriteBatchRequest {
            writes: writes
                .into_iter()
                .map(|w| {
                    let mut write = proto::BatchWrite {
                        collection: w.collection,
                        key: w.key,
                        ..Default::default()
                    };
                    match w.edit {
                        Edit::Put(value) => write.value = Some(value),
                        Edit::Delete => {}
                        Edit::Patch(patch) => write.patch = patch,
                        Edit::Increment { path, by } => {
                            write.increment_path = path;
                            write.increment_by = by;
                        }
                    }
                    write
                })
                .collect(),
        });
        match self.call(body).await? {
            proto::response::Body::WrittenBatch(done) => Ok(done.written),
            _ => Err(unexpected("write batch")),
        }
    }

    /// The peer's status.
    /// Forgets the named feed consumer `name` (tools only); the feed's state after it.
    pub async fn forget_consumer(&mut self, name: &str) -> Result<proto::FeedStatus, NetError> {
        let body = proto::request::Body::ForgetConsumer(proto::ForgetConsumerRequest {
            name: name.to_string(),
        });
        match self.call(body).await? {
            proto::response::Body::Feed(feed) => Ok(feed),
            _ => Err(unexpected("feed")),
        }
    }

    /// The node's status.
    pub async fn status(&mut self) -> Result<proto::StatusResponse, NetError> {
        match self
            .call(proto::request::Body::Status(proto::StatusRequest {}))
            .await?
        {
            proto::response::Body::Status(status) => Ok(*status),
            _ => Err(unexpected("status")),
        }
    }
}

impl PeerClient {
    /// A keepalive: succeeds once the peer answered, within `within` (instead of the
    /// session's request timeout). An idle session pings to learn early that its peer is
    /// gone, paused or cut off ([`NetError::Timeout`]); like any timed-out call, that
    /// leaves the session unusable: connect again.
    pub async fn ping(&mut self, within: Duration) -> Result<(), NetError> {
        let body = proto::request::Body::Ping(proto::PingRequest {});
        let answer = tokio::time::timeout(within, self.call(body))
            .await
            .map_err(|_| NetError::Timeout {
                during: "waiting for the answer to a keepalive",
                after: within,
            })??;
        match answer {
            proto::response::Body::Pong(_) => Ok(()),
            _ => Err(unexpected("ping")),
        }
    }

    /// Sends a control-plane call (cluster membership) and returns the answer.
    pub async fn control(
        &mut self,
        call: proto::control_request::Call,
    ) -> Result<proto::control_response::Reply, NetError> {
        match self
            .call(proto::request::Body::Control(proto::ControlRequest {
                call: Some(call),
            }))
            .await?
        {
            proto::response::Body::Control(proto::ControlResponse { reply: Some(reply) }) => {
                Ok(reply)
            }
            _ => Err(unexpected("control")),
        }
    }

    /// The node's control plane (with a `[cluster]` section; others answer `FORBIDDEN`).
    pub async fn cluster_status(&mut self) -> Result<proto::ClusterStatus, NetError> {
        let call = proto::control_request::Call::Status(proto::ClusterStatusRequest {});
        match self.control(call).await? {
            proto::control_response::Reply::Status(status) => Ok(status),
            _ => Err(unexpected("cluster status")),
        }
    }

    /// Replaces the running configuration's members; answers once the seal is decided,
    /// with the configuration that runs now.
    pub async fn reconfigure_cluster(
        &mut self,
        members: Vec<String>,
    ) -> Result<proto::ClusterConfiguration, NetError> {
        let call = proto::control_request::Call::Reconfigure(proto::ReconfigureRequest { members });
        match self.control(call).await? {
            proto::control_response::Reply::Reconfigured(configuration) => Ok(configuration),
            _ => Err(unexpected("reconfigure")),
        }
    }

    /// The peers the node knows or has exchanged data with.
    pub async fn peers(&mut self) -> Result<Vec<proto::PeerStatus>, NetError> {
        match self
            .call(proto::request::Body::ListPeers(proto::ListPeersRequest {}))
            .await?
        {
            proto::response::Body::Peers(answer) => Ok(answer.peers),
            _ => Err(unexpected("list peers")),
        }
    }

    /// Saves a known peer on the node; returns the resulting peers.
    pub async fn add_peer(
        &mut self,
        node_id: &str,
        address: &str,
        peer_type: &str,
        disabled: bool,
    ) -> Result<Vec<proto::PeerStatus>, NetError> {
        let body = proto::request::Body::AddPeer(proto::AddPeerRequest {
            node_id: node_id.into(),
            address: address.into(),
            peer_type: peer_type.into(),
            disabled,
        });
        match self.call(body).await? {
            proto::response::Body::Peers(answer) => Ok(answer.peers),
            _ => Err(unexpected("add peer")),
        }
    }

    /// Removes a known peer on the node; returns the resulting peers.
    pub async fn remove_peer(&mut self, node_id: &str) -> Result<Vec<proto::PeerStatus>, NetError> {
        let body = proto::request::Body::RemovePeer(proto::RemovePeerRequest {
            node_id: node_id.into(),
        });
        match self.call(body).await? {
            proto::response::Body::Peers(answer) => Ok(answer.peers),
            _ => Err(unexpected("remove peer")),
        }
    }

    /// Forgets the key the node pinned for `node_id` (tools only).
    pub async fn repin_peer(&mut self, node_id: &str) -> Result<Vec<proto::PeerStatus>, NetError> {
        let body = proto::request::Body::RepinPeer(proto::RepinPeerRequest {
            node_id: node_id.into(),
        });
        match self.call(body).await? {
            proto::response::Body::Peers(answer) => Ok(answer.peers),
            _ => Err(unexpected("repin peer")),
        }
    }
}

fn document_from_wire(collection: &str, doc: proto::Document) -> Result<Document, NetError> {
    Ok(Document {
        collection: collection.to_string(),
        key: doc.key,
        value: doc.value,
        hlc: hlc_from_wire(doc.hlc)?,
    })
}

fn unexpected(what: &str) -> NetError {
    NetError::Malformed {
        detail: format!("the answer to a {what} request is of another kind"),
    }
}

/// Where a request for the change feed starts.
#[derive(Debug, Clone, PartialEq)]
pub enum FeedFrom {
    /// After this position.
    After(u64),
    /// After the feed's last position: changes from now on.
    End,
    /// With the current state (every live document at position 0), then the changes.
    Current,
    /// Continuing a listing of the current state (from the previous answer).
    Listing(proto::FeedListing),
    /// After the position the node keeps for the named consumer.
    Resume,
}

/// A request for a page of the change feed.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangesAsk {
    /// Only this collection's changes.
    pub collection: Option<String>,
    /// Where to start.
    pub start: FeedFrom,
    /// A named consumer: the node keeps its position; asking after a position
    /// acknowledges it.
    pub consumer: Option<String>,
}

/// A page of the change feed.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangesPage {
    /// Changes in order; position 0 for a listing's documents.
    pub changes: Vec<cbddc_core::Change>,
    /// Where to ask next.
    pub next: FeedFrom,
    /// This page completes a listing of the current state: what follows are the changes
    /// after the position in `next`.
    pub synced: bool,
}
