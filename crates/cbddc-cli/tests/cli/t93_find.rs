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
    // A field-level patch from the peer: it arrives as what it changed, merged here.
    wait_until("field-level merge in force on node-b", deadline, || {
        status_json(pb)["whole_document_edits"] == false
    });
    assert!(
        cbddc(&["patch", "orders", "o1", r#"{"n":2}"#], pb)
            .status
            .success()
    );
    let stayed = next("o1 staying");
    assert_eq!(
        (stayed["key"].as_str(), stayed["match"].as_str()),
        (Some("o1"), Some("stay")),
        "{stayed}"
    );
    assert_eq!(stayed["paths"], serde_json::json!(["n"]), "{stayed}");
    assert_eq!(stayed["value"], serde_json::json!({"status":"open","n":2}));
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

/// A small deterministic generator (xorshift).
struct Dice(u64);

impl Dice {
    fn roll(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// The documented order for what this test generates: missing, numbers, strings.
fn rank(v: Option<&serde_json::Value>) -> (u8, i64, &str) {
    match v {
        None => (0, 0, ""),
        Some(serde_json::Value::Number(n)) => (4, n.as_i64().unwrap(), ""),
        Some(serde_json::Value::String(s)) => (5, 0, s),
        Some(other) => panic!("not generated: {other}"),
    }
}

/// 20,000 imported documents, indexes declared and changed in the configuration file
/// while the node runs: random queries through the binary return what the test's own
/// filter gives, in order, whether an index serves them (--explain names it) or a scan
/// does; `cbddc index list` shows the indexes; a bad index is refused and the last good
/// configuration stays.
#[test]
fn queries_through_the_binary_use_the_indexes_of_the_configuration() {
    use serde_json::{Value, json};
    const DOCUMENTS: usize = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let shop_index = "[[indexes]]\ncollection = \"items\"\nfields = [\"shop\"]\n";
    let mut node = RunningNode::start_with(dir.path(), "node-a", port, &[], &[], shop_index);

    let mut dice = Dice(0x0dd_ba11_cafe_f00d);
    let mut documents = std::collections::BTreeMap::new();
    let mut lines = String::new();
    for i in 0..DOCUMENTS {
        let mut doc = serde_json::Map::new();
        doc.insert("shop".into(), json!(format!("s{:02}", dice.roll(20))));
        match dice.roll(10) {
            0 => {}
            1 => {
                doc.insert("total".into(), json!("n/a"));
            }
            _ => {
                doc.insert("total".into(), json!(dice.roll(1_000) as i64 - 100));
            }
        }
        let city = ["P", "Q", "R"][dice.roll(3) as usize];
        doc.insert("addr".into(), json!({ "city": city }));
        let key = format!("k{i:05}");
        lines.push_str(&json!({"key": key, "value": doc}).to_string());
        lines.push('\n');
        documents.insert(key, Value::Object(doc));
    }
    let file = dir.path().join("items.jsonl");
    std::fs::write(&file, lines).unwrap();
    let imported = cbddc(&["import", "items", file.to_str().unwrap()], port);
    assert!(imported.status.success(), "{}", stderr(&imported));

    // A second index added while the node runs: built in the background; this one keeps
    // a copy of each document, so queries through it read nothing else.
    node.extra_toml = format!(
        "{shop_index}[[indexes]]\ncollection = \"items\"\nfields = [\"total\", \"addr.city\"]\ncovering = true\n"
    );
    node.rewrite_config();
    let built = |count: usize| {
        let out = cbddc(&["index", "list", "--json"], port);
        let list: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
        list.len() == count
            && list
                .iter()
                .all(|i| i["state"] == "built" && i["entries"] == DOCUMENTS)
    };
    wait_until("both indexes built", Duration::from_secs(60), || built(2));
    let listed = stdout(&cbddc(&["index", "list"], port));
    assert!(
        listed.contains("items(shop): built, 20000 entries")
            && listed.contains("items(total, addr.city) covering: built, 20000 entries"),
        "{listed}"
    );

    let mut indexed = 0;
    for round in 0..200 {
        let shop = || format!("s{:02}", round % 20);
        let low = (round * 37 % 900) as i64 - 100;
        let (selector, served) = match round % 6 {
            0 => (json!({"shop": shop()}), true),
            1 => (json!({"total": {"$gte": low, "$lt": low + 50}}), true),
            2 => (json!({"shop": shop(), "total": {"$gt": low}}), true),
            3 => (
                json!({"$or": [{"shop": shop()}, {"total": {"$lte": low - 800}}]}),
                true,
            ),
            4 => (json!({"addr.city": "Q", "note": {"$exists": false}}), false),
            _ => (
                json!({"shop": {"$in": [shop(), "s00"]}, "addr.city": "P"}),
                true,
            ),
        };
        // Every kind of query both ways (kinds cycle every 6 rounds).
        let descending = (round / 6) % 2 == 0;
        let sort = if descending { "total:desc" } else { "total" };
        let holds = |doc: &Value| -> bool {
            fn at<'a>(doc: &'a Value, path: &str) -> Option<&'a Value> {
                path.split('.').try_fold(doc, |v, p| v.as_object()?.get(p))
            }
            fn check(doc: &Value, selector: &Value) -> bool {
                selector.as_object().unwrap().iter().all(|(k, cond)| {
                    if k == "$or" {
                        return cond.as_array().unwrap().iter().any(|s| check(doc, s));
                    }
                    let field = rank(at(doc, k));
                    match cond.as_object() {
                        Some(ops) if ops.keys().all(|o| o.starts_with('$')) => {
                            ops.iter().all(|(op, v)| match op.as_str() {
                                "$gte" => field.0 > 0 && field >= rank(Some(v)),
                                "$gt" => field.0 > 0 && field > rank(Some(v)),
                                "$lt" => field.0 > 0 && field < rank(Some(v)),
                                "$lte" => field.0 > 0 && field <= rank(Some(v)),
                                "$exists" => (field.0 > 0) == v.as_bool().unwrap(),
                                "$in" => {
                                    v.as_array().unwrap().iter().any(|x| field == rank(Some(x)))
                                }
                                other => panic!("{other}"),
                            })
                        }
                        _ => field == rank(Some(cond)),
                    }
                })
            }
            check(doc, &selector)
        };
        let mut expected: Vec<(&String, &Value)> =
            documents.iter().filter(|(_, d)| holds(d)).collect();
        expected.sort_by(|(ka, a), (kb, b)| {
            let o = rank(a.get("total")).cmp(&rank(b.get("total")));
            (if descending { o.reverse() } else { o }).then_with(|| ka.cmp(kb))
        });
        let expected: Vec<&str> = expected.iter().map(|(k, _)| k.as_str()).collect();

        let text = selector.to_string();
        let mut keys = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..20 {
            let mut args = vec![
                "find", "items", &text, "--sort", sort, "--limit", "2500", "--json",
            ];
            if let Some(cursor) = &after {
                args.extend(["--after", cursor.as_str()]);
            }
            let (docs, next) = find(&args, port);
            keys.extend(docs.iter().map(|d| d["key"].as_str().unwrap().to_string()));
            match next {
                Some(cursor) => after = Some(cursor),
                None => break,
            }
        }
        assert_eq!(keys, expected, "{text} sorted by {sort}");
        if round < 12 {
            let explained = stderr(&cbddc(
                &["find", "items", &text, "--explain", "--limit", "1"],
                port,
            ));
            assert_eq!(
                explained.contains("plan: index items("),
                served,
                "{text}: {explained}"
            );
            indexed += usize::from(served);
            if round % 6 == 4 {
                // No index serves it: the plan names the one that would.
                assert!(
                    explained.contains(
                        r#"an index on items(addr.city, note) would serve it: [[indexes]] collection = "items", fields = ["addr.city", "note"]"#
                    ),
                    "{text}: {explained}"
                );
            }
            if round % 6 == 1 {
                // Sorted by the index's first field: read in its order (downwards for
                // total:desc), a page at a time.
                let explained = stderr(&cbddc(
                    &[
                        "find",
                        "items",
                        &text,
                        "--sort",
                        sort,
                        "--explain",
                        "--limit",
                        "10",
                    ],
                    port,
                ));
                assert!(
                    explained.contains("index items(total, addr.city) (covering)")
                        && explained.contains("in the sort's order"),
                    "{text}: {explained}"
                );
            }
        }
    }
    assert!(indexed > 0);

    // An index that cannot be: refused, the last good configuration stays.
    let good = node.extra_toml.clone();
    node.extra_toml = format!("{good}[[indexes]]\ncollection = \"items\"\nfields = [\"$bad\"]\n");
    node.rewrite_config();
    wait_until("the refusal in the log", Duration::from_secs(20), || {
        node.log_text().contains("indexes[2].fields[0]")
    });
    assert!(built(2), "the indexes in force stay");

    // Removed from the configuration: dropped, and queries scan again.
    node.extra_toml = shop_index.to_string();
    node.rewrite_config();
    wait_until("the index dropped", Duration::from_secs(20), || built(1));
    let explained = stderr(&cbddc(
        &["find", "items", r#"{"total": 5}"#, "--explain"],
        port,
    ));
    assert!(explained.contains("plan: a scan of items"), "{explained}");
}
