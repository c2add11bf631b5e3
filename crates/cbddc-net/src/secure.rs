//! Framing and the Noise-secured session every connection runs.
//!
//! Transport frame: `u16` big-endian length (1..=65535) + bytes. Before the handshake the
//! bytes are a plaintext [`proto::HandshakeFrame`]; after it each frame is one Noise
//! transport message, and the decrypted bytes form a stream of application messages,
//! each a `u32` big-endian length (at most [`MAX_MESSAGE_BYTES`]) + a protobuf message.

use crate::identity::{LocalIdentity, PublicKey};
use crate::meter::NetMeter;
use crate::{NetError, proto};
use blake2::{Blake2s256, Digest};
use cbddc_core::NodeId;
use prost::Message;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub use crate::version::PROTOCOL_VERSION;
use crate::version::{PeerBuild, ProtocolRange, release_or_inferred};
/// Identifies a CBDDC hello.
pub const MAGIC: &str = "cbddc";
/// Largest application message, in bytes; larger announcements close the session.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
const MAX_FRAME: usize = u16::MAX as usize;
const AEAD_TAG: usize = 16;
const MAX_CHUNK: usize = MAX_FRAME - AEAD_TAG;

/// The 32-byte pre-shared key derived from a cluster's shared secret. The secret itself
/// never travels: the handshake only proves both sides derived the same key.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterKey([u8; 32]);

impl ClusterKey {
    /// Derives the key from the cluster secret (BLAKE2s with a fixed context string).
    pub fn derive(secret: &str) -> Self {
        Self(derive_key(b"cbddc cluster key v1\0", secret))
    }
}

/// BLAKE2s-256 of `context || secret`: one key per purpose from one cluster secret.
pub(crate) fn derive_key(context: &[u8], secret: &str) -> [u8; 32] {
    let digest = Blake2s256::new()
        .chain_update(context)
        .chain_update(secret.as_bytes())
        .finalize();
    let mut key = [0u8; 32];
    key.copy_from_slice(&digest);
    key
}

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey(…)")
    }
}

/// A builder for the handshake's pattern (no keys set yet).
fn noise(key: &ClusterKey) -> Result<snow::Builder<'_>, NetError> {
    crate::noise::builder()?
        .psk(0, &key.0)
        .map_err(|e| NetError::Handshake {
            detail: format!("noise setup: {e}"),
        })
}

async fn read_frame<S: AsyncRead + Unpin>(io: &mut S, buf: &mut Vec<u8>) -> Result<(), NetError> {
    let mut len = [0u8; 2];
    match io.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(NetError::Closed),
        Err(e) => return Err(e.into()),
    }
    let len = u16::from_be_bytes(len) as usize;
    if len == 0 {
        return Err(NetError::Malformed {
            detail: "an empty frame".into(),
        });
    }
    buf.resize(len, 0);
    match io.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(NetError::Malformed {
            detail: format!("a frame announced {len} bytes and the connection ended first"),
        }),
        Err(e) => Err(e.into()),
    }
}

fn push_frame(out: &mut Vec<u8>, bytes: &[u8]) {
    // Callers never pass more than MAX_FRAME bytes.
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
}

async fn write_handshake<S: AsyncWrite + Unpin>(
    io: &mut S,
    frames: &[proto::HandshakeFrame],
) -> Result<(), NetError> {
    let mut out = Vec::new();
    for frame in frames {
        push_frame(&mut out, &frame.encode_to_vec());
    }
    io.write_all(&out).await?;
    io.flush().await?;
    Ok(())
}

async fn read_handshake<S: AsyncRead + Unpin>(
    io: &mut S,
) -> Result<proto::handshake_frame::Kind, NetError> {
    let mut buf = Vec::new();
    read_frame(io, &mut buf).await?;
    proto::HandshakeFrame::decode(buf.as_slice())
        .ok()
        .and_then(|f| f.kind)
        .ok_or_else(|| NetError::Handshake {
            detail: "the peer sent something that is not a CBDDC handshake".into(),
        })
}

fn frame(kind: proto::handshake_frame::Kind) -> proto::HandshakeFrame {
    proto::HandshakeFrame { kind: Some(kind) }
}

