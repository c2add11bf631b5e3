//! `cbddc patch`, `cbddc increment` and patch lines in `cbddc import`, through the binary:
//! edits reach a peer, bad ones are refused naming the path and store nothing.

use crate::harness::*;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

fn document(port: u16, key: &str) -> serde_json::Value {
    let out = cbddc(&["get", "orders", key], port);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_str(stdout(&out).trim()).unwrap()
}

#[test]
fn patches_and_increments_edit_documents_and_reach_a_peer() {
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (free_port(), free_port());
    // node-b is not heard from yet: it holds field-level merge back, so edits travel as
    // whole documents and say so.
    let _a = RunningNode::start(dir.path(), "node-a", pa, &[("node-b", pb)]);
    assert_eq!(status_json(pa)["whole_document_edits"], true);
    let put = cbddc(
        &[
            "put",
            "orders",
            "o1",
            r#"{"status":"new","addr":{"city":"P","zip":"1"}}"#,
        ],
        pa,
    );
    assert!(put.status.success(), "{}", stderr(&put));

    let patched = cbddc(
        &[
            "patch",
            "orders",
            "o1",
            r#"{"status":"open","addr":{"zip":"2"}}"#,
        ],
        pa,
    );
    assert!(patched.status.success(), "{}", stderr(&patched));
    assert!(
        stdout(&patched).starts_with("ok seq="),
        "{}",
        stdout(&patched)
    );
    assert!(
        stderr(&patched).contains("whole document"),
        "the answer says how the edit travels: {}",
        stderr(&patched)
    );
    for by in ["5", "-2"] {
        let out = cbddc(&["increment", "orders", "o1", "stock.count", by], pa);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let expected = serde_json::json!({
        "status": "open", "addr": {"city": "P", "zip": "2"}, "stock": {"count": 3}
    });
    assert_eq!(document(pa, "o1"), expected);
    let _b = RunningNode::start(dir.path(), "node-b", pb, &[("node-a", pa)]);
    wait_until("the edits to reach node-b", Duration::from_secs(20), || {
        cbddc(&["get", "orders", "o1"], pb).status.success() && document(pb, "o1") == expected
    });

    // Refused, naming the path; nothing changes.
    for (args, words) in [
        (
            vec!["increment", "orders", "o1", "status.x", "1"],
            "status holds a string",
        ),
        (
            vec!["increment", "orders", "o1", "addr", "1"],
            "addr: it holds an object",
        ),
        (vec!["patch", "orders", "o1", "[1]"], "JSON object"),
    ] {
        let out = cbddc(&args, pa);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(stderr(&out).contains(words), "{args:?}: {}", stderr(&out));
    }
    assert_eq!(document(pa, "o1"), expected);

    // Both read field-level entries: once node-a has heard node-b, edits travel as what
    // they change.
    wait_until(
        "field-level merge in force",
        Duration::from_secs(20),
        || status_json(pa)["whole_document_edits"] == false,
    );
    let patched = cbddc(&["patch", "orders", "o1", r#"{"status":"done"}"#], pa);
    assert!(patched.status.success(), "{}", stderr(&patched));
    assert!(
        !stderr(&patched).contains("whole document"),
        "{}",
        stderr(&patched)
    );
    wait_until(
        "the field-level patch to reach node-b",
        Duration::from_secs(20),
        || {
            cbddc(&["get", "orders", "o1"], pb).status.success()
                && document(pb, "o1")["status"] == "done"
        },
    );
}

#[test]
fn an_import_line_may_carry_a_patch() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _a = RunningNode::start(dir.path(), "node-a", port, &[]);
    let lines = concat!(
        r#"{"key":"o1","value":{"status":"new","n":1}}"#,
        "\n",
        r#"{"key":"o1","patch":{"status":"open","n":null}}"#,
        "\n",
        r#"{"key":"o2","patch":{"a":{"b":2}}}"#,
        "\n",
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_cbddc"))
        .args([
            "import",
            "orders",
            "-",
            "--node",
            &format!("127.0.0.1:{port}"),
        ])
        .env("CBDDC_CLUSTER_KEY", KEY)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(lines.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(document(port, "o1"), serde_json::json!({"status": "open"}));
    assert_eq!(document(port, "o2"), serde_json::json!({"a": {"b": 2}}));
}
