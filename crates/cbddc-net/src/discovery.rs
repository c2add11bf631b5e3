//! LAN discovery: every node sends a small UDP beacon to its targets (the broadcast
//! address by default) every interval, and reports the beacons it hears.
//!
//! A beacon carries the node id, TCP port, protocol version and whether the node may
//! lead, plus a BLAKE2s MAC keyed by a key derived from the cluster secret (apart from the
//! Noise key). Beacons of other clusters, forged or malformed ones fail the MAC or the
//! decoding and are dropped. The MAC covers the send time and a counter, so no two
//! beacons carry the same tag and nothing in them fingerprints the key; a receiver drops
//! beacons older than `max_age` and any beacon that does not move its sender's
//! `(sent_ms, counter)` forward, so a replayed beacon cannot keep a dead node alive.

use crate::{NetError, proto};
use blake2::Blake2sMac256;
use blake2::digest::{KeyInit, Mac};
use cbddc_core::{NodeId, unix_millis};
use prost::Message;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Beacons larger than this are not read.
pub const MAX_BEACON_BYTES: usize = 512;

/// The key beacons are authenticated with, derived from the cluster secret.
#[derive(Clone, PartialEq, Eq)]
pub struct DiscoveryKey([u8; 32]);

impl DiscoveryKey {
    /// Derives the key from the cluster secret (BLAKE2s with its own context string).
    pub fn derive(secret: &str) -> Self {
        Self(crate::secure::derive_key(
            b"cbddc discovery key v1\0",
            secret,
        ))
    }

    fn mac(&self) -> Blake2sMac256 {
        // The key type is exactly 32 bytes, so keying cannot fail.
        <Blake2sMac256 as KeyInit>::new(&self.0.into())
    }
}

impl std::fmt::Debug for DiscoveryKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DiscoveryKey(…)")
    }
}

/// What a node announces, and where.
#[derive(Debug, Clone)]
pub struct BeaconSettings {
    /// Our node id.
    pub node_id: NodeId,
    /// Our sync server's port.
    pub tcp_port: u16,
    /// Whether we may lead.
    pub eligible: bool,
    /// The cluster's discovery key.
    pub key: DiscoveryKey,
    /// Where beacons go (e.g. `255.255.255.255:25001`, or peers' loopback ports).
    pub targets: Vec<SocketAddr>,
    /// Time between beacons.
    pub interval: Duration,
    /// Beacons sent longer ago than this (by the sender's clock) are dropped.
    pub max_age: Duration,
}

/// A valid beacon from another node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heard {
    /// Its node id.
    pub node_id: NodeId,
    /// Its sync server: the beacon's source IP with the announced port.
    pub address: SocketAddr,
    /// Whether it may lead.
    pub eligible: bool,
}

/// Encodes and signs a beacon.
pub fn encode_beacon(settings: &BeaconSettings, sent_ms: u64, counter: u64) -> Vec<u8> {
    let mut beacon = proto::Beacon {
        magic: crate::secure::MAGIC.into(),
        // The oldest version we speak: protocol-4 nodes drop beacons of any other.
        protocol_version: crate::version::OLDEST_PROTOCOL_VERSION,
        node_id: settings.node_id.to_string(),
        tcp_port: u32::from(settings.tcp_port),
        eligible: settings.eligible,
        sent_ms,
        counter,
        tag: Vec::new(),
    };
    let mut mac = settings.key.mac();
    mac.update(&beacon.encode_to_vec());
    beacon.tag = mac.finalize().into_bytes().to_vec();
    beacon.encode_to_vec()
}

/// Decodes a beacon and checks its MAC, version and age (`now_ms` by our clock).
pub fn decode_beacon(
    bytes: &[u8],
    key: &DiscoveryKey,
    now_ms: u64,
    max_age: Duration,
) -> Result<proto::Beacon, NetError> {
    let malformed = |detail: &str| NetError::Malformed {
        detail: format!("beacon: {detail}"),
    };
    if bytes.len() > MAX_BEACON_BYTES {
        return Err(NetError::TooLarge {
            size: bytes.len(),
            max: MAX_BEACON_BYTES,
        });
    }
    let beacon = proto::Beacon::decode(bytes).map_err(|_| malformed("not a beacon"))?;
    // The MAC covers the datagram as sent, minus its tag, so fields a newer release adds
    // are covered too (re-encoding what we decoded would drop them).
    let signed = without_field(bytes, BEACON_TAG_FIELD).ok_or_else(|| malformed("not a beacon"))?;
    let mut mac = key.mac();
    mac.update(&signed);
    mac.verify_slice(&beacon.tag)
        .map_err(|_| malformed("the tag does not match: another cluster, or forged"))?;
    if beacon.magic != crate::secure::MAGIC
        || !crate::version::ProtocolRange::THIS_BUILD.contains(beacon.protocol_version)
    {
        return Err(malformed("a protocol version this build does not speak"));
    }
    let age = now_ms.abs_diff(beacon.sent_ms);
    if age > u64::try_from(max_age.as_millis()).unwrap_or(u64::MAX) {
        return Err(malformed("too old, or from a clock far off ours"));
    }
    if beacon.tcp_port == 0 || beacon.tcp_port > u32::from(u16::MAX) {
        return Err(malformed("no valid TCP port"));
    }
    Ok(beacon)
}

