//! The change feed across compaction, restarts and snapshots.

use crate::{SqliteStore, StoreOptions};
use cbddc_core::{
    CompactionPlan, DocumentStore, FeedRetention, Hlc, LocalWrite, NodeId, ReplicaId,
    SnapshotDocument, StorageError, VersionVector, horizons,
};
use std::collections::BTreeMap;
use std::path::Path;

async fn open(dir: &Path) -> SqliteStore {
    SqliteStore::open(dir, NodeId::new("a").unwrap(), StoreOptions::default())
        .await
        .unwrap()
}

/// One compaction round of a node without peers: everything superseded and every
/// tombstone may go; the feed drops kept deletes per `feed`.
pub(crate) async fn compact_alone(store: &SqliteStore, feed: FeedRetention) {
    let ours = store.version_vector().await.unwrap();
    let (horizon, tombstone_horizon) = horizons(&ours, &BTreeMap::new(), &BTreeMap::new());
    for _ in 0..100 {
        let outcome = store
            .compact(CompactionPlan {
                horizon: horizon.clone(),
                tombstone_horizon: tombstone_horizon.clone(),
                max_entries: 1_000,
                feed: feed.clone(),
                ..CompactionPlan::default()
            })
            .await
            .unwrap();
        if !outcome.more {
            return;
        }
    }
    panic!("compaction never finished");
}

/// One local write in a commit of its own (so it takes its own change position).
async fn commit(store: &SqliteStore, write: LocalWrite) {
    store.write(vec![write]).await.unwrap();
}

/// Every change after `after`, as "position key=value" ("key deleted").
async fn feed_after(store: &SqliteStore, after: u64) -> Result<Vec<String>, StorageError> {
    let mut out = Vec::new();
    let mut cursor = after;
    for _ in 0..1_000 {
        let page = store.changes_after(cursor, None, 100).await?;
        out.extend(page.changes.into_iter().map(|c| match c.document_text() {
            Some(value) => format!("{} {}={value}", c.position, c.entry.key),
            None => format!("{} {} deleted", c.position, c.entry.key),
        }));
        if page.scanned_to >= page.last_position {
            return Ok(out);
        }
        cursor = page.scanned_to;
    }
    panic!("the feed never reached its end");
}

const KEEP_ALL: FeedRetention = FeedRetention {
    cutoff_ms: 0,
    hold_after: None,
};
const DROP_ALL: FeedRetention = FeedRetention {
    cutoff_ms: u64::MAX,
    hold_after: None,
};

/// The reproduction of the issue: a consumer read up to position 2 (two puts); then k1
/// is written again and k2 deleted, and compaction collects the tombstone. Resuming
/// after 2 still yields k2's delete.
#[tokio::test]
async fn a_collected_tombstone_stays_in_the_feed_and_positions_are_never_reused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    for (key, value) in [("k1", "1"), ("k2", "2")] {
        commit(&store, LocalWrite::put("c", key, value)).await;
    }
    commit(&store, LocalWrite::put("c", "k1", "3")).await;
    commit(&store, LocalWrite::delete("c", "k2")).await;
    compact_alone(&store, KEEP_ALL).await;

    let stats = store.stats().await.unwrap();
    assert_eq!(
        (stats.oplog_entries, stats.feed_entries, stats.feed_oldest),
        (1, 1, 0),
        "sync keeps only k1's winner; the feed keeps k2's delete apart"
    );
    assert_eq!(
        feed_after(&store, 2).await.unwrap(),
        ["3 k1=3", "4 k2 deleted"]
    );

    // A delete that was the feed's last change is gone from `changes`: a reopened
    // store still hands out the next position, not one a consumer has seen.
    commit(&store, LocalWrite::put("c", "k3", "5")).await;
    commit(&store, LocalWrite::delete("c", "k3")).await;
    compact_alone(&store, DROP_ALL).await;
    assert_eq!(store.stats().await.unwrap().feed_oldest, 6);
    store.close().await;
    let store = open(dir.path()).await;
    assert_eq!(*store.watch_changes().borrow(), 6);
    let written = store
        .write(vec![LocalWrite::put("c", "k4", "7")])
        .await
        .unwrap();
    assert_eq!(written.len(), 1);
    assert_eq!(feed_after(&store, 6).await.unwrap(), ["7 k4=7"]);
    store.close().await;
}

