use crate::{SqliteStore, StoreError, StoreOptions};
use cbddc_core::{
    DocumentStore, Hlc, KnownPeer, LocalWrite, NodeId, Operation, OplogEntry, PageLimits,
    PeerStore, PeerType, ReplicaId, SnapshotDocument, StorageError, VersionVector,
};
use std::path::Path;
use std::sync::Arc;

fn id(name: &str) -> NodeId {
    NodeId::new(name).unwrap()
}

fn r(name: &str) -> ReplicaId {
    ReplicaId::new(name).unwrap()
}

async fn open(dir: &Path, name: &str) -> SqliteStore {
    SqliteStore::open(dir, id(name), StoreOptions::default())
        .await
        .unwrap()
}

fn remote_put(origin: &str, seq: u64, key: &str, value: &str, wall_ms: u64) -> OplogEntry {
    OplogEntry {
        origin: r(origin),
        node: id(origin),
        seq,
        collection: "c".into(),
        key: key.into(),
        op: Operation::Put {
            value: value.into(),
        },
        hlc: Hlc {
            wall_ms,
            counter: 0,
            replica: r(origin),
        },
    }
}

/// A snapshot document of origin replica `a`: `key` written by its entry `seq` at `wall_ms`.
fn snapshot_doc(key: &str, seq: u64, value: &str, wall_ms: u64) -> SnapshotDocument {
    SnapshotDocument {
        collection: "c".into(),
        key: key.into(),
        value: Some(value.into()),
        hlc: Hlc {
            wall_ms,
            counter: 0,
            replica: r("a"),
        },
        seq,
        field_state: None,
    }
}

async fn all_docs(store: &SqliteStore) -> Vec<(String, String)> {
    store
        .list("c", None, 10_000)
        .await
        .unwrap()
        .into_iter()
        .map(|d| (d.key, d.value))
        .collect()
}

#[tokio::test]
async fn local_writes_are_numbered_and_readable() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), "a").await;
    let entries = store
        .write(vec![
            LocalWrite::put("c", "k1", "1"),
            LocalWrite::put("c", "k2", r#"{"x":2}"#),
            LocalWrite::delete("c", "k1"),
        ])
        .await
        .unwrap();
    assert_eq!(entries.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(entries.windows(2).all(|w| w[0].hlc < w[1].hlc));
    assert_eq!(store.get("c", "k1").await.unwrap(), None);
    assert_eq!(
        store.get("c", "k2").await.unwrap().unwrap().value,
        r#"{"x":2}"#
    );
    assert_eq!(
        store.version_vector().await.unwrap().get(store.replica()),
        3
    );
    assert!(
        entries
            .iter()
            .all(|e| &e.origin == store.replica() && e.node == id("a"))
    );
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.documents, stats.oplog_entries), (1, 3));
    store.close().await;
}

#[tokio::test]
async fn an_invalid_write_fails_alone_and_stores_nothing_of_its_batch() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path(), "a").await);
    let mut tasks = Vec::new();
    for i in 0..50 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let value = if i == 25 {
                "{broken".to_string()
            } else {
                i.to_string()
            };
            store
                .write(vec![
                    LocalWrite::put("c", format!("ok-{i}"), "1"),
                    LocalWrite::put("c", format!("k{i}"), value),
                ])
                .await
        }));
    }
    let mut seqs = Vec::new();
    for (i, task) in tasks.into_iter().enumerate() {
        match task.await.unwrap() {
            Ok(entries) => seqs.extend(entries.iter().map(|e| e.seq)),
            Err(StorageError::Invalid(_)) => assert_eq!(i, 25),
            Err(other) => panic!("unexpected {other}"),
        }
    }
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        (1..=98).collect::<Vec<u64>>(),
        "sequence numbers stay gap-free"
    );
    assert_eq!(store.get("c", "ok-25").await.unwrap(), None);
    assert_eq!(store.stats().await.unwrap().documents, 98);
    store.close().await;
}

#[tokio::test]
async fn last_writer_wins_by_hlc_and_deletes_compete_like_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), "a").await;
    let now = cbddc_core::unix_millis();
    let mut newer = remote_put("b", 1, "k", "\"b-newer\"", now);
    let older = remote_put("c", 1, "k", "\"c-older\"", now - 10);
    store
        .apply_remote(vec![newer.clone(), older])
        .await
        .unwrap();
    assert_eq!(
        store.get("c", "k").await.unwrap().unwrap().value,
        "\"b-newer\""
    );

    // An older delete loses to the newer put; a newer delete wins and stays a tombstone.
    let old_delete = OplogEntry {
        op: Operation::Delete,
        ..remote_put("c", 2, "k", "0", now - 5)
    };
    store.apply_remote(vec![old_delete]).await.unwrap();
    assert!(store.get("c", "k").await.unwrap().is_some());
    newer.seq = 2;
    newer.op = Operation::Delete;
    newer.hlc.wall_ms = now + 5;
    store.apply_remote(vec![newer]).await.unwrap();
    assert_eq!(store.get("c", "k").await.unwrap(), None);
    let stale_put = remote_put("c", 3, "k", "\"stale\"", now + 1);
    store.apply_remote(vec![stale_put]).await.unwrap();
    assert_eq!(
        store.get("c", "k").await.unwrap(),
        None,
        "a stale put must not resurrect"
    );

    // A local write after all of that is stamped later and wins.
    store
        .write(vec![LocalWrite::put("c", "k", "\"local\"")])
        .await
        .unwrap();
    assert_eq!(
        store.get("c", "k").await.unwrap().unwrap().value,
        "\"local\""
    );
    store.close().await;
}

#[tokio::test]
async fn applying_a_batch_twice_changes_nothing_and_creates_no_local_entries() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), "a").await;
    let now = cbddc_core::unix_millis();
    let batch: Vec<_> = (1..=5)
        .map(|s| remote_put("b", s, &format!("k{s}"), "1", now))
        .collect();
    let first = store.apply_remote(batch.clone()).await.unwrap();
    assert_eq!((first.applied, first.duplicates), (5, 0));
    let docs = all_docs(&store).await;
    let second = store.apply_remote(batch).await.unwrap();
    assert_eq!((second.applied, second.duplicates), (0, 5));
    assert_eq!(all_docs(&store).await, docs);
    let vv = store.version_vector().await.unwrap();
    assert_eq!((vv.get(store.replica()), vv.get(&r("b"))), (0, 5));
    assert_eq!(store.stats().await.unwrap().oplog_entries, 5);
    store.close().await;
}

