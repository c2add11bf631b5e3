//! Wire messages, written by hand with explicit tags; `proto/cbddc.proto` at the
//! repository root is the same schema for other languages, and `docs/protocol.md`
//! describes how they travel.
#![allow(missing_docs)]

// ---- Handshake phase (plaintext frames) ----

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct HandshakeFrame {
    #[prost(oneof = "handshake_frame::Kind", tags = "1, 2, 3")]
    pub kind: Option<handshake_frame::Kind>,
}

pub mod handshake_frame {
    #[derive(Clone, PartialEq, ::prost::Oneof)]
    pub enum Kind {
        #[prost(message, tag = "1")]
        Hello(super::Hello),
        #[prost(bytes = "vec", tag = "2")]
        Noise(Vec<u8>),
        #[prost(message, tag = "3")]
        Reject(super::Reject),
    }
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Hello {
    #[prost(string, tag = "1")]
    pub magic: String,
    /// The oldest protocol version the sender speaks (protocol-4 responders require 4).
    #[prost(uint32, tag = "2")]
    pub protocol_version: u32,
    /// The newest version the sender speaks; 0 (absent) from protocol-4 initiators.
    #[prost(uint32, tag = "3")]
    pub newest_protocol_version: u32,
    /// The sender's release, e.g. "0.2.0"; empty from protocol-4 initiators.
    #[prost(string, tag = "4")]
    pub release: String,
}

/// The answer to a [`ControlRequest`]. Tag 1 was version 2's JSON payload.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ControlResponse {
    #[prost(oneof = "control_response::Reply", tags = "2, 3, 4, 5")]
    pub reply: Option<control_response::Reply>,
}

pub mod control_response {
    #[derive(Clone, PartialEq, ::prost::Oneof)]
    pub enum Reply {
        /// Taken. To `frames`: the responder's heartbeat answers to the caller, which ride
        /// back here instead of on a call of their own.
        #[prost(message, tag = "2")]
        Accepted(super::ControlFrames),
        /// The frames' configuration is sealed on the responder: learn the seal.
        #[prost(message, tag = "3")]
        Superseded(super::ControlSuperseded),
        #[prost(message, tag = "4")]
        Status(super::ClusterStatus),
        /// The seal is decided; `configuration` runs now.
        #[prost(message, tag = "5")]
        Reconfigured(super::ClusterConfiguration),
    }
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ControlSuperseded {
    #[prost(uint32, tag = "1")]
    pub configuration_id: u32,
    /// Its decided log, ending with the seal.
    #[prost(message, repeated, tag = "2")]
    pub decided: Vec<ControlEntry>,
}

/// A node's control plane, as `cbddc cluster status` shows it.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ClusterStatus {
    /// The running configuration; none before joining a cluster, or after retiring.
    #[prost(uint32, optional, tag = "1")]
    pub configuration_id: Option<u32>,
    #[prost(string, repeated, tag = "2")]
    pub members: Vec<String>,
    /// The control plane's leader; empty while none is known.
    #[prost(string, tag = "3")]
    pub leader: String,
    #[prost(uint64, tag = "4")]
    pub decided_idx: u64,
    #[prost(bool, tag = "5")]
    pub retired: bool,
    #[prost(uint32, optional, tag = "6")]
    pub retired_after: Option<u32>,
    #[prost(message, optional, tag = "7")]
    pub handover: Option<Handover>,
}

/// After retiring: the hand-over of the writes a node took as a member.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Handover {
    #[prost(uint32, tag = "1")]
    pub to_configuration: u32,
    #[prost(string, repeated, tag = "2")]
    pub pending: Vec<String>,
    #[prost(string, repeated, tag = "3")]
    pub done: Vec<String>,
    #[prost(bool, tag = "4")]
    pub complete: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, ::prost::Enumeration)]
#[repr(i32)]
pub enum RejectReason {
    Unspecified = 0,
    VersionMismatch = 1,
    AuthFailed = 2,
    Busy = 3,
    /// The initiator's static key is not the one pinned for the node id it claims.
    KeyRefused = 4,
    /// The handshake's frames are not in the protocol's order (the message says what was
    /// expected).
    Malformed = 5,
    /// This node writes a format the initiator said it cannot read (the message names it
    /// and the release to upgrade to).
    FeatureMissing = 6,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Reject {
    #[prost(enumeration = "RejectReason", tag = "1")]
    pub reason: i32,
    #[prost(string, tag = "2")]
    pub message: String,
    /// The responder's newest protocol version.
    #[prost(uint32, tag = "3")]
    pub protocol_version: u32,
    /// The responder's oldest protocol version; 0 (absent) from protocol-4 responders.
    #[prost(uint32, tag = "4")]
    pub oldest_protocol_version: u32,
    /// The responder's release; empty from protocol-4 responders.
    #[prost(string, tag = "5")]
    pub release: String,
}

/// Carried inside the Noise handshake messages, so only key holders read it.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct SessionHello {
    /// Empty for tools (the CLI) that are not nodes.
    #[prost(string, tag = "1")]
    pub node_id: String,
    /// Whether the node may be elected leader.
    #[prost(bool, tag = "2")]
    pub eligible: bool,
    /// The replica the node writes as now (empty for tools).
    #[prost(string, tag = "3")]
    pub replica: String,
    /// The collections the node replicates; empty: every collection.
    #[prost(string, repeated, tag = "4")]
    pub collections: Vec<String>,
    /// The protocol version the session runs at (the responder chose it; the initiator
    /// repeats it). 0 (absent) from protocol-4 nodes: the session runs at 4.
    #[prost(uint32, tag = "5")]
    pub protocol_version: u32,
    /// The sender's protocol range, repeated from its plaintext hello (initiator) or
    /// reject-less answer (responder) so that a range altered in transit is detected.
    #[prost(uint32, tag = "6")]
    pub oldest_protocol_version: u32,
    #[prost(uint32, tag = "7")]
    pub newest_protocol_version: u32,
    /// The sender's release.
    #[prost(string, tag = "8")]
    pub release: String,
    /// The formats the sender can read (docs/protocol.md, "Versions and upgrades").
    #[prost(string, repeated, tag = "9")]
    pub features: Vec<String>,
}

