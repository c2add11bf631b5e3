//! Negotiation in the handshake: with this build, with a protocol-4 peer (release 0.1.0)
//! driven by hand from its bytes, with no common version, through a tampered hello, and
//! through a feature gate.

use crate::secure::{self, ClusterKey};
use crate::version::{FeatureGate, PeerBuild, ProtocolRange, Versions};
use crate::{LocalIdentity, NetError, NodeKey, proto};
use cbddc_core::NodeId;
use prost::Message;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

fn node(name: &str, versions: Versions) -> LocalIdentity {
    let mut local = LocalIdentity::node(
        NodeId::new(name).unwrap(),
        NodeKey::generate().unwrap(),
        None,
    );
    local.versions = versions;
    local
}

fn speaking(oldest: u32, newest: u32, release: &str, features: &[&str]) -> Versions {
    Versions {
        protocols: ProtocolRange::said(oldest, newest).unwrap(),
        release: release.into(),
        features: features.iter().map(|f| f.to_string()).collect(),
        gate: None,
    }
}

type Outcome<R> = Result<R, NetError>;

/// Runs both sides of a handshake over an in-memory pipe.
async fn handshake(
    initiator: LocalIdentity,
    responder: LocalIdentity,
) -> (Outcome<secure::Remote>, Outcome<Option<secure::Remote>>) {
    let (a, b) = tokio::io::duplex(1 << 20);
    let key = ClusterKey::derive("k");
    let key2 = key.clone();
    let server = tokio::spawn(async move {
        secure::respond(b, &key2, &responder, true)
            .await
            .map(|(_, remote)| remote)
    });
    let client = secure::initiate(a, &key, &initiator, true, "srv")
        .await
        .map(|(_, remote)| remote);
    (client, server.await.unwrap())
}

#[test]
fn golden_bytes_of_the_negotiation_fields() {
    let hello = proto::Hello {
        magic: "cbddc".into(),
        protocol_version: 4,
        newest_protocol_version: 5,
        release: "0.2.0".into(),
    };
    assert_eq!(
        hello.encode_to_vec(),
        [
            0x0a, 0x05, b'c', b'b', b'd', b'd', b'c', 0x10, 0x04, 0x18, 0x05, 0x22, 0x05, b'0',
            b'.', b'2', b'.', b'0'
        ]
    );
    let reject = proto::Reject {
        reason: proto::RejectReason::FeatureMissing as i32,
        message: String::new(),
        protocol_version: 5,
        oldest_protocol_version: 4,
        release: "0.2.0".into(),
    };
    assert_eq!(
        reject.encode_to_vec(),
        [
            0x08, 0x06, 0x18, 0x05, 0x20, 0x04, 0x2a, 0x05, b'0', b'.', b'2', b'.', b'0'
        ]
    );
    let session = proto::SessionHello {
        protocol_version: 5,
        oldest_protocol_version: 4,
        newest_protocol_version: 5,
        release: "r".into(),
        features: vec!["f".into()],
        ..Default::default()
    };
    assert_eq!(
        session.encode_to_vec(),
        [
            0x28, 0x05, 0x30, 0x04, 0x38, 0x05, 0x42, 0x01, b'r', 0x4a, 0x01, b'f'
        ]
    );
}

#[test]
fn a_protocol_4_hello_decodes_as_one_version_and_no_release() {
    // The bytes release 0.1.0 sends first.
    let bytes = [
        0x0a, 0x09, 0x0a, 0x05, b'c', b'b', b'd', b'd', b'c', 0x10, 0x04,
    ];
    let frame = proto::HandshakeFrame::decode(bytes.as_slice()).unwrap();
    let Some(proto::handshake_frame::Kind::Hello(hello)) = frame.kind else {
        panic!("not a hello");
    };
    let range = ProtocolRange::hello(hello.protocol_version, hello.newest_protocol_version);
    assert_eq!(range, ProtocolRange::said(4, 4).unwrap());
    assert!(hello.release.is_empty());
    assert_eq!(
        ProtocolRange::THIS_BUILD.highest_common(&range),
        Some(4),
        "this build speaks the previous release's protocol"
    );
}

