//! Documents merged field by field across stores: field-level entries written once the
//! feature is in force, merged on every apply path (push and pull, snapshots), seen
//! merged by readers and the change feed.

use crate::{SqliteStore, StoreOptions};
use cbddc_core::{
    CompactionPlan, DocumentStore, LocalWrite, NodeId, Operation, PageLimits, VersionVector,
};
use serde_json::{Value, json};

async fn open(dir: &std::path::Path, name: &str) -> SqliteStore {
    SqliteStore::open(
        &dir.join(name),
        NodeId::new(name).unwrap(),
        StoreOptions::default(),
    )
    .await
    .unwrap()
}

/// A store that writes field-level entries.
async fn merging(dir: &std::path::Path, name: &str) -> SqliteStore {
    let store = open(dir, name).await;
    store
        .raise_features(["field-merge".to_string()].into())
        .await
        .unwrap();
    store
}

async fn document(store: &SqliteStore, key: &str) -> Option<Value> {
    let doc = store.get("c", key).await.unwrap()?;
    Some(serde_json::from_str(&doc.value).unwrap())
}

/// Hands `to` every entry `from` holds that `to` lacks (a pull).
async fn sync(from: &SqliteStore, to: &SqliteStore) {
    for _ in 0..100 {
        let theirs = to.version_vector().await.unwrap();
        let page = from
            .entries_missing_from(theirs, PageLimits::default())
            .await
            .unwrap();
        if page.entries.is_empty() {
            return;
        }
        to.apply_remote(page.entries).await.unwrap();
    }
    panic!("sync did not finish in 100 pages");
}

async fn both_ways(a: &SqliteStore, b: &SqliteStore) {
    sync(a, b).await;
    sync(b, a).await;
}