/// A discovery beacon (one UDP datagram). `tag` is a BLAKE2s MAC over the message
/// encoded with an empty `tag`, keyed by the cluster's discovery key.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Beacon {
    #[prost(string, tag = "1")]
    pub magic: String,
    #[prost(uint32, tag = "2")]
    pub protocol_version: u32,
    #[prost(string, tag = "3")]
    pub node_id: String,
    #[prost(uint32, tag = "4")]
    pub tcp_port: u32,
    #[prost(bool, tag = "5")]
    pub eligible: bool,
    /// The sender's clock, Unix milliseconds.
    #[prost(uint64, tag = "6")]
    pub sent_ms: u64,
    /// Counts the sender's beacons; with `sent_ms` it makes every beacon unique.
    #[prost(uint64, tag = "7")]
    pub counter: u64,
    #[prost(bytes = "vec", tag = "8")]
    pub tag: Vec<u8>,
}

// ---- Shared types ----

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Hlc {
    #[prost(uint64, tag = "1")]
    pub wall_ms: u64,
    #[prost(uint32, tag = "2")]
    pub counter: u32,
    /// The replica that issued the stamp (the field keeps its v1 name).
    #[prost(string, tag = "3")]
    pub node: String,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct VersionVectorEntry {
    #[prost(string, tag = "1")]
    pub origin: String,
    #[prost(uint64, tag = "2")]
    pub seq: u64,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct VersionVector {
    #[prost(message, repeated, tag = "1")]
    pub entries: Vec<VersionVectorEntry>,
}

/// An oplog entry; its stamp's node is the origin.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct OplogEntry {
    #[prost(string, tag = "1")]
    pub origin: String,
    #[prost(uint64, tag = "2")]
    pub seq: u64,
    #[prost(string, tag = "3")]
    pub collection: String,
    #[prost(string, tag = "4")]
    pub key: String,
    /// JSON text of a put; absent for a delete.
    #[prost(string, optional, tag = "5")]
    pub value: Option<String>,
    #[prost(uint64, tag = "6")]
    pub hlc_wall_ms: u64,
    #[prost(uint32, tag = "7")]
    pub hlc_counter: u32,
    /// The node whose replica `origin` is; empty in entries written before replica ids
    /// (their origin is the writer's node id).
    #[prost(string, tag = "8")]
    pub node: String,
    /// A write merged field by field (feature `field-merge`); `value` is then absent and
    /// this says what the entry does.
    #[prost(message, optional, tag = "9")]
    pub field_write: Option<FieldWrite>,
}

/// A write merged into its document field by field (docs/protocol.md, "Field entries").
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct FieldWrite {
    /// 1 put, 2 patch, 3 increment, 4 delete.
    #[prost(uint32, tag = "1")]
    pub kind: u32,
    /// JSON text: the document of a put, the patch object of a patch.
    #[prost(string, tag = "2")]
    pub json: String,
    /// The field an increment adds to, one name per part.
    #[prost(string, repeated, tag = "3")]
    pub path: Vec<String>,
    /// The amount an increment adds.
    #[prost(sint64, tag = "4")]
    pub by: i64,
    /// Of a put, patch or delete: the counters its writer had applied under the paths
    /// it sets.
    #[prost(message, repeated, tag = "5")]
    pub observed: Vec<ObservedCounter>,
}

/// A counter as a write's writer had applied it: each replica's increments.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ObservedCounter {
    /// The counter's field, one name per part.
    #[prost(string, repeated, tag = "1")]
    pub path: Vec<String>,
    #[prost(message, repeated, tag = "2")]
    pub tallies: Vec<CounterTally>,
}

/// One replica's increments of a counter: how many, and their sum.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct CounterTally {
    #[prost(string, tag = "1")]
    pub replica: String,
    #[prost(uint64, tag = "2")]
    pub count: u64,
    #[prost(sint64, tag = "3")]
    pub sum: i64,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Document {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
    #[prost(message, optional, tag = "3")]
    pub hlc: Option<Hlc>,
}

