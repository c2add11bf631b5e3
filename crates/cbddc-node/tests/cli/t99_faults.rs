//! Faults on several hosts of a LAN (network namespaces), each scenario checked by the
//! ledger of acknowledged writes (`checker`): after the faults, nothing acknowledged is
//! lost, every node holds the same documents with the last writer's value, and the nodes
//! agree on one leader.
//!
//! `cargo test` runs one round of each. `cargo xtask faults --seed N --rounds R` runs
//! them long: more rounds, with faults chosen from the seed (CBDDC_FAULT_SEED,
//! CBDDC_FAULT_ROUNDS), and a report of each scenario (CBDDC_FAULT_REPORT).

use crate::checker::{Ledger, agreed_leader};
use crate::harness::wait_until;
use crate::lan::{HostNode, Lan};
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(60);
const NAMES: [&str; 3] = ["node-a", "node-b", "node-c"];

/// The faults to run: how many rounds, and a small deterministic generator for choices.
struct Plan {
    rounds: usize,
    state: u64,
}

impl Plan {
    fn from_env() -> Self {
        let number = |name: &str, default: u64| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        Self {
            rounds: number("CBDDC_FAULT_ROUNDS", 1).max(1) as usize,
            state: number("CBDDC_FAULT_SEED", 1) | 1,
        }
    }

    /// A number in `0..n`.
    fn pick(&mut self, n: usize) -> usize {
        // xorshift64: enough to vary the faults from a seed, and repeatable.
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        (self.state % n as u64) as usize
    }
}

/// Appends the scenario's figures to the report, when one is asked for.
fn report(scenario: &str, rounds: usize, ledger: &Ledger, converged: Duration) {
    let Ok(path) = std::env::var("CBDDC_FAULT_REPORT") else {
        return;
    };
    let line = serde_json::json!({
        "scenario": scenario,
        "rounds": rounds,
        "acknowledged": ledger.acknowledged.len(),
        "refused": ledger.refused,
        "lost": 0,
        "slowest_convergence_ms": converged.as_millis() as u64,
    });
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    writeln!(file, "{line}").unwrap();
}

/// node-a, node-b and node-c on hosts 0, 1 and 2, each knowing the others.
fn three_nodes(lan: &Lan, dir: &std::path::Path) -> Vec<HostNode> {
    (0..3)
        .map(|i| {
            let peers: Vec<(&str, usize)> =
                (0..3).filter(|j| *j != i).map(|j| (NAMES[j], j)).collect();
            HostNode::start(lan, i, dir, NAMES[i], &peers, "")
        })
        .collect()
}

fn all(nodes: &[HostNode]) -> Vec<&HostNode> {
    nodes.iter().collect()
}

