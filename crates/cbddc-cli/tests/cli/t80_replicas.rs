//! Who wrote it: a node restarted on a wiped data dir, and two processes started from
//! copies of one data dir, are new replicas. Their writes can never be mistaken for
//! writes a peer already holds, so every acknowledged write reaches every node. A wiped
//! node also has a new node key, which its peers refuse until it is re-pinned, unless
//! its key is kept apart from its data dir (`node_key_file`).

use crate::harness::*;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(30);

fn put(port: u16, key: &str) {
    let out = cbddc(&["put", "docs", key, "{\"v\":1}"], port);
    assert!(out.status.success(), "put {key}: {}", stderr(&out));
}

fn has(port: u16, key: &str) -> bool {
    cbddc(&["get", "docs", key], port).status.success()
}

#[test]
fn a_node_restarted_on_a_wiped_data_dir_gets_its_history_back_and_its_new_writes_reach_peers() {
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (free_port(), free_port());
    let mut a = RunningNode::start(dir.path(), "node-a", pa, &[("node-b", pb)]);
    let mut b = RunningNode::start(dir.path(), "node-b", pb, &[("node-a", pa)]);
    for i in 0..50 {
        put(pa, &format!("old-{i:02}"));
    }
    wait_until("b holds a's 50 writes", DEADLINE, || has(pb, "old-49"));
    assert!(a.terminate().success());
    assert!(b.terminate().success());

    // A disk replaced, a container restarted without its volume.
    std::fs::remove_dir_all(a.data_dir()).unwrap();
    a.launch();
    for i in 0..20 {
        put(pa, &format!("new-{i:02}"));
    }
    b.launch();
    // The wiped node has a new key: b refuses it under the old name until an operator
    // says the change is real.
    wait_until("b refuses node-a's new key", DEADLINE, || {
        b.log_text()
            .contains("refused a node key that is not the pinned one")
    });
    assert!(!has(pb, "new-00"), "nothing crosses before the re-pin");
    let listed = stdout(&cbddc(&["peers", "list", "--json"], pb));
    assert!(listed.contains("key_fingerprint"), "{listed}");
    let repinned = cbddc(&["peers", "repin", "node-a"], pb);
    assert!(repinned.status.success(), "repin: {}", stderr(&repinned));
    wait_until(
        "b receives the 20 writes made after the wipe",
        DEADLINE,
        || (0..20).all(|i| has(pb, &format!("new-{i:02}"))),
    );
    wait_until("a gets its 50 earlier writes back", DEADLINE, || {
        (0..50).all(|i| has(pa, &format!("old-{i:02}")))
    });
    let (sa, sb) = (status_json(pa), status_json(pb));
    assert_eq!(sa["documents"], 70);
    assert_eq!(sb["documents"], 70);
    assert_eq!(
        sa["version_vector"], sb["version_vector"],
        "same history everywhere"
    );
}

#[test]
fn a_wiped_data_dir_with_a_kept_key_file_syncs_everything_back_without_a_repin() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secret-volume");
    std::fs::create_dir_all(&secrets).unwrap();
    let key_file = secrets.join("node-a.key");
    let (pa, pb) = (free_port(), free_port());
    let extra = format!("node_key_file = {:?}\n", key_file.display().to_string());
    let mut a = RunningNode::start_with(dir.path(), "node-a", pa, &[("node-b", pb)], &[], &extra);
    let _b = RunningNode::start(dir.path(), "node-b", pb, &[("node-a", pa)]);
    for i in 0..30 {
        put(pa, &format!("old-{i:02}"));
    }
    wait_until("b holds a's 30 writes", DEADLINE, || has(pb, "old-29"));
    let fingerprint = status_json(pa)["key_fingerprint"].clone();
    assert!(
        key_file.is_file(),
        "the key is created where the configuration says"
    );
    assert!(
        !a.data_dir().join("node.key").exists(),
        "and not in the data dir"
    );
    assert!(a.terminate().success());

    // The disk is replaced; the secret volume is not.
    std::fs::remove_dir_all(a.data_dir()).unwrap();
    a.launch();
    assert_eq!(status_json(pa)["key_fingerprint"], fingerprint);
    put(pa, "new-00");
    wait_until("b takes the write made after the wipe", DEADLINE, || {
        has(pb, "new-00")
    });
    wait_until("a gets its 30 earlier writes back", DEADLINE, || {
        (0..30).all(|i| has(pa, &format!("old-{i:02}")))
    });
    assert_eq!(status_json(pa)["documents"], 31);

    // A live change of the key file is not applied: the node says so and keeps its key.
    let moved = a.config_text().replace("node-a.key", "another.key");
    a.write_config_text(&moved);
    wait_until(
        "the log to say the key file is read at start only",
        DEADLINE,
        || a.log_text().contains("the node key is read at start only"),
    );
    assert_eq!(status_json(pa)["key_fingerprint"], fingerprint);
    assert!(!secrets.join("another.key").exists());
}

