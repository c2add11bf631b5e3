use crate::secure::{self, ClusterKey};
use crate::{
    ClientSettings, LocalIdentity, NetError, NodeKey, PeerClient, PeerVerifier, PublicKey,
    RequestHandler, ServerSettings, SessionInfo, TcpSyncServer, proto,
};
use async_trait::async_trait;
use cbddc_core::NodeId;
use prost::Message;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

fn id(name: &str) -> NodeId {
    NodeId::new(name).unwrap()
}

fn node(name: &str) -> LocalIdentity {
    LocalIdentity::node(id(name), NodeKey::generate().unwrap(), None)
}

fn tool() -> LocalIdentity {
    LocalIdentity::tool().unwrap()
}

fn server_settings(name: &str, key: &str) -> ServerSettings {
    ServerSettings::new(
        id(name),
        NodeKey::generate().unwrap(),
        ClusterKey::derive(key),
    )
}

#[test]
fn golden_bytes_of_a_put_request() {
    let request = proto::Request {
        id: 7,
        body: Some(proto::request::Body::Put(proto::PutRequest {
            collection: "c".into(),
            key: "k".into(),
            value: "1".into(),
        })),
    };
    let bytes = request.encode_to_vec();
    assert_eq!(
        bytes,
        [
            0x08, 0x07, 0x62, 0x09, 0x0a, 0x01, b'c', 0x12, 0x01, b'k', 0x1a, 0x01, b'1'
        ]
    );
}

#[test]
fn golden_bytes_of_a_hello_and_an_oplog_entry() {
    // A protocol-4 hello (release 0.1.0): one version, no range, no release.
    let hello = proto::HandshakeFrame {
        kind: Some(proto::handshake_frame::Kind::Hello(proto::Hello {
            magic: "cbddc".into(),
            protocol_version: 4,
            ..Default::default()
        })),
    };
    assert_eq!(
        hello.encode_to_vec(),
        [
            0x0a, 0x09, 0x0a, 0x05, b'c', b'b', b'd', b'd', b'c', 0x10, 0x04
        ]
    );
    let delete = proto::OplogEntry {
        origin: "a".into(),
        seq: 2,
        collection: "c".into(),
        key: "k".into(),
        value: None,
        hlc_wall_ms: 300,
        hlc_counter: 0,
        node: String::new(),
        field_write: None,
    };
    // 300 = 0xAC 0x02 as a varint; an absent value (delete), a zero counter and an empty
    // node (an entry written before replica ids) are not sent: v1's bytes exactly.
    assert_eq!(
        delete.encode_to_vec(),
        [
            0x0a, 0x01, b'a', 0x10, 0x02, 0x1a, 0x01, b'c', 0x22, 0x01, b'k', 0x30, 0xac, 0x02
        ]
    );
    // The writer's node id is field 8.
    let written = proto::OplogEntry {
        node: "n".into(),
        ..delete
    };
    assert_eq!(written.encode_to_vec()[14..], [0x42, 0x01, b'n']);
}

#[test]
fn the_cluster_key_derivation_is_stable_and_secret_dependent() {
    assert_eq!(ClusterKey::derive("s"), ClusterKey::derive("s"));
    assert_ne!(ClusterKey::derive("s"), ClusterKey::derive("t"));
    assert_eq!(format!("{:?}", ClusterKey::derive("s")), "ClusterKey(…)");
}

type Side<R> = Result<(secure::SecureStream<tokio::io::DuplexStream>, R), NetError>;

async fn pair(
    client_key: &str,
    server_key: &str,
) -> (Side<secure::Remote>, Side<Option<secure::Remote>>) {
    let (a, b) = tokio::io::duplex(1 << 20);
    let (ck, sk) = (
        ClusterKey::derive(client_key),
        ClusterKey::derive(server_key),
    );
    let (client, server) = (node("client"), node("server"));
    tokio::join!(
        secure::initiate(a, &ck, &client, true, "test"),
        secure::respond(b, &sk, &server, false)
    )
}

