use crate::harness::*;
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn sigterm_stops_cleanly_and_a_restart_finds_the_data_and_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (free_port(), free_port());
    let mut a = RunningNode::start(dir.path(), "node-a", pa, &[("node-b", pb)]);
    let _b = RunningNode::start(dir.path(), "node-b", pb, &[("node-a", pa)]);
    assert!(cbddc(&["put", "c", "before", "1"], pa).status.success());
    wait_until("b to get the first write", Duration::from_secs(20), || {
        cbddc(&["get", "c", "before"], pb).status.success()
    });

    let status = a.terminate();
    assert!(
        status.success(),
        "SIGTERM must end in a clean exit, got {status}"
    );
    assert!(a.log_text().contains("node stopped"), "{}", a.log_text());
    assert!(cbddc(&["put", "c", "while-away", "2"], pb).status.success());

    a.launch();
    assert_eq!(stdout(&cbddc(&["get", "c", "before"], pa)).trim(), "1");
    wait_until(
        "a to catch up after the restart",
        Duration::from_secs(20),
        || cbddc(&["get", "c", "while-away"], pa).status.success(),
    );
}

#[test]
fn run_without_a_config_uses_the_embedded_defaults() {
    if std::net::TcpListener::bind("127.0.0.1:25000").is_err() {
        eprintln!("skipping: the default port 25000 is in use on this machine");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let log = std::fs::File::create(dir.path().join("run.log")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cbddc"))
        .arg("run")
        .current_dir(dir.path())
        .env_remove("CBDDC_CLUSTER_KEY")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let status = || {
        Command::new(env!("CARGO_BIN_EXE_cbddc"))
            .args(["status", "--json"])
            .env_remove("CBDDC_CLUSTER_KEY")
            .output()
            .unwrap()
    };
    wait_until(
        "the default node to answer on 127.0.0.1:25000",
        Duration::from_secs(20),
        || status().status.success(),
    );
    let json: serde_json::Value = serde_json::from_slice(&status().stdout).unwrap();
    let kept = std::fs::read_to_string(dir.path().join("cbddc-data/node-id")).unwrap();
    assert_eq!(json["node_id"], kept.trim());
    assert_eq!(json["tcp_port"], 25000);
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(dir.path().join("run.log")).unwrap();
    assert!(
        log.contains("default cluster key"),
        "the default key must be warned about: {log}"
    );
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut node = RunningNode::start(dir.path(), "crashy", port, &[]);
    for i in 0..30 {
        let out = cbddc(&["put", "c", &format!("k{i:02}"), &i.to_string()], port);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    node.kill_9();
    node.launch();
    let listed = stdout(&cbddc(&["list", "c"], port));
    assert_eq!(
        listed.lines().count(),
        30,
        "every acknowledged write must survive: {listed}"
    );
    assert_eq!(stdout(&cbddc(&["get", "c", "k29"], port)).trim(), "29");
}
