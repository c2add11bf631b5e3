//! Mixed-version scenarios: this build against an older release's `cbddc` binary.
//!
//! `cargo xtask upgrade --from v0.1.0` builds the older release in a worktree of its own
//! and runs these with its binary in `CBDDC_OLD_BINARY` (they are ignored by a plain
//! `cargo test`, which has no older binary). With `CBDDC_UPGRADE_WITHOUT_NEGOTIATION`,
//! the nodes of this build speak only their newest protocol (`min_protocol_version`), to
//! show what negotiation buys: the same scenarios then fail. Each scenario appends a row
//! to `CBDDC_UPGRADE_REPORT` when one is asked for.

use crate::harness::{KEY, free_port, wait_until};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const COLLECTION: &str = "ledger";
const CONVERGENCE: Duration = Duration::from_secs(60);
const NAMES: [&str; 3] = ["node-a", "node-b", "node-c"];

fn old_binary() -> PathBuf {
    PathBuf::from(std::env::var("CBDDC_OLD_BINARY").expect(
        "CBDDC_OLD_BINARY names the older release's cbddc binary: run these through `cargo xtask upgrade --from v0.1.0`",
    ))
}

fn new_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cbddc"))
}

fn without_negotiation() -> bool {
    std::env::var_os("CBDDC_UPGRADE_WITHOUT_NEGOTIATION").is_some()
}