#[tokio::test]
async fn a_shared_key_opens_a_session_that_carries_messages_larger_than_a_frame() {
    let (client, server) = pair("k", "k").await;
    let (mut client, server_seen) = client.unwrap();
    let (mut server, client_seen) = server.unwrap();
    assert_eq!(
        (server_seen.node_id, server_seen.eligible),
        (id("server"), false)
    );
    let client_seen = client_seen.unwrap();
    assert_eq!(
        (client_seen.node_id, client_seen.eligible),
        (id("client"), true)
    );
    assert_ne!(
        server_seen.key, client_seen.key,
        "each side proved its own key"
    );
    let big = proto::PutRequest {
        collection: "c".into(),
        key: "k".into(),
        value: "x".repeat(300_000),
    };
    client.send(&big).await.unwrap();
    client.send(&proto::StatusRequest {}).await.unwrap();
    assert_eq!(server.recv::<proto::PutRequest>().await.unwrap(), big);
    server.recv::<proto::StatusRequest>().await.unwrap();
}

#[tokio::test]
async fn a_wrong_key_fails_on_both_sides() {
    let (client, server) = pair("right", "wrong").await;
    assert!(matches!(
        client.unwrap_err(),
        NetError::WrongClusterKey { .. }
    ));
    assert!(matches!(
        server.unwrap_err(),
        NetError::WrongClusterKey { .. }
    ));
}

