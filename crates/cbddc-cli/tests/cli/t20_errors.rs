use crate::harness::*;
use std::process::{Command, Stdio};

#[test]
fn client_commands_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _node = RunningNode::start(dir.path(), "solo", port, &[]);

    let absent = cbddc(&["get", "users", "nobody"], port);
    assert_eq!(absent.status.code(), Some(1));
    assert!(stderr(&absent).contains("not found"));

    for args in [
        &["status"][..],
        &["get", "users", "x"],
        &["put", "c", "k", "1"],
        &["list", "c"],
    ] {
        let refused = cbddc_with_key(args, port, "wrong-key");
        assert!(
            !refused.status.success(),
            "{args:?} must fail with a wrong key"
        );
        assert_ne!(
            refused.status.code(),
            Some(1),
            "a refused key is not 'not found'"
        );
        assert!(
            stderr(&refused).contains("cluster key"),
            "{args:?}: {}",
            stderr(&refused)
        );
    }
    let bad_json = cbddc(&["put", "c", "k", "{oops"], port);
    assert!(!bad_json.status.success());
    assert!(
        stderr(&bad_json).contains("not valid JSON"),
        "{}",
        stderr(&bad_json)
    );
    // Causes in words, not the wire's internal names.
    assert!(
        !stderr(&bad_json).contains("InvalidRequest"),
        "{}",
        stderr(&bad_json)
    );

    let nobody = cbddc(&["status"], free_port());
    assert!(!nobody.status.success());
    assert!(
        stderr(&nobody).contains("is a cbddc node running there"),
        "{}",
        stderr(&nobody)
    );
    let err = stderr(&nobody);
    assert_eq!(
        err.matches("os error").count(),
        1,
        "the operating system's error is said once: {err}"
    );
}

#[test]
fn a_bad_configuration_file_is_refused_naming_the_field_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_cbddc");
    for (name, text, expected) in [
        ("unknown.toml", "node_id = \"a\"\nport = 1\n", "port"),
        (
            "peer.toml",
            "node_id = \"a\"\nknown_peers = [{ node_id = \"b\", address = \"b\" }]\n",
            "known_peers[0].address",
        ),
        ("bad.json", "{\"node_id\": \"has space\"}", "node_id"),
        ("syntax.toml", "node_id = ", "syntax.toml"),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let out = Command::new(bin)
            .args(["run", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{name} must be refused");
        let err = stderr(&out);
        assert!(
            err.contains(expected) && err.contains(name),
            "{name}: {err}"
        );
    }
    let missing = Command::new(bin)
        .args(["run", "--config", "/nonexistent/cbddc.toml"])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(stderr(&missing).contains("/nonexistent/cbddc.toml"));
}

#[test]
fn help_explains_the_commands() {
    let out = Command::new(env!("CARGO_BIN_EXE_cbddc"))
        .arg("--help")
        .output()
        .unwrap();
    let text = stdout(&out);
    assert!(
        text.contains("Exit codes: 0")
            && text.contains("1 not found")
            && text.contains("2 an error"),
        "--help must document the exit codes: {text}"
    );
    for command in [
        "run", "put", "get", "delete", "list", "status", "watch", "import", "export",
    ] {
        assert!(
            text.contains(command),
            "--help must mention {command}: {text}"
        );
    }
    let run = stdout(
        &Command::new(env!("CARGO_BIN_EXE_cbddc"))
            .args(["run", "--help"])
            .output()
            .unwrap(),
    );
    assert!(
        run.contains("127.0.0.1:25000") && run.contains("cbddc-data"),
        "{run}"
    );
}

#[test]
fn a_closed_stdout_ends_a_command_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _a = RunningNode::start(dir.path(), "node-a", port, &[]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_cbddc"))
        .args(["status", "--json", "--node", &format!("127.0.0.1:{port}")])
        .env("CBDDC_CLUSTER_KEY", KEY)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The reader is gone before anything is printed, as with `| head -c 0`.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}: {err}", out.status);
    assert!(!err.contains("panicked"), "{err}");
}

/// A data dir a newer release moved on (its schema written by hand here): `cbddc run`
/// refuses it naming both releases, and the file is left as it was.
#[test]
fn a_database_from_a_newer_release_is_refused_naming_both_releases() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut node = RunningNode::start(dir.path(), "node-a", port, &[]);
    assert!(cbddc(&["put", "c", "k", "1"], port).status.success());
    node.terminate();
    let db = node.data_dir().join("node-node-a.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let schema: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    conn.execute_batch(&format!(
        "PRAGMA user_version = {}; UPDATE meta SET value = '9.0.0' WHERE key = 'release';",
        schema + 1
    ))
    .unwrap();
    drop(conn);
    let out = Command::new(env!("CARGO_BIN_EXE_cbddc"))
        .args(["run", "--config"])
        .arg(&node.config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("moved on by cbddc 9.0.0")
            && err.contains(&format!("this is cbddc {}", env!("CARGO_PKG_VERSION"))),
        "{err}"
    );
    let conn = rusqlite::Connection::open(&db).unwrap();
    let after: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        after,
        schema + 1,
        "the file is left as the newer release wrote it"
    );
}