#[tokio::test]
async fn two_nodes_of_this_build_run_the_newest_protocol_and_learn_each_others_release() {
    let (client, server) = handshake(
        node("a", speaking(4, 5, "0.2.0", &["x"])),
        node("b", speaking(4, 5, "0.2.1", &["x", "y"])),
    )
    .await;
    let responder = client.unwrap();
    assert_eq!(responder.build.protocol, 5);
    assert_eq!(responder.build.release, "0.2.1");
    assert_eq!(
        responder.build.features.iter().collect::<Vec<_>>(),
        ["x", "y"]
    );
    let initiator = server.unwrap().unwrap();
    assert_eq!(initiator.build.protocol, 5);
    assert_eq!(initiator.build.release, "0.2.0");
}

#[tokio::test]
async fn a_newer_release_meets_an_older_one_at_the_older_ones_newest_protocol() {
    let (client, server) = handshake(
        node("new", speaking(5, 6, "0.3.0", &[])),
        node("old", speaking(4, 5, "0.2.0", &[])),
    )
    .await;
    assert_eq!(client.unwrap().build.protocol, 5);
    assert_eq!(server.unwrap().unwrap().build.protocol, 5);
}

#[tokio::test]
async fn no_common_version_is_refused_on_both_sides_naming_both_releases() {
    let (client, server) = handshake(
        node("new", speaking(5, 5, "0.2.0", &[])),
        node("old", speaking(4, 4, "0.1.0", &[])),
    )
    .await;
    let client = client.unwrap_err();
    let text = client.to_string();
    assert!(matches!(client, NetError::VersionMismatch { .. }), "{text}");
    assert!(
        text.contains("cbddc 0.2.0") && text.contains("cbddc 0.1.0"),
        "{text}"
    );
    assert!(text.contains("upgrade the peer"), "{text}");
    let server = server.unwrap_err();
    let text = server.to_string();
    assert!(matches!(server, NetError::VersionMismatch { .. }), "{text}");
    assert!(text.contains("upgrade this node to cbddc 0.2.0"), "{text}");
}

/// Frame helpers for driving a peer by hand.
async fn send_frame<S: AsyncWrite + Unpin>(io: &mut S, frame: proto::HandshakeFrame) {
    let bytes = frame.encode_to_vec();
    io.write_all(&(bytes.len() as u16).to_be_bytes())
        .await
        .unwrap();
    io.write_all(&bytes).await.unwrap();
}

async fn read_frame<S: AsyncRead + Unpin>(io: &mut S) -> proto::handshake_frame::Kind {
    let mut len = [0u8; 2];
    io.read_exact(&mut len).await.unwrap();
    let mut bytes = vec![0u8; u16::from_be_bytes(len) as usize];
    io.read_exact(&mut bytes).await.unwrap();
    proto::HandshakeFrame::decode(bytes.as_slice())
        .unwrap()
        .kind
        .unwrap()
}

fn noise_frame(message: Vec<u8>) -> proto::HandshakeFrame {
    proto::HandshakeFrame {
        kind: Some(proto::handshake_frame::Kind::Noise(message)),
    }
}

