//! Cluster membership over real nodes (in-process, loopback TCP):
//! - bootstrap of a newcomer: `reconfigure_cluster` adding it to a member holding 100,000
//!   documents (and again 1,000,000), until it runs the new configuration and holds every
//!   document, beside raw SQLite inserting the same documents into an empty table in one
//!   durable transaction (the bound) and a raw copy of the same keys and values over one
//!   loopback TCP connection (at 100,000 documents each side's best of 3 runs); with
//!   the process's peak memory during each bootstrap (both
//!   nodes live in it), which stays flat when the data set grows tenfold (within 2x where proportional would be 10x);
//! - reconfiguration over TCP: `reconfigure_cluster` swapping one member of three, until
//!   it returns (the seal decided), then until every member of the new configuration
//!   runs it with a leader.
//!
//! Prints the figures and writes them to `target/cbddc-bench/membership.json`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;
use support::{free_port, memory_mib, reset_peak_rss};

use cbddc_config::{ClusterConfig, PeerNodeConfiguration};
use cbddc_core::{KnownPeer, LocalWrite, NodeId, PeerType};
use cbddc_node::Node;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

const KEY: &str = "bench-membership";

fn id(name: &str) -> NodeId {
    NodeId::new(name).unwrap()
}

/// Node configurations that all know each other; `members` bootstrap, the rest join.
fn configs(names: &[&str], members: &[&str], dir: &std::path::Path) -> Vec<PeerNodeConfiguration> {
    let ports: Vec<u16> = names.iter().map(|_| free_port()).collect();
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let mut config = PeerNodeConfiguration::new(id(name), dir.join(name));
            config.tcp_port = ports[i];
            config.cluster_key = KEY.into();
            config.sync_interval_ms = 200;
            config.election.interval_ms = 200;
            config.election.peer_timeout_ms = 1_000;
            for (j, other) in names.iter().enumerate() {
                if i != j {
                    config.known_peers.push(
                        KnownPeer::new(
                            id(other),
                            format!("127.0.0.1:{}", ports[j]),
                            PeerType::StaticRemote,
                        )
                        .unwrap(),
                    );
                }
            }
            let member = members.contains(name);
            config.cluster = Some(ClusterConfig {
                configuration_id: 1,
                members: if member {
                    members.iter().map(|m| id(m)).collect()
                } else {
                    Vec::new()
                },
                join: !member,
                ..Default::default()
            });
            config
        })
        .collect()
}

fn document(i: usize) -> (String, String) {
    (
        format!("key-{i:07}"),
        format!("{{\"n\":{i},\"payload\":\"{}\"}}", "x".repeat(64)),
    )
}

async fn wait(what: &str, mut condition: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !condition().await {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "timed out: {what}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// How long the bootstrap took, and how far the process's memory (both nodes) rose above
/// what it held when the bootstrap started.
async fn newcomer_bootstrap(documents: usize) -> (Duration, f64) {
    let dir = tempfile::tempdir().unwrap();
    let configs = configs(&["a", "d"], &["a"], dir.path());
    let a = Node::start(configs[0].clone()).await.unwrap();
    let d = Node::start(configs[1].clone()).await.unwrap();
    for chunk in (0..documents).collect::<Vec<_>>().chunks(1_000) {
        let writes = chunk
            .iter()
            .map(|i| {
                let (k, v) = document(*i);
                LocalWrite::put("docs", k, v)
            })
            .collect();
        a.write(writes).await.unwrap();
    }
    reset_peak_rss();
    let before = memory_mib("VmRSS:");
    let started = Instant::now();
    a.reconfigure_cluster(vec![id("a"), id("d")]).await.unwrap();
    // A newcomer joins once it copied the cluster's data: the clock stops there, and the
    // count (a scan of every document, as long as a tenth of the bootstrap) is checked
    // after it.
    wait("the newcomer joins", async || {
        d.cluster_status().unwrap().configuration_id == Some(2)
    })
    .await;
    let took = started.elapsed();
    assert_eq!(
        d.store().stats().await.unwrap().documents,
        documents as u64,
        "the newcomer joined holding every document"
    );
    let peak = memory_mib("VmHWM:") - before;
    a.shutdown().await;
    d.shutdown().await;
    (took, peak)
}

/// The same keys and values, length-prefixed, over one loopback connection.
fn raw_copy(documents: usize) -> Duration {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let receiver = std::thread::spawn(move || {
        let (mut socket, _) = listener.accept().unwrap();
        let mut received = Vec::new();
        socket.read_to_end(&mut received).unwrap();
        received.len()
    });
    let started = Instant::now();
    let mut socket = std::net::TcpStream::connect(address).unwrap();
    let mut buffer = Vec::with_capacity(1 << 20);
    for i in 0..documents {
        let (k, v) = document(i);
        for field in [k.as_bytes(), v.as_bytes()] {
            buffer.extend_from_slice(&(field.len() as u32).to_le_bytes());
            buffer.extend_from_slice(field);
        }
        if buffer.len() >= 1 << 20 {
            socket.write_all(&buffer).unwrap();
            buffer.clear();
        }
    }
    socket.write_all(&buffer).unwrap();
    drop(socket);
    let bytes = receiver.join().unwrap();
    assert!(bytes > documents * 64);
    started.elapsed()
}

/// The same documents inserted into an empty SQLite table shaped like the store's, in
/// one transaction committed with `synchronous=FULL`: the disk's floor for any bootstrap
/// that stores what it received.
fn raw_sqlite_apply(documents: usize) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = rusqlite::Connection::open(dir.path().join("raw.db")).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
         CREATE TABLE documents (collection TEXT NOT NULL, key TEXT NOT NULL, value TEXT,
             hlc_wall INTEGER NOT NULL, hlc_counter INTEGER NOT NULL, hlc_node TEXT NOT NULL,
             seq INTEGER, position INTEGER, PRIMARY KEY (collection, key)) WITHOUT ROWID;",
    )
    .unwrap();
    let rows: Vec<(String, String)> = (0..documents).map(document).collect();
    let started = Instant::now();
    let tx = conn.transaction().unwrap();
    {
        let mut insert = tx
            .prepare("INSERT INTO documents VALUES ('docs', ?1, ?2, ?3, 0, 'c2e116ba1891ac41566732640da8ab8f', ?3, NULL)")
            .unwrap();
        for (i, (key, value)) in rows.iter().enumerate() {
            insert
                .execute(rusqlite::params![key, value, i as i64 + 1])
                .unwrap();
        }
    }
    tx.commit().unwrap();
    started.elapsed()
}

