//! What a control plane costs, side by side in one run: 16 `cbddc` processes that know each
//! other (plain nodes), then 16 that also form one `[cluster]` of 16 members.
//! - idle CPU per node: user + system time of each process over a quiet window, as a
//!   share of one core;
//! - burst spread: a burst of writes on one node until every node holds the last of them
//!   (entries of one origin are applied in order, so the last one means all of them).
//!
//! Prints the figures and writes them to `target/cbddc-bench/cluster_cost.json` for
//! `cargo xtask bench`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../../cbddc-node/benches/support/mod.rs"]
mod support;
use support::free_port;

use cbddc_net::{ClientSettings, ClusterKey, LocalIdentity, PeerClient};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const NODES: usize = 16;
const BURST: usize = 200;
const BURSTS: usize = 3;
const IDLE_WINDOW: Duration = Duration::from_secs(6);
const SETTLE: Duration = Duration::from_secs(4);
const KEY: &str = "bench-cluster-cost";

struct Fleet {
    children: Vec<Child>,
    ports: Vec<u16>,
    _dir: tempfile::TempDir,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn start_fleet(cluster: bool) -> Fleet {
    let dir = tempfile::tempdir().unwrap();
    let names: Vec<String> = (0..NODES).map(|i| format!("node-{i:02}")).collect();
    let ports: Vec<u16> = names.iter().map(|_| free_port()).collect();
    let members = names
        .iter()
        .map(|n| format!("\"{n}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let mut children = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let peers: Vec<String> = (0..NODES)
            .filter(|j| *j != i)
            .map(|j| {
                format!(
                    "{{ node_id = \"{}\", address = \"127.0.0.1:{}\" }}",
                    names[j], ports[j]
                )
            })
            .collect();
        let mut text = format!(
            "node_id = \"{name}\"\ntcp_port = {}\ndata_dir = {:?}\ncluster_key = \"{KEY}\"\nknown_peers = [{}]\n",
            ports[i],
            dir.path().join(name).display().to_string(),
            peers.join(", ")
        );
        if cluster {
            text.push_str(&format!("[cluster]\nmembers = [{members}]\n"));
        }
        let config = dir.path().join(format!("{name}.toml"));
        std::fs::write(&config, text).unwrap();
        children.push(
            Command::new(env!("CARGO_BIN_EXE_cbddc"))
                .args(["run", "--config"])
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
    }
    Fleet {
        children,
        ports,
        _dir: dir,
    }
}

async fn client(port: u16) -> Option<PeerClient> {
    let settings = ClientSettings {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
        ..ClientSettings::default()
    };
    PeerClient::connect(
        &format!("127.0.0.1:{port}"),
        &ClusterKey::derive(KEY),
        &LocalIdentity::tool().ok()?,
        settings,
    )
    .await
    .ok()
}

/// Every node answers, and (for a cluster) every node runs configuration 1 with a leader.
async fn wait_ready(fleet: &Fleet, cluster: bool) {
    let start = Instant::now();
    for port in &fleet.ports {
        loop {
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "the fleet did not come up"
            );
            let answers = match client(*port).await {
                Some(mut c) => c.status().await.is_ok(),
                None => false,
            };
            if answers && (!cluster || has_cluster_leader(*port)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn has_cluster_leader(port: u16) -> bool {
    let out = Command::new(env!("CARGO_BIN_EXE_cbddc"))
        .args(["cluster", "status", "--json", "--node"])
        .arg(format!("127.0.0.1:{port}"))
        .env("CBDDC_CLUSTER_KEY", KEY)
        .output()
        .unwrap();
    out.status.success()
        && serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .is_ok_and(|s| s["leader"].is_string())
}

/// User + system CPU ticks of `pid` so far.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The command name may hold spaces: fields are counted after its closing parenthesis.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Mean CPU per node over the idle window, in percent of one core.
async fn idle_cpu(fleet: &Fleet) -> f64 {
    tokio::time::sleep(SETTLE).await;
    let pids: Vec<u32> = fleet.children.iter().map(Child::id).collect();
    let before: Vec<u64> = pids.iter().map(|p| cpu_ticks(*p)).collect();
    let start = Instant::now();
    tokio::time::sleep(IDLE_WINDOW).await;
    let elapsed = start.elapsed().as_secs_f64();
    let used: u64 = pids
        .iter()
        .zip(before)
        .map(|(p, b)| cpu_ticks(*p) - b)
        .sum();
    used as f64 / ticks_per_second() / elapsed / NODES as f64 * 100.0
}

/// Median over [`BURSTS`] bursts: the first write on node 0 until all nodes hold the last.
async fn burst_spread(fleet: &Fleet) -> Duration {
    let mut writer = client(fleet.ports[0]).await.unwrap();
    let mut readers = Vec::new();
    for port in &fleet.ports {
        readers.push(client(*port).await.unwrap());
    }
    let mut samples = Vec::new();
    for round in 0..BURSTS {
        let start = Instant::now();
        for i in 0..BURST {
            writer
                .put("burst", &format!("r{round}-{i:04}"), "{\"v\":1}")
                .await
                .unwrap();
        }
        let last = format!("r{round}-{:04}", BURST - 1);
        for reader in &mut readers {
            while reader.get("burst", &last).await.unwrap().is_none() {
                assert!(
                    start.elapsed() < Duration::from_secs(120),
                    "burst {round} never spread"
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        samples.push(start.elapsed());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    // `cargo test --benches` runs bench binaries with --bench absent; skip the long work then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut figures = serde_json::Map::new();
    for (label, cluster) in [("plain", false), ("cluster", true)] {
        let fleet = start_fleet(cluster);
        let (cpu, spread) = runtime.block_on(async {
            wait_ready(&fleet, cluster).await;
            let cpu = idle_cpu(&fleet).await;
            let spread = burst_spread(&fleet).await;
            (cpu, spread)
        });
        eprintln!("{label}: idle CPU {cpu:.2}% per node, burst spread {spread:?}");
        figures.insert(format!("{label}_idle_cpu_percent"), cpu.into());
        figures.insert(
            format!("{label}_burst_spread_ms"),
            (spread.as_secs_f64() * 1000.0).into(),
        );
        drop(fleet);
    }
    figures.insert(
        "settings".into(),
        format!(
            "{NODES} processes, full mesh of static peers, default timers; idle window {IDLE_WINDOW:?} after {SETTLE:?}; burst of {BURST} puts on one node, median of {BURSTS}"
        )
        .into(),
    );
    let report = serde_json::Value::Object(figures);
    support::write_report("cluster_cost.json", &report);
}
