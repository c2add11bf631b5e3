//! Patches and increments taken locally: resolved in the write's transaction into the
//! whole document they make, and refused whole when one of a batch is bad.

use crate::{SqliteStore, StoreOptions};
use cbddc_core::{DocumentStore, LocalWrite, NodeId, Operation, StorageError};
use serde_json::{Value, json};

async fn open(dir: &std::path::Path) -> SqliteStore {
    SqliteStore::open(dir, NodeId::new("edit").unwrap(), StoreOptions::default())
        .await
        .unwrap()
}

async fn document(store: &SqliteStore, key: &str) -> Option<Value> {
    let doc = store.get("c", key).await.unwrap()?;
    Some(serde_json::from_str(&doc.value).unwrap())
}

#[tokio::test]
async fn a_patch_and_an_increment_become_puts_of_the_documents_they_make() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    store
        .write(vec![LocalWrite::put(
            "c",
            "o1",
            r#"{"status":"new","addr":{"city":"P","zip":"1"}}"#,
        )])
        .await
        .unwrap();
    let entries = store
        .write(vec![
            LocalWrite::patch("c", "o1", r#"{"addr":{"zip":"2"},"assignee":"bob"}"#),
            // The batch's own earlier write is what the next one edits.
            LocalWrite::increment("c", "o1", "stock.count", 5),
            LocalWrite::increment("c", "o1", "stock.count", -2),
            LocalWrite::patch("c", "fresh", r#"{"a":{"b":1},"gone":null}"#),
        ])
        .await
        .unwrap();
    assert!(
        entries
            .iter()
            .all(|e| matches!(e.op, Operation::Put { .. })),
        "edits travel as puts: {entries:?}"
    );
    assert_eq!(
        document(&store, "o1").await,
        Some(
            json!({"status":"new","addr":{"city":"P","zip":"2"},"assignee":"bob","stock":{"count":3}})
        )
    );
    assert_eq!(document(&store, "fresh").await, Some(json!({"a":{"b":1}})));
    store.close().await;
}

#[tokio::test]
async fn a_bad_edit_refuses_its_whole_batch_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    store
        .write(vec![LocalWrite::put("c", "d", r#"{"addr":"x","n":1}"#)])
        .await
        .unwrap();
    let before = store.version_vector().await.unwrap();
    for (bad, words) in [
        (
            LocalWrite::increment("c", "d", "addr.city", 1),
            "addr holds a string",
        ),
        (
            LocalWrite::increment("c", "d", "addr", 1),
            "addr: it holds a string",
        ),
        (LocalWrite::increment("c", "d", "n", i64::MAX), "overflows"),
        (LocalWrite::patch("c", "d", "[1,2]"), "JSON object"),
        (LocalWrite::patch("c", "d", "{"), "not valid JSON"),
        (LocalWrite::increment("c", "d", "a..b", 1), "names no field"),
    ] {
        let refused = store
            .write(vec![LocalWrite::put("c", "other", "1"), bad])
            .await
            .unwrap_err();
        assert!(matches!(refused, StorageError::Invalid(_)), "{refused}");
        assert!(refused.to_string().contains(words), "{refused}");
    }
    assert_eq!(
        store.version_vector().await.unwrap(),
        before,
        "nothing stored"
    );
    assert!(store.get("c", "other").await.unwrap().is_none());
    assert_eq!(document(&store, "d").await, Some(json!({"addr":"x","n":1})));
    store.close().await;
}
