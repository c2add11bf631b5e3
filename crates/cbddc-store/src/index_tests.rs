//! Indexes: one entry per live document whatever path changed it (local writes, sync,
//! snapshots, a reopen), built beside writes, read in pages, dropped on request.

use crate::{SqliteStore, StoreOptions};
use cbddc_core::{
    Document, DocumentStore, Hlc, IndexDefinition, IndexRead, LocalWrite, NodeId, Operation,
    OplogEntry, ReplicaId, SnapshotDocument, StorageError, VersionVector,
};
use cbddc_query::Path;
use std::collections::BTreeSet;

async fn open(dir: &std::path::Path) -> SqliteStore {
    SqliteStore::open(dir, NodeId::new("idx").unwrap(), StoreOptions::default())
        .await
        .unwrap()
}

fn index() -> IndexDefinition {
    IndexDefinition::new("c", &["n", "addr.city"])
}

fn remote(seq: u64, key: &str, value: Option<&str>, wall_ms: u64) -> OplogEntry {
    let origin = ReplicaId::new("far").unwrap();
    OplogEntry {
        origin: origin.clone(),
        node: NodeId::new("far").unwrap(),
        seq,
        collection: "c".into(),
        key: key.into(),
        op: match value {
            Some(v) => Operation::Put { value: v.into() },
            None => Operation::Delete,
        },
        hlc: Hlc {
            wall_ms,
            counter: 0,
            replica: origin,
        },
    }
}

fn doc(i: u64) -> String {
    format!(
        r#"{{"n":{},"addr":{{"city":"c{}"}},"pad":"{}"}}"#,
        i % 7,
        i % 3,
        "x".repeat(20)
    )
}

/// Every document under the index, read 7 at a time, upwards or from the top down.
async fn read_whole(store: &SqliteStore, reverse: bool) -> Vec<Document> {
    let mut documents = Vec::new();
    let mut after = None;
    for _ in 0..10_000 {
        let page = store
            .read_index(IndexRead {
                index: index(),
                low: Vec::new(),
                high: None,
                after: after.clone(),
                limit: 7,
                reverse,
            })
            .await
            .unwrap();
        let Some(last) = page.last.clone() else {
            break;
        };
        assert_eq!(page.documents.last().map(|d| &d.key), Some(&last.1));
        after = Some(last);
        documents.extend(page.documents);
    }
    documents
}

/// Every entry of the index, read a few at a time.
async fn entries(store: &SqliteStore) -> BTreeSet<(Vec<u8>, String)> {
    let fields: Vec<Path> = index()
        .fields
        .iter()
        .map(|f| Path::parse(f).unwrap())
        .collect();
    let mut out = BTreeSet::new();
    for document in read_whole(store, false).await {
        let value = serde_json::from_str(&document.value).unwrap();
        assert!(
            out.insert((cbddc_query::index::entry(&fields, &value), document.key)),
            "a page repeats an entry"
        );
    }
    // Read from the top down: the same entries, highest first.
    let down: Vec<String> = read_whole(store, true)
        .await
        .into_iter()
        .map(|d| d.key)
        .collect();
    let mut keys_up: Vec<&String> = out.iter().map(|(_, key)| key).collect();
    keys_up.reverse();
    assert_eq!(down.iter().collect::<Vec<_>>(), keys_up, "read down");
    // Each document sits under its own entry, not under a stale one.
    for (entry, key) in &out {
        let mut high = entry.clone();
        high.push(0);
        let under = store
            .read_index(IndexRead {
                index: index(),
                low: entry.clone(),
                high: Some(high),
                after: None,
                limit: 1_000,
                reverse: false,
            })
            .await
            .unwrap();
        assert!(
            under.documents.iter().any(|d| &d.key == key),
            "{key} is not under its entry"
        );
    }
    out
}