fn reject(
    local: &crate::version::Versions,
    reason: proto::RejectReason,
    message: &str,
) -> proto::HandshakeFrame {
    frame(proto::handshake_frame::Kind::Reject(proto::Reject {
        reason: reason as i32,
        message: message.to_string(),
        protocol_version: local.protocols.newest(),
        oldest_protocol_version: local.protocols.oldest(),
        release: local.release.clone(),
    }))
}

/// Who is on the other end, as its handshake proved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    /// Its node id.
    pub node_id: NodeId,
    /// Whether it may be elected leader.
    pub eligible: bool,
    /// The static key it proved to hold.
    pub key: PublicKey,
    /// The replica it writes as now, if it said.
    pub replica: Option<cbddc_core::ReplicaId>,
    /// The collections it replicates.
    pub interest: cbddc_core::Interest,
    /// The protocol the session runs at, its release and the formats it reads.
    pub build: PeerBuild,
}

fn hello_payload(local: &LocalIdentity, eligible: bool, protocol: u32) -> Vec<u8> {
    proto::SessionHello {
        node_id: local
            .node_id
            .as_ref()
            .map(NodeId::to_string)
            .unwrap_or_default(),
        eligible,
        replica: local
            .replica
            .as_ref()
            .map(|r| r.to_string())
            .unwrap_or_default(),
        collections: crate::convert::interest_to_wire(&local.interest),
        protocol_version: protocol,
        oldest_protocol_version: local.versions.protocols.oldest(),
        newest_protocol_version: local.versions.protocols.newest(),
        release: local.versions.release.clone(),
        features: local.versions.features.iter().cloned().collect(),
    }
    .encode_to_vec()
}

fn session_hello(payload: &[u8]) -> Result<proto::SessionHello, NetError> {
    proto::SessionHello::decode(payload).map_err(|e| NetError::Handshake {
        detail: format!("session hello: {e}"),
    })
}

/// The range a session hello repeats, if it does (protocol-4 nodes do not).
fn repeated_range(hello: &proto::SessionHello) -> Option<ProtocolRange> {
    (hello.newest_protocol_version != 0)
        .then(|| ProtocolRange::said(hello.oldest_protocol_version, hello.newest_protocol_version))
        .flatten()
}

fn altered_in_transit(what: &str) -> NetError {
    NetError::Handshake {
        detail: format!(
            "{what}: the plaintext hello was altered in transit (or the peer is broken); the session is refused"
        ),
    }
}

fn session_node(
    hello: proto::SessionHello,
    key: PublicKey,
    protocol: u32,
    range: &ProtocolRange,
) -> Result<Option<Remote>, NetError> {
    let build = PeerBuild {
        protocol,
        release: release_or_inferred(&hello.release, range),
        features: hello.features.into_iter().collect(),
    };
    if hello.node_id.is_empty() {
        return Ok(None);
    }
    let node_id = NodeId::new(hello.node_id).map_err(|e| NetError::Handshake {
        detail: format!("session hello: {e}"),
    })?;
    let replica = if hello.replica.is_empty() {
        None
    } else {
        Some(
            cbddc_core::ReplicaId::new(hello.replica).map_err(|e| NetError::Handshake {
                detail: format!("session hello: {e}"),
            })?,
        )
    };
    let interest =
        crate::convert::interest_from_wire(hello.collections).map_err(|e| NetError::Handshake {
            detail: format!("session hello: {e}"),
        })?;
    Ok(Some(Remote {
        node_id,
        eligible: hello.eligible,
        key,
        replica,
        interest,
        build,
    }))
}

fn remote_static(hs: &snow::HandshakeState) -> Result<PublicKey, NetError> {
    hs.get_remote_static()
        .ok_or_else(|| NetError::Handshake {
            detail: "the peer presented no static key".into(),
        })
        .and_then(PublicKey::from_bytes)
}

fn noise_error(e: snow::Error) -> NetError {
    NetError::Handshake {
        detail: e.to_string(),
    }
}