/// A `cbddc` command of `binary` against the node at `port`.
fn cli(binary: &Path, args: &[&str], port: u16) -> Output {
    Command::new(binary)
        .args(args)
        .args(["--node", &format!("127.0.0.1:{port}")])
        .env("CBDDC_CLUSTER_KEY", KEY)
        .output()
        .expect("the cbddc binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim().to_string()
}

/// One node of the scenario: its port, its data dir and config, and the binary it runs now.
struct Node {
    name: &'static str,
    port: u16,
    dir: PathBuf,
    binary: PathBuf,
    child: Option<Child>,
    /// Held by the node's writer around each write, and by the scenario while the node is
    /// down: a write is never in flight while its node stops.
    up: Arc<Mutex<bool>>,
}

impl Node {
    fn config(&self, peers: &[(&str, u16)], cluster: bool) -> PathBuf {
        let peers: Vec<String> = peers
            .iter()
            .filter(|(name, _)| *name != self.name)
            .map(|(name, port)| {
                format!(
                    "{{ node_id = \"{name}\", address = \"127.0.0.1:{port}\", type = \"static\" }}"
                )
            })
            .collect();
        let mut config = format!(
            "node_id = \"{}\"\ntcp_port = {}\ndata_dir = {:?}\ncluster_key = \"{KEY}\"\nsync_interval_ms = 200\nknown_peers = [{}]\n",
            self.name,
            self.port,
            self.dir.join("data").display().to_string(),
            peers.join(", "),
        );
        if self.binary == new_binary() && without_negotiation() {
            config.push_str("min_protocol_version = 5\n");
        }
        if cluster {
            let members: Vec<String> = NAMES.iter().map(|n| format!("\"{n}\"")).collect();
            config.push_str(&format!(
                "[cluster]\nconfiguration_id = 1\nmembers = [{}]\n",
                members.join(", ")
            ));
        }
        let path = self.dir.join("node.toml");
        std::fs::write(&path, config).unwrap();
        path
    }

    fn launch(&mut self, peers: &[(&str, u16)], cluster: bool) {
        let config = self.config(peers, cluster);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("node.log"))
            .unwrap();
        self.child = Some(
            Command::new(&self.binary)
                .args(["run", "--config"])
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        let (binary, port) = (self.binary.clone(), self.port);
        wait_until(
            &format!("{} to answer status", self.name),
            Duration::from_secs(30),
            || cli(&binary, &["status"], port).status.success(),
        );
        *self.up.lock().unwrap() = true;
    }

    /// Marks the node down (waiting for an in-flight write), then SIGTERM and its exit.
    fn stop(&mut self) {
        *self.up.lock().unwrap() = false;
        let mut child = self.child.take().expect("running");
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        let start = Instant::now();
        while child.try_wait().unwrap().is_none() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{} did not stop",
                self.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn cli(&self, args: &[&str]) -> Output {
        cli(&self.binary, args, self.port)
    }

    /// The collection as this node holds it, by key.
    fn documents(&self) -> Option<BTreeMap<String, serde_json::Value>> {
        let out = self.cli(&["list", COLLECTION, "--json"]);
        if !out.status.success() {
            return None;
        }
        let items: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).ok()?;
        Some(
            items
                .into_iter()
                .filter_map(|item| Some((item["key"].as_str()?.to_string(), item["value"].clone())))
                .collect(),
        )
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Continuous writes to every node, each through the binary its node runs now.
struct Writers {
    stop: Arc<AtomicBool>,
    acknowledged: Arc<Mutex<BTreeMap<String, u64>>>,
    refused: Arc<Mutex<Vec<String>>>,
    written: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// Per node: the binary its writer uses (changes when the node is replaced).
    binaries: Vec<Arc<Mutex<PathBuf>>>,
}

impl Writers {
    fn start(nodes: &[Node]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(Mutex::new(BTreeMap::new()));
        let refused = Arc::new(Mutex::new(Vec::new()));
        let written = Arc::new(AtomicU64::new(0));
        let mut threads = Vec::new();
        let mut binaries = Vec::new();
        for node in nodes {
            let binary = Arc::new(Mutex::new(node.binary.clone()));
            binaries.push(binary.clone());
            let (stop, acknowledged, refused, written, up) = (
                stop.clone(),
                acknowledged.clone(),
                refused.clone(),
                written.clone(),
                node.up.clone(),
            );
            let (name, port) = (node.name, node.port);
            threads.push(std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let up = up.lock().unwrap();
                    if !*up {
                        drop(up);
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                    n += 1;
                    let key = format!("{name}-{n}");
                    let value = format!("{{\"n\":{n},\"by\":\"{name}\"}}");
                    let binary = binary.lock().unwrap().clone();
                    let out = cli(&binary, &["put", COLLECTION, &key, &value], port);
                    drop(up);
                    if out.status.success() {
                        acknowledged.lock().unwrap().insert(key, n);
                        written.fetch_add(1, Ordering::SeqCst);
                    } else {
                        refused
                            .lock()
                            .unwrap()
                            .push(format!("{key} on {name}: {}", text(&out.stderr)));
                    }
                }
            }));
        }
        Self {
            stop,
            acknowledged,
            refused,
            written,
            threads,
            binaries,
        }
    }

    /// Waits until `count` more writes were acknowledged (bounded).
    fn let_write(&self, count: u64) {
        let target = self.written.load(Ordering::SeqCst) + count;
        wait_until(
            &format!("{count} more acknowledged writes"),
            Duration::from_secs(60),
            || self.written.load(Ordering::SeqCst) >= target,
        );
    }

    fn finish(mut self) -> (BTreeMap<String, u64>, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads.drain(..) {
            thread.join().unwrap();
        }
        (
            self.acknowledged.lock().unwrap().clone(),
            self.refused.lock().unwrap().clone(),
        )
    }
}

/// What one check of the scenario found.
struct Check {
    lost: usize,
    took: Duration,
    problem: Option<String>,
}

/// Holds every node's writes, then waits until every node holds every acknowledged write
/// and the same documents; writes go on afterwards.
fn converge(nodes: &[Node], acknowledged: &Mutex<BTreeMap<String, u64>>) -> Check {
    let guards: Vec<_> = nodes.iter().map(|n| n.up.lock().unwrap()).collect();
    let acknowledged = acknowledged.lock().unwrap().clone();
    let start = Instant::now();
    loop {
        let views: Vec<Option<BTreeMap<String, serde_json::Value>>> =
            nodes.iter().map(Node::documents).collect();
        let missing: usize = views
            .iter()
            .map(|view| match view {
                Some(docs) => acknowledged
                    .keys()
                    .filter(|k| !docs.contains_key(*k))
                    .count(),
                None => acknowledged.len(),
            })
            .max()
            .unwrap_or(0);
        let identical = views.windows(2).all(|w| w[0].is_some() && w[0] == w[1]);
        if missing == 0 && identical {
            drop(guards);
            return Check {
                lost: 0,
                took: start.elapsed(),
                problem: None,
            };
        }
        if start.elapsed() > CONVERGENCE {
            drop(guards);
            return Check {
                lost: missing,
                took: start.elapsed(),
                problem: Some(if missing > 0 {
                    format!("{missing} acknowledged writes missing on some node")
                } else {
                    "the nodes hold different documents".to_string()
                }),
            };
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One row of the report.
struct Row {
    scenario: &'static str,
    acknowledged: usize,
    lost: usize,
    refused: usize,
    slowest: Duration,
    problems: Vec<String>,
}

impl Row {
    /// Appends the row to the report, then fails the test with every problem found.
    fn settle(self) {
        if let Ok(path) = std::env::var("CBDDC_UPGRADE_REPORT") {
            use std::io::Write;
            let line = serde_json::json!({
                "scenario": self.scenario,
                "acknowledged": self.acknowledged,
                "lost": self.lost,
                "refused": self.refused,
                "slowest_convergence_ms": self.slowest.as_millis() as u64,
                "ok": self.problems.is_empty(),
                "problems": self.problems,
            });
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .unwrap();
            writeln!(file, "{line}").unwrap();
        }
        assert!(
            self.problems.is_empty(),
            "{}: {}",
            self.scenario,
            self.problems.join("; ")
        );
    }
}

fn nodes(dir: &Path) -> (Vec<Node>, Vec<(&'static str, u16)>) {
    let peers: Vec<(&'static str, u16)> = NAMES.iter().map(|n| (*n, free_port())).collect();
    let nodes = peers
        .iter()
        .map(|(name, port)| {
            let dir = dir.join(name);
            std::fs::create_dir_all(&dir).unwrap();
            Node {
                name,
                port: *port,
                dir,
                binary: old_binary(),
                child: None,
                up: Arc::new(Mutex::new(false)),
            }
        })
        .collect();
    (nodes, peers)
}

/// Three nodes of the old release under writes on every node; each in turn is stopped,
/// given this build's binary and restarted on its data dir. After each step every
/// acknowledged write is on every node, and no running node refused a write.
fn rolling_upgrade(scenario: &'static str, cluster: bool) {
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, peers) = nodes(dir.path());
    for node in &mut nodes {
        node.launch(&peers, cluster);
    }
    let writers = Writers::start(&nodes);
    writers.let_write(30);
    let mut problems = Vec::new();
    let mut lost = 0;
    let mut slowest = Duration::ZERO;
    for i in 0..nodes.len() {
        nodes[i].stop();
        nodes[i].binary = new_binary();
        *writers.binaries[i].lock().unwrap() = new_binary();
        nodes[i].launch(&peers, cluster);
        writers.let_write(30);
        if cluster && i == 0 {
            // Membership in the mixed cluster: a reconfiguration decided by one member of
            // this build and two of the old release, asked of an old one.
            if let Some(problem) = reconfigure_in_mixed_cluster(&nodes) {
                problems.push(problem);
            }
        }
        let check = converge(&nodes, &writers.acknowledged);
        slowest = slowest.max(check.took);
        lost = lost.max(check.lost);
        if let Some(problem) = check.problem {
            problems.push(format!("after replacing {}: {problem}", nodes[i].name));
            break;
        }
    }
    let (acknowledged, refused) = writers.finish();
    let final_check = converge(&nodes, &Mutex::new(acknowledged.clone()));
    lost = lost.max(final_check.lost);
    slowest = slowest.max(final_check.took);
    if let Some(problem) = final_check.problem {
        problems.push(format!("at the end: {problem}"));
    }
    if !refused.is_empty() {
        problems.push(format!(
            "{} writes refused by running nodes, e.g. {}",
            refused.len(),
            refused[0]
        ));
    }
    Row {
        scenario,
        acknowledged: acknowledged.len(),
        lost,
        refused: refused.len(),
        slowest,
        problems,
    }
    .settle();
}

/// Asks an old member to run the same members as a new configuration; `None` when it is
/// decided and every member runs it.
fn reconfigure_in_mixed_cluster(nodes: &[Node]) -> Option<String> {
    let members = NAMES.join(",");
    let asked = &nodes[1];
    let out = asked.cli(&["cluster", "reconfigure", "--members", &members]);
    if !out.status.success() {
        return Some(format!(
            "a reconfiguration in the mixed cluster was refused by {}: {}",
            asked.name,
            text(&out.stderr)
        ));
    }
    let mut problem = None;
    let start = Instant::now();
    while start.elapsed() < CONVERGENCE {
        let ids: Vec<Option<u64>> = nodes
            .iter()
            .map(|n| {
                let out = n.cli(&["cluster", "status", "--json"]);
                let status: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
                status["configuration_id"].as_u64()
            })
            .collect();
        if ids.iter().all(|id| *id == Some(2)) {
            return None;
        }
        problem = Some(format!("configurations after the reconfiguration: {ids:?}"));
        std::thread::sleep(Duration::from_millis(200));
    }
    problem
}

#[test]
#[ignore = "needs an older release's binary: run by `cargo xtask upgrade --from v0.1.0`"]
fn upgrade_a_rolling_upgrade_of_three_peers_under_writes() {
    rolling_upgrade("rolling upgrade, 3 peers under writes", false);
}

#[test]
#[ignore = "needs an older release's binary: run by `cargo xtask upgrade --from v0.1.0`"]
fn upgrade_a_rolling_upgrade_of_a_cluster_of_three_with_a_reconfiguration() {
    rolling_upgrade("rolling upgrade, [cluster] of 3, reconfigured mixed", true);
}

/// Each release's CLI against the other release's node: status, put, get and list.
#[test]
#[ignore = "needs an older release's binary: run by `cargo xtask upgrade --from v0.1.0`"]
fn upgrade_each_release_cli_against_the_other_release_node() {
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, peers) = nodes(dir.path());
    let mut problems = Vec::new();
    let mut acknowledged = 0;
    nodes.truncate(2);
    nodes[1].binary = new_binary();
    let peers = &peers[..2];
    for node in &mut nodes {
        node.launch(peers, false);
    }
    let pairs = [
        ("this build's CLI", new_binary(), &nodes[0]),
        ("the old CLI", old_binary(), &nodes[1]),
    ];
    for (who, binary, node) in pairs {
        let run = |args: &[&str]| cli(&binary, args, node.port);
        let key = format!("via-{}", node.name);
        let steps: [(&str, Output); 4] = [
            ("status", run(&["status"])),
            ("put", run(&["put", COLLECTION, &key, "{\"ok\":true}"])),
            ("get", run(&["get", COLLECTION, &key])),
            ("list", run(&["list", COLLECTION, "--json"])),
        ];
        for (command, out) in &steps {
            if !out.status.success() {
                problems.push(format!(
                    "{who} against {} ({}): {command} failed: {}",
                    node.name,
                    if node.binary == new_binary() {
                        "this build"
                    } else {
                        "old release"
                    },
                    text(&out.stderr)
                ));
            }
        }
        if steps[1].1.status.success() {
            acknowledged += 1;
        }
        if !text(&steps[2].1.stdout).contains("true") {
            problems.push(format!(
                "{who} could not read back what it wrote on {}",
                node.name
            ));
        }
    }
    Row {
        scenario: "each release's CLI against the other's node",
        acknowledged,
        lost: 0,
        refused: 0,
        slowest: Duration::ZERO,
        problems,
    }
    .settle();
}

/// A node of this build rolled back to the old binary on its data dir: refused with a
/// message, the database untouched, and this build opens it again with every document.
#[test]
#[ignore = "needs an older release's binary: run by `cargo xtask upgrade --from v0.1.0`"]
fn upgrade_a_node_rolled_back_to_the_old_binary() {
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, peers) = nodes(dir.path());
    nodes.truncate(1);
    let peers = &peers[..1];
    let node = &mut nodes[0];
    node.launch(peers, false);
    for i in 0..20 {
        let out = node.cli(&["put", COLLECTION, &format!("k{i}"), "{\"v\":1}"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    node.stop();
    node.binary = new_binary();
    node.launch(peers, false);
    let before = node.documents().expect("listed");
    node.stop();
    node.binary = old_binary();
    let config = node.config(peers, false);
    let rolled_back = Command::new(&node.binary)
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let mut problems = Vec::new();
    let message = text(&rolled_back.stderr);
    if rolled_back.status.success() || !message.contains("newer than this build supports") {
        problems.push(format!(
            "the old binary on a database this build moved on: exit {:?}, {message}",
            rolled_back.status.code()
        ));
    }
    node.binary = new_binary();
    node.launch(peers, false);
    let after = node.documents().expect("listed");
    if after != before {
        problems.push(format!(
            "the documents changed across the refused rollback: {} before, {} after",
            before.len(),
            after.len()
        ));
    }
    Row {
        scenario: "rollback to the old binary on a moved-on database",
        acknowledged: before.len(),
        lost: before.len().saturating_sub(after.len()),
        refused: 0,
        slowest: Duration::ZERO,
        problems,
    }
    .settle();
}