/// Whether reading the index is refused as not built.
async fn unavailable(store: &SqliteStore) -> bool {
    let read = IndexRead {
        index: index(),
        low: vec![],
        high: None,
        after: None,
        limit: 1,
        reverse: false,
    };
    matches!(
        store.read_index(read).await,
        Err(StorageError::IndexUnavailable { .. })
    )
}

/// What the index should hold: one entry per live document of `c`.
async fn expected(store: &SqliteStore) -> BTreeSet<(Vec<u8>, String)> {
    let fields: Vec<Path> = index()
        .fields
        .iter()
        .map(|f| Path::parse(f).unwrap())
        .collect();
    store
        .list("c", None, 100_000)
        .await
        .unwrap()
        .into_iter()
        .map(|d| {
            let value = serde_json::from_str(&d.value).unwrap();
            (cbddc_query::index::entry(&fields, &value), d.key)
        })
        .collect()
}

/// The index holds each live document as the store does (a covering index's copies are
/// current: same value, same stamp).
async fn documents_match(store: &SqliteStore) {
    let mut through_index: Vec<(String, String, Hlc)> = read_whole(store, false)
        .await
        .into_iter()
        .map(|d| (d.key, d.value, d.hlc))
        .collect();
    through_index.sort();
    let stored: Vec<(String, String, Hlc)> = store
        .list("c", None, 100_000)
        .await
        .unwrap()
        .into_iter()
        .map(|d| (d.key, d.value, d.hlc))
        .collect();
    assert_eq!(through_index, stored);
}

#[tokio::test]
async fn an_index_holds_one_entry_per_live_document_whatever_changed_it() {
    whatever_changed_it(index()).await;
}

#[tokio::test]
async fn a_covering_index_holds_each_live_document_as_written_whatever_changed_it() {
    whatever_changed_it(index().covering_documents()).await;
}