// ---- Requests ----

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Request {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(
        oneof = "request::Body",
        tags = "10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28"
    )]
    pub body: Option<request::Body>,
}

pub mod request {
    #[derive(Clone, PartialEq, ::prost::Oneof)]
    pub enum Body {
        #[prost(message, tag = "10")]
        Pull(super::PullRequest),
        #[prost(message, tag = "11")]
        Push(super::PushRequest),
        #[prost(message, tag = "12")]
        Put(super::PutRequest),
        #[prost(message, tag = "13")]
        Get(super::GetRequest),
        #[prost(message, tag = "14")]
        Delete(super::DeleteRequest),
        #[prost(message, tag = "15")]
        List(super::ListRequest),
        #[prost(message, tag = "16")]
        Status(super::StatusRequest),
        #[prost(message, tag = "17")]
        ListPeers(super::ListPeersRequest),
        #[prost(message, tag = "18")]
        AddPeer(super::AddPeerRequest),
        #[prost(message, tag = "19")]
        RemovePeer(super::RemovePeerRequest),
        #[prost(message, tag = "20")]
        Control(super::ControlRequest),
        #[prost(message, tag = "21")]
        RepinPeer(super::RepinPeerRequest),
        #[prost(message, tag = "22")]
        Changes(super::ChangesRequest),
        #[prost(message, tag = "23")]
        WriteBatch(super::WriteBatchRequest),
        #[prost(message, tag = "24")]
        Ping(super::PingRequest),
        #[prost(message, tag = "25")]
        Snapshot(super::SnapshotRequest),
        /// Tools only: forget a named feed consumer.
        #[prost(message, tag = "26")]
        ForgetConsumer(super::ForgetConsumerRequest),
        /// A patch or an increment (protocol 5).
        #[prost(message, tag = "27")]
        Edit(super::EditRequest),
        /// A query (protocol 5).
        #[prost(message, tag = "28")]
        Find(super::FindRequest),
    }
}

/// Documents of a collection that match a selector, a page at a time (protocol 5).
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct FindRequest {
    #[prost(string, tag = "1")]
    pub collection: String,
    /// The selector, JSON text (docs/protocol.md, "Queries").
    #[prost(string, tag = "2")]
    pub selector: String,
    /// Sort paths, each `PATH`, `PATH:asc` or `PATH:desc`; then by key.
    #[prost(string, repeated, tag = "3")]
    pub sort: Vec<String>,
    /// Results per page (0: 100).
    #[prost(uint32, tag = "4")]
    pub limit: u32,
    /// The cursor of the previous page (empty: the first page).
    #[prost(string, tag = "5")]
    pub after: String,
}

/// A page of a query's results.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct FindResponse {
    #[prost(message, repeated, tag = "1")]
    pub documents: Vec<Document>,
    /// Resumes after this page; empty when there is no more.
    #[prost(string, tag = "2")]
    pub next: String,
    /// How the node ran it (an index, or a scan of the collection).
    #[prost(string, tag = "3")]
    pub plan: String,
}

/// Forgets a named consumer of the change feed: it holds no delete back any more.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ForgetConsumerRequest {
    #[prost(string, tag = "1")]
    pub name: String,
}

/// Asks for a chunk of the node's documents (a snapshot: docs/compaction.md), in
/// `(collection, key)` order after the given position; without one, the first chunk, which
/// also carries the version vector the snapshot stands for. Nodes only.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct SnapshotRequest {
    /// Start after this position (both empty: the first chunk).
    #[prost(string, tag = "1")]
    pub after_collection: String,
    #[prost(string, tag = "2")]
    pub after_key: String,
    /// 0: the node's default; the node caps both.
    #[prost(uint32, tag = "3")]
    pub max_documents: u32,
    #[prost(uint32, tag = "4")]
    pub max_bytes: u32,
}

/// A document of a snapshot: a tombstone has no value.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct SnapshotDocument {
    #[prost(string, tag = "1")]
    pub collection: String,
    #[prost(string, tag = "2")]
    pub key: String,
    #[prost(string, optional, tag = "3")]
    pub value: Option<String>,
    /// The winning write's stamp; its replica is the entry's origin.
    #[prost(message, optional, tag = "4")]
    pub hlc: Option<Hlc>,
    /// The winning entry's sequence number (0: unknown).
    #[prost(uint64, tag = "5")]
    pub seq: u64,
    /// What the sender keeps to merge the document field by field (JSON, see
    /// docs/protocol.md "Field entries"); absent for a document only whole writes made.
    #[prost(string, optional, tag = "6")]
    pub field_state: Option<String>,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct SnapshotResponse {
    #[prost(message, repeated, tag = "1")]
    pub documents: Vec<SnapshotDocument>,
    /// What the snapshot stands for: in the first chunk only.
    #[prost(message, optional, tag = "2")]
    pub version_vector: Option<VersionVector>,
    #[prost(bool, tag = "3")]
    pub more: bool,
}