#[tokio::test]
async fn entries_after_a_gap_are_skipped_until_the_gap_is_filled() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), "a").await;
    let now = cbddc_core::unix_millis();
    let outcome = store
        .apply_remote(vec![
            remote_put("b", 1, "x", "1", now),
            remote_put("b", 3, "z", "3", now),
        ])
        .await
        .unwrap();
    assert_eq!((outcome.applied, outcome.out_of_order), (1, 1));
    assert_eq!(outcome.version_vector.get(&r("b")), 1);
    assert_eq!(store.get("c", "z").await.unwrap(), None);
    let outcome = store
        .apply_remote(vec![
            remote_put("b", 3, "z", "3", now),
            remote_put("b", 2, "y", "2", now),
        ])
        .await
        .unwrap();
    assert_eq!(outcome.applied, 2);
    assert_eq!(all_docs(&store).await.len(), 3);
    store.close().await;
}

#[tokio::test]
async fn a_stamp_from_the_far_future_refuses_the_whole_batch() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), "a").await;
    let now = cbddc_core::unix_millis();
    let err = store
        .apply_remote(vec![
            remote_put("b", 1, "x", "1", now),
            remote_put("b", 2, "y", "1", now + 3_600_000),
        ])
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::Clock(_)), "{err}");
    assert!(err.to_string().contains("maximum drift"), "{err}");
    assert!(all_docs(&store).await.is_empty());
    assert!(store.version_vector().await.unwrap().is_empty());
    // The clock was not dragged forward.
    let local = store
        .write(vec![LocalWrite::put("c", "l", "1")])
        .await
        .unwrap();
    assert!(local[0].hlc.wall_ms < now + 60_000);
    store.close().await;
}

#[tokio::test]
async fn malformed_remote_entries_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), "a").await;
    let now = cbddc_core::unix_millis();
    let mut bad_json = remote_put("b", 1, "x", "{nope", now);
    assert!(store.apply_remote(vec![bad_json.clone()]).await.is_err());
    bad_json.op = Operation::Put { value: "1".into() };
    bad_json.hlc.replica = r("someone-else");
    assert!(store.apply_remote(vec![bad_json]).await.is_err());
    let mut huge_seq = remote_put("b", u64::MAX, "x", "1", now);
    assert!(store.apply_remote(vec![huge_seq.clone()]).await.is_err());
    huge_seq.seq = 0;
    assert!(store.apply_remote(vec![huge_seq]).await.is_err());
    assert!(store.version_vector().await.unwrap().is_empty());
    store.close().await;
}

#[tokio::test]
async fn data_clock_and_peers_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), "a").await;
    let last = store
        .write(vec![LocalWrite::put("c", "k", "1")])
        .await
        .unwrap()
        .remove(0);
    let peer = KnownPeer::new(id("b"), "127.0.0.1:4000", PeerType::StaticRemote).unwrap();
    store.save_peer(peer.clone()).await.unwrap();
    store.close().await;
    assert!(matches!(
        store.get("c", "k").await,
        Err(StorageError::Closed)
    ));
    assert!(matches!(
        store.write(vec![LocalWrite::put("c", "k", "1")]).await,
        Err(StorageError::Closed)
    ));

    let reopened = open(dir.path(), "a").await;
    assert_eq!(reopened.get("c", "k").await.unwrap().unwrap().value, "1");
    assert_eq!(reopened.list_peers().await.unwrap(), vec![peer]);
    let next = reopened
        .write(vec![LocalWrite::put("c", "k2", "2")])
        .await
        .unwrap()
        .remove(0);
    // A new replica numbers from 1; its stamps still follow the last run's.
    assert_ne!(next.origin, last.origin);
    assert_eq!(next.seq, 1);
    assert!(next.hlc > last.hlc);
    assert!(reopened.remove_peer(id("b")).await.unwrap());
    assert!(!reopened.remove_peer(id("b")).await.unwrap());
    reopened.close().await;
}

#[tokio::test]
async fn a_database_opened_under_another_node_id_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), "a").await;
    let path = store.path().to_path_buf();
    store.close().await;
    let err = SqliteStore::open_path(path, id("b"), StoreOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::WrongNode { .. }), "{err}");
    assert!(err.to_string().contains("belongs to node a"), "{err}");
}

#[tokio::test]
async fn missing_entries_come_in_bounded_pages_that_rebuild_the_same_documents() {
    let dir = tempfile::tempdir().unwrap();
    let source = open(dir.path(), "a").await;
    for chunk in 0..5 {
        let writes = (0..100)
            .map(|i| {
                LocalWrite::put(
                    "c",
                    format!("k{}", (chunk * 100 + i) % 230),
                    format!("{chunk}"),
                )
            })
            .collect();
        source.write(writes).await.unwrap();
    }
    source
        .apply_remote(
            (1..=40)
                .map(|s| remote_put("z", s, &format!("z{s}"), "\"z\"", cbddc_core::unix_millis()))
                .collect(),
        )
        .await
        .unwrap();
    let target = open(dir.path(), "b").await;
    let limits = PageLimits {
        max_entries: 64,
        max_bytes: 4096,
    };
    let mut pages = 0;
    loop {
        let theirs = target.version_vector().await.unwrap();
        let page = source.entries_missing_from(theirs, limits).await.unwrap();
        assert!(page.entries.len() <= 64);
        let bytes: usize = page.entries.iter().map(OplogEntry::approx_size).sum();
        assert!(bytes <= 4096 || page.entries.len() == 1);
        target.apply_remote(page.entries).await.unwrap();
        pages += 1;
        if !page.more {
            break;
        }
        assert!(pages < 100, "paging does not terminate");
    }
    assert!(pages > 5);
    assert_eq!(all_docs(&target).await, all_docs(&source).await);
    assert_eq!(
        target.version_vector().await.unwrap(),
        source.version_vector().await.unwrap()
    );
    assert!(
        source
            .entries_missing_from(target.version_vector().await.unwrap(), limits)
            .await
            .unwrap()
            .entries
            .is_empty()
    );
    source.close().await;
    target.close().await;
}

