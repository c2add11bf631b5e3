use crate::harness::*;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(20);

#[test]
fn editing_the_port_moves_the_node_and_sync_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (free_port(), free_port());
    let mut a = RunningNode::start(dir.path(), "node-a", pa, &[("node-b", pb)]);
    let _b = RunningNode::start(dir.path(), "node-b", pb, &[("node-a", pa)]);

    let new_port = free_port();
    a.port = new_port;
    a.rewrite_config();
    wait_until("status on the new port", DEADLINE, || {
        cbddc(&["status"], new_port).status.success()
    });
    wait_until("the old port to close", DEADLINE, || {
        !cbddc(&["status"], pa).status.success()
    });
    assert_eq!(status_json(new_port)["tcp_port"], new_port);

    assert!(cbddc(&["put", "c", "from-b", "1"], pb).status.success());
    assert!(
        cbddc(&["put", "c", "from-a", "2"], new_port)
            .status
            .success()
    );
    wait_until("sync in both directions after the move", DEADLINE, || {
        cbddc(&["get", "c", "from-b"], new_port).status.success()
            && cbddc(&["get", "c", "from-a"], pb).status.success()
    });
    assert!(a.log_text().contains("reconfigured"), "{}", a.log_text());
}

#[test]
fn editing_the_node_id_opens_a_new_database_and_the_data_comes_back_from_a_peer() {
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (free_port(), free_port());
    let mut a = RunningNode::start(dir.path(), "node-a", pa, &[("node-b", pb)]);
    let _b = RunningNode::start(dir.path(), "node-b", pb, &[("node-a", pa)]);
    for i in 0..10 {
        assert!(
            cbddc(&["put", "c", &format!("k{i}"), &i.to_string()], pa)
                .status
                .success()
        );
    }
    wait_until("b to hold a's documents", DEADLINE, || {
        stdout(&cbddc(&["list", "c"], pb)).lines().count() == 10
    });

    a.node_id = "node-renamed".into();
    a.rewrite_config();
    wait_until("status to show the new id", DEADLINE, || {
        status_json(pa)["node_id"] == "node-renamed"
    });
    let old_db = a.data_dir().join("node-node-a.db");
    let new_db = a.data_dir().join("node-node-renamed.db");
    assert!(new_db.exists(), "a database for the new id");
    let old_bytes = std::fs::read(&old_db).unwrap();

    wait_until("the data to come back from b", DEADLINE, || {
        stdout(&cbddc(&["list", "c"], pa)).lines().count() == 10
    });
    assert!(cbddc(&["put", "c", "after", "1"], pa).status.success());
    wait_until("the renamed node's write to reach b", DEADLINE, || {
        cbddc(&["get", "c", "after"], pb).status.success()
    });
    assert_eq!(
        std::fs::read(&old_db).unwrap(),
        old_bytes,
        "the old database stays untouched"
    );
}

#[test]
fn a_broken_file_is_refused_with_a_log_line_and_the_node_keeps_running() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let a = RunningNode::start(dir.path(), "node-a", port, &[]);
    let good = a.config_text();
    a.write_config_text(&good.replace("tcp_port", "tcp_prot"));
    wait_until("the refusal in the log", DEADLINE, || {
        a.log_text().contains("configuration refused")
    });
    let log = a.log_text();
    assert!(
        log.contains("tcp_prot") && log.contains("node-a.toml"),
        "the log must name the field and the file: {log}"
    );
    assert!(
        cbddc(&["status"], port).status.success(),
        "still serving on the old configuration"
    );

    // Fixing the file is picked up as usual.
    let next = free_port();
    a.write_config_text(
        &good.replace(&format!("tcp_port = {port}"), &format!("tcp_port = {next}")),
    );
    wait_until("the fixed file to apply", DEADLINE, || {
        cbddc(&["status"], next).status.success()
    });
}

#[test]
fn a_port_already_in_use_keeps_the_node_on_its_old_port_and_is_retried_until_free() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut a = RunningNode::start(dir.path(), "node-a", port, &[]);
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let wanted = squatter.local_addr().unwrap().port();
    a.port = wanted;
    a.rewrite_config();
    wait_until("the failure in the log", DEADLINE, || {
        a.log_text().contains("cannot move to the new address")
    });
    assert!(
        cbddc(&["status"], port).status.success(),
        "still up on the old port"
    );
    let status = status_json(port);
    assert_eq!(status["tcp_port"], port);
    assert_eq!(status["wanted_listen"], format!("127.0.0.1:{wanted}"));
    let plain = stdout(&cbddc(&["status"], port));
    assert!(plain.contains("cannot bind it yet"), "{plain}");

    // Once the port is free the node moves there without another edit.
    drop(squatter);
    wait_until("the node on the wanted port", DEADLINE, || {
        cbddc(&["status"], wanted).status.success()
    });
    assert!(status_json(wanted)["wanted_listen"].is_null());
}

#[test]
fn an_emptied_or_half_written_file_never_changes_the_running_identity() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let a = RunningNode::start(dir.path(), "node-a", port, &[]);
    let good = a.config_text();
    assert!(good.contains("cluster_key"), "{good}");
    // A slow `cat > file`: truncated, then the first half, held long past the debounce.
    a.write_config_in_place("");
    wait_until("the empty file refused in the log", DEADLINE, || {
        a.log_text().contains("is empty")
    });
    let half = &good[..good.find("cluster_key").unwrap()];
    a.write_config_in_place(half);
    wait_until("the half file refused in the log", DEADLINE, || {
        a.log_text()
            .contains("`cluster_key` is in force but missing")
    });
    let status = status_json(port);
    assert_eq!(status["node_id"], "node-a");
    assert_eq!(status["tcp_port"], port);
    let wrong_key = cbddc_with_key(&["status"], port, cbddc_config::DEFAULT_CLUSTER_KEY);
    assert!(
        !wrong_key.status.success(),
        "the node must never serve the default key"
    );
    a.write_config_in_place(&good);
    assert!(cbddc(&["put", "c", "k", "1"], port).status.success());
}

#[test]
fn peers_added_with_the_cli_survive_a_restart_and_merge_with_configured_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb, pc) = (free_port(), free_port(), free_port());
    let mut a = RunningNode::start(dir.path(), "node-a", pa, &[("node-c", pc)]);
    let _b = RunningNode::start(dir.path(), "node-b", pb, &[]);
    assert!(cbddc(&["put", "c", "on-b", "1"], pb).status.success());

    let added = cbddc(&["peers", "add", "node-b", &format!("127.0.0.1:{pb}")], pa);
    assert!(added.status.success(), "{}", stderr(&added));
    wait_until(
        "a to sync with the peer added at run time",
        DEADLINE,
        || cbddc(&["get", "c", "on-b"], pa).status.success(),
    );
    let refused = cbddc(&["peers", "add", "bad id", "127.0.0.1:1"], pa);
    assert!(
        !refused.status.success() && stderr(&refused).contains("invalid node id"),
        "{}",
        stderr(&refused)
    );

    assert!(a.terminate().success());
    a.launch();
    let listed = cbddc(&["peers", "list", "--json"], pa);
    let peers: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let ids: Vec<&str> = peers
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["node_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["node-b", "node-c"], "{peers}");

    assert!(cbddc(&["peers", "remove", "node-b"], pa).status.success());
    let missing = cbddc(&["peers", "remove", "node-b"], pa);
    assert!(!missing.status.success() && stderr(&missing).contains("not a known peer"));
}