async fn reconfigure_rounds(rounds: usize) -> (Vec<Duration>, Vec<Duration>) {
    let dir = tempfile::tempdir().unwrap();
    let names = ["a", "b", "c", "d"];
    let configs = configs(&names, &["a", "b", "c"], dir.path());
    let mut nodes = Vec::new();
    for config in configs {
        nodes.push(Node::start(config).await.unwrap());
    }
    let runs = |node: &Node, configuration_id: u32| {
        let status = node.cluster_status().unwrap();
        status.configuration_id == Some(configuration_id) && status.leader.is_some()
    };
    wait("configuration 1", async || {
        nodes[..3].iter().all(|n| runs(n, 1))
    })
    .await;
    let (mut decided, mut running) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        // Swap c and d in and out: {a, b, c} -> {a, b, d} -> {a, b, c} -> ...
        let (next, incoming) = if round % 2 == 0 { ("d", 3) } else { ("c", 2) };
        let configuration_id = round as u32 + 2;
        let started = Instant::now();
        let id_now = nodes[0]
            .reconfigure_cluster(vec![id("a"), id("b"), id(next)])
            .await
            .unwrap();
        assert_eq!(id_now, configuration_id);
        decided.push(started.elapsed());
        wait("every member runs the new configuration", async || {
            [0, 1, incoming]
                .iter()
                .all(|i| runs(&nodes[*i], configuration_id))
        })
        .await;
        running.push(started.elapsed());
    }
    for node in nodes {
        node.shutdown().await;
    }
    (decided, running)
}

fn median(mut samples: Vec<Duration>) -> f64 {
    samples.sort();
    samples[samples.len() / 2].as_secs_f64() * 1e3
}

/// A bootstrap of `documents` and raw SQLite storing them, each at its best of `runs`
/// taken in turns, so that both meet the same disk: its speed drifts by a third within
/// minutes here, and one sample against one (or against the best of three) made the
/// ratio a draw of that drift (1.10x to 1.45x at 1,000,000 in five runs of one build).
/// The memory is the first bootstrap's: later runs find the allocator's memory from
/// earlier ones and add less.
fn in_turns(
    runtime: &tokio::runtime::Runtime,
    documents: usize,
    runs: usize,
) -> (Duration, f64, Duration) {
    let mut bootstraps = Vec::new();
    let mut floors = Vec::new();
    for _ in 0..runs {
        bootstraps.push(runtime.block_on(newcomer_bootstrap(documents)));
        floors.push(raw_sqlite_apply(documents));
    }
    let peak = bootstraps[0].1;
    let best = bootstraps.iter().map(|run| run.0).min().unwrap();
    (best, peak, floors.into_iter().min().unwrap())
}

fn main() {
    // `cargo test --benches` runs this without --bench: keep that quick.
    let full = std::env::args().any(|a| a == "--bench");
    let (documents, large, rounds) = if full {
        (100_000, 1_000_000, 8)
    } else {
        (2_000, 20_000, 2)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (bootstrap, bootstrap_peak, floor) = in_turns(&runtime, documents, 3);
    let raw = (0..3).map(|_| raw_copy(documents)).min().unwrap();
    let (large_bootstrap, large_peak, large_floor) = in_turns(&runtime, large, 2);
    let (decided, running) = runtime.block_on(reconfigure_rounds(rounds));
    let report = serde_json::json!({
        "documents": documents,
        "newcomer_bootstrap_ms": bootstrap.as_secs_f64() * 1e3,
        "raw_tcp_copy_ms": raw.as_secs_f64() * 1e3,
        "raw_sqlite_apply_ms": floor.as_secs_f64() * 1e3,
        "bootstrap_peak_rss_growth_mib": bootstrap_peak,
        "large_documents": large,
        "large_bootstrap_ms": large_bootstrap.as_secs_f64() * 1e3,
        "large_raw_sqlite_apply_ms": large_floor.as_secs_f64() * 1e3,
        "large_bootstrap_peak_rss_growth_mib": large_peak,
        "reconfigure_rounds": rounds,
        "reconfigure_decided_median_ms": median(decided),
        "reconfigure_all_running_median_ms": median(running),
        "settings": "in-process nodes over loopback TCP, synchronous=FULL, 10 ms control ticks, election_tick_timeout 5",
    });
    support::write_report("membership.json", &report);
}