mod convergence {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Step {
        Write { node: usize, key: u8, delete: bool },
        Sync { from: usize, to: usize },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => (0usize..3, 0u8..6, proptest::bool::weighted(0.25)).prop_map(|(node, key, delete)| Step::Write { node, key, delete }),
            1 => (0usize..3, 0usize..3).prop_map(|(from, to)| Step::Sync { from, to }),
        ]
    }

    async fn sync(from: &SqliteStore, to: &SqliteStore) {
        let theirs = to.version_vector().await.unwrap();
        let page = from
            .entries_missing_from(theirs, PageLimits::default())
            .await
            .unwrap();
        to.apply_remote(page.entries).await.unwrap();
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
        #[test]
        fn stores_that_saw_the_same_entries_hold_the_same_documents(steps in proptest::collection::vec(step(), 1..40)) {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(async {
                let dir = tempfile::tempdir().unwrap();
                let nodes = [open(dir.path(), "n0").await, open(dir.path(), "n1").await, open(dir.path(), "n2").await];
                for step in steps {
                    match step {
                        Step::Write { node, key, delete } => {
                            let write = if delete {
                                LocalWrite::delete("c", format!("k{key}"))
                            } else {
                                LocalWrite::put("c", format!("k{key}"), format!("\"{node}\""))
                            };
                            nodes[node].write(vec![write]).await.unwrap();
                        }
                        Step::Sync { from, to } if from != to => sync(&nodes[from], &nodes[to]).await,
                        Step::Sync { .. } => {}
                    }
                }
                for _ in 0..2 {
                    for from in 0..3 {
                        for to in 0..3 {
                            if from != to {
                                sync(&nodes[from], &nodes[to]).await;
                            }
                        }
                    }
                }
                let expected = all_docs(&nodes[0]).await;
                let vv: VersionVector = nodes[0].version_vector().await.unwrap();
                for node in &nodes[1..] {
                    assert_eq!(all_docs(node).await, expected);
                    assert_eq!(node.version_vector().await.unwrap(), vv);
                }
                for node in &nodes {
                    node.close().await;
                }
            });
        }
    }
}