#[tokio::test]
async fn a_protocol_4_initiator_driven_by_hand_is_served_at_protocol_4() {
    let (mut a, b) = tokio::io::duplex(1 << 20);
    let key = ClusterKey::derive("k");
    let responder = node("new", Versions::default());
    let server_key = key.clone();
    let server = tokio::spawn(async move {
        secure::respond(b, &server_key, &responder, true)
            .await
            .map(|(_, remote)| remote)
    });
    // Exactly what release 0.1.0 sends: a hello of fields 1 and 2, then Noise.
    let old_key = NodeKey::generate().unwrap();
    let psk = crate::secure::derive_key(b"cbddc cluster key v1\0", "k");
    let mut hs = crate::noise::builder()
        .unwrap()
        .psk(0, &psk)
        .unwrap()
        .local_private_key(old_key.private())
        .unwrap()
        .build_initiator()
        .unwrap();
    send_frame(
        &mut a,
        proto::HandshakeFrame {
            kind: Some(proto::handshake_frame::Kind::Hello(proto::Hello {
                magic: "cbddc".into(),
                protocol_version: 4,
                ..Default::default()
            })),
        },
    )
    .await;
    let mut buf = vec![0u8; 65535];
    let n = hs.write_message(&[], &mut buf).unwrap();
    send_frame(&mut a, noise_frame(buf[..n].to_vec())).await;
    let proto::handshake_frame::Kind::Noise(message) = read_frame(&mut a).await else {
        panic!("expected Noise message 2");
    };
    let mut payload = vec![0u8; 65535];
    let n = hs.read_message(&message, &mut payload).unwrap();
    let answer = proto::SessionHello::decode(&payload[..n]).unwrap();
    assert_eq!(answer.protocol_version, 4, "the session runs at protocol 4");
    assert_eq!(answer.release, crate::RELEASE);
    // 0.1.0's session hello: fields 1 to 4 only.
    let ours = proto::SessionHello {
        node_id: "old".into(),
        eligible: true,
        ..Default::default()
    };
    let n = hs.write_message(&ours.encode_to_vec(), &mut buf).unwrap();
    send_frame(&mut a, noise_frame(buf[..n].to_vec())).await;
    let proto::handshake_frame::Kind::Noise(_) = read_frame(&mut a).await else {
        panic!("expected the responder's confirmation");
    };
    let initiator = server.await.unwrap().unwrap().unwrap();
    assert_eq!(initiator.build.protocol, 4);
    assert_eq!(initiator.build.release, "0.1.0", "named by its protocol");
    assert!(initiator.build.features.is_empty());
}

#[tokio::test]
async fn a_hello_altered_in_transit_to_an_older_protocol_is_detected() {
    let (mut a, b) = tokio::io::duplex(1 << 20);
    let (c, mut d) = tokio::io::duplex(1 << 20);
    let key = ClusterKey::derive("k");
    let server_key = key.clone();
    let server = tokio::spawn(async move {
        secure::respond(b, &server_key, &node("srv", Versions::default()), true)
            .await
            .map(|_| ())
    });
    let client = tokio::spawn(async move {
        secure::initiate(c, &key, &node("cli", Versions::default()), true, "srv")
            .await
            .map(|_| ())
    });
    // A man in the middle rewrites the hello to protocol 4 only, then relays.
    let proto::handshake_frame::Kind::Hello(mut hello) = read_frame(&mut d).await else {
        panic!("expected a hello");
    };
    hello.newest_protocol_version = 0;
    hello.release.clear();
    send_frame(
        &mut a,
        proto::HandshakeFrame {
            kind: Some(proto::handshake_frame::Kind::Hello(hello)),
        },
    )
    .await;
    let relay = tokio::spawn(async move {
        let (mut ar, mut aw) = tokio::io::split(a);
        let (mut dr, mut dw) = tokio::io::split(d);
        tokio::select! {
            _ = tokio::io::copy(&mut dr, &mut aw) => {}
            _ = tokio::io::copy(&mut ar, &mut dw) => {}
        }
    });
    let client = client.await.unwrap().unwrap_err();
    assert!(
        client.to_string().contains("altered in transit"),
        "{client}"
    );
    // The initiator hangs up before sending its key message: the responder gets nothing.
    assert!(server.await.unwrap().is_err());
    relay.abort();
}

