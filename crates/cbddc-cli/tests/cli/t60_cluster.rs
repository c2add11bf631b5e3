//! Cluster membership through the binary: `[cluster]` bootstrap, `cbddc cluster
//! reconfigure` replacing a member, the newcomer's data, the retired member refusing writes, a
//! second reconfiguration, and a member killed during a change.

use crate::harness::*;
use std::path::Path;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(40);
const FAST: &str = "[election]\ninterval_ms = 200\npeer_timeout_ms = 1000\n";

fn cluster_status(port: u16) -> Option<serde_json::Value> {
    let out = cbddc(&["cluster", "status", "--json"], port);
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

fn runs(port: u16, configuration_id: u64, members: &[&str]) -> bool {
    cluster_status(port).is_some_and(|s| {
        s["configuration_id"].as_u64() == Some(configuration_id)
            && s["members"] == serde_json::json!(members)
            && s["leader"].is_string()
    })
}

fn retired(port: u16) -> bool {
    cluster_status(port).is_some_and(|s| s["retired"] == serde_json::json!(true))
}

fn has(port: u16, key: &str) -> bool {
    cbddc(&["get", "docs", key], port).status.success()
}

fn count(port: u16) -> usize {
    let out = cbddc(&["list", "docs", "--json"], port);
    if !out.status.success() {
        return 0;
    }
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .ok()
        .and_then(|v| v.as_array().map(Vec::len))
        .unwrap_or(0)
}

fn put(port: u16, key: &str) {
    let out = cbddc(&["put", "docs", key, "{\"v\":1}"], port);
    assert!(out.status.success(), "put {key}: {}", stderr(&out));
}

fn reconfigure(port: u16, members: &str) -> std::process::Output {
    cbddc(&["cluster", "reconfigure", "--members", members], port)
}

/// a, b and c bootstrap configuration 1 of themselves; d waits to be invited. Every node
/// knows every other.
fn four_nodes(dir: &Path, ports: [u16; 4]) -> Vec<RunningNode> {
    let names = ["a", "b", "c", "d"];
    (0..4)
        .map(|i| {
            let peers: Vec<(&str, u16)> = (0..4)
                .filter(|j| *j != i)
                .map(|j| (names[j], ports[j]))
                .collect();
            let cluster = if i < 3 {
                "[cluster]\nmembers = [\"a\", \"b\", \"c\"]\n"
            } else {
                "[cluster]\njoin = true\n"
            };
            RunningNode::start_with(
                dir,
                names[i],
                ports[i],
                &peers,
                &[],
                &format!("{FAST}{cluster}"),
            )
        })
        .collect()
}

#[test]
fn replacing_a_member_moves_the_data_and_fences_the_retired_one() {
    let dir = tempfile::tempdir().unwrap();
    let ports = [free_port(), free_port(), free_port(), free_port()];
    let [pa, pb, pc, pd] = ports;
    let _nodes = four_nodes(dir.path(), ports);
    wait_until(
        "configuration 1 with a leader on a, b and c",
        DEADLINE,
        || [pa, pb, pc].iter().all(|p| runs(*p, 1, &["a", "b", "c"])),
    );
    let waiting = cluster_status(pd).unwrap();
    assert!(waiting["configuration_id"].is_null(), "{waiting}");
    let plain = stdout(&cbddc(&["cluster", "status"], pd));
    assert!(plain.contains("waiting to be invited"), "{plain}");
    let no_plane = cbddc(&["cluster", "reconfigure", "--members", "a,b"], pd);
    assert!(!no_plane.status.success());

    for i in 0..200 {
        put(pa, &format!("k{i:03}"));
    }
    wait_until("b and c hold the 200 documents", DEADLINE, || {
        count(pb) == 200 && count(pc) == 200
    });
    assert_eq!(count(pd), 0, "d is not a member yet");

    let refused = reconfigure(pa, "a,b,zed");
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("zed has no known address"),
        "{}",
        stderr(&refused)
    );

    let out = reconfigure(pa, "a,b,d");
    assert!(out.status.success(), "reconfigure: {}", stderr(&out));
    assert!(
        stdout(&out).contains("configuration 2 decided: a, b, d"),
        "{}",
        stdout(&out)
    );
    wait_until("a, b and d run configuration 2", DEADLINE, || {
        [pa, pb, pd].iter().all(|p| runs(*p, 2, &["a", "b", "d"]))
    });
    wait_until("c reports that it retired", DEADLINE, || retired(pc));
    wait_until("d holds the 200 documents", DEADLINE, || count(pd) == 200);

    put(pd, "from-d");
    wait_until("a write on d reaches b", DEADLINE, || has(pb, "from-d"));
    let refused = cbddc(&["put", "docs", "from-retired-c", "{\"v\":1}"], pc);
    assert!(!refused.status.success(), "a retired node took a write");
    assert!(
        stderr(&refused).contains("removed from the cluster in configuration 2"),
        "{}",
        stderr(&refused)
    );
    assert!(has(pc, "k000"), "reads keep working on a retired node");

    let out = reconfigure(pb, "a,b,c,d");
    assert!(out.status.success(), "second reconfigure: {}", stderr(&out));
    wait_until("a, b, c and d run configuration 3", DEADLINE, || {
        [pa, pb, pc, pd]
            .iter()
            .all(|p| runs(*p, 3, &["a", "b", "c", "d"]))
    });
    put(pc, "from-c-again");
    wait_until("c, a member again, syncs again", DEADLINE, || {
        has(pa, "from-c-again") && has(pc, "from-d")
    });
}

#[test]
fn a_member_killed_during_the_change_catches_up_when_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let ports = [free_port(), free_port(), free_port(), free_port()];
    let [pa, pb, pc, pd] = ports;
    let mut nodes = four_nodes(dir.path(), ports);
    wait_until(
        "configuration 1 with a leader on a, b and c",
        DEADLINE,
        || [pa, pb, pc].iter().all(|p| runs(*p, 1, &["a", "b", "c"])),
    );
    put(pa, "before");
    wait_until("b holds the first write", DEADLINE, || has(pb, "before"));

    nodes[1].kill_9();
    let out = reconfigure(pa, "a,b,d");
    assert!(
        out.status.success(),
        "reconfigure with b down: {}",
        stderr(&out)
    );
    wait_until("a and d run configuration 2 without b", DEADLINE, || {
        [pa, pd].iter().all(|p| runs(*p, 2, &["a", "b", "d"]))
    });
    wait_until("c retires", DEADLINE, || retired(pc));
    put(pd, "while-b-was-down");

    nodes[1].launch();
    wait_until("the restarted b learns configuration 2", DEADLINE, || {
        runs(pb, 2, &["a", "b", "d"])
    });
    wait_until(
        "b receives what was written while it was down",
        DEADLINE,
        || has(pb, "while-b-was-down"),
    );
    let out = reconfigure(pb, "a,b");
    assert!(
        out.status.success(),
        "b leads a further change: {}",
        stderr(&out)
    );
    wait_until("a and b run configuration 3", DEADLINE, || {
        [pa, pb].iter().all(|p| runs(*p, 3, &["a", "b"]))
    });
}