#[tokio::test]
async fn a_configuration_reload_replaces_configured_peers_and_keeps_runtime_ones() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), "a").await;
    let peer = |name: &str, port: u16| {
        KnownPeer::new(
            id(name),
            format!("127.0.0.1:{port}"),
            PeerType::StaticRemote,
        )
        .unwrap()
    };
    store
        .replace_configured_peers(vec![peer("b", 1), peer("c", 2)])
        .await
        .unwrap();
    store.save_peer(peer("d", 3)).await.unwrap();
    store
        .replace_configured_peers(vec![peer("c", 22), peer("e", 5)])
        .await
        .unwrap();
    let listed: Vec<(String, String)> = store
        .list_peers()
        .await
        .unwrap()
        .into_iter()
        .map(|p| (p.node_id.to_string(), p.address))
        .collect();
    assert_eq!(
        listed,
        [
            ("c", "127.0.0.1:22"),
            ("d", "127.0.0.1:3"),
            ("e", "127.0.0.1:5")
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    // A runtime peer later named by the configuration becomes configured, and goes with it.
    store
        .replace_configured_peers(vec![peer("d", 3)])
        .await
        .unwrap();
    store.replace_configured_peers(vec![]).await.unwrap();
    assert!(store.list_peers().await.unwrap().is_empty());
    store.close().await;
}

mod paxos_log {
    use crate::SqliteLogStorage;
    use omnipaxos::ballot_leader_election::Ballot;
    use omnipaxos::storage::{Entry, NoSnapshot, StopSign, Storage, StorageOp};
    use omnipaxos::util::LogEntry;
    use omnipaxos::{ClusterConfig, OmniPaxos, ServerConfig};
    use serde::{Deserialize, Serialize};

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    struct Op(u64);

    impl Entry for Op {
        type Snapshot = NoSnapshot;
    }

    fn ops(range: std::ops::Range<u64>) -> Vec<Op> {
        range.map(Op).collect()
    }

    #[test]
    fn a_batch_that_writes_nothing_takes_no_lock_and_one_that_writes_commits_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let db = crate::ControlDatabase::open(&path).unwrap();
        let mut log: SqliteLogStorage<Op> = db.log(1).unwrap();
        let other = rusqlite::Connection::open(&path).unwrap();
        other.busy_timeout(std::time::Duration::ZERO).unwrap();
        let writer_free = || {
            let free = other.execute_batch("BEGIN IMMEDIATE").is_ok();
            if free {
                other.execute_batch("ROLLBACK").unwrap();
            }
            free
        };

        // An idle step: reads only. The database stays free for the store's writer.
        db.begin().unwrap();
        assert_eq!(log.get_decided_idx().unwrap(), 0);
        assert!(writer_free(), "an idle step holds the write lock");
        db.commit().unwrap();

        // A step that writes opens the batch's transaction at its first write.
        db.begin().unwrap();
        log.append_entries(ops(0..3)).unwrap();
        log.set_decided_idx(2).unwrap();
        assert!(!writer_free(), "a writing step is one transaction");
        db.commit().unwrap();
        assert!(writer_free());
        assert_eq!(log.get_log_len().unwrap(), 3);
    }

    /// One control-plane step on its own thread, between `opened` (its transaction is
    /// open) and `finish` (commit, or roll back as after a crash).
    fn control_step(
        db: crate::ControlDatabase,
        entries: std::ops::Range<u64>,
        commit: bool,
    ) -> (
        std::sync::mpsc::Receiver<()>,
        std::sync::mpsc::Sender<()>,
        std::thread::JoinHandle<()>,
    ) {
        let (opened_tx, opened) = std::sync::mpsc::channel();
        let (finish, finish_rx) = std::sync::mpsc::channel::<()>();
        let step = std::thread::spawn(move || {
            let mut log: SqliteLogStorage<Op> = db.log(1).unwrap();
            db.begin().unwrap();
            log.append_entries(ops(entries)).unwrap();
            opened_tx.send(()).unwrap();
            finish_rx.recv().unwrap();
            if commit {
                db.commit().unwrap();
            } else {
                db.abandon();
            }
        });
        (opened, finish, step)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_store_and_the_control_plane_share_one_writer_and_never_each_others_transaction() {
        use cbddc_core::{DocumentStore, LocalWrite, NodeId};
        let dir = tempfile::tempdir().unwrap();
        let options = crate::StoreOptions {
            durability: crate::Durability::Normal,
            ..Default::default()
        };
        let store = crate::SqliteStore::open(dir.path(), NodeId::new("a").unwrap(), options)
            .await
            .unwrap();
        let store = std::sync::Arc::new(store);
        for (round, commit) in [(0u64, true), (1, false)] {
            let (opened, finish, step) = control_step(store.control_database(), 0..3, commit);
            opened.recv().unwrap();
            // A store write while the control plane's step is open: it must neither join
            // that transaction nor fail on it, but wait for it to end.
            let writer = store.clone();
            let write = tokio::spawn(async move {
                writer
                    .write(vec![LocalWrite::put("docs", format!("k{round}"), "1")])
                    .await
            });
            let db = store.control_database();
            let queued = std::time::Instant::now();
            while db.waiting() == 0 {
                assert!(
                    queued.elapsed() < std::time::Duration::from_secs(10),
                    "the store's writer never waited for the open step"
                );
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            finish.send(()).unwrap();
            tokio::task::spawn_blocking(move || step.join().unwrap())
                .await
                .unwrap();
            write.await.unwrap().unwrap();
            assert!(
                store
                    .get("docs", &format!("k{round}"))
                    .await
                    .unwrap()
                    .is_some(),
                "the store's write was lost with the control plane's step"
            );
        }
        let db = store.control_database();
        let log: SqliteLogStorage<Op> = db.log(1).unwrap();
        assert_eq!(
            log.get_suffix(0).unwrap(),
            ops(0..3),
            "the committed step is kept and the abandoned one is not"
        );
        let synchronous: i64 = db
            .lock()
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            synchronous, 1,
            "the store's own durability (NORMAL) is back"
        );
        store.close().await;
    }

    fn ballot(n: u32, pid: u64) -> Ballot {
        Ballot {
            config_id: 1,
            n,
            priority: 0,
            pid,
        }
    }

    #[test]
    fn a_batch_is_one_transaction_and_a_crash_inside_it_leaves_nothing() {
        use crate::ControlDatabase;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.db");
        let db = ControlDatabase::open(&path).unwrap();
        let mut one = db.log::<Op>(1).unwrap();
        let mut two = db.log::<Op>(2).unwrap();
        one.append_entry(Op(0)).unwrap();
        db.begin().unwrap();
        one.append_entries(ops(1..3)).unwrap();
        one.set_decided_idx(3).unwrap();
        two.write_atomically(vec![
            StorageOp::AppendEntry(Op(9)),
            StorageOp::SetDecidedIndex(1),
        ])
        .unwrap();
        assert_eq!(
            one.get_log_len().unwrap(),
            3,
            "the batch reads its own writes"
        );
        let outside = SqliteLogStorage::<Op>::configurations(&path).unwrap();
        assert_eq!(outside, vec![1, 2]);
        db.commit().unwrap();
        db.begin().unwrap();
        one.append_entry(Op(3)).unwrap();
        two.set_decided_idx(0).unwrap();
        // A crash in the middle of a batch: the connection goes without a commit.
        drop((one, two, db));
        let one = SqliteLogStorage::<Op>::open(&path, 1).unwrap();
        let two = SqliteLogStorage::<Op>::open(&path, 2).unwrap();
        assert_eq!(one.get_suffix(0).unwrap(), ops(0..3));
        assert_eq!(one.get_decided_idx().unwrap(), 3);
        assert_eq!(
            (two.get_suffix(0).unwrap(), two.get_decided_idx().unwrap()),
            (vec![Op(9)], 1)
        );
    }

    #[test]
    fn the_storage_contract_holds_and_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.db");
        {
            let mut s = SqliteLogStorage::<Op>::open(&path, 1).unwrap();
            assert_eq!(s.get_log_len().unwrap(), 0);
            assert_eq!(s.get_promise().unwrap(), None);
            s.append_entry(Op(0)).unwrap();
            s.append_entries(ops(1..5)).unwrap();
            assert_eq!(s.get_log_len().unwrap(), 5);
            assert_eq!(s.get_entries(1, 3).unwrap(), ops(1..3));
            assert!(
                s.get_entries(3, 9).unwrap().is_empty(),
                "a range not wholly present reads as empty"
            );
            s.append_on_prefix(3, ops(30..32)).unwrap();
            assert_eq!(s.get_suffix(2).unwrap(), vec![Op(2), Op(30), Op(31)]);
            s.set_promise(ballot(3, 2)).unwrap();
            s.set_accepted_round(ballot(2, 1)).unwrap();
            s.set_decided_idx(4).unwrap();
            let next = ClusterConfig {
                configuration_id: 2,
                nodes: vec![1, 2, 4],
                ..Default::default()
            };
            s.set_stopsign(Some(StopSign::with(next, Some(vec![7, 7]))))
                .unwrap();
            // Compaction: indexes stay absolute.
            s.write_atomically(vec![StorageOp::Trim(2), StorageOp::SetCompactedIdx(2)])
                .unwrap();
            assert_eq!(
                (s.get_compacted_idx().unwrap(), s.get_log_len().unwrap()),
                (2, 3)
            );
            assert!(s.get_entries(0, 2).unwrap().is_empty());
            assert_eq!(s.get_entries(2, 5).unwrap(), vec![Op(2), Op(30), Op(31)]);
        }
        let mut s = SqliteLogStorage::<Op>::open(&path, 1).unwrap();
        assert_eq!(s.get_promise().unwrap(), Some(ballot(3, 2)));
        assert_eq!(s.get_accepted_round().unwrap(), Some(ballot(2, 1)));
        assert_eq!(s.get_decided_idx().unwrap(), 4);
        assert_eq!(
            (s.get_compacted_idx().unwrap(), s.get_log_len().unwrap()),
            (2, 3)
        );
        let stopsign = s.get_stopsign().unwrap().unwrap();
        assert_eq!(
            (stopsign.next_config.configuration_id, stopsign.metadata),
            (2, Some(vec![7, 7]))
        );
        // Everything trimmed, then a seeded prefix: the next entry takes the compacted index.
        s.write_atomically(vec![StorageOp::Trim(10), StorageOp::SetCompactedIdx(10)])
            .unwrap();
        s.append_entry(Op(10)).unwrap();
        assert_eq!(s.get_entries(10, 11).unwrap(), vec![Op(10)]);
        // Another configuration in the same file is independent.
        let other = SqliteLogStorage::<Op>::open(&path, 2).unwrap();
        assert_eq!(
            (other.get_log_len().unwrap(), other.get_stopsign().unwrap()),
            (0, None)
        );
        assert_eq!(
            SqliteLogStorage::<Op>::configurations(&path).unwrap(),
            vec![1, 2]
        );
    }

    #[test]
    fn appending_on_a_prefix_past_the_end_appends_at_the_end_like_the_reference_storage() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SqliteLogStorage::<Op>::open(&dir.path().join("n.db"), 1).unwrap();
        s.append_entries(ops(0..3)).unwrap();
        s.append_on_prefix(5, ops(50..52)).unwrap();
        assert_eq!(s.get_log_len().unwrap(), 5, "no hole at 3 and 4");
        assert_eq!(s.get_entries(3, 5).unwrap(), ops(50..52));
        s.append_on_prefix(1, ops(10..11)).unwrap();
        assert_eq!(s.get_suffix(0).unwrap(), vec![Op(0), Op(10)]);
        // Trimming moves the log's first index by itself.
        s.trim(1).unwrap();
        assert_eq!(
            (s.get_log_len().unwrap(), s.get_compacted_idx().unwrap()),
            (1, 0)
        );
        assert_eq!(s.get_entries(1, 2).unwrap(), vec![Op(10)]);
    }

    #[test]
    fn a_failing_atomic_write_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SqliteLogStorage::<Op>::open(&dir.path().join("n.db"), 1).unwrap();
        s.append_entries(ops(0..3)).unwrap();
        let result = s.write_atomically(vec![
            StorageOp::SetDecidedIndex(3),
            StorageOp::AppendEntries(ops(3..5)),
            StorageOp::AppendOnPrefix(usize::MAX, ops(9..10)),
        ]);
        assert!(result.is_err());
        assert_eq!(
            (s.get_decided_idx().unwrap(), s.get_log_len().unwrap()),
            (0, 3)
        );
    }

    type Node = OmniPaxos<Op, SqliteLogStorage<Op>>;

    fn build(dir: &std::path::Path, pid: u64) -> Node {
        let storage = SqliteLogStorage::open(&dir.join(format!("n{pid}.db")), 1).unwrap();
        let cluster = ClusterConfig {
            configuration_id: 1,
            nodes: vec![1, 2, 3],
            ..Default::default()
        };
        let server = ServerConfig {
            pid,
            election_tick_timeout: 5,
            resend_message_tick_timeout: 20,
            buffer_size: 1024,
            ..Default::default()
        };
        cluster.build_for_server(server, storage).unwrap()
    }

    /// Delivers every message and ticks, until `done` holds (bounded).
    fn run_until(nodes: &mut [Node], mut done: impl FnMut(&[Node]) -> bool) {
        let mut outgoing = Vec::new();
        for _ in 0..2_000 {
            if done(nodes) {
                return;
            }
            for i in 0..nodes.len() {
                nodes[i].tick();
                nodes[i].take_outgoing_messages(&mut outgoing);
                for message in outgoing.drain(..) {
                    let to = message.get_receiver() as usize - 1;
                    nodes[to].handle_incoming(message);
                }
            }
        }
        panic!("the cluster did not get there in 2000 rounds");
    }

    fn decided(node: &Node) -> Vec<u64> {
        node.read_decided_suffix(0)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|e| match e {
                LogEntry::Decided(Op(n)) => Some(n),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn an_omnipaxos_cluster_decides_on_sqlite_and_recovers_from_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut nodes: Vec<Node> = (1..=3).map(|pid| build(dir.path(), pid)).collect();
        run_until(&mut nodes, |n| {
            n.iter().all(|x| x.get_current_leader().is_some())
        });
        for i in 0..10 {
            nodes[(i % 3) as usize].append(Op(i)).unwrap();
        }
        run_until(&mut nodes, |n| n.iter().all(|x| x.get_decided_idx() == 10));
        let first = decided(&nodes[0]);
        assert_eq!(first.len(), 10);
        assert!(
            nodes.iter().all(|n| decided(n) == first),
            "every node decided the same log"
        );

        // A crash of every node: rebuilt from their databases, they go on where they were.
        drop(nodes);
        let mut nodes: Vec<Node> = (1..=3).map(|pid| build(dir.path(), pid)).collect();
        assert!(
            nodes.iter().all(|n| decided(n) == first),
            "the decided log survives"
        );
        run_until(&mut nodes, |n| {
            n.iter().all(|x| x.get_current_leader().is_some())
        });
        nodes[1].append(Op(100)).unwrap();
        run_until(&mut nodes, |n| n.iter().all(|x| x.get_decided_idx() == 11));
        assert!(nodes.iter().all(|n| decided(n).last() == Some(&100)));
    }
}