#[tokio::test]
async fn a_delete_dropped_past_the_retention_gives_a_typed_error_naming_where_to_resume() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    store
        .write(vec![
            LocalWrite::put("c", "k1", "1"),
            LocalWrite::put("c", "k2", "2"),
        ])
        .await
        .unwrap();
    commit(&store, LocalWrite::delete("c", "k2")).await;
    commit(&store, LocalWrite::put("c", "k1", "4")).await;
    // Retention not reached: the delete stays.
    compact_alone(&store, KEEP_ALL).await;
    assert_eq!(
        feed_after(&store, 1).await.unwrap(),
        ["3 k2 deleted", "4 k1=4"]
    );

    compact_alone(&store, DROP_ALL).await;
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.feed_entries, stats.feed_oldest), (0, 3));
    for after in [0, 1, 2] {
        match feed_after(&store, after).await {
            Err(StorageError::FeedCompacted {
                after: asked,
                oldest,
            }) => assert_eq!((asked, oldest), (after, 3)),
            other => panic!("after {after}: expected FeedCompacted, got {other:?}"),
        }
    }
    assert_eq!(feed_after(&store, 3).await.unwrap(), ["4 k1=4"]);
    let message = StorageError::FeedCompacted {
        after: 1,
        oldest: 3,
    }
    .to_string();
    assert!(
        message.contains("after position 3") && message.contains("--from start"),
        "{message}"
    );
    store.close().await;
}

#[tokio::test]
async fn a_named_consumer_holds_deletes_it_has_not_read_past_the_retention() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    commit(&store, LocalWrite::put("c", "k1", "1")).await;
    commit(&store, LocalWrite::delete("c", "k1")).await;
    store.acknowledge_feed("indexer".into(), 1).await.unwrap();
    let consumers = store.feed_consumers().await.unwrap();
    assert_eq!(consumers.len(), 1);
    assert_eq!(
        (consumers[0].name.as_str(), consumers[0].position),
        ("indexer", 1)
    );

    let held = FeedRetention {
        cutoff_ms: u64::MAX,
        hold_after: Some(1),
    };
    compact_alone(&store, held).await;
    assert_eq!(feed_after(&store, 1).await.unwrap(), ["2 k1 deleted"]);

    store.acknowledge_feed("indexer".into(), 2).await.unwrap();
    compact_alone(
        &store,
        FeedRetention {
            cutoff_ms: u64::MAX,
            hold_after: Some(2),
        },
    )
    .await;
    assert_eq!(store.stats().await.unwrap().feed_entries, 0);
    assert!(store.forget_feed_consumer("indexer".into()).await.unwrap());
    assert!(!store.forget_feed_consumer("indexer".into()).await.unwrap());
    assert!(matches!(
        store.acknowledge_feed("no spaces".into(), 1).await,
        Err(StorageError::Invalid(_))
    ));
    store.close().await;
}

#[tokio::test]
async fn a_snapshot_that_changes_documents_makes_earlier_consumers_resync() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    commit(&store, LocalWrite::put("c", "mine", "1")).await;
    let origin = ReplicaId::new("b").unwrap();
    let mut vv = VersionVector::default();
    vv.advance(&origin, 1);
    let doc = SnapshotDocument {
        collection: "c".into(),
        key: "theirs".into(),
        value: Some("2".into()),
        hlc: Hlc {
            wall_ms: cbddc_core::unix_millis(),
            counter: 0,
            replica: origin,
        },
        seq: 1,
        field_state: None,
    };
    let source = NodeId::new("b").unwrap();
    store
        .apply_snapshot_chunk(source.clone(), Some(vv), vec![doc])
        .await
        .unwrap();
    assert_eq!(store.finish_snapshot(source).await.unwrap(), 1);
    assert_eq!(*store.watch_changes().borrow(), 2);
    assert!(matches!(
        feed_after(&store, 0).await,
        Err(StorageError::FeedCompacted { oldest: 2, .. })
    ));

    // The resync: the current state, then the feed after the position read before it.
    let state = store.current_state(None, None, 100).await.unwrap();
    let keys: Vec<&str> = state.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["mine", "theirs"]);
    assert_eq!(state[0].node.as_str(), "a", "a held entry names its writer");
    let after_mine = store
        .current_state(Some("c".into()), Some(("c".into(), "mine".into())), 100)
        .await
        .unwrap();
    assert_eq!(after_mine.len(), 1);
    assert_eq!(feed_after(&store, 2).await.unwrap(), Vec::<String>::new());
    store.close().await;
}
