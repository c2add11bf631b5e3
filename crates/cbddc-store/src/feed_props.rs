//! Property: a feed consumer misses nothing. Under any interleaving of local writes and
//! deletes, a peer's entries, compaction rounds (with and without the feed retention
//! passing), restarts, and consumers reading a few changes at a time from wherever they
//! stand, every consumer ends with exactly the node's documents: it either read every
//! document's latest state (deletes included) or was told `FeedCompacted` and resynced
//! from the current state. A named consumer that acknowledges what it read is never told.
//!
//! `a_feed_without_kept_deletes_loses_them` runs the same property with the feed's kept
//! deletes removed behind the store's back, and shows it fails.

use crate::feed_tests::compact_alone;
use crate::{Durability, SqliteStore, StoreOptions};
use cbddc_core::{
    DocumentStore, FeedRetention, Hlc, LocalWrite, NodeId, Operation, OplogEntry, ReplicaId,
    StorageError,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::collections::BTreeMap;
use std::path::Path;

const KEYS: usize = 4;
const CONSUMERS: usize = 3;
/// Consumer 0 is named and acknowledges what it reads; the others are anonymous.
const NAMED: usize = 0;

#[derive(Debug, Clone)]
enum Op {
    Put(usize),
    Delete(usize),
    /// A peer's entry: a put or a delete of a key, stamped a little before or after now.
    Remote(usize, bool, bool),
    /// A compaction round; with `true`, every kept delete no named consumer needs is past
    /// the feed retention.
    Compact(bool),
    Restart,
    /// Consumer reads at most this many changes.
    Read(usize, usize),
}

fn op() -> impl Strategy<Value = Op> {
    let k = 0..KEYS;
    prop_oneof![
        4 => k.clone().prop_map(Op::Put),
        3 => k.clone().prop_map(Op::Delete),
        2 => (k, any::<bool>(), any::<bool>()).prop_map(|(k, d, late)| Op::Remote(k, d, late)),
        3 => any::<bool>().prop_map(Op::Compact),
        1 => Just(Op::Restart),
        5 => (0..CONSUMERS, 1..4usize).prop_map(|(c, n)| Op::Read(c, n)),
    ]
}

type Documents = BTreeMap<String, String>;

#[derive(Debug, Default)]
struct Consumer {
    position: u64,
    documents: Documents,
    resyncs: usize,
}

async fn open(dir: &Path) -> SqliteStore {
    let options = StoreOptions {
        durability: Durability::Normal,
        ..StoreOptions::default()
    };
    SqliteStore::open(dir, NodeId::new("a").unwrap(), options)
        .await
        .unwrap()
}

async fn current(store: &SqliteStore) -> Documents {
    let mut out = Documents::new();
    let mut after = None;
    loop {
        let page = store.current_state(None, after, 3).await.unwrap();
        let Some(last) = page.last() else {
            return out;
        };
        after = Some((last.collection.clone(), last.key.clone()));
        for entry in page {
            if let Operation::Put { value } = entry.op {
                out.insert(entry.key, value);
            }
        }
    }
}

impl Consumer {
    /// Reads at most `max` changes; `Err` if a named consumer was told to resync.
    async fn read(&mut self, store: &SqliteStore, max: usize, named: bool) -> Result<(), String> {
        let mut read = 0;
        while read < max {
            match store.changes_after(self.position, None, max - read).await {
                Ok(page) => {
                    for change in &page.changes {
                        match change.document_text() {
                            Some(value) => self
                                .documents
                                .insert(change.entry.key.clone(), value.to_string()),
                            None => self.documents.remove(&change.entry.key),
                        };
                    }
                    read += page.changes.len();
                    self.position = page.scanned_to;
                    if page.scanned_to >= page.last_position {
                        break;
                    }
                }
                Err(StorageError::FeedCompacted { oldest, after }) => {
                    if named {
                        return Err(format!(
                            "the named consumer at {after} was told to resync (oldest {oldest})"
                        ));
                    }
                    // Resync: the position first, then the state, then follow from there.
                    let position = *store.watch_changes().borrow();
                    self.documents = current(store).await;
                    self.position = position;
                    self.resyncs += 1;
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        if named {
            store
                .acknowledge_feed("named".into(), self.position)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

fn remote_entry(seq: u64, key: usize, delete: bool, late: bool) -> OplogEntry {
    let origin = ReplicaId::new("peer").unwrap();
    let now = cbddc_core::unix_millis();
    OplogEntry {
        origin: origin.clone(),
        node: NodeId::new("peer").unwrap(),
        seq,
        collection: "c".into(),
        key: format!("k{key}"),
        op: if delete {
            Operation::Delete
        } else {
            Operation::Put {
                value: format!("\"peer{seq}\""),
            }
        },
        hlc: Hlc {
            wall_ms: if late {
                now + 5
            } else {
                now.saturating_sub(50)
            },
            counter: 0,
            replica: origin,
        },
    }
}

/// Runs `ops`; with `break_retention`, the feed's kept deletes are removed behind the
/// store's back after every compaction round (what a feed without them would do).
async fn run(ops: Vec<Op>, break_retention: bool) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path()).await;
    let mut consumers: Vec<Consumer> = (0..CONSUMERS).map(|_| Consumer::default()).collect();
    // The named consumer is known from the start, like one that registered before the
    // first write.
    store.acknowledge_feed("named".into(), 0).await.unwrap();
    let mut peer_seq = 0;
    for (n, op) in ops.into_iter().enumerate() {
        match op {
            Op::Put(k) => {
                store
                    .write(vec![LocalWrite::put("c", format!("k{k}"), n.to_string())])
                    .await
                    .unwrap();
            }
            Op::Delete(k) => {
                store
                    .write(vec![LocalWrite::delete("c", format!("k{k}"))])
                    .await
                    .unwrap();
            }
            Op::Remote(k, delete, late) => {
                peer_seq += 1;
                store
                    .apply_remote(vec![remote_entry(peer_seq, k, delete, late)])
                    .await
                    .unwrap();
            }
            Op::Compact(expire) => {
                let named = store.feed_consumers().await.unwrap();
                let feed = FeedRetention {
                    cutoff_ms: if expire { u64::MAX } else { 0 },
                    hold_after: named.iter().map(|c| c.position).min(),
                };
                compact_alone(&store, feed).await;
                if break_retention {
                    let conn = rusqlite::Connection::open(store.path()).unwrap();
                    conn.execute("DELETE FROM feed_deletes", []).unwrap();
                }
            }
            Op::Restart => {
                store.close().await;
                store = open(dir.path()).await;
            }
            Op::Read(c, max) => {
                if let Err(e) = consumers[c].read(&store, max, c == NAMED).await {
                    return Err(TestCaseError::fail(e));
                }
            }
        }
    }
    let expected = current(&store).await;
    for (i, consumer) in consumers.iter_mut().enumerate() {
        consumer
            .read(&store, usize::MAX, i == NAMED)
            .await
            .map_err(TestCaseError::fail)?;
        prop_assert_eq!(
            &consumer.documents,
            &expected,
            "consumer {} (resynced {} times) differs from the node",
            i,
            consumer.resyncs
        );
    }
    store.close().await;
    Ok(())
}

fn check(ops: Vec<Op>, break_retention: bool) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(ops, break_retention))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn every_consumer_ends_with_the_nodes_documents(ops in prop::collection::vec(op(), 1..60)) {
        check(ops, false)?;
    }
}

#[test]
fn a_feed_without_kept_deletes_loses_them() {
    let mut runner = TestRunner::new(Config {
        cases: 256,
        failure_persistence: None,
        ..Config::default()
    });
    let outcome = runner.run(&prop::collection::vec(op(), 1..60), |ops| check(ops, true));
    match outcome {
        Err(proptest::test_runner::TestError::Fail(reason, _)) => assert!(
            reason.message().contains("differs from the node"),
            "{reason}"
        ),
        other => panic!(
            "the property must catch a feed that drops deletes with their tombstones: {other:?}"
        ),
    }
}