#[tokio::test]
async fn every_opening_is_a_new_replica_and_the_old_history_stays_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let first = open(dir.path(), "a").await;
    let before = first.replica().clone();
    first
        .write(vec![LocalWrite::put("c", "k1", "1")])
        .await
        .unwrap();
    first.close().await;

    let second = open(dir.path(), "a").await;
    assert_ne!(
        second.replica(),
        &before,
        "a reopened store is a new replica"
    );
    assert_eq!(
        second.own_replicas(),
        vec![before.clone(), second.replica().clone()]
    );
    let entry = second
        .write(vec![LocalWrite::put("c", "k2", "2")])
        .await
        .unwrap()
        .remove(0);
    assert_eq!(
        (entry.origin.clone(), entry.seq),
        (second.replica().clone(), 1)
    );
    let vv = second.version_vector().await.unwrap();
    assert_eq!((vv.get(&before), vv.get(second.replica())), (1, 1));
    second.close().await;
}

#[tokio::test]
async fn entries_of_the_running_replica_are_refused_but_a_past_ones_are_taken() {
    let dir = tempfile::tempdir().unwrap();
    let first = open(dir.path(), "a").await;
    let past = first.replica().clone();
    first.close().await;
    let store = open(dir.path(), "a").await;
    let now = cbddc_core::unix_millis();
    let mut forged = remote_put("x", 1, "k", "1", now);
    forged.origin = store.replica().clone();
    forged.hlc.replica = store.replica().clone();
    forged.node = id("a");
    let err = store.apply_remote(vec![forged]).await.unwrap_err();
    assert!(
        matches!(err, StorageError::OwnReplica { seq: 1, .. }),
        "{err}"
    );
    assert!(
        store.version_vector().await.unwrap().is_empty(),
        "nothing stored"
    );
    // Writes of an earlier opening that peers hold and this store lost (a restored
    // backup) are history to take back.
    let mut lost = remote_put("x", 1, "back", "1", now);
    lost.origin = past.clone();
    lost.hlc.replica = past.clone();
    lost.node = id("a");
    assert_eq!(store.apply_remote(vec![lost]).await.unwrap().applied, 1);
    store.close().await;
}

#[tokio::test]
async fn a_snapshot_removes_what_it_covers_but_lacks_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), "b").await;
    let now = cbddc_core::unix_millis();
    // From origin a: k1..k5 and gone6..8 (seq 1..8, which the snapshot covers) and k9
    // (seq 9, after it); from origin c, which the snapshot does not cover: c1.
    let mut entries: Vec<_> = (1..=5)
        .map(|i| remote_put("a", i, &format!("k{i}"), "1", now))
        .collect();
    entries.extend([6, 7, 8].map(|i| remote_put("a", i, &format!("gone{i}"), "1", now)));
    entries.push(remote_put("a", 9, "k9", "1", now));
    entries.push(remote_put("c", 1, "c1", "1", now));
    store.apply_remote(entries).await.unwrap();
    store
        .write(vec![LocalWrite::put("c", "mine", "2")])
        .await
        .unwrap();

    // The source deleted k2, k4 and gone6..8 and collected them.
    let doc = |key: &str, seq: u64| snapshot_doc(key, seq, "1", now);
    let mut vv = VersionVector::default();
    vv.advance(&r("a"), 8);
    store
        .apply_snapshot_chunk(id("a"), Some(vv), vec![doc("k1", 1), doc("k3", 3)])
        .await
        .unwrap();
    store
        .apply_snapshot_chunk(id("a"), None, vec![doc("k5", 5)])
        .await
        .unwrap();
    store.finish_snapshot(id("a")).await.unwrap();

    let mut keys: Vec<String> = store
        .list("c", None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.key)
        .collect();
    keys.sort();
    assert_eq!(keys, ["c1", "k1", "k3", "k5", "k9", "mine"]);
    assert_eq!(store.snapshot_progress().await.unwrap(), None);
    store.close().await;
}

