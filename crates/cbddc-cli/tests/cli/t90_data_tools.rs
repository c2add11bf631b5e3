use crate::harness::*;
use std::io::Write;
use std::time::Duration;

#[test]
fn watch_on_one_node_prints_another_nodes_puts_and_deletes_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (free_port(), free_port());
    let _a = RunningNode::start(dir.path(), "feed-a", pa, &[("feed-b", pb)]);
    let _b = RunningNode::start(dir.path(), "feed-b", pb, &[("feed-a", pa)]);

    let mut watch = cbddc_child(&["watch", "users", "--json", "--from", "start"], pb);
    let lines = LineReader::of(&mut watch);
    // Node b holds nothing yet: its current state is empty, complete at position 0.
    let synced = lines.take(1, "the end of the current state", Duration::from_secs(20));
    assert_eq!(synced[0], r#"{"position":0,"synced":true}"#);
    for (key, value) in [("ada", r#"{"n": 1.10}"#), ("bob", "2"), ("ada", "3")] {
        assert!(cbddc(&["put", "users", key, value], pa).status.success());
    }
    assert!(cbddc(&["put", "other", "x", "1"], pa).status.success());
    assert!(cbddc(&["delete", "users", "bob"], pa).status.success());

    let raw = lines.take(
        4,
        "node-b's watch to print node-a's changes",
        Duration::from_secs(20),
    );
    assert!(
        raw[0].contains(r#""value":{"n": 1.10}"#),
        "values go out as stored: {}",
        raw[0]
    );
    let seen: Vec<serde_json::Value> = raw
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let summary: Vec<(String, String)> = seen
        .iter()
        .map(|c| {
            (
                c["key"].as_str().unwrap().to_string(),
                c["value"].to_string(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("ada".to_string(), r#"{"n":1.1}"#.to_string()),
            ("bob".into(), "2".into()),
            ("ada".into(), "3".into()),
            ("bob".into(), "null".into()),
        ],
        "{seen:#?}"
    );
    assert_eq!(seen[3]["deleted"], true);

    assert!(
        seen.iter()
            .all(|c| c["collection"] == "users" && c["node"] == "feed-a")
    );
    let positions: Vec<u64> = seen
        .iter()
        .map(|c| c["position"].as_u64().unwrap())
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    watch.kill().unwrap();
    let _ = watch.wait();

    // Resumed after the second change, it prints exactly the two that followed it.
    let mut resumed = cbddc_child(&["watch", "users", "--from", &positions[1].to_string()], pb);
    let lines = LineReader::of(&mut resumed);
    let rest = lines.take(2, "the resumed watch", Duration::from_secs(20));
    assert!(
        rest[0].starts_with(&format!("{}\tput\tusers\tada\t3", positions[2])),
        "{rest:?}"
    );
    assert!(
        rest[1].starts_with(&format!("{}\tdelete\tusers\tbob", positions[3])),
        "{rest:?}"
    );
    resumed.kill().unwrap();
    let _ = resumed.wait();
}

#[test]
fn an_import_reaches_a_peer_and_export_round_trips_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (free_port(), free_port());
    let _a = RunningNode::start(dir.path(), "bulk-a", pa, &[("bulk-b", pb)]);
    let _b = RunningNode::start(dir.path(), "bulk-b", pb, &[("bulk-a", pa)]);

    // Keys sort as they are numbered; values keep odd spacing and float digits.
    let mut input = String::new();
    for i in 0..20_000u32 {
        input.push_str(&format!(
            "{{\"key\":\"k{i:05}\",\"value\":{{\"x\": {}e-3, \"tags\" : [\"t{}\"]}}}}\n",
            f64::from(i) * 1.1,
            i % 7
        ));
    }
    let file = dir.path().join("in.jsonl");
    std::fs::write(&file, &input).unwrap();
    let out = cbddc(
        &["import", "items", file.to_str().unwrap(), "--batch", "700"],
        pa,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("imported 20000 documents"),
        "{}",
        stderr(&out)
    );

    let export_a = cbddc(&["export", "items"], pa);
    assert!(export_a.status.success(), "{}", stderr(&export_a));
    assert_eq!(
        stdout(&export_a),
        input,
        "export prints what was imported, byte for byte"
    );
    wait_until(
        "node-b to hold every imported document",
        Duration::from_secs(60),
        || {
            let export_b = cbddc(&["export", "items"], pb);
            export_b.status.success() && export_b.stdout == export_a.stdout
        },
    );

    // Through a pipe into another collection, and back out the same.
    let mut import = cbddc_child(&["import", "copy", "-"], pb);
    import
        .stdin
        .take()
        .unwrap()
        .write_all(&export_a.stdout)
        .unwrap();
    let done = import.wait_with_output().unwrap();
    assert!(done.status.success(), "{}", stderr(&done));
    assert_eq!(cbddc(&["export", "copy"], pb).stdout, export_a.stdout);
}

#[test]
fn a_bad_line_stops_an_import_with_its_number_and_nothing_after_it_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _a = RunningNode::start(dir.path(), "bulk-c", port, &[]);
    let file = dir.path().join("bad.jsonl");
    std::fs::write(
        &file,
        "{\"key\":\"a\",\"value\":1}\n{\"key\":\"b\",\"value\":2}\n{\"key\":\"c\",\"value\":{oops}\n{\"key\":\"d\",\"value\":4}\n",
    )
    .unwrap();
    let out = cbddc(&["import", "items", file.to_str().unwrap()], port);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("line 3:"), "{err}");
    assert!(err.contains("--skip 2"), "{err}");
    assert_eq!(
        stdout(&cbddc(&["export", "items"], port)),
        "{\"key\":\"a\",\"value\":1}\n{\"key\":\"b\",\"value\":2}\n"
    );
}

#[test]
fn a_node_configured_for_some_collections_takes_only_those_through_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (free_port(), free_port());
    let _a = RunningNode::start(dir.path(), "coll-full", pa, &[("coll-part", pb)]);
    let _b = RunningNode::start_with(
        dir.path(),
        "coll-part",
        pb,
        &[("coll-full", pa)],
        &[],
        "collections = [\"users\"]\n",
    );
    assert!(cbddc(&["put", "users", "ada", "1"], pa).status.success());
    assert!(cbddc(&["put", "orders", "o1", "2"], pa).status.success());
    assert!(cbddc(&["put", "users", "bob", "3"], pa).status.success());
    wait_until(
        "coll-part to hold the users",
        Duration::from_secs(20),
        || stdout(&cbddc(&["export", "users"], pb)).lines().count() == 2,
    );
    assert_eq!(stdout(&cbddc(&["export", "orders"], pb)), "");
    let refused = cbddc(&["put", "orders", "o2", "1"], pb);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        stderr(&refused).contains("replicates only the collections users"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(status_json(pb)["oplog_entries"], 2);
}
