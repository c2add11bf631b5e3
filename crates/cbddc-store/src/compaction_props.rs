//! Property: with compaction running on every store by the rules of
//! [`cbddc_core::horizons`], any interleaving of puts and deletes of a few keys, syncs
//! (with snapshots for a store behind what its peer still holds) and compaction rounds
//! converges, once everyone has synced, to the documents last-writer-wins gives over every
//! write ever made: a collected tombstone never lets an older write of its key back.

use crate::{Durability, SqliteStore, StoreOptions};
use cbddc_core::{
    CompactionPlan, DocumentStore, Hlc, Interest, LocalWrite, NodeId, PageLimits, VersionVector,
    horizons,
};
use proptest::prelude::*;
use std::collections::BTreeMap;

const STORES: usize = 3;
const KEYS: usize = 3;

#[derive(Debug, Clone)]
enum Op {
    Put(usize, usize),
    Delete(usize, usize),
    /// The second pulls from the first.
    Sync(usize, usize),
    Compact(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let s = 0..STORES;
    let k = 0..KEYS;
    prop_oneof![
        3 => (s.clone(), k.clone()).prop_map(|(s, k)| Op::Put(s, k)),
        2 => (s.clone(), k).prop_map(|(s, k)| Op::Delete(s, k)),
        4 => (s.clone(), s.clone()).prop_map(|(a, b)| Op::Sync(a, b)),
        3 => s.prop_map(Op::Compact),
    ]
}

/// Each store's view of its peers: what each reported holding, now and at its previous
/// compaction round.
#[derive(Default)]
struct Acks {
    now: BTreeMap<NodeId, VersionVector>,
    previous: BTreeMap<NodeId, VersionVector>,
}

struct World {
    stores: Vec<SqliteStore>,
    acks: Vec<Acks>,
    /// Every write ever made: its stamp, and its value (none: a delete), by key.
    writes: BTreeMap<String, Vec<(Hlc, Option<String>)>>,
    snapshots: usize,
}

fn name(i: usize) -> NodeId {
    NodeId::new(format!("s{i}")).unwrap()
}

impl World {
    async fn write(&mut self, at: usize, key: usize, value: Option<String>) {
        let key = format!("k{key}");
        let write = match &value {
            Some(v) => LocalWrite::put("c", key.clone(), v.clone()),
            None => LocalWrite::delete("c", key.clone()),
        };
        let entries = self.stores[at].write(vec![write]).await.unwrap();
        self.writes
            .entry(key)
            .or_default()
            .push((entries[0].hlc.clone(), value));
    }

    /// `to` pulls everything from `from`, by snapshot first if it is behind; each learns
    /// what the other holds.
    async fn sync(&mut self, from: usize, to: usize) {
        let (source, sink) = (&self.stores[from], &self.stores[to]);
        for _ in 0..100 {
            let have = sink.version_vector().await.unwrap();
            self.acks[from].now.insert(name(to), have.clone());
            let page = source
                .entries_missing_from(have, PageLimits::default())
                .await
                .unwrap();
            if page.behind {
                let mut after = None;
                let mut first = true;
                loop {
                    let chunk = source
                        .snapshot_chunk(
                            after.clone(),
                            PageLimits {
                                max_entries: 2,
                                max_bytes: 1 << 20,
                            },
                            Interest::all(),
                        )
                        .await
                        .unwrap();
                    let vv = if first {
                        chunk.version_vector.clone()
                    } else {
                        None
                    };
                    first = false;
                    let progress = sink
                        .apply_snapshot_chunk(name(from), vv, chunk.documents)
                        .await
                        .unwrap();
                    after = progress.after;
                    if !chunk.more {
                        break;
                    }
                }
                sink.finish_snapshot(name(from)).await.unwrap();
                self.snapshots += 1;
                continue;
            }
            if page.entries.is_empty() {
                break;
            }
            sink.apply_remote(page.entries).await.unwrap();
            if !page.more {
                break;
            }
        }
        let holder = source.version_vector().await.unwrap();
        self.acks[to].now.insert(name(from), holder);
        let have = sink.version_vector().await.unwrap();
        self.acks[from].now.insert(name(to), have);
    }

