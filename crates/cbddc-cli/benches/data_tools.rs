//! What the data tools cost, each beside its limit in the same run:
//! - `feed`: puts per second (10 commits of 100) with no change-feed subscriber, and with
//!   one reading every change as it comes;
//! - `import`: `cbddc import` of 10,000 JSON lines into a running node, beside the same
//!   10,000 documents written with `Node::write` in batches of 1,000.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use cbddc_config::PeerNodeConfiguration;
use cbddc_core::{LocalWrite, NodeId};
use cbddc_node::{ChangeFilter, Node};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::time::{Duration, Instant};

const VALUE: &str = r#"{"name":"benchmark document","count":12345,"tags":["a","b","c"]}"#;
const FEED_PUTS: usize = 1_000;
const FEED_BATCH: usize = 100;
const IMPORT_LINES: usize = 10_000;
const IMPORT_BATCH: usize = 1_000;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn start(name: &str, dir: &std::path::Path) -> Node {
    let mut config = PeerNodeConfiguration::new(NodeId::new(name).unwrap(), dir);
    config.tcp_port = 0;
    config.cluster_key = "bench".into();
    Node::start(config).await.unwrap()
}

async fn puts(node: &Node, collection: &str) {
    for batch in 0..FEED_PUTS / FEED_BATCH {
        let writes = (0..FEED_BATCH)
            .map(|i| LocalWrite::put(collection, format!("k{:05}", batch * FEED_BATCH + i), VALUE))
            .collect();
        node.write(writes).await.unwrap();
    }
}

fn feed(c: &mut Criterion) {
    let runtime = runtime();
    let dir = tempfile::tempdir().unwrap();
    let node = runtime.block_on(start("feed-bench", dir.path()));
    let mut group = c.benchmark_group("feed");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(FEED_PUTS as u64));
    let mut round = 0u64;
    group.bench_function("puts_without_subscriber", |b| {
        b.iter_custom(|iterations| {
            runtime.block_on(async {
                let start = Instant::now();
                for _ in 0..iterations {
                    round += 1;
                    puts(&node, &format!("c{round}")).await;
                }
                start.elapsed()
            })
        })
    });
    group.bench_function("puts_with_subscriber", |b| {
        b.iter_custom(|iterations| {
            runtime.block_on(async {
                let mut feed = node.changes(ChangeFilter::default()).await.unwrap();
                let reader = tokio::spawn(async move {
                    let mut seen = 0u64;
                    while seen < iterations * FEED_PUTS as u64 {
                        feed.next().await.unwrap().unwrap();
                        seen += 1;
                    }
                });
                let start = Instant::now();
                for _ in 0..iterations {
                    round += 1;
                    puts(&node, &format!("c{round}")).await;
                }
                // The subscriber's cost counts only while it keeps up with the writes.
                reader.await.unwrap();
                start.elapsed()
            })
        })
    });
    group.finish();
    runtime.block_on(node.shutdown());
}

fn import(c: &mut Criterion) {
    let runtime = runtime();
    let dir = tempfile::tempdir().unwrap();
    let node = runtime.block_on(start("import-bench", dir.path()));
    let address = node.local_addr().to_string();
    let file = dir.path().join("lines.jsonl");
    let mut lines = String::new();
    for i in 0..IMPORT_LINES {
        lines.push_str(&format!("{{\"key\":\"k{i:05}\",\"value\":{VALUE}}}\n"));
    }
    std::fs::write(&file, lines).unwrap();

    let mut group = c.benchmark_group("import");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_secs(15));
    group.throughput(Throughput::Elements(IMPORT_LINES as u64));
    let mut round = 0u64;
    group.bench_function("node_write_batches", |b| {
        b.iter_custom(|iterations| {
            runtime.block_on(async {
                let start = Instant::now();
                for _ in 0..iterations {
                    round += 1;
                    let collection = format!("w{round}");
                    for batch in 0..IMPORT_LINES / IMPORT_BATCH {
                        let writes = (0..IMPORT_BATCH)
                            .map(|i| {
                                LocalWrite::put(
                                    &collection,
                                    format!("k{:05}", batch * IMPORT_BATCH + i),
                                    VALUE,
                                )
                            })
                            .collect();
                        node.write(writes).await.unwrap();
                    }
                }
                start.elapsed()
            })
        })
    });
    group.bench_function("cli_import", |b| {
        b.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                round += 1;
                let start = Instant::now();
                let out = std::process::Command::new(env!("CARGO_BIN_EXE_cbddc"))
                    .args(["import", &format!("i{round}"), file.to_str().unwrap()])
                    .args(["--batch", &IMPORT_BATCH.to_string(), "--node", &address])
                    .env("CBDDC_CLUSTER_KEY", "bench")
                    .output()
                    .unwrap();
                total += start.elapsed();
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            total
        })
    });
    group.finish();
    runtime.block_on(node.shutdown());
}

criterion_group!(benches, feed, import);
criterion_main!(benches);