#[tokio::test]
async fn a_node_speaking_protocol_version_1_is_refused_by_name() {
    let (mut a, b) = tokio::io::duplex(1 << 16);
    let server = tokio::spawn(async move {
        secure::respond(b, &ClusterKey::derive("k"), &node("s"), true)
            .await
            .map(|_| ())
    });
    let hello = proto::HandshakeFrame {
        kind: Some(proto::handshake_frame::Kind::Hello(proto::Hello {
            magic: "cbddc".into(),
            protocol_version: 1,
            ..Default::default()
        })),
    }
    .encode_to_vec();
    a.write_all(&(hello.len() as u16).to_be_bytes())
        .await
        .unwrap();
    a.write_all(&hello).await.unwrap();
    let mut len = [0u8; 2];
    a.read_exact(&mut len).await.unwrap();
    let mut frame = vec![0u8; u16::from_be_bytes(len) as usize];
    a.read_exact(&mut frame).await.unwrap();
    let reply = proto::HandshakeFrame::decode(frame.as_slice()).unwrap();
    match reply.kind {
        Some(proto::handshake_frame::Kind::Reject(r)) => {
            assert_eq!(r.reason, proto::RejectReason::VersionMismatch as i32);
            assert_eq!(r.protocol_version, crate::PROTOCOL_VERSION);
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert!(matches!(
        server.await.unwrap(),
        Err(NetError::VersionMismatch { theirs, .. }) if theirs.newest() == 1
    ));
}

#[tokio::test]
async fn a_replayed_frame_fails_authentication() {
    let (client, server) = pair("k", "k").await;
    let (mut client, _) = client.unwrap();
    let (mut server, _) = server.unwrap();
    client.send(&proto::StatusRequest {}).await.unwrap();
    // Take the raw frame off the wire, then deliver it twice.
    let mut len = [0u8; 2];
    server.io_mut().read_exact(&mut len).await.unwrap();
    let mut raw = vec![0u8; u16::from_be_bytes(len) as usize];
    server.io_mut().read_exact(&mut raw).await.unwrap();
    for _ in 0..2 {
        client.io_mut().write_all(&len).await.unwrap();
        client.io_mut().write_all(&raw).await.unwrap();
    }
    server.recv::<proto::StatusRequest>().await.unwrap();
    assert!(matches!(
        server.recv::<proto::StatusRequest>().await,
        Err(NetError::Decrypt)
    ));
}

#[tokio::test]
async fn an_oversized_announcement_is_refused_before_allocation() {
    let (client, server) = pair("k", "k").await;
    let (mut client, _) = client.unwrap();
    let (mut server, _) = server.unwrap();
    client
        .send_raw_plain(&u32::MAX.to_be_bytes())
        .await
        .unwrap();
    assert!(
        matches!(server.recv::<proto::Request>().await, Err(NetError::TooLarge { size, .. }) if size == u32::MAX as usize)
    );
}

#[tokio::test]
async fn undecodable_bytes_are_a_malformed_message() {
    let (client, server) = pair("k", "k").await;
    let (mut client, _) = client.unwrap();
    let (mut server, _) = server.unwrap();
    client
        .send_raw_plain(&[0, 0, 0, 3, 0xff, 0xff, 0xff])
        .await
        .unwrap();
    assert!(matches!(
        server.recv::<proto::Request>().await,
        Err(NetError::Malformed { .. })
    ));
}

#[derive(Debug)]
struct EchoHandler;

#[async_trait]
impl RequestHandler for EchoHandler {
    async fn handle(
        &self,
        session: &SessionInfo,
        request: proto::request::Body,
    ) -> proto::response::Body {
        match request {
            proto::request::Body::Status(_) => {
                proto::response::Body::Status(Box::new(proto::StatusResponse {
                    node_id: session
                        .peer
                        .as_ref()
                        .map(NodeId::to_string)
                        .unwrap_or_else(|| "tool".into()),
                    ..Default::default()
                }))
            }
            proto::request::Body::Get(_) => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                proto::response::Body::Get(proto::GetResponse::default())
            }
            _ => crate::error_body(proto::ErrorCode::InvalidRequest, "not in this test"),
        }
    }
}

pub(crate) async fn start_server(settings: ServerSettings) -> (TcpSyncServer, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = TcpSyncServer::start(
        listener,
        settings,
        Arc::new(EchoHandler),
        CancellationToken::new(),
    )
    .unwrap();
    let address = server.local_addr().to_string();
    (server, address)
}

async fn status_as(address: &str, key: &str) -> Result<String, NetError> {
    let mut client = PeerClient::connect(
        address,
        &ClusterKey::derive(key),
        &node("peer"),
        ClientSettings::default(),
    )
    .await?;
    Ok(client.status().await?.node_id)
}

#[tokio::test]
async fn the_server_survives_garbage_truncation_and_silence_and_keeps_serving() {
    let mut settings = server_settings("srv", "k");
    settings.handshake_timeout = Duration::from_millis(300);
    let (server, address) = start_server(settings).await;

    let mut garbage = tokio::net::TcpStream::connect(&address).await.unwrap();
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut truncated = tokio::net::TcpStream::connect(&address).await.unwrap();
    truncated.write_all(&[0xff, 0xff, 1, 2, 3]).await.unwrap();
    drop(truncated);
    let mut silent = tokio::net::TcpStream::connect(&address).await.unwrap();

    assert_eq!(status_as(&address, "k").await.unwrap(), "peer");
    let mut buf = [0u8; 64];
    // The silent connection is closed once the handshake timeout passes.
    let closed = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut buf))
        .await
        .unwrap();
    assert!(matches!(closed, Ok(0) | Err(_)));
    let answered = tokio::time::timeout(Duration::from_secs(10), garbage.read(&mut buf))
        .await
        .unwrap();
    assert!(
        matches!(answered, Ok(0) | Err(_)),
        "garbage must get nothing back"
    );
    assert_eq!(status_as(&address, "k").await.unwrap(), "peer");
    assert!(server.stop(Duration::from_secs(5)).await);
}

