//! Field-level merge through the binary, on two hosts of a LAN (network namespaces)
//! parted and healed: concurrent edits of different fields of one document both survive,
//! a removed field stays removed while another is set, and concurrent increments all
//! count.

use crate::harness::wait_until;
use crate::lan::{HostNode, Lan};
use serde_json::{Value, json};
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(60);

fn ok(node: &HostNode, args: &[&str]) -> String {
    let out = node.cli(args);
    assert!(
        out.status.success(),
        "{} {args:?}: {}",
        node.node_id,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn document(node: &HostNode, key: &str) -> Option<Value> {
    let out = node.cli(&["get", "orders", key]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten()
}

fn in_force(node: &HostNode) -> bool {
    node.status().is_some_and(|s| {
        s["features"]["in_force"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f == "field-merge"))
    })
}

fn both_hold(nodes: &[HostNode], key: &str, expected: &Value) {
    wait_until(
        &format!("both nodes to hold {key} = {expected}"),
        DEADLINE,
        || {
            nodes
                .iter()
                .all(|n| document(n, key).as_ref() == Some(expected))
        },
    );
}

#[test]
fn hosts_parted_and_healed_merge_concurrent_edits_field_by_field() {
    let lan = Lan::new(2);
    let dir = tempfile::tempdir().unwrap();
    let nodes = lan.mesh(dir.path(), &["node-a", "node-b"], "", None);
    let (a, b) = (&nodes[0], &nodes[1]);
    wait_until("field-level merge to be in force on both", DEADLINE, || {
        in_force(a) && in_force(b)
    });
    assert_eq!(a.status().unwrap()["whole_document_edits"], false);

    ok(
        a,
        &[
            "put",
            "orders",
            "o1",
            r#"{"status":"new","addr":{"city":"P","zip":"1"}}"#,
        ],
    );
    ok(a, &["put", "orders", "o2", r#"{"x":1,"y":1}"#]);
    ok(a, &["put", "orders", "o3", r#"{"n":10}"#]);
    both_hold(&nodes, "o3", &json!({"n":10}));
    both_hold(&nodes, "o2", &json!({"x":1,"y":1}));

    lan.cut(1);
    let said = ok(a, &["patch", "orders", "o1", r#"{"status":"open"}"#]);
    assert!(
        !said.contains("whole document"),
        "a field-level edit says nothing of whole documents: {said}"
    );
    ok(
        b,
        &[
            "patch",
            "orders",
            "o1",
            r#"{"addr":{"zip":"2"},"assignee":"bob"}"#,
        ],
    );
    ok(a, &["patch", "orders", "o2", r#"{"x":null}"#]);
    ok(b, &["patch", "orders", "o2", r#"{"y":2}"#]);
    ok(a, &["increment", "orders", "o3", "n", "5"]);
    ok(a, &["increment", "orders", "o3", "n", "5"]);
    ok(b, &["increment", "orders", "o3", "n", "-2"]);
    // Apart, each side holds only its own edits.
    assert_eq!(document(a, "o3"), Some(json!({"n":20})));
    assert_eq!(document(b, "o3"), Some(json!({"n":8})));
    lan.heal(1);

    both_hold(
        &nodes,
        "o1",
        &json!({"status":"open","assignee":"bob","addr":{"city":"P","zip":"2"}}),
    );
    both_hold(&nodes, "o2", &json!({"y":2}));
    both_hold(&nodes, "o3", &json!({"n":18}));
}
