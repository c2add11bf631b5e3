//! `cbddc find` through the binary: a selector with a sort, pages resumed with the cursor
//! the previous page printed, --explain, and refusals that name the part.

use crate::harness::*;
use std::time::Duration;

fn find(args: &[&str], port: u16) -> (Vec<serde_json::Value>, Option<String>) {
    let out = cbddc(args, port);
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    let mut docs = Vec::new();
    let mut cursor = None;
    for line in stdout(&out).lines() {
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        match value.get("cursor") {
            Some(c) => cursor = Some(c.as_str().unwrap().to_string()),
            None => docs.push(value),
        }
    }
    (docs, cursor)
}

#[test]
fn find_pages_through_matches_in_order_and_refuses_what_it_cannot_read() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _a = RunningNode::start(dir.path(), "node-a", port, &[]);
    for i in 0..30 {
        let doc = format!(
            r#"{{"shop":"{}","total":{},"addr":{{"city":"{}"}}}}"#,
            if i % 3 == 0 { "north" } else { "south" },
            i % 7,
            if i % 2 == 0 { "P" } else { "Q" }
        );
        assert!(
            cbddc(&["put", "orders", &format!("o{i:02}"), &doc], port)
                .status
                .success()
        );
    }
    let selector = r#"{"shop":"north","addr.city":{"$in":["P","Q"]}}"#;
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..10 {
        let mut args = vec![
            "find",
            "orders",
            selector,
            "--sort",
            "total:desc",
            "--limit",
            "3",
            "--json",
        ];
        if let Some(cursor) = &after {
            args.extend(["--after", cursor.as_str()]);
        }
        let (docs, next) = find(&args, port);
        seen.extend(docs);
        match next {
            Some(cursor) => after = Some(cursor),
            None => break,
        }
    }
    let keys: Vec<&str> = seen.iter().map(|d| d["key"].as_str().unwrap()).collect();
    // north: o00 o03 … o27; totals i % 7, descending, then by key.
    let mut expected: Vec<(i64, String)> = (0..30)
        .filter(|i| i % 3 == 0)
        .map(|i| (-(i % 7), format!("o{i:02}")))
        .collect();
    expected.sort();
    let expected: Vec<&str> = expected.iter().map(|(_, k)| k.as_str()).collect();
    assert_eq!(keys, expected);
    assert!(seen.iter().all(|d| d["value"]["shop"] == "north"));

    let explained = cbddc(&["find", "orders", "{}", "--explain", "--limit", "1"], port);
    assert!(
        stderr(&explained).contains("plan: a scan of orders"),
        "{}",
        stderr(&explained)
    );
    assert!(
        stderr(&explained).contains("--after"),
        "{}",
        stderr(&explained)
    );

    for (args, words) in [
        (
            vec!["find", "orders", r#"{"total":{"$near":1}}"#],
            "unknown operator $near at total",
        ),
        (vec!["find", "orders", "[1]"], "not an object"),
        (
            vec!["find", "orders", "{}", "--sort", "total:up"],
            "total:up",
        ),
        (vec!["find", "orders", "{}", "--after", "00ff"], "cursor"),
    ] {
        let out = cbddc(&args, port);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(stderr(&out).contains(words), "{args:?}: {}", stderr(&out));
    }
}

/// `cbddc watch --where`: the current matches enter first, then changes from this node
/// and from a peer enter, stay and leave; a change that never matched prints nothing.
#[test]
fn a_live_query_shows_documents_entering_staying_and_leaving() {
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (free_port(), free_port());
    let _a = RunningNode::start(dir.path(), "node-a", pa, &[("node-b", pb)]);
    let _b = RunningNode::start(dir.path(), "node-b", pb, &[("node-a", pa)]);
    assert!(
        cbddc(&["put", "orders", "o1", r#"{"status":"open"}"#], pa)
            .status
            .success()
    );
    assert!(
        cbddc(&["put", "orders", "o2", r#"{"status":"closed"}"#], pa)
            .status
            .success()
    );
    let mut watch = cbddc_child(
        &[
            "watch",
            "orders",
            "--where",
            r#"{"status":"open"}"#,
            "--from",
            "start",
            "--json",
        ],
        pa,
    );
    let lines = LineReader::of(&mut watch);
    let deadline = Duration::from_secs(20);
    let next = |what: &str| -> serde_json::Value {
        serde_json::from_str(&lines.take(1, what, deadline)[0]).unwrap()
    };
    let first = next("the current match");
    assert_eq!(
        (first["key"].as_str(), first["match"].as_str()),
        (Some("o1"), Some("enter"))
    );
    let synced = next("the synced line");
    assert_eq!(synced["synced"], true, "{synced}");

    // From the peer: o3 opens (enter); o2 stays closed (nothing); o1 changes (stay).
    assert!(
        cbddc(&["put", "orders", "o2", r#"{"status":"closed","n":1}"#], pb)
            .status
            .success()
    );
    assert!(
        cbddc(&["put", "orders", "o3", r#"{"status":"open"}"#], pb)
            .status
            .success()
    );
    let entered = next("o3 entering");
    assert_eq!(
        (entered["key"].as_str(), entered["match"].as_str()),
        (Some("o3"), Some("enter")),
        "{entered}"
    );
    assert!(
        cbddc(&["patch", "orders", "o1", r#"{"n":2}"#], pa)
            .status
            .success()
    );
    let stayed = next("o1 staying");
    assert_eq!(
        (stayed["key"].as_str(), stayed["match"].as_str()),
        (Some("o1"), Some("stay")),
        "{stayed}"
    );
    assert!(
        cbddc(&["patch", "orders", "o1", r#"{"status":"closed"}"#], pa)
            .status
            .success()
    );
    let left = next("o1 leaving");
    assert_eq!(
        (left["key"].as_str(), left["match"].as_str()),
        (Some("o1"), Some("leave")),
        "{left}"
    );
    assert!(cbddc(&["delete", "orders", "o3"], pb).status.success());
    let deleted = next("o3 leaving by delete");
    assert_eq!(
        (
            deleted["key"].as_str(),
            deleted["match"].as_str(),
            deleted["deleted"].as_bool()
        ),
        (Some("o3"), Some("leave"), Some(true)),
        "{deleted}"
    );
    let _ = watch.kill();
    let _ = watch.wait();

    let refused = cbddc(&["watch", "orders", "--where", r#"{"n":{"$near":1}}"#], pa);
    assert_eq!(refused.status.code(), Some(2));
    assert!(stderr(&refused).contains("$near"), "{}", stderr(&refused));
}

/// `cbddc list --limit --after` reads a collection a page at a time.
#[test]
fn list_reads_a_page_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _a = RunningNode::start(dir.path(), "node-a", port, &[]);
    for i in 0..5 {
        assert!(
            cbddc(&["put", "c", &format!("k{i}"), "1"], port)
                .status
                .success()
        );
    }
    let first = cbddc(&["list", "c", "--limit", "2"], port);
    assert!(first.status.success(), "{}", stderr(&first));
    assert_eq!(stdout(&first), "k0\t1\nk1\t1\n");
    assert!(
        stderr(&first).contains(r#"--after "k1""#),
        "{}",
        stderr(&first)
    );
    let last = cbddc(&["list", "c", "--limit", "3", "--after", "k1"], port);
    assert_eq!(stdout(&last), "k2\t1\nk3\t1\nk4\t1\n");
    assert!(
        !stderr(&last).contains("--after"),
        "the last page: {}",
        stderr(&last)
    );
    let refused = cbddc(&["list", "c", "--limit", "0"], port);
    assert_eq!(refused.status.code(), Some(2));
}
