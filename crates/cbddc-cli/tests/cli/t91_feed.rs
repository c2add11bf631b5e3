//! The change feed through the binary: a consumer that resumes never misses a delete
//! that compaction collected, is told when the feed no longer holds what it asks for,
//! and resyncs with `--from start`.

use crate::harness::*;
use std::time::Duration;

/// `cbddc watch COLLECTION ARGS --json` until it has printed `count` lines.
fn watch_lines(port: u16, collection: &str, args: &[&str], count: usize) -> Vec<serde_json::Value> {
    let mut all = vec!["watch", collection, "--json"];
    all.extend_from_slice(args);
    let mut watch = cbddc_child(&all, port);
    let lines = LineReader::of(&mut watch);
    let raw = lines.take(count, "the watch's lines", Duration::from_secs(20));
    watch.kill().unwrap();
    let _ = watch.wait();
    raw.iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn key_and_value(line: &serde_json::Value) -> (String, String) {
    (
        line["key"].as_str().unwrap_or("").to_string(),
        line["value"].to_string(),
    )
}

/// The reproduction: put k1, put k2 (positions 1 and 2); put k1 again, delete k2.
fn write_the_four(port: u16) {
    for args in [
        &["put", "c", "k1", "1"][..],
        &["put", "c", "k2", "2"],
        &["put", "c", "k1", "3"],
        &["delete", "c", "k2"],
    ] {
        let out = cbddc(args, port);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
}

/// Until compaction collected k2's tombstone and k1's first put: the oplog holds only
/// k1's winner.
fn wait_for_compaction(port: u16, feed_entries: u64) {
    wait_until(
        "compaction to collect the tombstone",
        Duration::from_secs(30),
        || {
            let status = status_json(port);
            status["oplog_entries"] == 1 && status["feed"]["feed_entries"] == feed_entries
        },
    );
}

#[test]
fn a_watch_resumed_after_a_collected_delete_still_prints_it() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _node = RunningNode::start(dir.path(), "feed-one", port, &[]);
    write_the_four(port);
    wait_for_compaction(port, 1);

    let seen = watch_lines(port, "c", &["--from", "2"], 2);
    assert_eq!(
        seen.iter().map(key_and_value).collect::<Vec<_>>(),
        [
            ("k1".to_string(), "3".to_string()),
            ("k2".into(), "null".into())
        ]
    );
    assert_eq!(seen[1]["deleted"], true);
    assert_eq!(seen[1]["position"], 4);
}

#[test]
fn on_two_nodes_a_delete_the_peer_acknowledged_stays_in_both_feeds() {
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (free_port(), free_port());
    let _a = RunningNode::start(dir.path(), "feed-two-a", pa, &[("feed-two-b", pb)]);
    let _b = RunningNode::start(dir.path(), "feed-two-b", pb, &[("feed-two-a", pa)]);
    write_the_four(pa);
    // Both compact only once each has heard the other acknowledge the delete.
    wait_for_compaction(pa, 1);
    wait_for_compaction(pb, 1);

    let on_a = watch_lines(pa, "c", &["--from", "2"], 2);
    assert_eq!(on_a[1]["key"], "k2");
    assert_eq!(on_a[1]["deleted"], true);
    // On b the same changes have b's own positions: resume from before all of them.
    let on_b = watch_lines(pb, "c", &["--from", "0"], 2);
    let mut seen: Vec<(String, String)> = on_b.iter().map(key_and_value).collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("k1".to_string(), "3".to_string()),
            ("k2".into(), "null".into())
        ]
    );
}