/// Runs the initiator side of the handshake as `local` (see docs/protocol.md): proves
/// the cluster key and our static key, checks the responder's node id and key with our
/// verifier, and returns the session and the responder.
pub async fn initiate<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    key: &ClusterKey,
    local: &LocalIdentity,
    eligible: bool,
    peer: &str,
) -> Result<(SecureStream<S>, Remote), NetError> {
    let mut hs = noise(key)?
        .local_private_key(local.key.private())
        .and_then(|b| b.build_initiator())
        .map_err(noise_error)?;
    let mut buf = vec![0u8; MAX_FRAME];
    // -> psk, e
    let n = hs.write_message(&[], &mut buf).map_err(noise_error)?;
    let ours = local.versions.protocols;
    let hello = proto::Hello {
        magic: MAGIC.into(),
        protocol_version: ours.oldest(),
        newest_protocol_version: ours.newest(),
        release: local.versions.release.clone(),
    };
    write_handshake(
        &mut io,
        &[
            frame(proto::handshake_frame::Kind::Hello(hello)),
            frame(proto::handshake_frame::Kind::Noise(buf[..n].to_vec())),
        ],
    )
    .await?;
    // <- e, ee, s, es: the responder's hello
    let message = noise_answer(&mut io, peer, local).await?;
    let mut payload = vec![0u8; MAX_FRAME];
    // A responder that cannot produce a valid answer does not hold the key.
    let n = hs
        .read_message(&message, &mut payload)
        .map_err(|_| NetError::WrongClusterKey {
            peer: peer.to_string(),
        })?;
    let answer = session_hello(&payload[..n])?;
    // A protocol-4 responder accepted our oldest version, the only one it speaks, and
    // says neither the version nor its range.
    let protocol = match answer.protocol_version {
        0 => ours.oldest(),
        chosen => chosen,
    };
    let theirs = repeated_range(&answer).unwrap_or(ProtocolRange::answered(protocol, protocol));
    if ours.highest_common(&theirs) != Some(protocol) {
        return Err(altered_in_transit(&format!(
            "{peer} chose protocol {protocol} where both sides speak {theirs} and {ours}"
        )));
    }
    let remote =
        session_node(answer, remote_static(&hs)?, protocol, &theirs)?.ok_or_else(|| {
            NetError::Handshake {
                detail: "the responder did not name its node id".into(),
            }
        })?;
    if let Some(verifier) = &local.verifier {
        verifier
            .verify(&remote.node_id, &remote.key)
            .await
            .map_err(|message| NetError::KeyRefused { message })?;
    }
    if let Some(gate) = &local.versions.gate {
        gate.admit(&remote.node_id, &remote.build)
            .map_err(|message| NetError::FeatureMissing { message })?;
    }
    // -> s, se: our hello
    send_hello(&mut io, &mut hs, local, eligible, protocol, &mut buf).await?;
    let mut transport = hs.into_transport_mode().map_err(noise_error)?;
    // The responder confirms it accepted our key with an empty transport message.
    let confirmation = noise_answer(&mut io, peer, local).await?;
    transport
        .read_message(&confirmation, &mut payload)
        .map_err(|_| NetError::Handshake {
            detail: format!("{peer} sent a confirmation that does not authenticate"),
        })?;
    Ok((
        SecureStream::new(io, transport).metered(local.meter.clone()),
        remote,
    ))
}

/// Reads the next handshake frame, which must be a Noise message; a reject becomes its
/// typed error.
async fn noise_answer<S: AsyncRead + Unpin>(
    io: &mut S,
    peer: &str,
    local: &LocalIdentity,
) -> Result<Vec<u8>, NetError> {
    let answer = match read_handshake(io).await {
        Err(NetError::Closed) => {
            return Err(NetError::Handshake {
                detail: format!("{peer} closed the connection during the handshake"),
            });
        }
        other => other?,
    };
    match answer {
        proto::handshake_frame::Kind::Noise(message) => Ok(message),
        proto::handshake_frame::Kind::Reject(r) => {
            Err(match proto::RejectReason::try_from(r.reason) {
                Ok(proto::RejectReason::AuthFailed) => NetError::WrongClusterKey {
                    peer: peer.to_string(),
                },
                Ok(proto::RejectReason::VersionMismatch) => {
                    let theirs =
                        ProtocolRange::answered(r.oldest_protocol_version, r.protocol_version);
                    NetError::VersionMismatch {
                        ours: local.versions.protocols,
                        our_release: local.versions.release.clone(),
                        their_release: release_or_inferred(&r.release, &theirs),
                        theirs,
                    }
                }
                Ok(proto::RejectReason::FeatureMissing) => NetError::FeatureMissing {
                    message: format!("{peer} refused the session: {}", r.message),
                },
                Ok(proto::RejectReason::Busy) => NetError::Busy,
                Ok(proto::RejectReason::KeyRefused) => NetError::KeyRefused {
                    message: format!("{peer} refused our node key: {}", r.message),
                },
                _ => NetError::Handshake { detail: r.message },
            })
        }
        proto::handshake_frame::Kind::Hello(_) => Err(NetError::Handshake {
            detail: "the peer answered a hello with a hello".into(),
        }),
    }
}