/// Waits until the ledger holds on every node and they agree on `leader`; returns how
/// long that took. Fails with what was still wrong after the deadline.
fn converge(ledger: &Ledger, nodes: &[&HostNode], leader: &str) -> Duration {
    let start = Instant::now();
    loop {
        let wrong = match (ledger.check(nodes), agreed_leader(nodes)) {
            (Ok(()), Some(l)) if l == leader => return start.elapsed(),
            (Ok(()), other) => format!("no agreement on {leader}: {other:?}"),
            (Err(e), _) => e,
        };
        assert!(
            start.elapsed() < DEADLINE,
            "not converged after {DEADLINE:?}: {wrong}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn hosts_partition_and_heal_with_writes_on_both_sides() {
    let mut plan = Plan::from_env();
    let lan = Lan::new(3);
    let dir = tempfile::tempdir().unwrap();
    let nodes = three_nodes(&lan, dir.path());
    let mut ledger = Ledger::default();
    let mut slowest = Duration::ZERO;
    converge(&ledger, &all(&nodes), "node-a");
    for round in 0..plan.rounds {
        let cut = plan.pick(3);
        lan.cut(cut);
        // Both sides take writes, some to the same keys: the later stamp must win.
        for i in 0..10 {
            for (n, node) in nodes.iter().enumerate() {
                let key = if i % 2 == 0 {
                    format!("r{round}-shared-{i}")
                } else {
                    format!("r{round}-{}-{i}", node.node_id)
                };
                assert!(
                    ledger.put(node, &key, (round * 100 + i * 10 + n) as u64),
                    "{} refused a write while partitioned",
                    node.node_id
                );
            }
        }
        lan.heal(cut);
        slowest = slowest.max(converge(&ledger, &all(&nodes), "node-a"));
    }
    report(
        "partition and heal, writes on both sides",
        plan.rounds,
        &ledger,
        slowest,
    );
}

#[test]
fn hosts_kill_9_loop_under_write_load() {
    let mut plan = Plan::from_env();
    let lan = Lan::new(3);
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = three_nodes(&lan, dir.path());
    let mut ledger = Ledger::default();
    let mut slowest = Duration::ZERO;
    for round in 0..plan.rounds.max(3) {
        // Writes acknowledged by the victim just before it dies are kept too.
        for (n, node) in nodes.iter().enumerate() {
            for i in 0..5 {
                assert!(ledger.put(node, &format!("r{round}-{n}-{i}"), i as u64));
            }
        }
        let victim = plan.pick(3);
        nodes[victim].kill_9();
        for (n, node) in nodes.iter().enumerate().filter(|(n, _)| *n != victim) {
            assert!(ledger.put(node, &format!("r{round}-{n}-after"), round as u64));
            assert!(ledger.put(node, &format!("r{round}-shared"), n as u64));
        }
        nodes[victim].launch();
        slowest = slowest.max(converge(&ledger, &all(&nodes), "node-a"));
    }
    report(
        "kill -9 loop under write load",
        plan.rounds.max(3),
        &ledger,
        slowest,
    );
}

#[test]
fn hosts_a_paused_leader_and_a_paused_follower() {
    let plan = Plan::from_env();
    let lan = Lan::new(3);
    let dir = tempfile::tempdir().unwrap();
    let nodes = three_nodes(&lan, dir.path());
    let mut ledger = Ledger::default();
    let mut slowest = Duration::ZERO;
    converge(&ledger, &all(&nodes), "node-a");
    for round in 0..plan.rounds {
        // The leader stands still: the others elect node-b and keep writing.
        nodes[0].pause();
        wait_until("node-b and node-c to agree on node-b", DEADLINE, || {
            agreed_leader(&[&nodes[1], &nodes[2]]).as_deref() == Some("node-b")
        });
        for node in &nodes[1..] {
            assert!(ledger.put(node, &format!("r{round}-leader-paused"), 1));
        }
        nodes[0].resume();
        slowest = slowest.max(converge(&ledger, &all(&nodes), "node-a"));

        // A follower stands still: nothing changes for the others.
        nodes[2].pause();
        for node in &nodes[..2] {
            assert!(ledger.put(node, &format!("r{round}-follower-paused"), 2));
        }
        nodes[2].resume();
        slowest = slowest.max(converge(&ledger, &all(&nodes), "node-a"));
    }
    report(
        "paused leader, then paused follower",
        plan.rounds,
        &ledger,
        slowest,
    );
}

#[test]
fn hosts_find_each_other_by_broadcast_and_survive_a_port_change_then_the_leaders_death() {
    let plan = Plan::from_env();
    let lan = Lan::new(3);
    let dir = tempfile::tempdir().unwrap();
    // No known peers: every node binds 0.0.0.0:25000, as a new user's would, and finds
    // the others by UDP broadcast alone.
    let discovery = "[discovery]\nenabled = true\ninterval_ms = 300\n";
    let mut nodes: Vec<HostNode> = (0..3)
        .map(|i| HostNode::start_bound(&lan, i, dir.path(), NAMES[i], &[], discovery, "0.0.0.0"))
        .collect();
    let mut ledger = Ledger::default();
    for (n, node) in nodes.iter().enumerate() {
        assert!(ledger.put(node, &format!("found-{n}"), n as u64));
    }
    converge(&ledger, &all(&nodes), "node-a");

    // node-b moves to another port while running; then the leader dies.
    nodes[1].move_to_port(25010);
    wait_until("node-b to answer on its new port", DEADLINE, || {
        nodes[1].cli(&["status"]).status.success()
    });
    assert!(ledger.put(&nodes[1], "after-the-move", 1));
    converge(&ledger, &all(&nodes), "node-a");
    nodes[0].kill_9();
    let slowest = converge(&ledger, &[&nodes[1], &nodes[2]], "node-b");
    assert!(ledger.put(&nodes[2], "after-the-death", 2));
    converge(&ledger, &[&nodes[1], &nodes[2]], "node-b");
    report(
        "discovery by broadcast, live port change, leader's death",
        plan.rounds,
        &ledger,
        slowest,
    );
}

#[test]
fn hosts_the_checker_catches_a_lost_write_and_a_stale_winner() {
    let lan = Lan::new(1);
    let dir = tempfile::tempdir().unwrap();
    let node = HostNode::start(&lan, 0, dir.path(), "node-a", &[], "");
    let mut ledger = Ledger::default();
    assert!(ledger.put(&node, "kept", 1));
    ledger.check(&[&node]).unwrap();

    // A later acknowledged write the node does not show: its value must be there.
    let mut stale = ledger.acknowledged[0].clone();
    stale.stamp = crate::checker::Stamp::later_than(&stale.stamp);
    stale.value = "{\"v\":2}".into();
    let mut wrong = Ledger::default();
    wrong.acknowledged.push(stale);
    let err = wrong.check(&[&node]).unwrap_err();
    assert!(err.contains("latest acknowledged write"), "{err}");

    // An acknowledged write the node never shows: lost.
    let mut lost = ledger.acknowledged[0].clone();
    lost.key = "never-written".into();
    let mut missing = Ledger::default();
    missing.acknowledged.push(lost);
    let err = missing.check(&[&node]).unwrap_err();
    assert!(err.contains("lacks never-written"), "{err}");
}
