//! Property: any interleaving of writes, syncs, restarts, wiped data dirs and data dirs
//! copied to a second process converges, once everyone has synced, to identical
//! documents on every store, with no acknowledged write lost — except writes that only a
//! wiped store held, which nothing can bring back.

use crate::{Durability, SqliteStore, StoreOptions};
use cbddc_core::{DocumentStore, LocalWrite, NodeId, PageLimits};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::path::PathBuf;

const MACHINES: usize = 3;

#[derive(Debug, Clone)]
enum Op {
    Write(usize),
    Sync(usize, usize),
    Restart(usize),
    Wipe(usize),
    /// The first machine's data dir copied over the second's, which then runs as the
    /// first's node (a cloned VM).
    Copy(usize, usize),
}

fn op() -> impl Strategy<Value = Op> {
    let m = 0..MACHINES;
    prop_oneof![
        4 => m.clone().prop_map(Op::Write),
        4 => (m.clone(), m.clone()).prop_map(|(a, b)| Op::Sync(a, b)),
        1 => m.clone().prop_map(Op::Restart),
        1 => m.clone().prop_map(Op::Wipe),
        1 => (m.clone(), m).prop_map(|(a, b)| Op::Copy(a, b)),
    ]
}

struct Machine {
    dir: PathBuf,
    node: NodeId,
    store: Option<SqliteStore>,
}

fn options() -> StoreOptions {
    StoreOptions {
        durability: Durability::Normal,
        ..StoreOptions::default()
    }
}

impl Machine {
    async fn open(&mut self) {
        self.store = Some(
            SqliteStore::open(&self.dir, self.node.clone(), options())
                .await
                .unwrap(),
        );
    }

    async fn close(&mut self) {
        if let Some(store) = self.store.take() {
            store.close().await;
        }
    }

    fn store(&self) -> &SqliteStore {
        self.store.as_ref().unwrap()
    }
}

async fn sync(from: &SqliteStore, to: &SqliteStore) {
    for _ in 0..1_000 {
        let have = to.version_vector().await.unwrap();
        let page = from
            .entries_missing_from(have, PageLimits::default())
            .await
            .unwrap();
        if page.entries.is_empty() {
            return;
        }
        let outcome = to.apply_remote(page.entries).await.unwrap();
        if outcome.applied == 0 {
            return;
        }
    }
}

async fn holds(store: &SqliteStore, key: &str) -> bool {
    store.get("c", key).await.unwrap().is_some()
}

async fn run(ops: Vec<Op>) {
    let root = tempfile::tempdir().unwrap();
    let mut machines = Vec::new();
    for i in 0..MACHINES {
        let mut machine = Machine {
            dir: root.path().join(format!("m{i}")),
            node: NodeId::new(format!("node-{i}")).unwrap(),
            store: None,
        };
        machine.open().await;
        machines.push(machine);
    }
    // Acknowledged writes still held somewhere: key -> value.
    let mut expected: BTreeMap<String, String> = BTreeMap::new();
    for (step, op) in ops.into_iter().enumerate() {
        match op {
            Op::Write(m) => {
                let key = format!("k{step}");
                machines[m]
                    .store()
                    .write(vec![LocalWrite::put("c", key.clone(), step.to_string())])
                    .await
                    .unwrap();
                expected.insert(key, step.to_string());
            }
            Op::Sync(a, b) if a != b => sync(machines[a].store(), machines[b].store()).await,
            Op::Sync(..) => {}
            Op::Restart(m) => {
                machines[m].close().await;
                machines[m].open().await;
            }
            Op::Wipe(m) => {
                // What only this store holds is gone with its disk.
                forget_held_only_by(&machines, m, &mut expected).await;
                machines[m].close().await;
                std::fs::remove_dir_all(&machines[m].dir).unwrap();
                machines[m].open().await;
            }
            Op::Copy(from, to) if from != to => {
                // The copy overwrites `to`'s disk: what only it held is gone.
                forget_held_only_by(&machines, to, &mut expected).await;
                machines[from].close().await;
                machines[to].close().await;
                std::fs::remove_dir_all(&machines[to].dir).unwrap();
                std::fs::create_dir_all(&machines[to].dir).unwrap();
                for file in std::fs::read_dir(&machines[from].dir).unwrap() {
                    let file = file.unwrap();
                    std::fs::copy(file.path(), machines[to].dir.join(file.file_name())).unwrap();
                }
                machines[to].node = machines[from].node.clone();
                machines[from].open().await;
                machines[to].open().await;
            }
            Op::Copy(..) => {}
        }
    }
    // Everyone syncs with everyone until nothing moves.
    for _ in 0..MACHINES {
        for a in 0..MACHINES {
            for b in 0..MACHINES {
                if a != b {
                    sync(machines[a].store(), machines[b].store()).await;
                }
            }
        }
    }
    let first: Vec<(String, String)> = documents(machines[0].store()).await;
    for machine in &machines {
        assert_eq!(documents(machine.store()).await, first, "stores differ");
    }
    for (key, value) in &expected {
        assert!(
            first.contains(&(key.clone(), value.clone())),
            "acknowledged write {key} lost"
        );
    }
    for machine in &mut machines {
        machine.close().await;
    }
}

/// Drops from `expected` the writes that no machine but `m` holds.
async fn forget_held_only_by(
    machines: &[Machine],
    m: usize,
    expected: &mut BTreeMap<String, String>,
) {
    let mut gone = Vec::new();
    for key in expected.keys() {
        let mut elsewhere = false;
        for (i, other) in machines.iter().enumerate() {
            if i != m && holds(other.store(), key).await {
                elsewhere = true;
            }
        }
        if !elsewhere {
            gone.push(key.clone());
        }
    }
    for key in gone {
        expected.remove(&key);
    }
}

async fn documents(store: &SqliteStore) -> Vec<(String, String)> {
    store
        .list("c", None, 100_000)
        .await
        .unwrap()
        .into_iter()
        .map(|d| (d.key, d.value))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn restarts_wipes_and_copies_converge_and_keep_every_acknowledged_write(
        ops in proptest::collection::vec(op(), 1..40)
    ) {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(run(ops));
    }
}