#[derive(Debug)]
struct RefuseWithout(&'static str);

impl FeatureGate for RefuseWithout {
    fn admit(&self, peer: &NodeId, build: &PeerBuild) -> Result<(), String> {
        if build.features.contains(self.0) {
            Ok(())
        } else {
            Err(format!(
                "{peer} (cbddc {}) cannot read {}",
                build.release, self.0
            ))
        }
    }
}

#[tokio::test]
async fn a_gate_refuses_a_peer_that_cannot_read_a_format_in_force_on_either_side() {
    let mut gated = speaking(4, 5, "0.2.0", &["f"]);
    gated.gate = Some(Arc::new(RefuseWithout("f")));
    // The gated node responds: the initiator hears why.
    let (client, server) = handshake(
        node("plain", speaking(4, 5, "0.2.0", &[])),
        node("gated", gated.clone()),
    )
    .await;
    let client = client.unwrap_err();
    assert!(
        matches!(client, NetError::FeatureMissing { .. }),
        "{client}"
    );
    assert!(
        client
            .to_string()
            .contains("plain (cbddc 0.2.0) cannot read f"),
        "{client}"
    );
    assert!(matches!(server, Err(NetError::FeatureMissing { .. })));
    // The gated node initiates: it hangs up before its key message.
    let (client, server) = handshake(
        node("gated", gated.clone()),
        node("plain", speaking(4, 5, "0.2.0", &[])),
    )
    .await;
    assert!(matches!(client, Err(NetError::FeatureMissing { .. })));
    assert!(server.is_err());
    // A peer that reads it passes.
    let (client, server) = handshake(
        node("reader", speaking(4, 5, "0.2.0", &["f"])),
        node("gated", gated),
    )
    .await;
    assert!(client.is_ok() && server.is_ok());
}

#[tokio::test]
async fn a_patch_is_never_sent_to_a_node_of_protocol_4_which_would_read_a_delete() {
    let mut settings = crate::ServerSettings::new(
        NodeId::new("old").unwrap(),
        NodeKey::generate().unwrap(),
        ClusterKey::derive("k"),
    );
    settings.versions = speaking(4, 4, "", &[]);
    let (server, address) = crate::tests::start_server(settings).await;
    let mut client = crate::PeerClient::connect(
        &address,
        &ClusterKey::derive("k"),
        &LocalIdentity::tool().unwrap(),
        crate::ClientSettings::default(),
    )
    .await
    .unwrap();
    assert_eq!(client.remote_build().protocol, 4);
    let refused = client.patch("c", "k", r#"{"a":1}"#).await.unwrap_err();
    assert!(matches!(refused, NetError::Unsupported { .. }), "{refused}");
    let text = refused.to_string();
    assert!(
        text.contains("cbddc 0.2.0 or later") && text.contains("runs cbddc 0.1.0"),
        "{text}"
    );
    let batch = vec![cbddc_core::LocalWrite::increment("c", "k", "n", 1)];
    assert!(matches!(
        client.write_batch(batch).await,
        Err(NetError::Unsupported { .. })
    ));
    assert!(server.stop(std::time::Duration::from_secs(5)).await);
}

#[test]
fn golden_bytes_of_an_edit_and_its_answer() {
    let edit = proto::EditRequest {
        collection: "c".into(),
        key: "k".into(),
        increment_path: "n".into(),
        increment_by: -1,
        ..Default::default()
    };
    // sint64 -1 is zigzag 1.
    assert_eq!(
        edit.encode_to_vec(),
        [
            0x0a, 0x01, b'c', 0x12, 0x01, b'k', 0x22, 0x01, b'n', 0x28, 0x01
        ]
    );
    let answer = proto::WriteResponse {
        seq: 3,
        hlc: None,
        whole_document: true,
    };
    assert_eq!(answer.encode_to_vec(), [0x08, 0x03, 0x18, 0x01]);
    let batch = proto::BatchWrite {
        collection: "c".into(),
        key: "k".into(),
        patch: "{}".into(),
        ..Default::default()
    };
    assert_eq!(
        batch.encode_to_vec(),
        [0x0a, 0x01, b'c', 0x12, 0x01, b'k', 0x22, 0x02, b'{', b'}']
    );
}