async fn whatever_changed_it(index: IndexDefinition) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let now = cbddc_core::unix_millis();
    let puts = |range: std::ops::Range<u64>| {
        range
            .map(|i| LocalWrite::put("c", format!("k{i:03}"), doc(i)))
            .collect::<Vec<_>>()
    };
    store.write(puts(0..60)).await.unwrap();
    store
        .write(vec![LocalWrite::put("other", "o", doc(1))])
        .await
        .unwrap();

    store.declare_indexes(vec![index.clone()]).await.unwrap();
    assert!(
        unavailable(&store).await,
        "an index being built is not read"
    );
    let status = store.indexes().await.unwrap();
    assert_eq!(status[0].building.map(|b| (b.done, b.total)), Some((0, 60)));

    // Built a few documents at a time while writes go on beside it.
    for i in 100..200u64 {
        if store.build_indexes(7).await.unwrap().is_empty() {
            break;
        }
        store
            .write(vec![
                LocalWrite::put("c", format!("k{:03}", i % 90), doc(i)),
                LocalWrite::delete("c", format!("k{:03}", (i * 7) % 90)),
            ])
            .await
            .unwrap();
    }
    assert!(
        store.build_indexes(7).await.unwrap().is_empty(),
        "the build ends"
    );
    assert_eq!(store.indexes().await.unwrap()[0].building, None);
    assert_eq!(entries(&store).await, expected(&store).await);
    documents_match(&store).await;

    // Sync: new documents, updates, and a delete; then a snapshot that removes what it
    // covers but lacks.
    store
        .apply_remote(vec![
            remote(1, "k001", Some(r#"{"n":"now a string"}"#), now + 1_000),
            remote(2, "r1", Some(&doc(5)), now),
            remote(3, "k002", None, now + 1_000),
            remote(4, "r2", Some(&doc(6)), now),
        ])
        .await
        .unwrap();
    assert_eq!(entries(&store).await, expected(&store).await);
    documents_match(&store).await;
    // A page of new keys is written many rows to a statement.
    let page: Vec<OplogEntry> = (5..105)
        .map(|seq| remote(seq, &format!("p{seq:03}"), Some(&doc(seq)), now))
        .collect();
    store.apply_remote(page).await.unwrap();
    assert_eq!(entries(&store).await, expected(&store).await);
    documents_match(&store).await;
    let mut vv = VersionVector::default();
    vv.advance(&ReplicaId::new("far").unwrap(), 104);
    let snap = |key: &str, seq: u64, value: &str| SnapshotDocument {
        collection: "c".into(),
        key: key.into(),
        value: Some(value.into()),
        hlc: Hlc {
            wall_ms: now + 2_000,
            counter: 0,
            replica: ReplicaId::new("far").unwrap(),
        },
        seq,
        field_state: None,
    };
    store
        .apply_snapshot_chunk(
            NodeId::new("far").unwrap(),
            Some(vv),
            vec![snap("k001", 1, r#"{"n":1}"#), snap("r1", 2, &doc(9))],
        )
        .await
        .unwrap();
    // A chunk of keys this store lacks, many rows to a statement (and, past its last
    // document, the pages above the snapshot lacks: removed at the end).
    let fresh: Vec<SnapshotDocument> = (0..100u64)
        .map(|i| snap(&format!("s{i:03}"), 200 + i, &doc(i)))
        .collect();
    store
        .apply_snapshot_chunk(NodeId::new("far").unwrap(), None, fresh)
        .await
        .unwrap();
    store
        .finish_snapshot(NodeId::new("far").unwrap())
        .await
        .unwrap();
    assert_eq!(entries(&store).await, expected(&store).await);
    documents_match(&store).await;

    // Reopened, writes keep it current.
    store.close().await;
    let store = open(dir.path()).await;
    store.write(puts(200..230)).await.unwrap();
    store
        .write(vec![LocalWrite::delete("c", "k201")])
        .await
        .unwrap();
    documents_match(&store).await;
    // A field no index holds changes: the entry stays, a covering copy follows.
    store
        .write(vec![LocalWrite::put(
            "c",
            "k202",
            doc(202).replace("xxxx", "yyyy"),
        )])
        .await
        .unwrap();
    documents_match(&store).await;
    let held = entries(&store).await;
    assert_eq!(held, expected(&store).await);
    assert_eq!(store.indexes().await.unwrap()[0].entries, held.len() as u64);

    // A range: the documents whose n is 3.
    let fields = vec![Path::parse("n").unwrap()];
    let low = cbddc_query::index::entry(&fields, &serde_json::json!({"n": 3}));
    let mut high = low.clone();
    *high.last_mut().unwrap() += 1;
    let threes = store
        .read_index(IndexRead {
            index: index.clone(),
            low,
            high: Some(high),
            after: None,
            limit: 1_000,
            reverse: false,
        })
        .await
        .unwrap();
    let want = store
        .list("c", None, 1_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|d| serde_json::from_str::<serde_json::Value>(&d.value).unwrap()["n"] == 3)
        .count();
    assert_eq!(threes.documents.len(), want);
    assert!(want > 0);

    // Dropped: gone from the list, no longer read, and writes no longer touch it.
    store.declare_indexes(vec![]).await.unwrap();
    assert!(store.indexes().await.unwrap().is_empty());
    assert!(unavailable(&store).await, "a dropped index is not read");
    store.write(puts(300..310)).await.unwrap();
    store.close().await;
}

/// Rows of `index_pending`: writes not yet folded into the indexes.
fn pending_rows(dir: &std::path::Path) -> i64 {
    let conn = rusqlite::Connection::open(dir.join("node-idx.db")).unwrap();
    conn.query_row("SELECT count(*) FROM index_pending", [], |r| r.get(0))
        .unwrap()
}

#[tokio::test]
async fn writes_not_yet_folded_into_an_index_survive_a_reopen_and_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    store.declare_indexes(vec![index()]).await.unwrap();
    while !store.build_indexes(100).await.unwrap().is_empty() {}
    // Fewer writes than a fold waits for: they stay pending.
    let writes: Vec<LocalWrite> = (0..20u64)
        .map(|i| LocalWrite::put("c", format!("k{i:03}"), doc(i)))
        .collect();
    store.write(writes).await.unwrap();
    // Moved again: k000 leaves the entry it had, k001 has none any more.
    store
        .write(vec![
            LocalWrite::put("c", "k000", doc(5)),
            LocalWrite::delete("c", "k001"),
        ])
        .await
        .unwrap();
    assert_eq!(pending_rows(dir.path()), 22, "every write is pending");
    assert_eq!(store.indexes().await.unwrap()[0].pending, 22, "and says so");
    store.close().await;

    let store = open(dir.path()).await;
    assert_eq!(pending_rows(dir.path()), 22, "pending writes are kept");
    // The read finds them pending, has the writer fold them, and reads.
    assert_eq!(entries(&store).await, expected(&store).await);
    documents_match(&store).await;
    assert_eq!(pending_rows(dir.path()), 0, "folded by the read");
    assert_eq!(store.indexes().await.unwrap()[0].pending, 0);
    assert_eq!(store.indexes().await.unwrap()[0].entries, 19);

    // Past the fold's threshold, the writer folds at the end of the transaction.
    let many: Vec<LocalWrite> = (0..crate::indexes::FOLD_AT + 10)
        .map(|i| LocalWrite::put("c", format!("m{i:03}"), doc(i)))
        .collect();
    store.write(many).await.unwrap();
    assert_eq!(pending_rows(dir.path()), 0, "folded at the threshold");
    assert_eq!(entries(&store).await, expected(&store).await);
    documents_match(&store).await;

    // Folded once writes stop for as long as asked, not before.
    store.write(puts_from(500, 5)).await.unwrap();
    let hour = std::time::Duration::from_secs(3_600);
    assert!(!store.fold_indexes(hour).await.unwrap(), "writes just came");
    assert_eq!(pending_rows(dir.path()), 5);
    assert!(store.fold_indexes(std::time::Duration::ZERO).await.unwrap());
    assert_eq!(pending_rows(dir.path()), 0);
    assert!(
        !store.fold_indexes(std::time::Duration::ZERO).await.unwrap(),
        "nothing pending"
    );
    assert_eq!(entries(&store).await, expected(&store).await);
    documents_match(&store).await;
    store.close().await;
}

fn puts_from(first: u64, count: u64) -> Vec<LocalWrite> {
    (first..first + count)
        .map(|i| LocalWrite::put("c", format!("q{i:03}"), doc(i)))
        .collect()
}

#[tokio::test]
async fn a_read_waits_only_for_the_writes_pending_in_its_own_collection() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let other = IndexDefinition::new("other", &["n"]);
    store
        .declare_indexes(vec![index(), other.clone()])
        .await
        .unwrap();
    while !store.build_indexes(100).await.unwrap().is_empty() {}
    store.write(puts_from(0, 3)).await.unwrap();
    let others: Vec<LocalWrite> = (0..5u64)
        .map(|i| LocalWrite::put("other", format!("o{i}"), doc(i)))
        .collect();
    store.write(others).await.unwrap();
    assert_eq!(pending_rows(dir.path()), 8);
    // Reading `c` folds what is pending (all of it, on the writer), so `c`'s writes are
    // read; with nothing of `c` pending, a read of `c` leaves `other`'s writes alone.
    assert_eq!(entries(&store).await, expected(&store).await);
    assert_eq!(pending_rows(dir.path()), 0);
    store
        .write(vec![LocalWrite::put("other", "o9", doc(9))])
        .await
        .unwrap();
    assert_eq!(entries(&store).await, expected(&store).await);
    assert_eq!(
        pending_rows(dir.path()),
        1,
        "a read of c left other's write pending"
    );
    let page = store
        .read_index(IndexRead {
            index: other,
            low: Vec::new(),
            high: None,
            after: None,
            limit: 100,
            reverse: false,
        })
        .await
        .unwrap();
    assert_eq!(page.documents.len(), 6, "other's read folds its own writes");
    assert_eq!(pending_rows(dir.path()), 0);
    store.close().await;
}
