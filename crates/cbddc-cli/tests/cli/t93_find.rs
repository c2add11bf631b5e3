//! `cbddc find` through the binary: a selector with a sort, pages resumed with the cursor
//! the previous page printed, --explain, and refusals that name the part.

use crate::harness::*;

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