#[test]
fn past_the_feed_retention_a_watch_is_told_to_resync_and_from_start_does() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _node = RunningNode::start_with(
        dir.path(),
        "feed-gone",
        port,
        &[],
        &[],
        "feed_retention_ms = 0\n",
    );
    write_the_four(port);
    wait_for_compaction(port, 0);
    assert_eq!(status_json(port)["feed"]["oldest_position"], 4);

    let out = cbddc(&["watch", "c", "--from", "2", "--json"], port);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let message = stderr(&out);
    assert!(
        message.contains("after position 2")
            && message.contains("position 4")
            && message.contains("--from start"),
        "{message}"
    );

    // The resync: k1's current state at position 0, then "synced" at the position the
    // state stands for, then the changes after it.
    let mut watch = cbddc_child(&["watch", "c", "--json", "--from", "start"], port);
    let lines = LineReader::of(&mut watch);
    let state = lines.take(2, "the current state", Duration::from_secs(20));
    let state: Vec<serde_json::Value> = state
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(key_and_value(&state[0]), ("k1".into(), "3".into()));
    assert_eq!(state[0]["position"], 0);
    assert_eq!(state[1]["synced"], true);
    assert_eq!(state[1]["position"], 4);
    assert!(cbddc(&["delete", "c", "k1"], port).status.success());
    let after: serde_json::Value =
        serde_json::from_str(&lines.take(1, "the next change", Duration::from_secs(20))[0])
            .unwrap();
    assert_eq!(
        (after["key"].as_str(), after["position"].as_u64()),
        (Some("k1"), Some(5))
    );
    watch.kill().unwrap();
    let _ = watch.wait();
}

#[test]
fn a_named_consumer_resumes_where_it_left_off_and_holds_its_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _node = RunningNode::start_with(
        dir.path(),
        "feed-named",
        port,
        &[],
        &[],
        "feed_retention_ms = 0\n",
    );
    for args in [&["put", "c", "k1", "1"][..], &["put", "c", "k2", "2"]] {
        assert!(cbddc(args, port).status.success());
    }
    // First run: the current state, then "synced" at 2, which the next poll acknowledges
    // (the watch keeps running until the node holds the position).
    let mut first = cbddc_child(&["watch", "c", "--json", "--consumer", "indexer"], port);
    let lines = LineReader::of(&mut first);
    let seen = lines.take(3, "the first run's lines", Duration::from_secs(20));
    let synced: serde_json::Value = serde_json::from_str(&seen[2]).unwrap();
    assert_eq!(synced["synced"], true);
    wait_until(
        "the node to keep the consumer's position",
        Duration::from_secs(20),
        || status_json(port)["feed"]["consumers"][0]["position"] == 2,
    );
    first.kill().unwrap();
    let _ = first.wait();

    write_the_four(port);
    // The retention is 0, yet the consumer has not read k2's delete: it stays.
    wait_until(
        "compaction to collect the tombstones",
        Duration::from_secs(30),
        || status_json(port)["oplog_entries"] == 1,
    );
    let status = status_json(port);
    assert_eq!(status["feed"]["consumers"][0]["name"], "indexer");
    assert_eq!(status["feed"]["consumers"][0]["lag"], 4);
    assert!(status["feed"]["feed_entries"].as_u64().unwrap() >= 1);

    let resumed = watch_lines(port, "c", &["--consumer", "indexer"], 2);
    let mut seen: Vec<(String, String)> = resumed.iter().map(key_and_value).collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("k1".to_string(), "3".to_string()),
            ("k2".into(), "null".into())
        ]
    );

    // An operator retires the consumer: it holds nothing back any more.
    let listed = stdout(&cbddc(&["consumers", "list"], port));
    assert!(listed.starts_with("indexer\tat "), "{listed}");
    let out = cbddc(&["consumers", "forget", "indexer"], port);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        status_json(port)["feed"]["consumers"],
        serde_json::json!([])
    );
    let again = cbddc(&["consumers", "forget", "indexer"], port);
    assert_eq!(again.status.code(), Some(2));
    assert!(
        stderr(&again).contains("no feed consumer is named \"indexer\""),
        "{}",
        stderr(&again)
    );

    let out = cbddc(&["watch", "c", "--consumer", "not a name"], port);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("feed consumer name"),
        "{}",
        stderr(&out)
    );
}
