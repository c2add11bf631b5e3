use crate::harness::*;
use std::time::Duration;

#[test]
fn two_processes_that_know_each_other_converge_and_report_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (free_port(), free_port());
    let _a = RunningNode::start(dir.path(), "node-a", pa, &[("node-b", pb)]);
    let _b = RunningNode::start(dir.path(), "node-b", pb, &[("node-a", pa)]);

    assert!(
        cbddc(
            &["put", "users", "alice", r#"{"name":"Alice","age":30}"#],
            pa
        )
        .status
        .success()
    );
    assert!(
        cbddc(&["put", "users", "bob", r#"{"name":"Bob"}"#], pb)
            .status
            .success()
    );
    assert!(cbddc(&["put", "users", "carol", "1"], pb).status.success());
    assert!(cbddc(&["delete", "users", "carol"], pa).status.success());

    wait_until(
        "both nodes to list the same users",
        Duration::from_secs(20),
        || {
            let (la, lb) = (
                cbddc(&["list", "users", "--json"], pa),
                cbddc(&["list", "users", "--json"], pb),
            );
            la.status.success()
                && la.stdout == lb.stdout
                && stdout(&la).contains("Bob")
                && stdout(&la).contains("Alice")
        },
    );
    let listed: serde_json::Value =
        serde_json::from_slice(&cbddc(&["list", "users", "--json"], pb).stdout).unwrap();
    assert_eq!(
        listed.as_array().unwrap().len(),
        2,
        "carol was deleted: {listed}"
    );
    assert_eq!(listed[0]["key"], "alice");
    assert_eq!(listed[0]["value"]["age"], 30);

    let got = cbddc(&["get", "users", "alice"], pb);
    assert!(got.status.success());
    let value: serde_json::Value = serde_json::from_str(stdout(&got).trim()).unwrap();
    assert_eq!(value["name"], "Alice");

    let status = status_json(pa);
    assert_eq!(status["node_id"], "node-a");
    assert_eq!(status["tcp_port"], pa);
    let peer = &status["peers"][0];
    assert_eq!(peer["node_id"], "node-b");
    assert_eq!(peer["address"], format!("127.0.0.1:{pb}"));
    assert_eq!(peer["type"], "static");
    assert!(peer["last_exchange_ms"].as_u64().unwrap() > 0, "{status}");
    // Versions: this node's release and range, and what the peer said in its handshake.
    let release = env!("CARGO_PKG_VERSION");
    assert_eq!(status["release"], release, "{status}");
    assert_eq!(status["protocols"]["oldest"], 4);
    assert_eq!(status["protocols"]["newest"], 5);
    // Both read field-level entries: once each has heard the other, they write them.
    wait_until(
        "field-merge to be in force on node-a",
        Duration::from_secs(20),
        || status_json(pa)["features"]["in_force"] == serde_json::json!(["field-merge"]),
    );
    assert_eq!(peer["protocol_version"], 5, "{status}");
    assert_eq!(peer["release"], release);
    let text = stdout(&cbddc(&["status"], pa));
    assert!(
        text.contains(&format!("release    cbddc {release} (protocols 4 to 5)"))
            && text.contains(&format!("cbddc {release} at protocol 5")),
        "{text}"
    );
}

#[test]
fn list_json_prints_every_value_byte_for_byte_as_stored() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _a = RunningNode::start(dir.path(), "node-a", port, &[]);
    // Doubles from a fixed generator, printed the shortest way that round-trips.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut values = Vec::new();
    for i in 0..60 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let x = f64::from_bits(state >> 2);
        let value = format!("{{\"x\":{x:e},\"i\":{i}}}");
        let out = cbddc(&["put", "floats", &format!("k{i:02}"), &value], port);
        assert!(out.status.success(), "{}", stderr(&out));
        values.push(value);
    }
    let listed = stdout(&cbddc(&["list", "floats", "--json"], port));
    let parsed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(parsed.as_array().unwrap().len(), values.len());
    for value in &values {
        assert!(
            listed.contains(value.as_str()),
            "{value} changed in: {listed}"
        );
    }
}
