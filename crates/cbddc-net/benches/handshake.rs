//! Connections per second over loopback TCP: a full protocol-2 handshake (Noise XXpsk0:
//! cluster key plus each side's node key) beside protocol 1's cluster-key-only handshake
//! (Noise NNpsk0, the same messages without static keys) and beside a bare TCP connect.
//! `cargo xtask bench` prints the ratios.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use cbddc_core::NodeId;
use cbddc_net::{
    ClientSettings, ClusterKey, LocalIdentity, NodeKey, PeerClient, RequestHandler, ServerSettings,
    SessionInfo, TcpSyncServer, proto,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

#[derive(Debug)]
struct Nothing;

#[async_trait::async_trait]
impl RequestHandler for Nothing {
    async fn handle(&self, _: &SessionInfo, _: proto::request::Body) -> proto::response::Body {
        proto::response::Body::Status(Box::default())
    }
}

const V1_PATTERN: &str = "Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s";
const PSK: [u8; 32] = [7; 32];

async fn frame_out(io: &mut TcpStream, bytes: &[u8]) {
    io.write_all(&(bytes.len() as u16).to_be_bytes())
        .await
        .unwrap();
    io.write_all(bytes).await.unwrap();
}

async fn frame_in(io: &mut TcpStream, buf: &mut Vec<u8>) {
    let mut len = [0u8; 2];
    io.read_exact(&mut len).await.unwrap();
    buf.resize(u16::from_be_bytes(len) as usize, 0);
    io.read_exact(buf).await.unwrap();
}

/// Protocol 1's handshake, reproduced for the comparison: one message each way.
async fn v1_responder(listener: TcpListener) {
    loop {
        let Ok((mut socket, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(async move {
            let mut hs = snow::Builder::new(V1_PATTERN.parse().unwrap())
                .prologue(b"cbddc/1")
                .unwrap()
                .psk(0, &PSK)
                .unwrap()
                .build_responder()
                .unwrap();
            let (mut buf, mut out) = (Vec::new(), vec![0u8; 65535]);
            frame_in(&mut socket, &mut buf).await;
            hs.read_message(&buf, &mut out).unwrap();
            let n = hs.write_message(b"hello", &mut out).unwrap();
            frame_out(&mut socket, &out[..n]).await;
            let _ = hs.into_transport_mode().unwrap();
        });
    }
}

async fn v1_connect(address: &str) {
    let mut socket = TcpStream::connect(address).await.unwrap();
    socket.set_nodelay(true).unwrap();
    let mut hs = snow::Builder::new(V1_PATTERN.parse().unwrap())
        .prologue(b"cbddc/1")
        .unwrap()
        .psk(0, &PSK)
        .unwrap()
        .build_initiator()
        .unwrap();
    let (mut buf, mut out) = (Vec::new(), vec![0u8; 65535]);
    let n = hs.write_message(b"hello", &mut out).unwrap();
    frame_out(&mut socket, &out[..n]).await;
    frame_in(&mut socket, &mut buf).await;
    hs.read_message(&buf, &mut out).unwrap();
    let _ = hs.into_transport_mode().unwrap();
}

fn handshake(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let key = ClusterKey::derive("bench");
    let (v2_address, v1_address, tcp_address, _server) = runtime.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut settings = ServerSettings::new(
            NodeId::new("server").unwrap(),
            NodeKey::generate().unwrap(),
            key.clone(),
        );
        settings.max_connections = 4096;
        let server = TcpSyncServer::start(
            listener,
            settings,
            Arc::new(Nothing),
            CancellationToken::new(),
        )
        .unwrap();
        let v1 = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let v1_address = v1.local_addr().unwrap().to_string();
        tokio::spawn(v1_responder(v1));
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp_address = tcp.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((socket, _)) = tcp.accept().await {
                drop(socket);
            }
        });
        (
            server.local_addr().to_string(),
            v1_address,
            tcp_address,
            server,
        )
    });
    let client = LocalIdentity::node(
        NodeId::new("client").unwrap(),
        NodeKey::generate().unwrap(),
        None,
    );
    let mut group = c.benchmark_group("handshake");
    group.throughput(Throughput::Elements(1));
    group.bench_function("v2_node_keys_xxpsk0", |b| {
        b.to_async(&runtime).iter(|| async {
            PeerClient::connect(&v2_address, &key, &client, ClientSettings::default())
                .await
                .unwrap();
        })
    });
    group.bench_function("v1_cluster_key_nnpsk0", |b| {
        b.to_async(&runtime).iter(|| v1_connect(&v1_address))
    });
    group.bench_function("tcp_connect", |b| {
        b.to_async(&runtime).iter(|| async {
            let socket = TcpStream::connect(&tcp_address).await.unwrap();
            drop(socket);
        })
    });
    group.finish();
}

criterion_group!(benches, handshake);
criterion_main!(benches);