/// A keepalive on an idle session: answered at once with [`PongResponse`], touching
/// nothing, so a peer that cannot answer it in time is unreachable, not busy.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct PingRequest {}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct PongResponse {}

/// Asks for the node's changes after a position of its change feed (a long poll: with
/// none available, the node answers when one comes or after `wait_ms`).
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ChangesRequest {
    /// Only this collection's changes; empty: every collection.
    #[prost(string, tag = "1")]
    pub collection: String,
    /// Changes after this position; ignored with `from_end`.
    #[prost(uint64, tag = "2")]
    pub after: u64,
    /// 0: the node's default; the node caps it.
    #[prost(uint32, tag = "3")]
    pub limit: u32,
    /// How long to wait for a change when none is available; the node caps it.
    #[prost(uint32, tag = "4")]
    pub wait_ms: u32,
    /// Start after the feed's last position (only changes from now on).
    #[prost(bool, tag = "5")]
    pub from_end: bool,
    /// Start with the current state: every live document as a change at position 0,
    /// then the changes after the position the listing stands for.
    #[prost(bool, tag = "6")]
    pub current: bool,
    /// Continue a listing of the current state: the answer's `listing`, passed back.
    #[prost(message, optional, tag = "7")]
    pub listing: Option<FeedListing>,
    /// A named consumer: the node keeps its position. A request that names one
    /// acknowledges `after` (the consumer processed every change up to it).
    #[prost(string, tag = "8")]
    pub consumer: String,
    /// With `consumer`: start after the position the node keeps for it (with the current
    /// state first when it has none); `after` is ignored.
    #[prost(bool, tag = "9")]
    pub resume: bool,
}

/// Where a listing of the current state stands: the position it stands for, and the last
/// document it gave.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct FeedListing {
    #[prost(uint64, tag = "1")]
    pub position: u64,
    #[prost(string, tag = "2")]
    pub after_collection: String,
    #[prost(string, tag = "3")]
    pub after_key: String,
}

/// One write of a batch: a put with a value, a delete without.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct BatchWrite {
    #[prost(string, tag = "1")]
    pub collection: String,
    #[prost(string, tag = "2")]
    pub key: String,
    /// Absent (with no patch and no increment): a delete.
    #[prost(string, optional, tag = "3")]
    pub value: Option<String>,
    /// Protocol 5 on: a JSON Merge Patch instead of a value (sent only to nodes that speak
    /// 5: a protocol-4 node would read the write as a delete).
    #[prost(string, tag = "4")]
    pub patch: String,
    /// Protocol 5 on: an increment of the dotted path by `increment_by`.
    #[prost(string, tag = "5")]
    pub increment_path: String,
    #[prost(sint64, tag = "6")]
    pub increment_by: i64,
}

/// A patch or an increment of one document (protocol 5): exactly one of `patch` and
/// `increment_path`. Answered with a [`WriteResponse`].
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct EditRequest {
    #[prost(string, tag = "1")]
    pub collection: String,
    #[prost(string, tag = "2")]
    pub key: String,
    #[prost(string, tag = "3")]
    pub patch: String,
    #[prost(string, tag = "4")]
    pub increment_path: String,
    #[prost(sint64, tag = "5")]
    pub increment_by: i64,
}

/// Writes a batch in one transaction: all of it is stored, or nothing.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct WriteBatchRequest {
    #[prost(message, repeated, tag = "1")]
    pub writes: Vec<BatchWrite>,
}

