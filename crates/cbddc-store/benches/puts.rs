//! Local put throughput and latency of the store, beside raw rusqlite doing the same
//! rows (document upsert + oplog append) on the same kind of file (WAL, synchronous=FULL).
//! `cargo xtask bench` prints the ratios.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use cbddc_core::{DocumentStore, LocalWrite, NodeId};
use cbddc_store::{SqliteStore, StoreOptions};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rusqlite::{Connection, params};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const BATCH: usize = 1_000;
const CONCURRENT_TASKS: usize = 64;
const PER_TASK: usize = 16;
const VALUE: &str = r#"{"name":"benchmark document","count":12345,"tags":["a","b","c"]}"#;

/// The same two tables as the store, written without any of its machinery.
fn raw_connection(path: &std::path::Path) -> Connection {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
         CREATE TABLE documents (collection TEXT NOT NULL, key TEXT NOT NULL, value TEXT,
             hlc_wall INTEGER NOT NULL, hlc_counter INTEGER NOT NULL, hlc_node TEXT NOT NULL,
             PRIMARY KEY (collection, key)) WITHOUT ROWID;
         CREATE TABLE oplog (origin TEXT NOT NULL, seq INTEGER NOT NULL, collection TEXT NOT NULL,
             key TEXT NOT NULL, value TEXT, hlc_wall INTEGER NOT NULL, hlc_counter INTEGER NOT NULL,
             PRIMARY KEY (origin, seq)) WITHOUT ROWID;",
    )
    .unwrap();
    conn
}

fn raw_insert(conn: &mut Connection, seq: &mut i64, rows: usize) {
    let tx = conn.transaction().unwrap();
    {
        let mut op = tx
            .prepare_cached("INSERT INTO oplog VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")
            .unwrap();
        let mut doc = tx
            .prepare_cached(
                "INSERT INTO documents VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (collection, key)
                 DO UPDATE SET value = excluded.value, hlc_wall = excluded.hlc_wall,
                 hlc_counter = excluded.hlc_counter, hlc_node = excluded.hlc_node",
            )
            .unwrap();
        for _ in 0..rows {
            *seq += 1;
            let key = format!("k{}", *seq);
            op.execute(params!["bench", *seq, "docs", key, VALUE, *seq, 0])
                .unwrap();
            doc.execute(params!["docs", key, VALUE, *seq, 0, "bench"])
                .unwrap();
        }
    }
    tx.commit().unwrap();
}

fn puts(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        runtime
            .block_on(SqliteStore::open(
                dir.path(),
                NodeId::new("bench").unwrap(),
                StoreOptions::default(),
            ))
            .unwrap(),
    );
    let mut raw = raw_connection(&dir.path().join("raw.db"));
    let mut raw_seq = 0i64;
    let counter = Arc::new(AtomicU64::new(0));
    let next_key = {
        let counter = counter.clone();
        move || format!("k{}", counter.fetch_add(1, Ordering::Relaxed))
    };

    let mut group = c.benchmark_group("puts");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1));

    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("raw_sqlite_batch_1000", |b| {
        b.iter(|| raw_insert(&mut raw, &mut raw_seq, BATCH))
    });
    group.bench_function("store_batch_1000", |b| {
        b.to_async(&runtime).iter(|| {
            let writes: Vec<_> = (0..BATCH)
                .map(|_| LocalWrite::put("docs", next_key(), VALUE))
                .collect();
            let store = store.clone();
            async move { store.write(writes).await.unwrap() }
        })
    });

    group.throughput(Throughput::Elements(1));
    group.bench_function("raw_sqlite_single", |b| {
        b.iter(|| raw_insert(&mut raw, &mut raw_seq, 1))
    });
    group.bench_function("store_single_put", |b| {
        b.to_async(&runtime).iter(|| {
            let store = store.clone();
            let key = next_key();
            async move {
                store
                    .write(vec![LocalWrite::put("docs", key, VALUE)])
                    .await
                    .unwrap()
            }
        })
    });

    group.throughput(Throughput::Elements((CONCURRENT_TASKS * PER_TASK) as u64));
    group.bench_function("store_concurrent_64_tasks", |b| {
        b.to_async(&runtime).iter(|| {
            let store = store.clone();
            let counter = counter.clone();
            async move {
                let mut tasks = Vec::with_capacity(CONCURRENT_TASKS);
                for _ in 0..CONCURRENT_TASKS {
                    let store = store.clone();
                    let counter = counter.clone();
                    tasks.push(tokio::spawn(async move {
                        for _ in 0..PER_TASK {
                            let key = format!("k{}", counter.fetch_add(1, Ordering::Relaxed));
                            store
                                .write(vec![LocalWrite::put("docs", key, VALUE)])
                                .await
                                .unwrap();
                        }
                    }));
                }
                for task in tasks {
                    task.await.unwrap();
                }
            }
        })
    });
    group.finish();
    runtime.block_on(store.close());
}

criterion_group!(benches, puts);
criterion_main!(benches);