#[tokio::test]
async fn a_client_with_the_wrong_key_gets_nothing_and_is_told_why() {
    let (server, address) = start_server(server_settings("srv", "k")).await;
    let err = status_as(&address, "not-k").await.unwrap_err();
    assert!(matches!(err, NetError::WrongClusterKey { .. }), "{err}");
    assert!(err.to_string().contains("cluster key"), "{err}");
    server.stop(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_slow_request_times_out_without_stalling_other_sessions() {
    let mut settings = server_settings("srv", "k");
    settings.request_timeout = Duration::from_millis(200);
    let (server, address) = start_server(settings).await;
    let mut slow = PeerClient::connect(
        &address,
        &ClusterKey::derive("k"),
        &tool(),
        ClientSettings::default(),
    )
    .await
    .unwrap();
    let slow_call = tokio::spawn(async move { slow.get("c", "k").await });
    assert_eq!(status_as(&address, "k").await.unwrap(), "peer");
    let err = slow_call.await.unwrap().unwrap_err();
    assert!(
        matches!(
            err,
            NetError::Remote {
                code: proto::ErrorCode::Timeout,
                ..
            }
        ),
        "{err}"
    );
    server.stop(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn connections_beyond_the_limit_are_refused_as_busy() {
    let mut settings = server_settings("srv", "k");
    settings.max_connections = 1;
    let (server, address) = start_server(settings).await;
    let first = PeerClient::connect(
        &address,
        &ClusterKey::derive("k"),
        &tool(),
        ClientSettings::default(),
    )
    .await
    .unwrap();
    let err = status_as(&address, "k").await.unwrap_err();
    assert!(matches!(err, NetError::Busy), "{err}");
    drop(first);
    let mut answered = false;
    for _ in 0..100 {
        if status_as(&address, "k").await.is_ok() {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        answered,
        "the slot must come back after the first client leaves"
    );
    server.stop(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_new_cluster_key_applies_to_new_sessions() {
    let (server, address) = start_server(server_settings("srv", "old")).await;
    let mut established = PeerClient::connect(
        &address,
        &ClusterKey::derive("old"),
        &tool(),
        ClientSettings::default(),
    )
    .await
    .unwrap();
    server.set_cluster_key(ClusterKey::derive("new"));
    assert!(matches!(
        status_as(&address, "old").await,
        Err(NetError::WrongClusterKey { .. })
    ));
    assert_eq!(status_as(&address, "new").await.unwrap(), "peer");
    assert!(
        established.status().await.is_ok(),
        "a session in flight keeps working"
    );
    server.stop(Duration::from_secs(5)).await;
}

/// Accepts only the keys it was given, per node id.
#[derive(Debug)]
struct Pinned(Vec<(NodeId, PublicKey)>);

#[async_trait]
impl PeerVerifier for Pinned {
    async fn verify(&self, node: &NodeId, key: &PublicKey) -> Result<(), String> {
        match self.0.iter().find(|(n, _)| n == node) {
            Some((_, pinned)) if pinned == key => Ok(()),
            Some((_, pinned)) => Err(format!("{node} is pinned to {pinned} but presented {key}")),
            None => Err(format!("{node} is not known")),
        }
    }
}

#[tokio::test]
async fn a_key_that_is_not_the_pinned_one_is_refused_by_either_side() {
    let impostor = node("client");
    let real_client = NodeKey::generate().unwrap();
    let server_key = NodeKey::generate().unwrap();
    // The server pinned another key for "client".
    let server = LocalIdentity::node(
        id("server"),
        server_key.clone(),
        Some(Arc::new(Pinned(vec![(id("client"), real_client.public())]))),
    );
    let (a, b) = tokio::io::duplex(1 << 16);
    let k = ClusterKey::derive("k");
    let (client_side, server_side) = tokio::join!(
        secure::initiate(a, &k, &impostor, true, "server"),
        secure::respond(b, &k, &server, true)
    );
    let refused = server_side.unwrap_err().to_string();
    assert!(
        refused.contains(&real_client.public().fingerprint())
            && refused.contains(&impostor.key.public().fingerprint()),
        "{refused}"
    );
    assert!(
        matches!(client_side, Err(NetError::KeyRefused { .. })),
        "{client_side:?}"
    );

    // The client pinned another key for "server": it stops before sending its own hello.
    let (a, b) = tokio::io::duplex(1 << 16);
    let wary = LocalIdentity::node(
        id("client"),
        real_client,
        Some(Arc::new(Pinned(vec![(
            id("server"),
            NodeKey::generate().unwrap().public(),
        )]))),
    );
    let open_server = LocalIdentity::node(id("server"), server_key, None);
    let (client_side, server_side) = tokio::join!(
        secure::initiate(a, &k, &wary, true, "server"),
        secure::respond(b, &k, &open_server, true)
    );
    assert!(
        matches!(client_side, Err(NetError::KeyRefused { .. })),
        "{client_side:?}"
    );
    assert!(server_side.is_err(), "the session never opens");
}

/// Issue 12: 500 idle connections that never start a handshake filled the connection
/// limit and locked every tool and peer out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_strangers_cannot_lock_out_key_holders() {
    let (server, address) = start_server(server_settings("srv", "k")).await;
    let mut idle = Vec::new();
    for _ in 0..500 {
        idle.push(tokio::net::TcpStream::connect(&address).await.unwrap());
    }
    // Strangers keep coming while the key holders call.
    let flood_address = address.clone();
    let flood = tokio::spawn(async move {
        let mut held = Vec::new();
        for _ in 0..2_000 {
            if let Ok(socket) = tokio::net::TcpStream::connect(&flood_address).await {
                held.push(socket);
            }
            tokio::task::yield_now().await;
        }
        held
    });
    let mut ok = 0;
    for _ in 0..20 {
        if status_as(&address, "k").await.is_ok() {
            ok += 1;
        }
    }
    assert_eq!(ok, 20, "every key holder got a session");
    drop(flood.await.unwrap());
    drop(idle);
    server.stop(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_buffer_budget_holds_large_messages_back_and_lets_small_ones_through() {
    let budget = Arc::new(crate::BufferBudget::new(1024 * 1024));
    let first = tokio::time::timeout(Duration::from_secs(1), budget.reserve(700 * 1024))
        .await
        .unwrap();
    assert!(first.is_some());
    assert_eq!(budget.available(), 324 * 1024);
    // A second large message waits for room…
    let waiting = tokio::spawn({
        let budget = budget.clone();
        async move { budget.reserve(700 * 1024).await.is_some() }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiting.is_finished());
    // …while small ones need none.
    assert!(budget.reserve(10 * 1024).await.is_none());
    drop(first);
    assert!(
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .unwrap()
            .unwrap()
    );
    // A message larger than the whole budget still fits alone.
    let huge = tokio::time::timeout(Duration::from_secs(1), budget.reserve(4 * 1024 * 1024))
        .await
        .unwrap();
    assert!(huge.is_some());
}

/// A proxy to `target` that can freeze: it then carries nothing either way (what was in
/// flight is lost) but keeps every connection open, as a paused process or a black-holed
/// link does. Its tasks end with the test's runtime.
async fn freezable_proxy(target: String) -> (String, Arc<std::sync::atomic::AtomicBool>) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    async fn pump(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        frozen: Arc<AtomicBool>,
    ) {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            while frozen.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if !frozen.load(Ordering::SeqCst) && to.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let frozen = Arc::new(AtomicBool::new(false));
    let flag = frozen.clone();
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let outbound = tokio::net::TcpStream::connect(&target).await.unwrap();
            let (in_read, in_write) = inbound.into_split();
            let (out_read, out_write) = outbound.into_split();
            tokio::spawn(pump(in_read, out_write, flag.clone()));
            tokio::spawn(pump(out_read, in_write, flag.clone()));
        }
    });
    (address, frozen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_peer_is_waited_for_and_a_silent_one_is_given_up_within_the_liveness_bound() {
    // Busy: the handler takes longer than the caller's liveness bound, but the server
    // says it is working, so the call ends with the server's own answer.
    let mut settings = server_settings("srv", "k");
    settings.request_timeout = Duration::from_millis(2_500);
    let (server, address) = start_server(settings).await;
    let patient = ClientSettings {
        request_timeout: Duration::from_secs(60),
        ..ClientSettings::default()
    };
    assert_eq!(patient.liveness, Some(crate::client_settings::LIVENESS));
    let mut busy = PeerClient::connect(&address, &ClusterKey::derive("k"), &tool(), patient)
        .await
        .unwrap();
    let err = busy.get("c", "k").await.unwrap_err();
    assert!(
        matches!(
            err,
            NetError::Remote {
                code: proto::ErrorCode::Timeout,
                ..
            }
        ),
        "a busy peer was given up: {err}"
    );
    busy.ping(Duration::from_secs(5)).await.unwrap();

    // Silent: the same server behind a link that freezes. The call fails on the
    // liveness bound, long before the request timeout.
    let (proxied, frozen) = freezable_proxy(address.clone()).await;
    let mut cut_off = PeerClient::connect(&proxied, &ClusterKey::derive("k"), &tool(), patient)
        .await
        .unwrap();
    cut_off.ping(Duration::from_secs(5)).await.unwrap();
    frozen.store(true, std::sync::atomic::Ordering::SeqCst);
    let given_up = tokio::time::timeout(Duration::from_secs(20), cut_off.status())
        .await
        .expect("a silent peer was waited for as long as the request timeout");
    assert!(
        matches!(given_up, Err(NetError::Timeout { after, .. }) if after == crate::client_settings::LIVENESS),
        "{given_up:?}"
    );
    server.stop(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_change_of_role_closes_sessions_opened_before_it_and_new_ones_hear_it() {
    let mut settings = server_settings("srv", "k");
    settings.eligible = true;
    let (server, address) = start_server(settings).await;
    let connect = || async {
        PeerClient::connect(
            &address,
            &ClusterKey::derive("k"),
            &node("peer"),
            ClientSettings::default(),
        )
        .await
        .unwrap()
    };
    let mut before = connect().await;
    assert!(before.remote_eligible());
    before.status().await.unwrap();
    server.set_eligible(false);
    let after = before.status().await;
    assert!(
        matches!(after, Err(NetError::Closed) | Err(NetError::Io(_))),
        "a session opened before the change went on with the old role: {after:?}"
    );
    let mut renewed = connect().await;
    assert!(!renewed.remote_eligible());
    renewed.status().await.unwrap();
    server.stop(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_server_stopped_through_its_token_refuses_new_connections_at_once() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let token = CancellationToken::new();
    let server = TcpSyncServer::start(
        listener,
        server_settings("srv", "k"),
        Arc::new(EchoHandler),
        token.clone(),
    )
    .unwrap();
    let address = server.local_addr().to_string();
    assert_eq!(status_as(&address, "k").await.unwrap(), "peer");
    // The node is stopping (its root token), long before anyone calls `stop`: a client
    // must be refused, not accepted into a backlog nobody serves.
    token.cancel();
    let mut refused = false;
    for _ in 0..250 {
        if tokio::net::TcpStream::connect(&address).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "the listener still accepts after the stop");
    assert!(server.stop(Duration::from_secs(5)).await);
}

#[tokio::test]
async fn hello_and_noise_merged_into_one_frame_are_refused_with_the_reason() {
    let (server, address) = start_server(server_settings("srv", "k")).await;
    // A HandshakeFrame with both oneof fields set: a decoder keeps the last (noise).
    let mut merged = proto::HandshakeFrame {
        kind: Some(proto::handshake_frame::Kind::Hello(proto::Hello {
            magic: "cbddc".into(),
            protocol_version: crate::PROTOCOL_VERSION,
            ..Default::default()
        })),
    }
    .encode_to_vec();
    merged.extend(
        proto::HandshakeFrame {
            kind: Some(proto::handshake_frame::Kind::Noise(vec![1; 48])),
        }
        .encode_to_vec(),
    );
    let mut socket = tokio::net::TcpStream::connect(&address).await.unwrap();
    socket
        .write_all(&(merged.len() as u16).to_be_bytes())
        .await
        .unwrap();
    socket.write_all(&merged).await.unwrap();
    let mut len = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(10), socket.read_exact(&mut len))
        .await
        .unwrap()
        .unwrap();
    let mut answer = vec![0u8; u16::from_be_bytes(len) as usize];
    socket.read_exact(&mut answer).await.unwrap();
    match proto::HandshakeFrame::decode(answer.as_slice())
        .unwrap()
        .kind
    {
        Some(proto::handshake_frame::Kind::Reject(reject)) => {
            assert_eq!(reject.reason, proto::RejectReason::Malformed as i32);
            assert!(
                reject.message.contains("frame of its own"),
                "{}",
                reject.message
            );
        }
        other => panic!("expected a reject, got {other:?}"),
    }
    assert!(server.stop(Duration::from_secs(5)).await);
}

#[tokio::test]
async fn an_undecodable_request_is_answered_before_the_session_closes() {
    let (server, address) = start_server(server_settings("srv", "k")).await;
    let socket = tokio::net::TcpStream::connect(&address).await.unwrap();
    let (mut session, _) =
        secure::initiate(socket, &ClusterKey::derive("k"), &tool(), false, "srv")
            .await
            .unwrap();
    session
        .send_raw_plain(&[0, 0, 0, 3, 0xff, 0xff, 0xff])
        .await
        .unwrap();
    let answer: proto::Response = tokio::time::timeout(Duration::from_secs(10), session.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer.id, 0, "a session-level answer");
    match answer.body {
        Some(proto::response::Body::Error(e)) => {
            assert_eq!(e.code, proto::ErrorCode::InvalidRequest as i32);
            assert!(
                e.message.contains("not a protobuf Request"),
                "{}",
                e.message
            );
        }
        other => panic!("expected an error, got {other:?}"),
    }
    let after = tokio::time::timeout(Duration::from_secs(10), session.recv::<proto::Response>())
        .await
        .unwrap();
    assert!(after.is_err(), "the session closes after its answer");
    assert!(server.stop(Duration::from_secs(5)).await);
}

#[test]
fn golden_bytes_of_the_feed_fields() {
    let ask = proto::ChangesRequest {
        after: 2,
        consumer: "ix".into(),
        resume: true,
        listing: Some(proto::FeedListing {
            position: 4,
            after_collection: "c".into(),
            after_key: "k".into(),
        }),
        ..Default::default()
    };
    assert_eq!(
        ask.encode_to_vec(),
        [
            0x10, 0x02, 0x3a, 0x08, 0x08, 0x04, 0x12, 0x01, b'c', 0x1a, 0x01, b'k', 0x42, 0x02,
            b'i', b'x', 0x48, 0x01
        ]
    );
    let error = proto::ErrorResponse {
        code: proto::ErrorCode::FeedCompacted as i32,
        message: String::new(),
        feed_oldest: 4,
    };
    assert_eq!(error.encode_to_vec(), [0x08, 0x07, 0x18, 0x04]);
    let answer = proto::ChangesResponse {
        resume_after: 4,
        synced: true,
        ..Default::default()
    };
    assert_eq!(answer.encode_to_vec(), [0x10, 0x04, 0x20, 0x01]);
    let forget = proto::Request {
        id: 1,
        body: Some(proto::request::Body::ForgetConsumer(
            proto::ForgetConsumerRequest { name: "ix".into() },
        )),
    };
    assert_eq!(
        forget.encode_to_vec(),
        [0x08, 0x01, 0xd2, 0x01, 0x04, 0x0a, 0x02, b'i', b'x']
    );
    // A protocol-4 client that knows none of these still reads the answer it knows.
    let old = proto::ChangesRequest::decode(ask.encode_to_vec().as_slice()).unwrap();
    assert_eq!(old.after, 2);
}