#[test]
fn two_processes_started_from_copies_of_one_data_dir_both_reach_their_peer() {
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (free_port(), free_port());
    let mut a = RunningNode::start(dir.path(), "node-a", pa, &[("node-b", pb)]);
    let _b = RunningNode::start(dir.path(), "node-b", pb, &[("node-a", pa)]);
    for i in 0..10 {
        put(pa, &format!("shared-{i}"));
    }
    wait_until("b holds the shared history", DEADLINE, || {
        has(pb, "shared-9")
    });
    assert!(a.terminate().success());

    // A cloned VM: the same data dir and node id, twice.
    let clone_dir = dir.path().join("clone");
    std::fs::create_dir_all(&clone_dir).unwrap();
    let copied = clone_dir.join("node-a-data");
    std::fs::create_dir_all(&copied).unwrap();
    for file in std::fs::read_dir(a.data_dir()).unwrap() {
        let file = file.unwrap();
        std::fs::copy(file.path(), copied.join(file.file_name())).unwrap();
    }
    let pc = free_port();
    let _clone = RunningNode::start(&clone_dir, "node-a", pc, &[("node-b", pb)]);
    a.launch();
    for i in 0..20 {
        put(pa, &format!("from-a-{i:02}"));
        put(pc, &format!("from-clone-{i:02}"));
    }
    wait_until("b receives every write of both processes", DEADLINE, || {
        (0..20)
            .all(|i| has(pb, &format!("from-a-{i:02}")) && has(pb, &format!("from-clone-{i:02}")))
    });
    assert_eq!(status_json(pb)["documents"], 50);

    // Both processes run as node-a: the peer says so, and tells both of them.
    let named = |port: u16| {
        status_json(port)["duplicates"].as_array().is_some_and(|d| {
            d.iter()
                .any(|t| t.as_str().unwrap_or("").contains("node-a"))
        })
    };
    wait_until("b reports two live processes as node-a", DEADLINE, || {
        named(pb)
    });
    let report = status_json(pb)["duplicates"][0]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        report.matches("127.0.0.1:").count(),
        2,
        "both addresses: {report}"
    );
    wait_until("both processes are told", DEADLINE, || {
        named(pa) && named(pc)
    });
}

#[test]
fn a_cluster_key_holder_claiming_a_pinned_node_id_is_refused_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb, pi) = (free_port(), free_port(), free_port());
    let a = RunningNode::start(dir.path(), "node-a", pa, &[("node-b", pb)]);
    let _b = RunningNode::start(dir.path(), "node-b", pb, &[("node-a", pa)]);
    put(pa, "private");
    wait_until(
        "b holds a's write (and both pinned each other)",
        DEADLINE,
        || has(pb, "private"),
    );

    // The cluster key and one config line: another process calls itself node-b.
    let elsewhere = dir.path().join("impostor");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let impostor = RunningNode::start(&elsewhere, "node-b", pi, &[("node-a", pa)]);
    put(pi, "forged");
    // It calls a: refused.
    wait_until("a refuses the impostor's sessions", DEADLINE, || {
        a.log_text()
            .contains("refused a node key that is not the pinned one")
    });
    // a calls it (told node-b moved there): refused too.
    let moved = cbddc(&["peers", "add", "node-b", &format!("127.0.0.1:{pi}")], pa);
    assert!(moved.status.success(), "{}", stderr(&moved));
    wait_until("a refuses the impostor as a responder", DEADLINE, || {
        status_json(pa)["peers"].as_array().is_some_and(|peers| {
            peers.iter().any(|p| {
                p["node_id"] == "node-b"
                    && p["last_error"]
                        .as_str()
                        .is_some_and(|e| e.contains("is pinned for it here"))
            })
        })
    });
    assert!(!has(pa, "forged"), "a write of the impostor was applied");
    assert!(!has(pi, "private"), "the impostor received data");
    assert!(
        impostor.log_text().contains("refused our node key"),
        "{}",
        impostor.log_text()
    );
}
