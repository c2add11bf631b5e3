//! How fast a running node follows a configuration change:
//! - `file_port_change`: the config file replaced (rename) until the new port accepts
//!   connections (includes the file watcher's 150 ms debounce);
//! - `node_id_change_10k`: a node id change until the node, under its new id, holds all
//!   10,000 documents of its one peer again.
//!
//! `cargo xtask bench` prints their medians.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;
use support::free_port;

use cbddc_config::{FileProvider, PeerNodeConfiguration, StaticProvider};
use cbddc_core::{KnownPeer, LocalWrite, NodeId, PeerType};
use cbddc_node::Node;
use criterion::{Criterion, criterion_group, criterion_main};
use std::sync::Arc;
use std::time::{Duration, Instant};

const DOCUMENTS: usize = 10_000;

fn config_text(port: u16, data: &std::path::Path) -> String {
    format!(
        "node_id = \"bench\"\ntcp_port = {port}\ndata_dir = {:?}\ncluster_key = \"bench\"\n",
        data.display().to_string()
    )
}

fn reconfigure(c: &mut Criterion) {
    let runtime = support::runtime();
    let mut group = c.benchmark_group("reconfigure");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(100))
        .measurement_time(Duration::from_secs(10));

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.toml");
    std::fs::write(&path, config_text(free_port(), dir.path())).unwrap();
    let node = runtime.block_on(async {
        let provider = Arc::new(FileProvider::watch(&path).unwrap());
        Node::start_with_provider(provider).await.unwrap()
    });
    group.bench_function("file_port_change", |b| {
        b.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                let port = free_port();
                let staged = dir.path().join(".node.toml.tmp");
                std::fs::write(&staged, config_text(port, dir.path())).unwrap();
                let start = Instant::now();
                std::fs::rename(&staged, &path).unwrap();
                while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                    assert!(
                        start.elapsed() < Duration::from_secs(30),
                        "the port never opened"
                    );
                    std::thread::sleep(Duration::from_millis(1));
                }
                total += start.elapsed();
            }
            total
        })
    });
    runtime.block_on(node.shutdown());

    let peer_dir = tempfile::tempdir().unwrap();
    let (peer, node, provider, mut config) = runtime.block_on(async {
        let mut peer_config =
            PeerNodeConfiguration::new(NodeId::new("holder").unwrap(), peer_dir.path());
        peer_config.tcp_port = 0;
        peer_config.cluster_key = "bench".into();
        let peer = Node::start(peer_config).await.unwrap();
        for batch in 0..DOCUMENTS / 1_000 {
            let writes = (0..1_000)
                .map(|i| LocalWrite::put("docs", format!("d{}", batch * 1_000 + i), "{\"v\":1}"))
                .collect();
            peer.write(writes).await.unwrap();
        }
        let mut config = PeerNodeConfiguration::new(NodeId::new("renamed-0").unwrap(), dir.path());
        config.tcp_port = 0;
        config.cluster_key = "bench".into();
        config.known_peers.push(
            KnownPeer::new(
                NodeId::new("holder").unwrap(),
                peer.local_addr().to_string(),
                PeerType::StaticRemote,
            )
            .unwrap(),
        );
        let provider = Arc::new(StaticProvider::new(config.clone()).unwrap());
        let node = Node::start_with_provider(provider.clone()).await.unwrap();
        (peer, node, provider, config)
    });
    let mut generation = 0u32;
    group.bench_function("node_id_change_10k", |b| {
        b.iter_custom(|iterations| {
            runtime.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iterations {
                    generation += 1;
                    let id = NodeId::new(format!("renamed-{generation}")).unwrap();
                    config.node_id = id.clone();
                    let start = Instant::now();
                    provider.set(config.clone()).unwrap();
                    loop {
                        if node.node_id() == id
                            && node.store().version_vector().await.unwrap().total()
                                >= DOCUMENTS as u64
                        {
                            break;
                        }
                        assert!(
                            start.elapsed() < Duration::from_secs(60),
                            "not back in sync in 60 s"
                        );
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    total += start.elapsed();
                }
                total
            })
        })
    });
    group.finish();
    runtime.block_on(async {
        node.shutdown().await;
        peer.shutdown().await;
    });
}

criterion_group!(benches, reconfigure);
criterion_main!(benches);