/// Sends our `SessionHello` as the next Noise handshake message.
async fn send_hello<S: AsyncWrite + Unpin>(
    io: &mut S,
    hs: &mut snow::HandshakeState,
    local: &LocalIdentity,
    eligible: bool,
    protocol: u32,
    buf: &mut [u8],
) -> Result<(), NetError> {
    let n = hs
        .write_message(&hello_payload(local, eligible, protocol), buf)
        .map_err(noise_error)?;
    write_handshake(
        io,
        &[frame(proto::handshake_frame::Kind::Noise(
            buf[..n].to_vec(),
        ))],
    )
    .await
}

/// Reads the initiator's next handshake frame, which must be a Noise message.
async fn expect_noise<S: AsyncRead + Unpin>(io: &mut S, which: &str) -> Result<Vec<u8>, NetError> {
    match read_handshake(io).await? {
        proto::handshake_frame::Kind::Noise(message) => Ok(message),
        _ => Err(NetError::Handshake {
            detail: format!("the {which} frame is not a Noise message"),
        }),
    }
}

/// Runs the responder side of the handshake as `local` (whose node id it needs).
/// Returns the session and the initiator (`None` for tools such as the CLI), whose node
/// id and key our verifier accepted.
pub async fn respond<S: AsyncRead + AsyncWrite + Unpin>(
    io: S,
    key: &ClusterKey,
    local: &LocalIdentity,
    eligible: bool,
) -> Result<(SecureStream<S>, Option<Remote>), NetError> {
    respond_telling(io, key, local, eligible, || {}).await
}

/// Like [`respond`], calling `key_proved` once the initiator has proved the cluster key.
pub(crate) async fn respond_telling<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    key: &ClusterKey,
    local: &LocalIdentity,
    eligible: bool,
    key_proved: impl FnOnce(),
) -> Result<(SecureStream<S>, Option<Remote>), NetError> {
    let hello = match read_handshake(&mut io).await? {
        proto::handshake_frame::Kind::Hello(hello) => hello,
        _ => {
            // Most likely `hello` and `noise` merged into one frame (a oneof keeps the
            // last): say so, since a client cannot guess it from a closed connection.
            let text = "the first handshake frame must carry `hello` alone; send Noise message 1 as `noise` in a frame of its own (docs/protocol.md, section 2)";
            write_handshake(
                &mut io,
                &[reject(
                    &local.versions,
                    proto::RejectReason::Malformed,
                    text,
                )],
            )
            .await?;
            return Err(NetError::Handshake {
                detail: "the first frame is not a hello".into(),
            });
        }
    };
    if hello.magic != MAGIC {
        // Not a CBDDC client at all: nothing to explain to it.
        return Err(NetError::Handshake {
            detail: "the hello does not carry the CBDDC magic".into(),
        });
    }
    let ours = local.versions.protocols;
    let theirs = ProtocolRange::hello(hello.protocol_version, hello.newest_protocol_version);
    let their_release = release_or_inferred(&hello.release, &theirs);
    let Some(protocol) = ours.highest_common(&theirs) else {
        let text = crate::version::no_common_protocol(
            &theirs,
            &their_release,
            &ours,
            &local.versions.release,
        );
        local.refused(proto::RejectReason::VersionMismatch);
        write_handshake(
            &mut io,
            &[reject(
                &local.versions,
                proto::RejectReason::VersionMismatch,
                &text,
            )],
        )
        .await?;
        return Err(NetError::VersionMismatch {
            ours,
            our_release: local.versions.release.clone(),
            theirs,
            their_release,
        });
    };
    let message = expect_noise(&mut io, "second").await?;
    let mut hs = noise(key)?
        .local_private_key(local.key.private())
        .and_then(|b| b.build_responder())
        .map_err(noise_error)?;
    let mut payload = vec![0u8; MAX_FRAME];
    if hs.read_message(&message, &mut payload).is_err() {
        local.refused(proto::RejectReason::AuthFailed);
        write_handshake(
            &mut io,
            &[reject(
                &local.versions,
                proto::RejectReason::AuthFailed,
                "cluster key refused",
            )],
        )
        .await?;
        return Err(NetError::WrongClusterKey {
            peer: "the initiator".into(),
        });
    }
    key_proved();
    let mut buf = vec![0u8; MAX_FRAME];
    send_hello(&mut io, &mut hs, local, eligible, protocol, &mut buf).await?;
    let message = expect_noise(&mut io, "third").await?;
    let n = hs
        .read_message(&message, &mut payload)
        .map_err(|_| NetError::Handshake {
            detail: "the initiator's key message does not authenticate".into(),
        })?;
    let initiator = session_hello(&payload[..n])?;
    if let Some(repeated) = repeated_range(&initiator)
        && repeated != theirs
    {
        return Err(altered_in_transit(&format!(
            "the initiator's hello said {theirs}, its authenticated hello {repeated}"
        )));
    }
    if initiator.protocol_version != 0 && initiator.protocol_version != protocol {
        return Err(altered_in_transit(&format!(
            "the initiator runs protocol {} where this node chose {protocol}",
            initiator.protocol_version
        )));
    }
    let remote = session_node(initiator, remote_static(&hs)?, protocol, &theirs)?;
    if let (Some(remote), Some(verifier)) = (&remote, &local.verifier)
        && let Err(message) = verifier.verify(&remote.node_id, &remote.key).await
    {
        local.refused(proto::RejectReason::KeyRefused);
        write_handshake(
            &mut io,
            &[reject(
                &local.versions,
                proto::RejectReason::KeyRefused,
                &message,
            )],
        )
        .await?;
        return Err(NetError::KeyRefused { message });
    }
    if let (Some(remote), Some(gate)) = (&remote, &local.versions.gate)
        && let Err(message) = gate.admit(&remote.node_id, &remote.build)
    {
        local.refused(proto::RejectReason::FeatureMissing);
        write_handshake(
            &mut io,
            &[reject(
                &local.versions,
                proto::RejectReason::FeatureMissing,
                &message,
            )],
        )
        .await?;
        return Err(NetError::FeatureMissing { message });
    }
    let mut transport = hs.into_transport_mode().map_err(noise_error)?;
    let n = transport
        .write_message(&[], &mut buf)
        .map_err(noise_error)?;
    write_handshake(
        &mut io,
        &[frame(proto::handshake_frame::Kind::Noise(
            buf[..n].to_vec(),
        ))],
    )
    .await?;
    Ok((
        SecureStream::new(io, transport).metered(local.meter.clone()),
        remote,
    ))
}