#[tokio::test]
async fn a_page_applied_at_once_ends_as_its_entries_applied_one_by_one() {
    // Pages are written in multi-row statements: keys new and held, several entries of
    // one key in a page, deletes that win and lose, within and across statements.
    let dir = tempfile::tempdir().unwrap();
    let at_once = open(&dir.path().join("at-once"), "x").await;
    let one_by_one = open(&dir.path().join("one-by-one"), "y").await;
    let now = cbddc_core::unix_millis();
    let mut state = 7u64;
    let mut random = move |n: u64| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) % n
    };
    let mut seqs = [0u64; 3];
    let mut page = |size: usize, random: &mut dyn FnMut(u64) -> u64| -> Vec<OplogEntry> {
        (0..size)
            .map(|_| {
                let origin = random(3) as usize;
                seqs[origin] += 1;
                let name = ["a", "b", "c"][origin];
                let key = format!("k{}", random(90));
                let wall = now - 1_000 + random(1_000);
                let mut entry = remote_put(name, seqs[origin], &key, &format!("{wall}"), wall);
                if random(5) == 0 {
                    entry.op = Operation::Delete;
                }
                entry
            })
            .collect()
    };
    for size in [40, 300, 129, 64] {
        let entries = page(size, &mut random);
        at_once.apply_remote(entries.clone()).await.unwrap();
        let mut sorted = entries;
        sorted.sort_by(|a, b| (&a.origin, a.seq).cmp(&(&b.origin, b.seq)));
        for entry in sorted {
            assert_eq!(
                one_by_one.apply_remote(vec![entry]).await.unwrap().applied,
                1
            );
        }
    }
    let (x, y) = (
        at_once.stats().await.unwrap(),
        one_by_one.stats().await.unwrap(),
    );
    assert!(x.collectable > 0 && x.documents > 0);
    assert_eq!(x, y);
    assert_eq!(
        at_once.list("c", None, 10_000).await.unwrap(),
        one_by_one.list("c", None, 10_000).await.unwrap()
    );
    let everything = PageLimits {
        max_entries: 10_000,
        max_bytes: usize::MAX,
    };
    assert_eq!(
        at_once
            .entries_missing_from(VersionVector::default(), everything)
            .await
            .unwrap()
            .entries,
        one_by_one
            .entries_missing_from(VersionVector::default(), everything)
            .await
            .unwrap()
            .entries
    );
    at_once.close().await;
    one_by_one.close().await;
}

#[tokio::test]
async fn a_hostile_snapshot_chunk_is_refused_whole_and_stages_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), "b").await;
    let now = cbddc_core::unix_millis();
    let doc = |key: &str, value: Option<&str>, wall_ms: u64| SnapshotDocument {
        collection: "c".into(),
        key: key.into(),
        value: value.map(String::from),
        hlc: Hlc {
            wall_ms,
            counter: 0,
            replica: r("a"),
        },
        seq: 1,
        field_state: None,
    };
    let mut vv = VersionVector::default();
    vv.advance(&r("a"), 1);
    let far_future = now + 365 * 24 * 3_600_000;
    for chunk in [
        vec![doc("k1", Some("1"), now), doc("k2", Some("{not json"), now)],
        vec![doc("k1", Some("1"), now), doc("", Some("1"), now)],
        vec![doc("k1", Some("1"), now), doc("k2", None, far_future)],
        vec![doc("k2", Some("1"), now), doc("k1", Some("1"), now)],
    ] {
        let refused = store
            .apply_snapshot_chunk(id("a"), Some(vv.clone()), chunk)
            .await;
        assert!(refused.is_err(), "{refused:?}");
        assert_eq!(store.snapshot_progress().await.unwrap(), None);
    }
    assert!(store.finish_snapshot(id("a")).await.is_err());
    assert_eq!(store.stats().await.unwrap().documents, 0);
    store.close().await;
}

#[tokio::test]
async fn a_batch_refused_after_its_entries_were_written_leaves_nothing_behind() {
    // A batch alone in its transaction has no savepoint: its refusal must still undo
    // the documents, oplog entries and changes it wrote before the refusal.
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), "a").await;
    let now = cbddc_core::unix_millis();
    let mut coverage = cbddc_core::Coverage::default();
    // The coverage is checked after the entries are written; it names this store's own
    // running replica, which nobody else can vouch for.
    coverage.cover(store.replica(), 0, 5);
    let err = store
        .apply_covered(
            vec![
                remote_put("b", 1, "x", "1", now),
                remote_put("b", 2, "y", "2", now),
            ],
            coverage,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::OwnReplica { .. }), "{err}");
    assert!(store.version_vector().await.unwrap().is_empty());
    assert!(store.get("c", "x").await.unwrap().is_none());
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.documents, stats.oplog_entries), (0, 0));
    assert_eq!(
        store.watch_changes().borrow().to_owned(),
        0,
        "no change recorded"
    );
    // The writer goes on: the same entries without the forged coverage are taken.
    let outcome = store
        .apply_remote(vec![remote_put("b", 1, "x", "1", now)])
        .await
        .unwrap();
    assert_eq!(outcome.applied, 1);
    store.close().await;
}

#[tokio::test]
async fn a_database_of_the_previous_schema_keeps_its_documents_and_history() {
    let dir = tempfile::tempdir().unwrap();
    let path = crate::database_path(dir.path(), &id("a"));
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        for sql in &crate::schema::MIGRATIONS[..5] {
            conn.execute_batch(sql).unwrap();
        }
        conn.execute_batch(
            "PRAGMA user_version = 5;
             INSERT INTO meta (key, value) VALUES ('node_id', 'a');
             INSERT INTO oplog (origin, seq, collection, key, value, hlc_wall, hlc_counter)
                 VALUES ('a', 1, 'c', 'mine', '1', 1000, 0), ('b', 1, 'c', 'theirs', '2', 1001, 0);
             INSERT INTO documents (collection, key, value, hlc_wall, hlc_counter, hlc_node)
                 VALUES ('c', 'mine', '1', 1000, 0, 'a'), ('c', 'theirs', '2', 1001, 0, 'b');
             INSERT INTO origins (origin, max_seq) VALUES ('a', 1), ('b', 1);",
        )
        .unwrap();
    }
    let store = open(dir.path(), "a").await;
    assert_eq!(
        all_docs(&store).await,
        [("mine".into(), "1".into()), ("theirs".into(), "2".into())]
    );
    let history = store
        .entries_missing_from(VersionVector::default(), PageLimits::default())
        .await
        .unwrap()
        .entries;
    let writers: Vec<(&str, &str)> = history
        .iter()
        .map(|e| (e.origin.as_str(), e.node.as_str()))
        .collect();
    assert_eq!(
        writers,
        [("a", "a"), ("b", "b")],
        "the old origins name their writers"
    );
    assert!(
        store.own_replicas().contains(&r("a")),
        "the old history is this node's own"
    );
    let entry = store
        .write(vec![LocalWrite::put("c", "new", "3")])
        .await
        .unwrap()
        .remove(0);
    assert_eq!((&entry.origin, entry.seq), (store.replica(), 1));

    // A peer of today catches up with the whole history, old entries and new.
    let peer = open(dir.path(), "b").await;
    let page = store
        .entries_missing_from(peer.version_vector().await.unwrap(), PageLimits::default())
        .await
        .unwrap();
    assert_eq!(peer.apply_remote(page.entries).await.unwrap().applied, 3);
    assert_eq!(all_docs(&peer).await, all_docs(&store).await);
    peer.close().await;
    store.close().await;
}

