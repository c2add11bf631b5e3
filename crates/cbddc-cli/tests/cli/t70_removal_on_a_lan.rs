//! Acknowledged means kept when a member is removed while it cannot hear the cluster, on
//! three hosts of a LAN (network namespaces): cut off, paused, or killed during its own
//! removal, its acknowledged writes reach the members that stay; after it learns of its
//! removal it refuses writes.

use crate::harness::{stderr, stdout, wait_until};
use crate::lan::{HostNode, Lan};
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(60);
const CLUSTER: &str = "[election]\ninterval_ms = 200\npeer_timeout_ms = 1000\n[cluster]\nmembers = [\"node-a\", \"node-b\", \"node-c\"]\n";

/// node-a, node-b and node-c on hosts 0, 1 and 2, running configuration 1 of the three.
fn three_members(lan: &Lan, dir: &std::path::Path) -> Vec<HostNode> {
    let nodes = lan.mesh(dir, &["node-a", "node-b", "node-c"], CLUSTER, None);
    wait_until("configuration 1 with a leader everywhere", DEADLINE, || {
        nodes.iter().all(|n| {
            n.cluster_status().is_some_and(|s| {
                s["configuration_id"] == 1 && s["members"].as_array().is_some_and(|m| m.len() == 3)
            })
        })
    });
    nodes
}

fn put(node: &HostNode, key: &str) -> bool {
    node.cli(&["put", "docs", key, "{\"v\":1}"])
        .status
        .success()
}

fn has(node: &HostNode, key: &str) -> bool {
    node.cli(&["get", "docs", key]).status.success()
}

fn remove_c(from: &HostNode) {
    let out = from.cli(&["cluster", "reconfigure", "--members", "node-a,node-b"]);
    assert!(out.status.success(), "reconfigure: {}", stderr(&out));
    assert!(
        stdout(&out).contains("configuration 2 decided"),
        "{}",
        stdout(&out)
    );
}

/// Every key in `acknowledged` reaches a and b; c then refuses writes and says why.
fn c_handed_over(nodes: &[HostNode], acknowledged: &[String]) {
    let [a, b, c] = nodes else { unreachable!() };
    wait_until("c learns it was removed", DEADLINE, || {
        c.cluster_status().is_some_and(|s| s["retired"] == true)
    });
    wait_until("a and b hold every write c acknowledged", DEADLINE, || {
        acknowledged.iter().all(|k| has(a, k) && has(b, k))
    });
    wait_until("c reports its hand-over complete", DEADLINE, || {
        c.cluster_status()
            .is_some_and(|s| s["handover"]["complete"] == true)
    });
    assert!(
        c.log_text().contains("hand-over complete"),
        "the log says the hand-over is done: {}",
        c.log_text()
    );
    let refused = c.cli(&["put", "docs", "after-retiring", "{}"]);
    assert!(!refused.status.success(), "a retired node took a write");
    assert!(
        stderr(&refused).contains("removed from the cluster in configuration 2"),
        "{}",
        stderr(&refused)
    );
    assert!(has(c, "before"), "reads keep working on a retired node");
}

fn write_before(nodes: &[HostNode]) {
    assert!(put(&nodes[0], "before"));
    wait_until("c holds a's write", DEADLINE, || has(&nodes[2], "before"));
}

#[test]
fn a_member_cut_off_during_its_removal_keeps_what_it_acknowledged() {
    let lan = Lan::new(3);
    let dir = tempfile::tempdir().unwrap();
    let nodes = three_members(&lan, dir.path());
    write_before(&nodes);
    lan.cut(2);
    let keys: Vec<String> = (0..20).map(|i| format!("cut-off-{i:02}")).collect();
    for key in &keys {
        assert!(put(&nodes[2], key), "c acknowledges while cut off");
    }
    remove_c(&nodes[0]);
    assert!(!has(&nodes[0], &keys[0]), "nothing crossed the cut");
    lan.heal(2);
    c_handed_over(&nodes, &keys);
}

#[test]
fn a_member_paused_during_its_removal_keeps_what_it_acknowledged_on_resuming() {
    let lan = Lan::new(3);
    let dir = tempfile::tempdir().unwrap();
    let nodes = three_members(&lan, dir.path());
    write_before(&nodes);
    nodes[2].pause();
    remove_c(&nodes[0]);
    nodes[2].resume();
    // Right after resuming, c may still take writes before it hears of the seal.
    let mut acknowledged = Vec::new();
    let mut refused = 0;
    for i in 0..20 {
        let key = format!("resumed-{i:02}");
        if put(&nodes[2], &key) {
            acknowledged.push(key);
        } else {
            refused += 1;
        }
    }
    eprintln!(
        "after resuming, c acknowledged {} writes and refused {refused}",
        acknowledged.len()
    );
    c_handed_over(&nodes, &acknowledged);
}

#[test]
fn a_member_killed_after_writes_it_could_not_send_hands_them_over_when_restarted() {
    let lan = Lan::new(3);
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = three_members(&lan, dir.path());
    write_before(&nodes);
    lan.cut(2);
    let keys: Vec<String> = (0..20).map(|i| format!("before-kill-{i:02}")).collect();
    for key in &keys {
        assert!(put(&nodes[2], key));
    }
    nodes[2].kill_9();
    remove_c(&nodes[0]);
    lan.heal(2);
    nodes[2].launch();
    c_handed_over(&nodes, &keys);
}