/// Forgets the key pinned for a node id, so its next session pins the key it presents
/// (tools only).
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct RepinPeerRequest {
    #[prost(string, tag = "1")]
    pub node_id: String,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct PullRequest {
    #[prost(message, optional, tag = "1")]
    pub have: Option<VersionVector>,
    #[prost(uint32, tag = "2")]
    pub max_entries: u32,
    #[prost(uint32, tag = "3")]
    pub max_bytes: u32,
    /// Digest of the requester's floors; `have` omits origins at their floor only when
    /// the requester knows the responder's floors have the same digest.
    #[prost(bytes = "vec", tag = "4")]
    pub floors: Vec<u8>,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct PushRequest {
    #[prost(message, repeated, tag = "1")]
    pub entries: Vec<OplogEntry>,
    /// Digest of the sender's floors (see `PullRequest::floors`).
    #[prost(bytes = "vec", tag = "2")]
    pub floors: Vec<u8>,
    /// What the entries speak for (docs/protocol.md, "Collections").
    #[prost(message, repeated, tag = "3")]
    pub coverage: Vec<CoverageEntry>,
}

/// For `origin`, the message holds every entry with a sequence number in
/// `after + 1 ..= upto` of the collections the receiver replicates.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct CoverageEntry {
    #[prost(string, tag = "1")]
    pub origin: String,
    #[prost(uint64, tag = "2")]
    pub after: u64,
    #[prost(uint64, tag = "3")]
    pub upto: u64,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct PutRequest {
    #[prost(string, tag = "1")]
    pub collection: String,
    #[prost(string, tag = "2")]
    pub key: String,
    #[prost(string, tag = "3")]
    pub value: String,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct GetRequest {
    #[prost(string, tag = "1")]
    pub collection: String,
    #[prost(string, tag = "2")]
    pub key: String,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct DeleteRequest {
    #[prost(string, tag = "1")]
    pub collection: String,
    #[prost(string, tag = "2")]
    pub key: String,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ListRequest {
    #[prost(string, tag = "1")]
    pub collection: String,
    /// Start after this key; empty for the first page.
    #[prost(string, tag = "2")]
    pub after_key: String,
    #[prost(uint32, tag = "3")]
    pub limit: u32,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct StatusRequest {}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ListPeersRequest {}

/// Saves a known peer (as added at run time); the answer is the resulting list.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct AddPeerRequest {
    #[prost(string, tag = "1")]
    pub node_id: String,
    #[prost(string, tag = "2")]
    pub address: String,
    /// `static` or `cloud`.
    #[prost(string, tag = "3")]
    pub peer_type: String,
    #[prost(bool, tag = "4")]
    pub disabled: bool,
}

/// Removes a known peer; the answer is the resulting list.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct RemovePeerRequest {
    #[prost(string, tag = "1")]
    pub node_id: String,
}

// ---- The control plane (cluster membership); see docs/protocol.md, "Control plane" ----

/// A control-plane call. Tag 1 was version 2's JSON payload: never reuse it.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ControlRequest {
    #[prost(oneof = "control_request::Call", tags = "2, 3, 4, 5")]
    pub call: Option<control_request::Call>,
}

pub mod control_request {
    #[derive(Clone, PartialEq, ::prost::Oneof)]
    pub enum Call {
        /// OmniPaxos messages from a member (nodes only).
        #[prost(message, tag = "2")]
        Frames(super::ControlFrames),
        /// An invitation into a configuration (nodes only).
        #[prost(message, tag = "3")]
        Offer(super::ControlOffer),
        /// The control plane's state (anyone).
        #[prost(message, tag = "4")]
        Status(super::ClusterStatusRequest),
        /// Replace the running configuration's members (tools only).
        #[prost(message, tag = "5")]
        Reconfigure(super::ReconfigureRequest),
    }
}

/// How [`ControlFrame::message`] is encoded: the serde JSON encoding of an `omnipaxos`
/// 0.2 `Message` of control entries. A receiver refuses encodings it does not know.
pub const OMNIPAXOS_0_2_JSON: u32 = 1;

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ControlFrames {
    #[prost(message, repeated, tag = "1")]
    pub frames: Vec<ControlFrame>,
}

/// One OmniPaxos message of one configuration's instance, opaque to the transport.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ControlFrame {
    #[prost(uint32, tag = "1")]
    pub configuration_id: u32,
    /// See [`OMNIPAXOS_0_2_JSON`].
    #[prost(uint32, tag = "2")]
    pub encoding: u32,
    #[prost(bytes = "vec", tag = "3")]
    pub message: Vec<u8>,
}

/// A decided control-plane log entry.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ControlEntry {
    /// Who proposed it, and its number among that proposer's proposals.
    #[prost(string, tag = "1")]
    pub proposer: String,
    #[prost(uint64, tag = "2")]
    pub proposal: u64,
    #[prost(oneof = "control_entry::Body", tags = "3, 4")]
    pub body: Option<control_entry::Body>,
}

pub mod control_entry {
    #[derive(Clone, PartialEq, ::prost::Oneof)]
    pub enum Body {
        /// An entry for the user of the control plane, opaque here.
        #[prost(bytes = "vec", tag = "3")]
        Data(Vec<u8>),
        /// Seals the configuration: `next` follows it.
        #[prost(message, tag = "4")]
        Seal(super::ControlSeal),
    }
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ControlSeal {
    #[prost(message, optional, tag = "1")]
    pub next: Option<ClusterConfiguration>,
    #[prost(bytes = "vec", optional, tag = "2")]
    pub metadata: Option<Vec<u8>>,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ClusterConfiguration {
    #[prost(uint32, tag = "1")]
    pub configuration_id: u32,
    /// In pid order (node id order), pids 1, 2, 3, …
    #[prost(message, repeated, tag = "2")]
    pub members: Vec<ClusterMember>,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ClusterMember {
    #[prost(string, tag = "1")]
    pub node_id: String,
    #[prost(uint64, tag = "2")]
    pub pid: u64,
    #[prost(string, tag = "3")]
    pub address: String,
    /// 64 hex digits; empty until the proposer had contact with the member.
    #[prost(string, tag = "4")]
    pub node_key: String,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ControlOffer {
    #[prost(message, optional, tag = "1")]
    pub configuration: Option<ClusterConfiguration>,
    /// The decided log of the configuration before it, ending with the seal naming it.
    #[prost(message, repeated, tag = "2")]
    pub sealed_log: Vec<ControlEntry>,
    /// Members that departed configurations the inviter knows.
    #[prost(message, repeated, tag = "3")]
    pub departed: Vec<DepartedMember>,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct DepartedMember {
    #[prost(string, tag = "1")]
    pub node_id: String,
    /// The last configuration it was a member of.
    #[prost(uint32, tag = "2")]
    pub last_configuration_id: u32,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ClusterStatusRequest {}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ReconfigureRequest {
    #[prost(string, repeated, tag = "1")]
    pub members: Vec<String>,
}

// ---- Responses ----

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Response {
    /// The id of the request answered.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(
        oneof = "response::Body",
        tags = "2, 10, 11, 12, 13, 15, 16, 17, 20, 21, 22, 23, 24, 25, 26"
    )]
    pub body: Option<response::Body>,
}

pub mod response {
    #[derive(Clone, PartialEq, ::prost::Oneof)]
    pub enum Body {
        #[prost(message, tag = "2")]
        Error(super::ErrorResponse),
        /// Boxed, like `Status`: large enough to make every answer as large.
        #[prost(message, boxed, tag = "10")]
        Pull(Box<super::PullResponse>),
        #[prost(message, tag = "11")]
        Push(super::PushResponse),
        #[prost(message, tag = "12")]
        Written(super::WriteResponse),
        #[prost(message, tag = "13")]
        Get(super::GetResponse),
        #[prost(message, tag = "15")]
        List(super::ListResponse),
        /// Boxed: by far the largest answer, it would make every answer as large.
        #[prost(message, boxed, tag = "16")]
        Status(Box<super::StatusResponse>),
        #[prost(message, tag = "17")]
        Peers(super::PeersResponse),
        #[prost(message, tag = "20")]
        Control(super::ControlResponse),
        #[prost(message, tag = "21")]
        Changes(super::ChangesResponse),
        #[prost(message, tag = "22")]
        WrittenBatch(super::WriteBatchResponse),
        #[prost(message, tag = "23")]
        Pong(super::PongResponse),
        #[prost(message, tag = "24")]
        Snapshot(super::SnapshotResponse),
        /// The change feed's state (answers `forget_consumer`).
        #[prost(message, tag = "25")]
        Feed(super::FeedStatus),
        #[prost(message, tag = "26")]
        Found(super::FindResponse),
    }
}

/// One change of the feed.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Change {
    #[prost(uint64, tag = "1")]
    pub position: u64,
    #[prost(message, optional, tag = "2")]
    pub entry: Option<OplogEntry>,
    /// The entry was merged field by field: `document` and `paths` say what it left.
    #[prost(bool, tag = "3")]
    pub merged: bool,
    /// The document a merged entry changed, as the responder holds it when it answers
    /// (JSON text); absent when it does not exist.
    #[prost(string, optional, tag = "4")]
    pub document: Option<String>,
    /// The dotted paths a merged entry changed (`""`: the whole document).
    #[prost(string, repeated, tag = "5")]
    pub paths: Vec<String>,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ChangesResponse {
    #[prost(message, repeated, tag = "1")]
    pub changes: Vec<Change>,
    /// Ask again after this position: it is past every change read, matching or not.
    /// 0 while a listing of the current state goes on.
    #[prost(uint64, tag = "2")]
    pub resume_after: u64,
    /// Present while a listing of the current state goes on: pass it back to continue.
    #[prost(message, optional, tag = "3")]
    pub listing: Option<FeedListing>,
    /// This answer completes a listing of the current state: the changes after
    /// `resume_after` follow.
    #[prost(bool, tag = "4")]
    pub synced: bool,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct WriteBatchResponse {
    /// Writes stored.
    #[prost(uint64, tag = "1")]
    pub written: u64,
    /// The sequence number of the batch's last write (its replica's).
    #[prost(uint64, tag = "2")]
    pub last_seq: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, ::prost::Enumeration)]
#[repr(i32)]
pub enum ErrorCode {
    Unspecified = 0,
    /// The request was malformed or named invalid data; nothing was stored.
    InvalidRequest = 1,
    /// The node's storage failed.
    Storage = 2,
    /// The request took longer than the node's per-request limit.
    Timeout = 3,
    /// The node is stopping or reopening its database.
    Unavailable = 4,
    /// The request is not allowed for this session (e.g. a push from a tool).
    Forbidden = 5,
    /// The node is not a member of its cluster (it retired, or waits to be admitted) and
    /// refuses writes and hand-overs; reads still work.
    NotAMember = 6,
    /// The change feed no longer holds everything after the position asked for (a delete
    /// left it past the feed retention, or a snapshot replaced documents): resume after
    /// `ErrorResponse::feed_oldest` or later, or resync from the current state.
    FeedCompacted = 7,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ErrorResponse {
    #[prost(enumeration = "ErrorCode", tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
    /// With `FEED_COMPACTED`: the oldest position the feed can resume after.
    #[prost(uint64, tag = "3")]
    pub feed_oldest: u64,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct PullResponse {
    #[prost(message, repeated, tag = "1")]
    pub entries: Vec<OplogEntry>,
    #[prost(bool, tag = "2")]
    pub more: bool,
    /// The responder's version vector when the page was read.
    #[prost(message, optional, tag = "3")]
    pub holder: Option<VersionVector>,
    /// Set when the responder sees another live process under the puller's node id.
    #[prost(string, tag = "4")]
    pub notice: String,
    /// Digest of the responder's floors; when it equals the requester's, `holder` omits
    /// origins at their floor.
    #[prost(bytes = "vec", tag = "5")]
    pub floors: Vec<u8>,
    /// What the entries speak for (docs/protocol.md, "Collections").
    #[prost(message, repeated, tag = "6")]
    pub coverage: Vec<CoverageEntry>,
    /// The puller lacks entries the responder has collected: it must take a snapshot
    /// (`SnapshotRequest`) first. The page is empty.
    #[prost(bool, tag = "7")]
    pub behind: bool,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct PushResponse {
    #[prost(uint64, tag = "1")]
    pub applied: u64,
    #[prost(uint64, tag = "2")]
    pub duplicates: u64,
    #[prost(uint64, tag = "3")]
    pub out_of_order: u64,
    /// The receiver's version vector after applying.
    #[prost(message, optional, tag = "4")]
    pub holder: Option<VersionVector>,
    /// Digest of the receiver's floors; when it equals the sender's, `holder` omits
    /// origins at their floor.
    #[prost(bytes = "vec", tag = "5")]
    pub floors: Vec<u8>,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct WriteResponse {
    #[prost(uint64, tag = "1")]
    pub seq: u64,
    #[prost(message, optional, tag = "2")]
    pub hlc: Option<Hlc>,
    /// A patch or an increment was resolved on the node into the whole document it made,
    /// and travels to peers as a put of it (field-level merge is not in force).
    #[prost(bool, tag = "3")]
    pub whole_document: bool,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct GetResponse {
    #[prost(message, optional, tag = "1")]
    pub document: Option<Document>,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ListResponse {
    #[prost(message, repeated, tag = "1")]
    pub documents: Vec<Document>,
    /// True when more documents follow the last one.
    #[prost(bool, tag = "2")]
    pub more: bool,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct PeerStatus {
    #[prost(string, tag = "1")]
    pub node_id: String,
    #[prost(string, tag = "2")]
    pub address: String,
    /// `static`, `cloud`, `lan`, or `inbound` for a peer known only by its sessions.
    #[prost(string, tag = "3")]
    pub peer_type: String,
    #[prost(bool, tag = "4")]
    pub enabled: bool,
    /// Unix milliseconds of the last successful exchange of data; 0 when never.
    #[prost(uint64, tag = "5")]
    pub last_exchange_ms: u64,
    /// The last error talking to the peer, if the last attempt failed.
    #[prost(string, tag = "6")]
    pub last_error: String,
    /// The fingerprint of the key pinned for this node id; empty before first contact.
    #[prost(string, tag = "7")]
    pub key_fingerprint: String,
    /// Entries the responder holds that the peer had not reported holding at its last
    /// exchange; absent before the first.
    #[prost(uint64, optional, tag = "8")]
    pub lag_entries: Option<u64>,
    /// The protocol of the peer's last session with the responder (0: not heard from
    /// since the responder started), its release and the formats it reads.
    #[prost(uint32, tag = "9")]
    pub protocol_version: u32,
    #[prost(string, tag = "10")]
    pub release: String,
    #[prost(string, repeated, tag = "11")]
    pub features: Vec<String>,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct StatusResponse {
    #[prost(string, tag = "1")]
    pub node_id: String,
    #[prost(uint32, tag = "2")]
    pub tcp_port: u32,
    #[prost(string, tag = "3")]
    pub bind_address: String,
    #[prost(uint64, tag = "4")]
    pub documents: u64,
    #[prost(uint64, tag = "5")]
    pub oplog_entries: u64,
    #[prost(message, optional, tag = "6")]
    pub version_vector: Option<VersionVector>,
    #[prost(message, repeated, tag = "7")]
    pub peers: Vec<PeerStatus>,
    #[prost(uint32, tag = "8")]
    pub protocol_version: u32,
    /// The leader this node sees (empty when none).
    #[prost(string, tag = "9")]
    pub leader: String,
    #[prost(bool, tag = "10")]
    pub is_leader: bool,
    /// `host:port` the configuration asks for while the node cannot bind it (it retries,
    /// and listens on `bind_address:tcp_port` meanwhile); empty otherwise.
    #[prost(string, tag = "11")]
    pub wanted_listen: String,
    /// The replica this node writes as now (new at every start; see docs/protocol.md).
    #[prost(string, tag = "12")]
    pub replica: String,
    /// The node's public key (64 hex digits) and its fingerprint.
    #[prost(string, tag = "13")]
    pub node_key: String,
    #[prost(string, tag = "14")]
    pub key_fingerprint: String,
    /// Node ids under which two live processes were seen (here, or as a peer told us).
    #[prost(string, repeated, tag = "15")]
    pub duplicates: Vec<String>,
    /// Replicas folded into the floors, and the entries of the version vector left over:
    /// what a peer with the same floors exchanges.
    #[prost(uint64, tag = "16")]
    pub folded_replicas: u64,
    #[prost(uint64, tag = "17")]
    pub live_version_vector_entries: u64,
    #[prost(message, optional, tag = "18")]
    pub compaction: Option<CompactionStatus>,
    #[prost(message, optional, tag = "19")]
    pub feed: Option<FeedStatus>,
    /// The node's release; with `protocol_version` (its newest) and this, the protocols
    /// it speaks.
    #[prost(string, tag = "20")]
    pub release: String,
    #[prost(uint32, tag = "21")]
    pub oldest_protocol_version: u32,
    #[prost(message, optional, tag = "22")]
    pub features: Option<FeatureStatus>,
    /// Patches and increments are resolved on the node that takes them into whole
    /// documents (field-level merge is not in force).
    #[prost(bool, tag = "23")]
    pub whole_document_edits: bool,
    /// The indexes the node keeps (local: every node builds its own).
    #[prost(message, repeated, tag = "24")]
    pub indexes: Vec<IndexState>,
}

/// An index a node keeps, for `status` and `cbddc index list`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct IndexState {
    #[prost(string, tag = "1")]
    pub collection: String,
    #[prost(string, repeated, tag = "2")]
    pub fields: Vec<String>,
    /// Entries held.
    #[prost(uint64, tag = "3")]
    pub entries: u64,
    /// Being built: queries do not use it yet.
    #[prost(bool, tag = "4")]
    pub building: bool,
    /// While building: documents read, of those the collection held when it started.
    #[prost(uint64, tag = "5")]
    pub built: u64,
    #[prost(uint64, tag = "6")]
    pub to_build: u64,
    /// Its entries keep a copy of their documents.
    #[prost(bool, tag = "7")]
    pub covering: bool,
    /// Writes to its collection not yet folded into its entries.
    #[prost(uint64, tag = "8")]
    pub pending: u64,
}

/// The node's feature level: the formats it writes, and those held back (and by whom).
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct FeatureStatus {
    #[prost(string, repeated, tag = "1")]
    pub in_force: Vec<String>,
    #[prost(message, repeated, tag = "2")]
    pub pending: Vec<PendingFeature>,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct PendingFeature {
    #[prost(string, tag = "1")]
    pub feature: String,
    #[prost(message, repeated, tag = "2")]
    pub held_back_by: Vec<FeatureHolder>,
}

/// A peer holding a feature back, with its release as it said it (empty: not heard
/// from since the node started).
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct FeatureHolder {
    #[prost(string, tag = "1")]
    pub node_id: String,
    #[prost(string, tag = "2")]
    pub release: String,
}

/// The node's oplog compaction, for `status`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct CompactionStatus {
    /// A peer silent this long no longer holds entries back.
    #[prost(uint64, tag = "1")]
    pub retention_ms: u64,
    /// Superseded entries and tombstones waiting for peers' acknowledgements.
    #[prost(uint64, tag = "2")]
    pub collectable: u64,
    /// Entries and tombstones removed over the database's life.
    #[prost(uint64, tag = "3")]
    pub collected: u64,
    /// Peers holding entries back now.
    #[prost(uint64, tag = "4")]
    pub holding_back: u64,
    /// The peer with the oldest acknowledgement among those lacking something this node
    /// holds (empty: none), and its age.
    #[prost(string, tag = "5")]
    pub oldest_unacknowledged_peer: String,
    #[prost(uint64, tag = "6")]
    pub oldest_unacknowledged_age_ms: u64,
    /// A snapshot being received from this peer (empty: none), and its documents staged.
    #[prost(string, tag = "7")]
    pub snapshot_from: String,
    #[prost(uint64, tag = "8")]
    pub snapshot_staged: u64,
    /// Documents merged field by field that keep a field state.
    #[prost(uint64, tag = "9")]
    pub field_states: u64,
}

/// The change feed: what it keeps for its consumers, and its named consumers.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct FeedStatus {
    /// How long a delete stays in the feed after compaction collected its tombstone.
    #[prost(uint64, tag = "1")]
    pub retention_ms: u64,
    /// Deletes kept for consumers (apart from the oplog).
    #[prost(uint64, tag = "2")]
    pub feed_entries: u64,
    /// The oldest position a consumer can resume after.
    #[prost(uint64, tag = "3")]
    pub oldest_position: u64,
    /// The feed's last position.
    #[prost(uint64, tag = "4")]
    pub last_position: u64,
    #[prost(message, repeated, tag = "5")]
    pub consumers: Vec<FeedConsumerStatus>,
}

/// A named consumer of the change feed.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct FeedConsumerStatus {
    #[prost(string, tag = "1")]
    pub name: String,
    /// The position it acknowledged.
    #[prost(uint64, tag = "2")]
    pub position: u64,
    /// Positions after it: how far behind the feed it is.
    #[prost(uint64, tag = "3")]
    pub lag: u64,
    /// Time since it acknowledged last.
    #[prost(uint64, tag = "4")]
    pub acked_age_ms: u64,
    /// It still holds deletes back (it acknowledged within the feed retention).
    #[prost(bool, tag = "5")]
    pub holding_back: bool,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct PeersResponse {
    #[prost(message, repeated, tag = "1")]
    pub peers: Vec<PeerStatus>,
}