/// Refuses a connection before the handshake because the server is full.
pub async fn refuse_busy<S: AsyncWrite + Unpin>(
    io: &mut S,
    versions: &crate::version::Versions,
) -> Result<(), NetError> {
    write_handshake(
        io,
        &[reject(
            versions,
            proto::RejectReason::Busy,
            "connection limit reached",
        )],
    )
    .await
}

/// Messages up to this size need no room from a [`BufferBudget`]: a session buffers at
/// most one of them, and the number of sessions is bounded.
const UNBUDGETED_MESSAGE: usize = 64 * 1024;

/// Bytes of large messages buffered at once across the sessions that share it.
#[derive(Debug)]
pub struct BufferBudget {
    kib: Arc<tokio::sync::Semaphore>,
    total_kib: u32,
}

impl BufferBudget {
    /// A budget of `bytes` (at least one largest message's worth is always allowed).
    pub fn new(bytes: usize) -> Self {
        let total_kib = u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .max(1);
        Self {
            kib: Arc::new(tokio::sync::Semaphore::new(total_kib as usize)),
            total_kib,
        }
    }

    /// Waits for room for a message of `len` bytes; `None` for a small one.
    pub(crate) async fn reserve(&self, len: usize) -> Option<tokio::sync::OwnedSemaphorePermit> {
        if len <= UNBUDGETED_MESSAGE {
            return None;
        }
        let kib = u32::try_from(len.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .min(self.total_kib);
        self.kib.clone().acquire_many_owned(kib).await.ok()
    }

    /// Bytes free now (for tests and status).
    pub fn available(&self) -> usize {
        self.kib.available_permits() * 1024
    }
}

/// An authenticated, encrypted session carrying length-prefixed protobuf messages.
///
/// Noise's per-direction nonce counter makes a replayed, dropped or reordered frame fail
/// authentication, which ends the session ([`NetError::Decrypt`]).
pub struct SecureStream<S> {
    io: S,
    meter: Option<Arc<NetMeter>>,
    budget: Option<Arc<BufferBudget>>,
    transport: snow::TransportState,
    plain: Vec<u8>,
    frame: Vec<u8>,
    scratch: Vec<u8>,
}

impl<S> std::fmt::Debug for SecureStream<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecureStream")
            .field("buffered", &self.plain.len())
            .finish()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> SecureStream<S> {
    fn new(io: S, transport: snow::TransportState) -> Self {
        Self {
            io,
            meter: None,
            budget: None,
            transport,
            plain: Vec::new(),
            frame: Vec::new(),
            scratch: vec![0u8; MAX_FRAME],
        }
    }

    /// Counts this session's bytes in `meter`.
    fn metered(mut self, meter: Option<Arc<NetMeter>>) -> Self {
        self.meter = meter;
        self
    }

    /// Buffers large incoming messages only within `budget` (shared with other sessions).
    pub(crate) fn with_buffer_budget(mut self, budget: Arc<BufferBudget>) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Encrypts and sends one message.
    pub async fn send<M: Message>(&mut self, message: &M) -> Result<(), NetError> {
        let len = message.encoded_len();
        if len > MAX_MESSAGE_BYTES {
            return Err(NetError::TooLarge {
                size: len,
                max: MAX_MESSAGE_BYTES,
            });
        }
        let mut plain = Vec::with_capacity(4 + len);
        plain.extend_from_slice(&(len as u32).to_be_bytes());
        message.encode_raw(&mut plain);
        let mut out = Vec::with_capacity(
            plain.len() + plain.len() / MAX_CHUNK * (AEAD_TAG + 2) + AEAD_TAG + 2,
        );
        for chunk in plain.chunks(MAX_CHUNK) {
            let n = self
                .transport
                .write_message(chunk, &mut self.scratch)
                .map_err(|e| NetError::Handshake {
                    detail: format!("encryption failed: {e}"),
                })?;
            push_frame(&mut out, &self.scratch[..n]);
        }
        self.io.write_all(&out).await?;
        self.io.flush().await?;
        if let Some(meter) = &self.meter {
            meter.sent(out.len());
        }
        Ok(())
    }

    /// Receives and decrypts one message.
    pub async fn recv<M: Message + Default>(&mut self) -> Result<M, NetError> {
        self.fill(4).await?;
        let len = u32::from_be_bytes([self.plain[0], self.plain[1], self.plain[2], self.plain[3]])
            as usize;
        if len > MAX_MESSAGE_BYTES {
            return Err(NetError::TooLarge {
                size: len,
                max: MAX_MESSAGE_BYTES,
            });
        }
        // Room for the message before its bytes are read: sessions together never buffer
        // more than the budget, whatever sizes they announce.
        let _room = match &self.budget {
            Some(budget) => budget.reserve(len).await,
            None => None,
        };
        self.fill(4 + len).await?;
        let message = M::decode(&self.plain[4..4 + len]).map_err(|e| NetError::Malformed {
            detail: e.to_string(),
        });
        self.plain.drain(..4 + len);
        message
    }

    async fn fill(&mut self, wanted: usize) -> Result<(), NetError> {
        while self.plain.len() < wanted {
            read_frame(&mut self.io, &mut self.frame).await?;
            if let Some(meter) = &self.meter {
                meter.received(self.frame.len() + 2);
            }
            let n = self
                .transport
                .read_message(&self.frame, &mut self.scratch)
                .map_err(|_| NetError::Decrypt)?;
            self.plain.extend_from_slice(&self.scratch[..n]);
        }
        Ok(())
    }

    /// The underlying stream, to forge raw frames in tests.
    #[cfg(test)]
    pub(crate) fn io_mut(&mut self) -> &mut S {
        &mut self.io
    }

    /// Encrypts `plain` as it is, without the message length prefix: forges framing errors in tests.
    #[cfg(test)]
    pub(crate) async fn send_raw_plain(&mut self, plain: &[u8]) -> Result<(), NetError> {
        let n = self
            .transport
            .write_message(plain, &mut self.scratch)
            .map_err(|_| NetError::Decrypt)?;
        let mut out = Vec::new();
        push_frame(&mut out, &self.scratch[..n]);
        self.io.write_all(&out).await?;
        Ok(())
    }

    /// Closes the write side.
    pub async fn shutdown(&mut self) {
        let _ = self.io.shutdown().await;
    }
}