    async fn compact(&mut self, at: usize) {
        let store = &self.stores[at];
        let ours = store.version_vector().await.unwrap();
        // Every other store is a peer that holds entries back, reported or not.
        let mut now = BTreeMap::new();
        for peer in (0..STORES).filter(|p| *p != at) {
            let ack = self.acks[at].now.get(&name(peer)).cloned();
            now.insert(name(peer), ack.unwrap_or_default());
        }
        let (horizon, tombstone_horizon) = horizons(&ours, &now, &self.acks[at].previous);
        for _ in 0..100 {
            let outcome = store
                .compact(CompactionPlan {
                    horizon: horizon.clone(),
                    tombstone_horizon: tombstone_horizon.clone(),
                    max_entries: 3,
                    ..CompactionPlan::default()
                })
                .await
                .unwrap();
            if !outcome.more {
                break;
            }
        }
        self.acks[at].previous = now;
    }

    /// What last-writer-wins over every write gives.
    fn expected(&self) -> BTreeMap<String, String> {
        self.writes
            .iter()
            .filter_map(|(key, writes)| {
                let (_, value) = writes.iter().max_by(|a, b| a.0.cmp(&b.0))?;
                value.clone().map(|v| (key.clone(), v))
            })
            .collect()
    }
}

async fn documents(store: &SqliteStore) -> BTreeMap<String, String> {
    store
        .list("c", None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|d| (d.key, d.value))
        .collect()
}

async fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let mut world = World {
        stores: Vec::new(),
        acks: (0..STORES).map(|_| Acks::default()).collect(),
        writes: BTreeMap::new(),
        snapshots: 0,
    };
    for i in 0..STORES {
        let options = StoreOptions {
            durability: Durability::Normal,
            ..StoreOptions::default()
        };
        world.stores.push(
            SqliteStore::open(dir.path(), name(i), options)
                .await
                .unwrap(),
        );
    }
    for (n, op) in ops.into_iter().enumerate() {
        match op {
            Op::Put(s, k) => world.write(s, k, Some(format!("{{\"n\":{n}}}"))).await,
            Op::Delete(s, k) => world.write(s, k, None).await,
            Op::Sync(a, b) if a != b => world.sync(a, b).await,
            Op::Sync(..) => {}
            Op::Compact(s) => world.compact(s).await,
        }
    }
    // Everyone syncs with everyone, twice round, compacting between.
    for _ in 0..2 {
        for a in 0..STORES {
            for b in 0..STORES {
                if a != b {
                    world.sync(a, b).await;
                }
            }
        }
        for s in 0..STORES {
            world.compact(s).await;
        }
    }
    let expected = world.expected();
    for (i, store) in world.stores.iter().enumerate() {
        let held = documents(store).await;
        prop_assert_eq!(
            &held,
            &expected,
            "store s{} differs from last-writer-wins over every write",
            i
        );
        let stats = store.stats().await.unwrap();
        prop_assert!(
            stats.oplog_entries <= KEYS as u64,
            "s{i} keeps {} entries for {KEYS} keys after everyone acknowledged everything",
            stats.oplog_entries
        );
    }
    for store in &world.stores {
        store.close().await;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn collected_tombstones_never_let_an_older_write_back(ops in prop::collection::vec(op(), 1..40)) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(run(ops))?;
    }
}

/// The scenario the tombstone rule exists for, spelled out: s0 puts a key and s1 deletes
/// it blind (never having seen the put); s2 hears of the delete only; everyone
/// acknowledges the delete, and s2 learns what s0 holds without taking it. If s2 collected
/// the tombstone now, s0's put would bring the key back when s2 pulls from s0.
#[test]
fn a_put_older_than_a_collected_delete_stays_deleted() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let ops = vec![
            Op::Put(0, 0),
            Op::Delete(1, 0),
            Op::Sync(1, 2),
            Op::Sync(1, 0),
            Op::Sync(2, 0),
            Op::Sync(2, 1),
            Op::Compact(2),
            Op::Sync(2, 0),
            Op::Sync(2, 1),
            Op::Compact(2),
            Op::Sync(0, 2),
        ];
        run(ops).await.unwrap();
    });
}