#[tokio::test]
async fn concurrent_edits_of_different_fields_both_survive_on_both_stores() {
    let dir = tempfile::tempdir().unwrap();
    let a = merging(dir.path(), "a").await;
    let b = merging(dir.path(), "b").await;
    a.write(vec![LocalWrite::put(
        "c",
        "o1",
        r#"{"status":"new","addr":{"city":"P","zip":"1"}}"#,
    )])
    .await
    .unwrap();
    sync(&a, &b).await;

    let sent = a
        .write(vec![LocalWrite::patch("c", "o1", r#"{"status":"open"}"#)])
        .await
        .unwrap();
    // The entry says what it changes, not the whole document.
    assert!(
        matches!(&sent[0].op, Operation::Merge { .. }),
        "{:?}",
        sent[0].op
    );
    b.write(vec![LocalWrite::patch(
        "c",
        "o1",
        r#"{"addr":{"zip":"2"},"assignee":"bob"}"#,
    )])
    .await
    .unwrap();
    both_ways(&a, &b).await;

    let expected = json!({"status":"open","assignee":"bob","addr":{"city":"P","zip":"2"}});
    assert_eq!(document(&a, "o1").await, Some(expected.clone()));
    assert_eq!(document(&b, "o1").await, Some(expected));
    // Byte for byte too: both stores write the merged document the same way.
    assert_eq!(
        a.get("c", "o1").await.unwrap().unwrap().value,
        b.get("c", "o1").await.unwrap().unwrap().value
    );
}

#[tokio::test]
async fn concurrent_increments_all_count_once_on_every_store() {
    let dir = tempfile::tempdir().unwrap();
    let a = merging(dir.path(), "a").await;
    let b = merging(dir.path(), "b").await;
    a.write(vec![LocalWrite::put("c", "k", r#"{"n":10}"#)])
        .await
        .unwrap();
    sync(&a, &b).await;
    a.write(vec![LocalWrite::increment("c", "k", "n", 5)])
        .await
        .unwrap();
    a.write(vec![LocalWrite::increment("c", "k", "n", 5)])
        .await
        .unwrap();
    b.write(vec![LocalWrite::increment("c", "k", "n", -2)])
        .await
        .unwrap();
    both_ways(&a, &b).await;
    // Delivered twice: nothing counts again.
    both_ways(&a, &b).await;
    assert_eq!(document(&a, "k").await, Some(json!({"n":18})));
    assert_eq!(document(&b, "k").await, Some(json!({"n":18})));
}

#[tokio::test]
async fn a_removed_field_stays_removed_while_another_is_set_concurrently() {
    let dir = tempfile::tempdir().unwrap();
    let a = merging(dir.path(), "a").await;
    let b = merging(dir.path(), "b").await;
    a.write(vec![LocalWrite::put("c", "k", r#"{"x":1,"y":1}"#)])
        .await
        .unwrap();
    sync(&a, &b).await;
    a.write(vec![LocalWrite::patch("c", "k", r#"{"x":null}"#)])
        .await
        .unwrap();
    b.write(vec![LocalWrite::patch("c", "k", r#"{"y":2}"#)])
        .await
        .unwrap();
    both_ways(&a, &b).await;
    assert_eq!(document(&a, "k").await, Some(json!({"y":2})));
    assert_eq!(document(&b, "k").await, Some(json!({"y":2})));
}

#[tokio::test]
async fn the_feed_carries_the_merged_document_and_the_paths_a_write_changed() {
    let dir = tempfile::tempdir().unwrap();
    let a = merging(dir.path(), "a").await;
    let b = merging(dir.path(), "b").await;
    a.write(vec![LocalWrite::put("c", "k", r#"{"x":1,"y":{"z":1}}"#)])
        .await
        .unwrap();
    sync(&a, &b).await;
    let before = b.changes_after(0, None, 100).await.unwrap().last_position;
    a.write(vec![LocalWrite::patch("c", "k", r#"{"y":{"z":2}}"#)])
        .await
        .unwrap();
    sync(&a, &b).await;
    let page = b.changes_after(before, None, 100).await.unwrap();
    assert_eq!(page.changes.len(), 1);
    let change = &page.changes[0];
    assert_eq!(change.document(), Some(json!({"x":1,"y":{"z":2}})));
    assert_eq!(
        change.merged.as_ref().map(|m| m.paths.clone()),
        Some(vec!["y.z".to_string()])
    );
}

#[tokio::test]
async fn before_the_feature_is_in_force_a_patch_travels_as_a_whole_put() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(dir.path(), "a").await;
    a.write(vec![LocalWrite::put("c", "k", r#"{"x":1}"#)])
        .await
        .unwrap();
    let sent = a
        .write(vec![LocalWrite::patch("c", "k", r#"{"y":2}"#)])
        .await
        .unwrap();
    assert_eq!(
        sent[0].op,
        Operation::Put {
            value: r#"{"x":1,"y":2}"#.into()
        }
    );
}

#[tokio::test]
async fn whole_puts_from_a_node_without_the_feature_merge_as_puts_as_of_their_stamp() {
    let dir = tempfile::tempdir().unwrap();
    let a = merging(dir.path(), "a").await;
    let old = open(dir.path(), "old").await;
    a.write(vec![LocalWrite::put("c", "k", r#"{"x":1}"#)])
        .await
        .unwrap();
    sync(&a, &old).await;
    a.write(vec![LocalWrite::patch("c", "k", r#"{"y":2}"#)])
        .await
        .unwrap();
    // Once it has the patch, its put is stamped after it: the put replaces the document,
    // the patch's field too.
    sync(&a, &old).await;
    old.write(vec![LocalWrite::put("c", "k", r#"{"z":3}"#)])
        .await
        .unwrap();
    both_ways(&a, &old).await;
    assert_eq!(document(&a, "k").await, Some(json!({"z":3})));
    assert_eq!(document(&old, "k").await, Some(json!({"z":3})));
}

#[tokio::test]
async fn a_newcomer_by_snapshot_merges_a_concurrent_edit_that_arrives_later() {
    let dir = tempfile::tempdir().unwrap();
    let a = merging(dir.path(), "a").await;
    let b = merging(dir.path(), "b").await;
    let c = merging(dir.path(), "newcomer").await;
    a.write(vec![LocalWrite::put("c", "k", r#"{"x":1,"y":1}"#)])
        .await
        .unwrap();
    sync(&a, &b).await;
    // b's edit is stamped before a's, and reaches the newcomer only after a's snapshot.
    b.write(vec![LocalWrite::patch("c", "k", r#"{"y":2}"#)])
        .await
        .unwrap();
    a.write(vec![LocalWrite::patch("c", "k", r#"{"x":2}"#)])
        .await
        .unwrap();

    let source = NodeId::new("a").unwrap();
    let mut after = None;
    let mut first = true;
    loop {
        let chunk = a
            .snapshot_chunk(
                after.clone(),
                PageLimits::default(),
                cbddc_core::Interest::all(),
            )
            .await
            .unwrap();
        if let Some(last) = chunk.documents.last() {
            after = Some((last.collection.clone(), last.key.clone()));
        }
        assert!(
            chunk.documents.iter().all(|d| d.field_state.is_some()),
            "a merged document travels with its state"
        );
        let more = chunk.more;
        c.apply_snapshot_chunk(
            source.clone(),
            first.then(|| chunk.version_vector.clone().unwrap_or_default()),
            chunk.documents,
        )
        .await
        .unwrap();
        first = false;
        if !more {
            break;
        }
    }
    c.finish_snapshot(source).await.unwrap();
    assert_eq!(document(&c, "k").await, Some(json!({"x":2,"y":1})));
    sync(&b, &c).await;
    both_ways(&a, &b).await;
    let expected = Some(json!({"x":2,"y":2}));
    assert_eq!(document(&a, "k").await, expected);
    assert_eq!(document(&b, "k").await, expected);
    assert_eq!(document(&c, "k").await, expected);
}

#[tokio::test]
async fn a_hostile_field_write_is_refused_whole_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let a = merging(dir.path(), "a").await;
    let b = merging(dir.path(), "b").await;
    let entries = a
        .write(vec![LocalWrite::patch("c", "k", r#"{"x":1}"#)])
        .await
        .unwrap();
    let mut bad = entries[0].clone();
    bad.op = Operation::Merge {
        write: cbddc_core::field_merge::FieldWrite::Patch {
            patch: json!(["not", "an", "object"]),
            observed: Default::default(),
        },
    };
    let refused = b.apply_remote(vec![bad]).await;
    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(b.version_vector().await.unwrap(), VersionVector::default());
    assert_eq!(document(&b, "k").await, None);
}

#[tokio::test]
async fn a_snapshot_state_leaving_out_a_value_its_document_lacks_is_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    let a = merging(dir.path(), "a").await;
    let newcomer = merging(dir.path(), "newcomer").await;
    a.write(vec![
        LocalWrite::put("c", "j", r#"{"x":1}"#),
        LocalWrite::patch("c", "k", r#"{"x":1,"y":"kept beside"}"#),
    ])
    .await
    .unwrap();
    let chunk = a
        .snapshot_chunk(None, PageLimits::default(), cbddc_core::Interest::all())
        .await
        .unwrap();
    let mut documents = chunk.documents;
    let merged = documents.iter_mut().find(|d| d.key == "k").unwrap();
    assert!(
        merged.field_state.as_deref().unwrap().contains(r#""d""#),
        "the state leaves out what its document holds: {:?}",
        merged.field_state
    );
    merged.value = Some(r#"{"x":1}"#.into());
    let refused = newcomer
        .apply_snapshot_chunk(
            NodeId::new("a").unwrap(),
            Some(chunk.version_vector.unwrap_or_default()),
            documents,
        )
        .await;
    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(newcomer.stats().await.unwrap().documents, 0);
    assert_eq!(newcomer.snapshot_progress().await.unwrap(), None);
}

#[tokio::test]
async fn a_collected_tombstone_takes_its_field_state_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let a = merging(dir.path(), "a").await;
    a.write(vec![LocalWrite::patch("c", "k", r#"{"x":1}"#)])
        .await
        .unwrap();
    a.write(vec![LocalWrite::delete("c", "k")]).await.unwrap();
    let vv = a.version_vector().await.unwrap();
    a.compact(CompactionPlan {
        horizon: vv.clone(),
        tombstone_horizon: vv,
        max_entries: 100,
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(a.stats().await.unwrap().oplog_entries, 0);
    // Written again after the delete: only what is written now.
    a.write(vec![LocalWrite::patch("c", "k", r#"{"y":2}"#)])
        .await
        .unwrap();
    assert_eq!(document(&a, "k").await, Some(json!({"y":2})));
}

fn field_states(dir: &std::path::Path, name: &str) -> i64 {
    let path = crate::database_path(&dir.join(name), &NodeId::new(name).unwrap());
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row("SELECT count(*) FROM field_states", [], |r| r.get(0))
        .unwrap()
}

#[tokio::test]
async fn once_every_peer_holds_every_write_a_document_keeps_its_row_alone() {
    let dir = tempfile::tempdir().unwrap();
    let a = merging(dir.path(), "a").await;
    let b = merging(dir.path(), "b").await;
    a.write(vec![LocalWrite::put("c", "k", r#"{"x":1,"y":1,"z":1}"#)])
        .await
        .unwrap();
    a.write(vec![LocalWrite::put("c", "counted", r#"{"n":1}"#)])
        .await
        .unwrap();
    sync(&a, &b).await;
    for i in 0..20 {
        let (store, field) = if i % 2 == 0 { (&a, "x") } else { (&b, "y") };
        store
            .write(vec![LocalWrite::patch(
                "c",
                "k",
                format!(r#"{{"{field}":{i}}}"#),
            )])
            .await
            .unwrap();
    }
    b.write(vec![LocalWrite::patch("c", "k", r#"{"z":null}"#)])
        .await
        .unwrap();
    a.write(vec![LocalWrite::increment("c", "counted", "n", 2)])
        .await
        .unwrap();
    both_ways(&a, &b).await;
    assert_eq!(field_states(dir.path(), "a"), 2);

    for (store, name) in [(&a, "a"), (&b, "b")] {
        let vv = store.version_vector().await.unwrap();
        let outcome = store
            .compact(CompactionPlan {
                horizon: vv.clone(),
                tombstone_horizon: vv,
                max_entries: 1_000,
                ..Default::default()
            })
            .await
            .unwrap();
        // The counted document keeps its state: its tallies decide later increments.
        assert_eq!(outcome.settled, 1, "{outcome:?}");
        // One entry per document is left: the one that wrote it last.
        assert_eq!(store.stats().await.unwrap().oplog_entries, 2);
        assert_eq!(field_states(dir.path(), name), 1);
        assert_eq!(document(store, "k").await, Some(json!({"x":18,"y":19})));
    }
    // Later edits still merge field by field.
    a.write(vec![LocalWrite::patch("c", "k", r#"{"x":"a"}"#)])
        .await
        .unwrap();
    b.write(vec![LocalWrite::patch("c", "k", r#"{"y":"b"}"#)])
        .await
        .unwrap();
    both_ways(&a, &b).await;
    assert_eq!(document(&a, "k").await, Some(json!({"x":"a","y":"b"})));
    assert_eq!(document(&b, "k").await, Some(json!({"x":"a","y":"b"})));
}

#[tokio::test]
async fn a_store_of_some_collections_counts_field_entries_of_others_as_held() {
    let dir = tempfile::tempdir().unwrap();
    let a = merging(dir.path(), "a").await;
    let part = SqliteStore::open(
        &dir.path().join("part"),
        NodeId::new("part").unwrap(),
        StoreOptions {
            interest: cbddc_core::Interest::only(["c"]),
            ..StoreOptions::default()
        },
    )
    .await
    .unwrap();
    part.raise_features(["field-merge".to_string()].into())
        .await
        .unwrap();
    let entries = a
        .write(vec![
            LocalWrite::patch("c", "k", r#"{"x":1}"#),
            LocalWrite::patch("other", "k", r#"{"y":1}"#),
            LocalWrite::increment("c", "k", "n", 2),
        ])
        .await
        .unwrap();
    let outcome = part.apply_remote(entries).await.unwrap();
    assert_eq!((outcome.applied, outcome.filtered), (2, 1));
    assert_eq!(document(&part, "k").await, Some(json!({"x":1,"n":2})));
    assert_eq!(part.get("other", "k").await.unwrap(), None);
}

/// Every row of the tables a merge writes, as text, in key order.
fn merged_rows(dir: &std::path::Path, name: &str) -> Vec<String> {
    let path = crate::database_path(&dir.join(name), &NodeId::new(name).unwrap());
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut rows = Vec::new();
    for query in [
        "SELECT collection, key, value, hlc_wall, hlc_counter, hlc_node, seq, position
         FROM documents ORDER BY collection, key",
        "SELECT collection, key, state FROM field_states ORDER BY collection, key",
        "SELECT position, origin, seq, merged FROM changes ORDER BY position",
        "SELECT origin, seq, position, tombstone FROM collectable ORDER BY origin, seq",
        "SELECT origin, seq, collection, key, value, field FROM oplog ORDER BY origin, seq",
    ] {
        let mut statement = conn.prepare(query).unwrap();
        let columns = statement.column_count();
        let found = statement
            .query_map([], |r| {
                (0..columns)
                    .map(|i| {
                        r.get::<_, rusqlite::types::Value>(i)
                            .map(|v| format!("{v:?}"))
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .unwrap()
            .map(|row| row.unwrap().join(" | "))
            .collect::<Vec<_>>();
        rows.push(format!("-- {query}"));
        rows.extend(found);
    }
    rows
}

#[tokio::test]
async fn a_page_of_field_entries_merged_at_once_leaves_what_one_at_a_time_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let a = merging(dir.path(), "a").await;
    let d = merging(dir.path(), "d").await;
    let at_once = merging(dir.path(), "at-once").await;
    let one_by_one = merging(dir.path(), "one-by-one").await;

    // What both receivers hold before: documents `a` edits concurrently, one with counters.
    for i in 0..40 {
        d.write(vec![LocalWrite::put(
            "c",
            format!("held-{i}"),
            format!(r#"{{"from":"d","i":{i},"keep":true}}"#),
        )])
        .await
        .unwrap();
    }
    d.write(vec![LocalWrite::increment("c", "held-0", "n", 3)])
        .await
        .unwrap();
    sync(&d, &at_once).await;
    sync(&d, &one_by_one).await;

    // `a`'s page mixes documents nobody holds (most of it, as in a catch-up) with
    // documents the receivers hold, documents the page writes twice, counters and a
    // delete.
    for i in 0..150 {
        let created = format!(r#"{{"i":{i},"addr":{{"zip":"{i}"}}}}"#);
        a.write(vec![LocalWrite::patch("c", format!("new-{i}"), created)])
            .await
            .unwrap();
        if i % 4 == 0 {
            let held = format!("held-{}", i / 4);
            a.write(vec![LocalWrite::patch(
                "c",
                held,
                r#"{"from":"a","keep":null}"#,
            )])
            .await
            .unwrap();
        }
        if i % 10 == 0 {
            let twice = format!("twice-{}", i / 10);
            a.write(vec![LocalWrite::patch("c", twice.clone(), r#"{"x":1}"#)])
                .await
                .unwrap();
            a.write(vec![LocalWrite::increment("c", twice, "n", 2)])
                .await
                .unwrap();
            a.write(vec![LocalWrite::increment(
                "c",
                format!("count-{i}"),
                "n",
                -1,
            )])
            .await
            .unwrap();
        }
    }
    a.write(vec![LocalWrite::increment("c", "held-0", "n", 4)])
        .await
        .unwrap();
    a.write(vec![LocalWrite::delete("c", "new-7")])
        .await
        .unwrap();

    let theirs = at_once.version_vector().await.unwrap();
    let page = a
        .entries_missing_from(
            theirs,
            PageLimits {
                max_entries: 10_000,
                max_bytes: 64 * 1024 * 1024,
            },
        )
        .await
        .unwrap();
    assert!(page.entries.len() > 200, "{} entries", page.entries.len());
    at_once.apply_remote(page.entries.clone()).await.unwrap();
    for entry in page.entries {
        one_by_one.apply_remote(vec![entry]).await.unwrap();
    }

    assert_eq!(document(&at_once, "held-0").await.unwrap()["n"], json!(7));
    assert_eq!(
        document(&at_once, "held-5").await,
        Some(json!({"from":"a","i":5}))
    );
    assert_eq!(
        document(&at_once, "twice-3").await,
        Some(json!({"x":1,"n":2}))
    );
    assert_eq!(document(&at_once, "new-7").await, None);
    let (at_once, one_by_one) = (
        merged_rows(dir.path(), "at-once"),
        merged_rows(dir.path(), "one-by-one"),
    );
    let differing: Vec<_> = at_once
        .iter()
        .zip(&one_by_one)
        .filter(|(a, b)| a != b)
        .take(5)
        .collect();
    assert!(
        differing.is_empty(),
        "first rows that differ: {differing:#?}"
    );
    assert_eq!(at_once.len(), one_by_one.len());
}
