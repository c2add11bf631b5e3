//! Compaction and snapshots through the binary: an overwrite-and-delete workload shrinks
//! every node's oplog to at most two entries per document, and a snapshot killed with
//! SIGKILL on either side leaves both databases consistent and completes on retry.

use crate::harness::{RunningNode, cbddc, free_port, status_json, stderr, wait_until};
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(90);

fn field(port: u16, path: &[&str]) -> serde_json::Value {
    let mut value = status_json(port);
    for key in path {
        value = value[*key].clone();
    }
    value
}

fn count(port: u16, path: &[&str]) -> u64 {
    field(port, path).as_u64().unwrap_or(0)
}

/// Imports `lines` (JSON lines of `{"key", "value"}`) into `collection` on the node at
/// `port`.
fn import(dir: &std::path::Path, port: u16, collection: &str, lines: &str) {
    let file = dir.join(format!("import-{port}-{collection}.jsonl"));
    std::fs::write(&file, lines).unwrap();
    let out = cbddc(&["import", collection, file.to_str().unwrap()], port);
    assert!(out.status.success(), "{}", stderr(&out));
}

fn export(port: u16, collection: &str) -> Option<Vec<u8>> {
    let out = cbddc(&["export", collection], port);
    out.status.success().then_some(out.stdout)
}

#[test]
fn overwrites_and_deletes_on_three_nodes_leave_at_most_two_entries_per_document() {
    let dir = tempfile::tempdir().unwrap();
    let ports = [free_port(), free_port(), free_port()];
    let names = ["comp-a", "comp-b", "comp-c"];
    let nodes: Vec<RunningNode> = (0..3)
        .map(|i| {
            let peers: Vec<(&str, u16)> = (0..3)
                .filter(|j| *j != i)
                .map(|j| (names[j], ports[j]))
                .collect();
            RunningNode::start(dir.path(), names[i], ports[i], &peers)
        })
        .collect();
    // Each node overwrites the same 200 keys five times; then one deletes every fifth.
    for (i, node) in nodes.iter().enumerate().take(2) {
        let mut lines = String::new();
        for round in 0..5 {
            for key in 0..200 {
                lines.push_str(&format!(
                    "{{\"key\":\"k{key:03}\",\"value\":{{\"node\":{i},\"round\":{round}}}}}\n"
                ));
            }
        }
        import(dir.path(), node.port, "items", &lines);
    }
    for key in (0..200).step_by(5) {
        let out = cbddc(&["delete", "items", &format!("k{key:03}")], ports[2]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    wait_until("the three nodes to converge", DEADLINE, || {
        let first = export(ports[0], "items");
        first.is_some() && ports[1..].iter().all(|p| export(*p, "items") == first)
    });
    wait_until(
        "every node's oplog to hold at most two entries per document",
        DEADLINE,
        || {
            ports.iter().all(|p| {
                let status = status_json(*p);
                let documents = status["documents"].as_u64().unwrap_or(0);
                documents == 160
                    && status["oplog_entries"].as_u64().unwrap_or(u64::MAX) <= 2 * documents
            })
        },
    );
    for port in ports {
        let status = status_json(port);
        assert_eq!(status["compaction"]["holding_back"], 2, "{status}");
        assert!(
            status["compaction"]["collected"].as_u64().unwrap() >= 2_000 - 320,
            "{status}"
        );
        assert_eq!(
            status["compaction"]["retention_ms"], 604_800_000,
            "the default retention is seven days"
        );
    }
    let text = cbddc(&["status"], ports[0]);
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("retention 7d"),
        "{}",
        String::from_utf8_lossy(&text.stdout)
    );
}

/// Enough documents that a snapshot takes a while to apply: the kills land mid-way.
const DOCUMENTS: usize = 250_000;

#[test]
fn a_snapshot_killed_on_either_side_leaves_both_consistent_and_completes_on_retry() {
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (free_port(), free_port());
    let mut a = RunningNode::start(dir.path(), "snap-a", pa, &[]);
    let mut lines = String::with_capacity(DOCUMENTS * 64);
    for i in 0..DOCUMENTS {
        lines.push_str(&format!(
            "{{\"key\":\"k{i:06}\",\"value\":{{\"n\":{i},\"pad\":\"{}\"}}}}\n",
            "x".repeat(32)
        ));
    }
    import(dir.path(), pa, "big", &lines);
    // Alone, a collects an overwritten entry at once: a newcomer is behind it.
    for value in ["1", "2"] {
        let out = cbddc(&["put", "big", "k000000", value], pa);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    wait_until("a to collect the overwritten entry", DEADLINE, || {
        count(pa, &["compaction", "collected"]) >= 1
    });
    let a_documents = count(pa, &["documents"]);
    assert_eq!(a_documents, DOCUMENTS as u64);

    // The receiver dies mid-snapshot.
    let mut b = RunningNode::start(dir.path(), "snap-b", pb, &[("snap-a", pa)]);
    wait_until("b to apply part of a's snapshot", DEADLINE, || {
        count(
            pb,
            &["compaction", "snapshot_in_progress", "staged_documents"],
        ) > 0
    });
    b.kill_9();
    // Started alone, b shows the part it applied, and nothing claims it is complete:
    // its version vector does not hold a's entries until the snapshot ends.
    b.peers.clear();
    b.rewrite_config();
    b.launch();
    let staged = count(
        pb,
        &["compaction", "snapshot_in_progress", "staged_documents"],
    );
    assert!(
        staged > 0 && staged < DOCUMENTS as u64,
        "a snapshot in progress survives the kill: {staged} received"
    );
    assert_eq!(
        count(pb, &["documents"]),
        staged,
        "the chunks applied stay, as documents ahead of their entries"
    );
    assert_eq!(
        field(pb, &["version_vector"]),
        serde_json::json!({}),
        "a partial snapshot claims none of the entries it stands for"
    );

    // Given its peer again, b resumes; the sender dies mid-way now.
    b.peers = vec![("snap-a".into(), pa)];
    b.rewrite_config();
    wait_until("b to resume the snapshot", DEADLINE, || {
        b.log_text().contains("resuming a snapshot")
    });
    wait_until("b to apply more of it", DEADLINE, || {
        count(
            pb,
            &["compaction", "snapshot_in_progress", "staged_documents"],
        ) > staged
    });
    a.kill_9();
    let before_restart = count(pb, &["documents"]);
    let in_progress = !field(pb, &["compaction", "snapshot_in_progress"]).is_null();
    assert!(
        in_progress || before_restart == DOCUMENTS as u64,
        "b holds all of the snapshot, or says it is still in progress: {before_restart}"
    );
    if in_progress {
        assert_eq!(
            field(pb, &["version_vector"]),
            serde_json::json!({}),
            "a partial snapshot claims none of the entries it stands for"
        );
    }
    a.launch();
    assert_eq!(
        count(pa, &["documents"]),
        a_documents,
        "the sender's database is whole after SIGKILL"
    );
    wait_until("b to hold every document of a", DEADLINE, || {
        count(pb, &["documents"]) == a_documents
            && field(pb, &["compaction", "snapshot_in_progress"]).is_null()
    });
    assert_eq!(export(pa, "big"), export(pb, "big"), "b holds what a holds");
    if in_progress {
        assert!(
            b.log_text().contains("resuming a snapshot"),
            "b resumed after the sender came back"
        );
    }
}