async fn feed(store: &SqliteStore, after: u64, collection: Option<&str>) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let mut cursor = after;
    for _ in 0..1_000 {
        let page = store
            .changes_after(cursor, collection.map(str::to_string), 2)
            .await
            .unwrap();
        out.extend(page.changes.into_iter().map(|c| {
            let value = c.document_text().unwrap_or("deleted").to_string();
            (
                c.position,
                format!("{}/{}={value}", c.entry.collection, c.entry.key),
            )
        }));
        if page.scanned_to >= page.last_position {
            return out;
        }
        cursor = page.scanned_to;
    }
    panic!("the feed never reached its end");
}

#[tokio::test]
async fn the_change_feed_lists_applied_changes_in_order_and_skips_losers() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), "a").await;
    let watch = store.watch_changes();
    assert_eq!(*watch.borrow(), 0);
    store
        .write(vec![
            LocalWrite::put("c", "k1", "1"),
            LocalWrite::put("other", "x", "true"),
        ])
        .await
        .unwrap();
    // A peer's entry stamped in the far past loses to k1 and changes nothing.
    store
        .apply_remote(vec![remote_put("b", 1, "k1", "\"old\"", 1)])
        .await
        .unwrap();
    let now = cbddc_core::unix_millis();
    store
        .apply_remote(vec![remote_put("b", 2, "k2", "\"theirs\"", now)])
        .await
        .unwrap();
    store
        .write(vec![LocalWrite::delete("c", "k1")])
        .await
        .unwrap();
    assert_eq!(*watch.borrow(), 4, "the watch follows every commit");

    assert_eq!(
        feed(&store, 0, None).await,
        [
            (1, "c/k1=1".to_string()),
            (2, "other/x=true".into()),
            (3, "c/k2=\"theirs\"".into()),
            (4, "c/k1=deleted".into()),
        ]
    );
    assert_eq!(
        feed(&store, 1, Some("c")).await,
        [
            (3, "c/k2=\"theirs\"".to_string()),
            (4, "c/k1=deleted".into())
        ],
        "a resumed, filtered feed starts after its position"
    );

    // A failed batch records no change and moves no position.
    let err = store
        .write(vec![LocalWrite::put("c", "bad", "{not json")])
        .await;
    assert!(err.is_err());
    assert_eq!(*watch.borrow(), 4);
    store.close().await;

    let store = open(dir.path(), "a").await;
    assert_eq!(
        *store.watch_changes().borrow(),
        4,
        "positions survive a reopen"
    );
    assert_eq!(
        feed(&store, 3, None).await,
        [(4, "c/k1=deleted".to_string())]
    );
    store.close().await;
}

#[tokio::test]
async fn a_database_from_before_the_feed_starts_it_with_its_current_documents() {
    let dir = tempfile::tempdir().unwrap();
    let path = crate::database_path(dir.path(), &id("a"));
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        for sql in &crate::schema::MIGRATIONS[..8] {
            conn.execute_batch(sql).unwrap();
        }
        conn.execute_batch(
            "PRAGMA user_version = 8;
             INSERT INTO meta (key, value) VALUES ('node_id', 'a');
             INSERT INTO oplog (origin, seq, collection, key, value, hlc_wall, hlc_counter, node)
                 VALUES ('a', 1, 'c', 'k', '1', 1000, 0, 'a'), ('a', 2, 'c', 'k', '2', 1002, 0, 'a'),
                        ('b', 1, 'c', 'j', NULL, 1001, 0, 'b');
             INSERT INTO documents (collection, key, value, hlc_wall, hlc_counter, hlc_node)
                 VALUES ('c', 'k', '2', 1002, 0, 'a'), ('c', 'j', NULL, 1001, 0, 'b');
             INSERT INTO origins (origin, max_seq) VALUES ('a', 2), ('b', 1);",
        )
        .unwrap();
    }
    let store = open(dir.path(), "a").await;
    assert_eq!(
        feed(&store, 0, None).await,
        [(1, "c/j=deleted".to_string()), (2, "c/k=2".into())],
        "one change per document, the delete included, oldest stamp first"
    );
    store.close().await;
}

fn put_in(collection: &str, origin: &str, seq: u64, key: &str) -> OplogEntry {
    OplogEntry {
        collection: collection.into(),
        ..remote_put(origin, seq, key, "1", cbddc_core::unix_millis())
    }
}

async fn open_interested(
    dir: &Path,
    name: &str,
    collections: &[&str],
) -> Result<SqliteStore, StoreError> {
    SqliteStore::open(
        dir,
        id(name),
        StoreOptions {
            interest: cbddc_core::Interest::only(collections.iter().copied()),
            ..StoreOptions::default()
        },
    )
    .await
}