/// The field number of [`proto::Beacon::tag`].
const BEACON_TAG_FIELD: u64 = 8;

/// `bytes` (a protobuf message) with every occurrence of field `field` left out; `None`
/// when the bytes are not a well-formed message.
fn without_field(bytes: &[u8], field: u64) -> Option<Vec<u8>> {
    fn varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *bytes.get(*at)?;
            *at += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }
    let mut kept = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let start = at;
        let key = varint(bytes, &mut at)?;
        let length = match key & 7 {
            0 => {
                varint(bytes, &mut at)?;
                0
            }
            1 => 8,
            2 => usize::try_from(varint(bytes, &mut at)?).ok()?,
            5 => 4,
            _ => return None,
        };
        let end = at.checked_add(length).filter(|end| *end <= bytes.len())?;
        at = end;
        if key >> 3 != field {
            kept.extend_from_slice(&bytes[start..end]);
        }
    }
    Some(kept)
}

/// Sends beacons every interval and reports each valid beacon of another node to
/// `heard` (dropping reports while the receiver is full), until `token` is cancelled.
pub async fn run(
    socket: UdpSocket,
    settings: BeaconSettings,
    heard: mpsc::Sender<Heard>,
    token: CancellationToken,
) {
    if let Err(e) = socket.set_broadcast(true) {
        tracing::warn!(error = %e, "cannot enable broadcast on the discovery socket");
    }
    let mut ticker = tokio::time::interval(settings.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut counter = 0u64;
    let mut last_seen: HashMap<NodeId, (u64, u64)> = HashMap::new();
    let mut buf = vec![0u8; MAX_BEACON_BYTES + 1];
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = ticker.tick() => {
                counter += 1;
                let beacon = encode_beacon(&settings, unix_millis(), counter);
                for target in &settings.targets {
                    if let Err(e) = socket.send_to(&beacon, target).await {
                        tracing::debug!(%target, error = %e, "sending a beacon failed");
                    }
                }
            }
            received = socket.recv_from(&mut buf) => {
                let Ok((len, source)) = received else { continue };
                let beacon = match decode_beacon(&buf[..len], &settings.key, unix_millis(), settings.max_age) {
                    Ok(beacon) => beacon,
                    Err(e) => {
                        tracing::debug!(%source, error = %e, "dropped a beacon");
                        continue;
                    }
                };
                let Ok(node_id) = NodeId::new(beacon.node_id) else { continue };
                if node_id == settings.node_id {
                    continue;
                }
                let stamp = (beacon.sent_ms, beacon.counter);
                if last_seen.get(&node_id).is_some_and(|seen| stamp <= *seen) {
                    tracing::debug!(%source, node = %node_id, "dropped a replayed beacon");
                    continue;
                }
                if last_seen.len() > 4_096 {
                    last_seen.clear();
                }
                last_seen.insert(node_id.clone(), stamp);
                let address = SocketAddr::new(source.ip(), beacon.tcp_port as u16);
                let _ = heard.try_send(Heard { node_id, address, eligible: beacon.eligible });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(name: &str, secret: &str, targets: Vec<SocketAddr>) -> BeaconSettings {
        BeaconSettings {
            node_id: NodeId::new(name).unwrap(),
            tcp_port: 4000,
            eligible: true,
            key: DiscoveryKey::derive(secret),
            targets,
            interval: Duration::from_millis(50),
            max_age: Duration::from_secs(30),
        }
    }

    #[test]
    fn beacons_verify_only_under_their_cluster_key_and_never_repeat_a_tag() {
        let s = settings("a", "k", vec![]);
        let now = unix_millis();
        let one = encode_beacon(&s, now, 1);
        let two = encode_beacon(&s, now, 2);
        let decoded = decode_beacon(&one, &s.key, now, s.max_age).unwrap();
        assert_eq!(
            (decoded.node_id.as_str(), decoded.tcp_port, decoded.eligible),
            ("a", 4000, true)
        );
        assert_ne!(
            proto::Beacon::decode(one.as_slice()).unwrap().tag,
            proto::Beacon::decode(two.as_slice()).unwrap().tag
        );
        assert!(decode_beacon(&one, &DiscoveryKey::derive("other"), now, s.max_age).is_err());
        assert!(
            decode_beacon(&one, &s.key, now + 60_000, s.max_age).is_err(),
            "too old"
        );

        let mut forged = proto::Beacon::decode(one.as_slice()).unwrap();
        forged.tcp_port = 6666;
        assert!(decode_beacon(&forged.encode_to_vec(), &s.key, now, s.max_age).is_err());
        assert!(decode_beacon(b"\xff\xff garbage", &s.key, now, s.max_age).is_err());
        assert!(decode_beacon(&[0u8; MAX_BEACON_BYTES + 1], &s.key, now, s.max_age).is_err());
    }

    #[test]
    fn a_beacon_from_a_newer_release_with_a_field_we_do_not_know_still_verifies() {
        let s = settings("a", "k", vec![]);
        let now = unix_millis();
        // A newer release's beacon: its oldest protocol 5, and a field 9 we do not know,
        // signed (as the sender does) over the message without its tag.
        let mut unsigned = proto::Beacon::decode(encode_beacon(&s, now, 1).as_slice()).unwrap();
        unsigned.tag.clear();
        unsigned.protocol_version = 5;
        let signed = |unsigned: &proto::Beacon, extra: &[u8]| {
            let mut bytes = unsigned.encode_to_vec();
            bytes.extend_from_slice(extra);
            let mut mac = s.key.mac();
            mac.update(&bytes);
            let tag = mac.finalize().into_bytes();
            bytes.extend_from_slice(&[8 << 3 | 2, tag.len() as u8]);
            bytes.extend_from_slice(&tag);
            bytes
        };
        let bytes = signed(&unsigned, &[9 << 3 | 2, 3, b'n', b'e', b'w']);
        let heard = decode_beacon(&bytes, &s.key, now, s.max_age).unwrap();
        assert_eq!(heard.protocol_version, 5);

        // A release whose oldest protocol is beyond ours: nothing to talk about.
        unsigned.protocol_version = crate::PROTOCOL_VERSION + 1;
        let refused = decode_beacon(&signed(&unsigned, &[]), &s.key, now, s.max_age).unwrap_err();
        assert!(
            refused.to_string().contains("protocol version"),
            "{refused}"
        );
    }

    #[test]
    fn our_beacons_still_name_protocol_4_so_release_0_1_nodes_hear_them() {
        let s = settings("a", "k", vec![]);
        let beacon = proto::Beacon::decode(encode_beacon(&s, 1, 1).as_slice()).unwrap();
        assert_eq!(beacon.protocol_version, 4);
        // What a 0.1.0 node does: re-encode without the tag and check the MAC.
        let mut check = beacon.clone();
        check.tag.clear();
        let mut mac = s.key.mac();
        mac.update(&check.encode_to_vec());
        assert!(mac.verify_slice(&beacon.tag).is_ok());
    }

    #[tokio::test]
    async fn nodes_hear_each_other_on_loopback_and_ignore_strangers_and_replays() {
        let sockets: Vec<UdpSocket> = futures_sockets(3).await;
        let addrs: Vec<SocketAddr> = sockets.iter().map(|s| s.local_addr().unwrap()).collect();
        let token = CancellationToken::new();
        let (tx, mut rx) = mpsc::channel(64);
        let mut sockets = sockets.into_iter();
        // "a" listens; "b" is of the cluster; "x" is of another cluster.
        tokio::spawn(run(
            sockets.next().unwrap(),
            settings("a", "k", vec![]),
            tx.clone(),
            token.clone(),
        ));
        tokio::spawn(run(
            sockets.next().unwrap(),
            settings("b", "k", vec![addrs[0]]),
            mpsc::channel(1).0,
            token.clone(),
        ));
        tokio::spawn(run(
            sockets.next().unwrap(),
            settings("x", "other", vec![addrs[0]]),
            mpsc::channel(1).0,
            token.clone(),
        ));

        let heard = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(heard.node_id.as_str(), "b");
        assert_eq!(heard.address, SocketAddr::from(([127, 0, 0, 1], 4000)));

        // Replaying one of b's beacons, or x's, produces nothing new.
        let probe = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let old = encode_beacon(&settings("b", "k", vec![]), unix_millis() - 1_000, 1);
        for _ in 0..3 {
            probe.send_to(&old, addrs[0]).await.unwrap();
        }
        for _ in 0..10 {
            let next = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                next.node_id.as_str(),
                "b",
                "only b's fresh beacons are reported"
            );
        }
        token.cancel();
    }

    async fn futures_sockets(n: usize) -> Vec<UdpSocket> {
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        }
        out
    }
}
