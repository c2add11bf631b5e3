//! Failure detection on real links: three `cbddc` processes on three hosts (network
//! namespaces on a bridge; needs root and iproute2, as `cargo xtask bench` has here).
//! The leader's host is cut off (its link down: packets dropped, no RST, a black hole),
//! round after round: how long until both others report it unreachable, and until both
//! follow the next node. Default timers.
//!
//! Prints the figures and writes them to `target/cbddc-bench/hosts.json`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../../cbddc-node/benches/support/report.rs"]
mod report;

#[allow(dead_code, unused_imports)]
#[path = "../tests/cli/harness.rs"]
mod harness;
#[allow(dead_code)]
#[path = "../tests/cli/lan.rs"]
mod lan;

use lan::{HostNode, Lan};
use std::time::{Duration, Instant};

const ROUNDS: usize = 5;
const NAMES: [&str; 3] = ["node-a", "node-b", "node-c"];

fn leader(node: &HostNode) -> Option<String> {
    node.status()?["leader"].as_str().map(str::to_string)
}

fn unreachable(node: &HostNode, peer: &str) -> bool {
    node.status().is_some_and(|s| {
        s["peers"].as_array().is_some_and(|peers| {
            peers.iter().any(|p| {
                p["node_id"] == peer
                    && p["last_error"]
                        .as_str()
                        .is_some_and(|e| e.contains("unreachable"))
            })
        })
    })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    // `cargo test --benches` runs bench binaries with --bench absent; skip the long work then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let lan = Lan::new(3);
    let dir = tempfile::tempdir().unwrap();
    let nodes = lan.mesh(dir.path(), &NAMES, "", None);
    let (mut marked, mut replaced) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let settle = Instant::now();
        while !nodes.iter().all(|n| leader(n).as_deref() == Some("node-a"))
            || unreachable(&nodes[1], "node-a")
            || unreachable(&nodes[2], "node-a")
        {
            assert!(
                settle.elapsed() < Duration::from_secs(60),
                "never settled on node-a"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        lan.cut(0);
        let start = Instant::now();
        let (mut seen_marked, mut seen_replaced) = (None, None);
        while seen_marked.is_none() || seen_replaced.is_none() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "round {round} never settled"
            );
            if seen_marked.is_none()
                && unreachable(&nodes[1], "node-a")
                && unreachable(&nodes[2], "node-a")
            {
                seen_marked = Some(start.elapsed());
            }
            if seen_replaced.is_none()
                && leader(&nodes[1]).as_deref() == Some("node-b")
                && leader(&nodes[2]).as_deref() == Some("node-b")
            {
                seen_replaced = Some(start.elapsed());
            }
        }
        eprintln!(
            "cut-off leader round {round}: unreachable after {seen_marked:?}, replaced after {seen_replaced:?}"
        );
        marked.extend(seen_marked);
        replaced.extend(seen_replaced);
        lan.heal(0);
    }
    marked.sort();
    replaced.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let report = serde_json::json!({
        "settings": "3 processes on 3 hosts (network namespaces on a bridge), default timers; the leader's host link set down (a black hole)",
        "rounds": ROUNDS,
        "black_hole_unreachable_median_ms": ms(percentile(&marked, 0.5)),
        "black_hole_unreachable_max_ms": ms(*marked.last().unwrap()),
        "black_hole_replaced_median_ms": ms(percentile(&replaced, 0.5)),
        "black_hole_replaced_max_ms": ms(*replaced.last().unwrap()),
    });
    report::write_report("hosts.json", &report);
}