#[tokio::test]
async fn a_store_of_some_collections_never_stores_another_and_steps_over_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_interested(dir.path(), "f", &["c"]).await.unwrap();
    let err = store
        .write(vec![
            LocalWrite::put("c", "ok", "1"),
            LocalWrite::put("other", "k", "1"),
        ])
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::NotReplicated { .. }), "{err}");
    assert!(err.to_string().contains("the collections c"), "{err}");
    assert!(
        store.get("c", "ok").await.unwrap().is_none(),
        "the batch stored nothing"
    );

    // A peer that knows nothing of interests pushes everything: the rest is counted, not kept.
    let outcome = store
        .apply_remote(vec![
            put_in("c", "b", 1, "one"),
            put_in("other", "b", 2, "two"),
            put_in("c", "b", 3, "three"),
        ])
        .await
        .unwrap();
    assert_eq!((outcome.applied, outcome.filtered), (2, 1));
    assert_eq!(outcome.version_vector.get(&r("b")), 3);
    assert!(store.list("other", None, 10).await.unwrap().is_empty());
    assert_eq!(store.stats().await.unwrap().oplog_entries, 2);

    // A sender that vouches for a gap lets the store step over it.
    let outcome = store
        .apply_covered(vec![put_in("c", "b", 6, "six")], {
            let mut coverage = cbddc_core::Coverage::default();
            coverage.cover(&r("b"), 3, 7);
            coverage
        })
        .await
        .unwrap();
    assert_eq!(outcome.applied, 1);
    assert_eq!(outcome.version_vector.get(&r("b")), 7);
    // Without the coverage, a gap is still a gap.
    let outcome = store
        .apply_remote(vec![put_in("c", "b", 9, "nine")])
        .await
        .unwrap();
    assert_eq!(outcome.out_of_order, 1);

    // Serving a receiver of the same collections, the gaps are spoken for; serving one of
    // every collection, the page stops at the first gap.
    let page = store
        .entries_for(
            VersionVector::default(),
            PageLimits::default(),
            cbddc_core::Interest::only(["c"]),
        )
        .await
        .unwrap();
    assert_eq!(
        page.entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [1, 3, 6]
    );
    assert_eq!(page.coverage.get(&r("b")), Some((0, 7)));
    let page = store
        .entries_missing_from(VersionVector::default(), PageLimits::default())
        .await
        .unwrap();
    assert_eq!(page.entries.iter().map(|e| e.seq).collect::<Vec<_>>(), [1]);
    assert_eq!(page.coverage.get(&r("b")), Some((0, 1)));
    assert!(
        !page.more,
        "the rest is to be had elsewhere, not from this store"
    );
    store.close().await;

    // The database never widens: it stepped over the other collections' entries.
    let err = open_interested(dir.path(), "f", &["c", "other"])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InterestWidened { .. }), "{err}");
    let err = SqliteStore::open(dir.path(), id("f"), StoreOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InterestWidened { .. }), "{err}");
    open_interested(dir.path(), "f", &["c"])
        .await
        .unwrap()
        .close()
        .await;
}

#[tokio::test]
async fn a_full_store_serves_a_filtered_receiver_only_its_collections_and_covers_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let full = open(dir.path(), "full").await;
    full.write(vec![
        LocalWrite::put("c", "1", "1"),
        LocalWrite::put("x", "2", "2"),
        LocalWrite::put("x", "3", "3"),
        LocalWrite::put("c", "4", "4"),
        LocalWrite::put("x", "5", "5"),
    ])
    .await
    .unwrap();
    let filtered = open_interested(dir.path(), "part", &["c"]).await.unwrap();
    let page = full
        .entries_for(
            filtered.version_vector().await.unwrap(),
            PageLimits::default(),
            filtered.interest(),
        )
        .await
        .unwrap();
    assert_eq!(page.entries.len(), 2);
    let outcome = filtered
        .apply_covered(page.entries, page.coverage)
        .await
        .unwrap();
    assert_eq!(outcome.applied, 2);
    assert_eq!(
        outcome.version_vector.get(full.replica()),
        5,
        "held: nothing more to ask for"
    );
    assert!(filtered.list("x", None, 10).await.unwrap().is_empty());
    full.close().await;
    filtered.close().await;
}

/// What the chunk-by-chunk apply adds: a crash between the last chunk and the version
/// vector leaves documents that look like a partial catch-up (the vector not merged, the
/// snapshot shown in progress), and finishing after the restart completes it.
#[tokio::test]
async fn a_crash_between_the_last_chunk_and_the_vector_leaves_a_partial_catch_up() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), "b").await;
    let now = cbddc_core::unix_millis();
    let doc = |key: &str, seq: u64| snapshot_doc(key, seq, "1", now);
    let mut vv = VersionVector::default();
    vv.advance(&r("a"), 3);
    store
        .apply_snapshot_chunk(id("a"), Some(vv), vec![doc("k1", 1), doc("k2", 2)])
        .await
        .unwrap();
    store
        .apply_snapshot_chunk(id("a"), None, vec![doc("k3", 3)])
        .await
        .unwrap();
    // The process dies here, before `finish_snapshot`.
    store.close().await;

    let store = open(dir.path(), "b").await;
    assert_eq!(all_docs(&store).await.len(), 3, "the chunks applied stay");
    assert_eq!(
        store.version_vector().await.unwrap().get(&r("a")),
        0,
        "nothing claims the snapshot's entries yet"
    );
    let progress = store.snapshot_progress().await.unwrap().unwrap();
    assert_eq!(
        (progress.staged, progress.after),
        (3, Some(("c".into(), "k3".into())))
    );
    // The source has nothing after k3: the resumed snapshot ends at once.
    store
        .apply_snapshot_chunk(id("a"), None, Vec::new())
        .await
        .unwrap();
    assert_eq!(store.finish_snapshot(id("a")).await.unwrap(), 3);
    assert_eq!(store.version_vector().await.unwrap().get(&r("a")), 3);
    assert_eq!(store.snapshot_progress().await.unwrap(), None);
    store.close().await;
}

/// A chunk moves the clock past its stamps before it commits: a local write made while
/// the snapshot is still arriving wins over the document the chunk brought.
#[tokio::test]
async fn a_local_write_during_a_snapshot_wins_over_a_document_it_brought() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), "b").await;
    let ahead = cbddc_core::unix_millis() + 20_000;
    let mut vv = VersionVector::default();
    vv.advance(&r("a"), 1);
    store
        .apply_snapshot_chunk(
            id("a"),
            Some(vv),
            vec![snapshot_doc("k", 1, "\"theirs\"", ahead)],
        )
        .await
        .unwrap();
    store
        .write(vec![LocalWrite::put("c", "k", "\"mine\"")])
        .await
        .unwrap();
    assert_eq!(
        store.get("c", "k").await.unwrap().unwrap().value,
        "\"mine\""
    );
    store.close().await;
}

#[tokio::test]
async fn compaction_hands_the_pages_it_freed_back_to_the_file_system() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), "a").await;
    let big = format!(r#"{{"x":"{}"}}"#, "y".repeat(200));
    for batch in 0..20 {
        let writes = (0..500)
            .map(|i| LocalWrite::put("c", format!("k{batch}-{i}"), big.clone()))
            .collect();
        store.write(writes).await.unwrap();
    }
    for batch in 0..20 {
        let writes = (0..500)
            .map(|i| LocalWrite::put("c", format!("k{batch}-{i}"), "1"))
            .collect();
        store.write(writes).await.unwrap();
    }
    let path = crate::database_path(dir.path(), &NodeId::new("a").unwrap());
    let pages = || -> i64 {
        rusqlite::Connection::open(&path)
            .unwrap()
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap()
    };
    let before = pages();
    let vv = store.version_vector().await.unwrap();
    let outcome = store
        .compact(cbddc_core::CompactionPlan {
            horizon: vv.clone(),
            tombstone_horizon: vv,
            max_entries: 100_000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(outcome.entries, 10_000);
    // The overwritten values were most of the file: it shrinks to about half.
    assert!(pages() * 10 < before * 6, "{} pages of {before}", pages());
}
