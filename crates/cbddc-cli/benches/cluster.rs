//! Cluster figures that are distributions, not throughputs, so measured directly:
//! - failover: kill -9 of the leader (a `cbddc` process) until both survivors name the
//!   new leader, over several rounds;
//! - write propagation: a put on node a until the document is visible on node c, in a
//!   three-node in-process cluster, p50 and p99 over many writes.
//!
//! - a paused leader (SIGSTOP, default timers): until both survivors report it
//!   unreachable, and until both name the new leader, over several rounds.
//!
//! Prints the figures and writes them to `target/cbddc-bench/cluster.json` for
//! `cargo xtask bench`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../../cbddc-node/benches/support/mod.rs"]
mod support;
use support::free_port;

use cbddc_config::PeerNodeConfiguration;
use cbddc_core::{KnownPeer, NodeId, PeerType};
use cbddc_net::{ClientSettings, ClusterKey, PeerClient};
use cbddc_node::Node;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const FAILOVER_ROUNDS: usize = 5;
const WINDOW_ROUNDS: usize = 3;
const WRITES: usize = 400;
const KEY: &str = "bench-cluster";
const ELECTION: &str =
    "sync_interval_ms = 200\n[election]\ninterval_ms = 200\npeer_timeout_ms = 1000\n";

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn start_with(
    dir: &std::path::Path,
    id: &str,
    port: u16,
    peers: &[(&str, u16)],
    extra: &str,
) -> Child {
    let peers: Vec<String> = peers
        .iter()
        .map(|(p, port)| format!("{{ node_id = \"{p}\", address = \"127.0.0.1:{port}\" }}"))
        .collect();
    let config = dir.join(format!("{id}.toml"));
    let text = format!(
        "node_id = \"{id}\"\ntcp_port = {port}\ndata_dir = {:?}\ncluster_key = \"{KEY}\"\nknown_peers = [{}]\n{extra}",
        dir.join(id).display().to_string(),
        peers.join(", ")
    );
    std::fs::write(&config, text).unwrap();
    Command::new(env!("CARGO_BIN_EXE_cbddc"))
        .args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// node-a, node-b and node-c as processes that know each other, with `extra` settings;
/// killed when dropped.
struct Trio {
    dir: tempfile::TempDir,
    ports: [u16; 3],
    children: Vec<Child>,
    extra: &'static str,
}

const NAMES: [&str; 3] = ["node-a", "node-b", "node-c"];

impl Trio {
    fn start(extra: &'static str) -> Self {
        let mut trio = Self {
            dir: tempfile::tempdir().unwrap(),
            ports: [free_port(), free_port(), free_port()],
            children: Vec::new(),
            extra,
        };
        for index in 0..3 {
            let child = trio.spawn(index);
            trio.children.push(child);
        }
        trio
    }

    fn spawn(&self, index: usize) -> Child {
        let peers: Vec<(&str, u16)> = (0..3)
            .filter(|j| *j != index)
            .map(|j| (NAMES[j], self.ports[j]))
            .collect();
        start_with(
            self.dir.path(),
            NAMES[index],
            self.ports[index],
            &peers,
            self.extra,
        )
    }

    /// kill -9 of node `index`.
    fn kill(&mut self, index: usize) {
        self.children[index].kill().unwrap();
        self.children[index].wait().unwrap();
    }

    /// Starts node `index` again, on its data dir.
    fn restart(&mut self, index: usize) {
        self.children[index] = self.spawn(index);
    }
}

impl Drop for Trio {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A tool's session with the node at `port`, or `None` if it does not answer within
/// `within`.
async fn tool_client(port: u16, within: Duration) -> Option<PeerClient> {
    let settings = ClientSettings {
        connect_timeout: within,
        request_timeout: within,
        ..ClientSettings::default()
    };
    PeerClient::connect(
        &format!("127.0.0.1:{port}"),
        &ClusterKey::derive(KEY),
        &cbddc_net::LocalIdentity::tool().ok()?,
        settings,
    )
    .await
    .ok()
}

/// What `port`'s node says of `peer`: its last error, if any.
async fn error_about(port: u16, peer: &str) -> Option<String> {
    let mut client = tool_client(port, Duration::from_secs(5)).await?;
    let status = client.status().await.ok()?;
    status
        .peers
        .into_iter()
        .find(|p| p.node_id == peer)
        .map(|p| p.last_error)
        .filter(|e| !e.is_empty())
}

fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

/// Pauses the leader of three nodes with default timers, round after round: how long
/// until both survivors say it is unreachable, and until both follow the next node.
async fn paused_leader() -> (Vec<Duration>, Vec<Duration>) {
    let trio = Trio::start("");
    let [pa, pb, pc] = trio.ports;
    let (mut unreachable, mut replaced) = (Vec::new(), Vec::new());
    for round in 0..FAILOVER_ROUNDS {
        wait_for_leader(&[pa, pb, pc], "node-a", Duration::from_secs(60)).await;
        // Settled: no error left from the round before.
        let settle = Instant::now();
        while error_about(pb, "node-a").await.is_some() || error_about(pc, "node-a").await.is_some()
        {
            assert!(
                settle.elapsed() < Duration::from_secs(60),
                "node-a never recovered"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        signal(&trio.children[0], "STOP");
        let start = Instant::now();
        let mut seen_unreachable = None;
        let mut seen_leader = None;
        while seen_unreachable.is_none() || seen_leader.is_none() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "round {round} never settled"
            );
            if seen_unreachable.is_none() {
                let mut both = true;
                for port in [pb, pc] {
                    both &= error_about(port, "node-a")
                        .await
                        .is_some_and(|e| e.contains("unreachable"));
                }
                if both {
                    seen_unreachable = Some(start.elapsed());
                }
            }
            if seen_leader.is_none()
                && leader(pb).await.as_deref() == Some("node-b")
                && leader(pc).await.as_deref() == Some("node-b")
            {
                seen_leader = Some(start.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        eprintln!(
            "paused leader round {round}: unreachable after {seen_unreachable:?}, replaced after {seen_leader:?}"
        );
        unreachable.extend(seen_unreachable);
        replaced.extend(seen_leader);
        signal(&trio.children[0], "CONT");
    }
    (unreachable, replaced)
}

/// Whether the node at `port` says it leads (`None`: it does not answer).
async fn claims(client: &mut Option<PeerClient>, port: u16) -> Option<bool> {
    if client.is_none() {
        *client = tool_client(port, Duration::from_millis(200)).await;
    }
    match client.as_mut()?.status().await {
        Ok(status) => Some(status.is_leader),
        Err(_) => {
            *client = None;
            None
        }
    }
}

/// Polls every node's `is_leader` for `span`; returns how long two or more claimed it
/// at once (summed over the span).
async fn double_leadership(ports: &[u16], span: Duration) -> Duration {
    let mut clients: Vec<Option<PeerClient>> = ports.iter().map(|_| None).collect();
    let start = Instant::now();
    let mut overlap = Duration::ZERO;
    let mut last = Instant::now();
    while start.elapsed() < span {
        let mut claiming = 0;
        for (client, port) in clients.iter_mut().zip(ports) {
            if claims(client, *port).await == Some(true) {
                claiming += 1;
            }
        }
        let now = Instant::now();
        if claiming >= 2 {
            overlap += now - last;
        }
        last = now;
    }
    overlap
}

/// The windows with two gateway leaders, default timers: the smallest node paused for
/// 3 s then resumed, and the smallest node killed and restarted.
async fn leader_windows() -> (Vec<Duration>, Vec<Duration>) {
    let mut trio = Trio::start("");
    let ports = trio.ports;
    let [_, pb, pc] = ports;
    let (mut resumed, mut returned) = (Vec::new(), Vec::new());
    for round in 0..WINDOW_ROUNDS {
        wait_for_leader(&ports, "node-a", Duration::from_secs(60)).await;
        signal(&trio.children[0], "STOP");
        wait_for_leader(&[pb, pc], "node-b", Duration::from_secs(60)).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        signal(&trio.children[0], "CONT");
        let window = double_leadership(&ports, Duration::from_secs(6)).await;
        eprintln!("resumed leader round {round}: two leaders for {window:?}");
        resumed.push(window);

        wait_for_leader(&ports, "node-a", Duration::from_secs(60)).await;
        trio.kill(0);
        wait_for_leader(&[pb, pc], "node-b", Duration::from_secs(60)).await;
        trio.restart(0);
        let window = double_leadership(&ports, Duration::from_secs(8)).await;
        eprintln!("returning leader round {round}: two leaders for {window:?}");
        returned.push(window);
    }
    (resumed, returned)
}

async fn leader(port: u16) -> Option<String> {
    let mut client = tool_client(port, Duration::from_millis(500)).await?;
    let status = client.status().await.ok()?;
    (!status.leader.is_empty()).then_some(status.leader)
}

async fn wait_for_leader(ports: &[u16], expected: &str, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let mut agreed = true;
        for port in ports {
            agreed &= leader(*port).await.as_deref() == Some(expected);
        }
        if agreed {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "no agreement on {expected} within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn failover() -> Vec<Duration> {
    let mut trio = Trio::start(ELECTION);
    let [pa, pb, pc] = trio.ports;
    let mut samples = Vec::new();
    for round in 0..FAILOVER_ROUNDS {
        wait_for_leader(&[pa, pb, pc], "node-a", Duration::from_secs(60)).await;
        trio.kill(0);
        let took = wait_for_leader(&[pb, pc], "node-b", Duration::from_secs(60)).await;
        eprintln!("failover round {round}: {took:?}");
        samples.push(took);
        trio.restart(0);
    }
    samples
}

async fn propagation() -> Vec<Duration> {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let ids = ["node-a", "node-b", "node-c"];
    let ports: Vec<u16> = ids.iter().map(|_| free_port()).collect();
    let mut nodes = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let mut config = PeerNodeConfiguration::new(NodeId::new(*id).unwrap(), dirs[i].path());
        config.tcp_port = ports[i];
        config.cluster_key = KEY.into();
        for (j, other) in ids.iter().enumerate() {
            if i != j {
                config.known_peers.push(
                    KnownPeer::new(
                        NodeId::new(*other).unwrap(),
                        format!("127.0.0.1:{}", ports[j]),
                        PeerType::StaticRemote,
                    )
                    .unwrap(),
                );
            }
        }
        nodes.push(Node::start(config).await.unwrap());
    }
    // Let every sync session connect before measuring.
    nodes[0].put("warm", "up", "1").await.unwrap();
    while nodes[2].get("warm", "up").await.unwrap().is_none() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut samples = Vec::with_capacity(WRITES);
    for i in 0..WRITES {
        let key = format!("k{i}");
        let start = Instant::now();
        nodes[0].put("bench", &key, "{\"v\":1}").await.unwrap();
        while nodes[2].get("bench", &key).await.unwrap().is_none() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "write {i} never arrived"
            );
            tokio::task::yield_now().await;
        }
        samples.push(start.elapsed());
    }
    for node in nodes {
        node.shutdown().await;
    }
    samples
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
    let (mut resumed, mut returned) = runtime.block_on(leader_windows());
    resumed.sort();
    returned.sort();
    let (mut silent, mut paused) = runtime.block_on(paused_leader());
    silent.sort();
    paused.sort();
    let mut fail = runtime.block_on(failover());
    let mut prop = runtime.block_on(propagation());
    fail.sort();
    prop.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let report = serde_json::json!({
        "failover_settings": "3 processes; election interval 200 ms, peer timeout 1000 ms, sync interval 200 ms; kill -9 of the leader",
        "failover_rounds": fail.len(),
        "failover_median_ms": ms(percentile(&fail, 0.5)),
        "failover_max_ms": ms(*fail.last().unwrap()),
        "windows_settings": "3 processes, default timers; the smallest node paused 2 s after its successor took over then resumed, or killed and restarted; every node's is_leader polled for 6 s / 8 s",
        "windows_rounds": resumed.len(),
        "two_leaders_after_resume_max_ms": ms(*resumed.last().unwrap()),
        "two_leaders_after_return_max_ms": ms(*returned.last().unwrap()),
        "paused_settings": "3 processes, default timers; SIGSTOP of the leader",
        "paused_rounds": paused.len(),
        "paused_unreachable_median_ms": ms(percentile(&silent, 0.5)),
        "paused_unreachable_max_ms": ms(*silent.last().unwrap()),
        "paused_replaced_median_ms": ms(percentile(&paused, 0.5)),
        "paused_replaced_max_ms": ms(*paused.last().unwrap()),
        "propagation_settings": "3 in-process nodes, full mesh of static peers, push on write; one write at a time on node-a",
        "propagation_writes": prop.len(),
        "propagation_p50_ms": ms(percentile(&prop, 0.5)),
        "propagation_p99_ms": ms(percentile(&prop, 0.99)),
    });
    support::write_report("cluster.json", &report);
}
