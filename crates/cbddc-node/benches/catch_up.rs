//! A new node catching up with a peer that holds 100,000 documents, beside raw rusqlite
//! inserting the same 100,000 rows (document + oplog entry) in batches of 1,000 into a
//! fresh file. Both report documents per second; `cargo xtask bench` prints the ratio.
//!
//! The same with field entries: a peer whose 100,000 documents were each written by a
//! patch (field-level merge in force), so the newcomer merges every entry through a
//! field state. Its baseline is raw rusqlite inserting the rows such an entry stores: the
//! oplog entry (its field write), the document, the document's field state and its
//! change (with the paths it changed), the same bytes as the node stores.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use cbddc_config::PeerNodeConfiguration;
use cbddc_core::{KnownPeer, LocalWrite, NodeId, PeerType};
use cbddc_node::Node;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rusqlite::{Connection, params};
use std::time::{Duration, Instant};

const DOCUMENTS: usize = 100_000;
const BATCH: usize = 1_000;
const VALUE: &str = r#"{"name":"benchmark document","count":12345,"tags":["a","b","c"]}"#;

fn raw_copy(path: &std::path::Path) {
    let mut conn = Connection::open(path).unwrap();
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
    for batch in 0..DOCUMENTS / BATCH {
        let tx = conn.transaction().unwrap();
        {
            let mut op = tx
                .prepare_cached("INSERT INTO oplog VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")
                .unwrap();
            let mut doc = tx
                .prepare_cached("INSERT INTO documents VALUES (?1, ?2, ?3, ?4, ?5, ?6)")
                .unwrap();
            for i in 0..BATCH {
                let seq = (batch * BATCH + i + 1) as i64;
                let key = format!("doc-{seq:06}");
                op.execute(params!["source", seq, "docs", key, VALUE, seq, 0])
                    .unwrap();
                doc.execute(params!["docs", key, VALUE, seq, 0, "source"])
                    .unwrap();
            }
        }
        tx.commit().unwrap();
    }
}

/// The texts a field entry that creates `VALUE` stores: its oplog field column, its
/// document's field state and its change's paths.
fn field_rows_texts() -> (String, String, String) {
    use cbddc_core::field_merge::{FieldState, FieldWrite, changed_paths};
    let value: serde_json::Value = serde_json::from_str(VALUE).unwrap();
    let write = FieldWrite::Patch {
        patch: value.clone(),
        observed: Default::default(),
    };
    let stamp = cbddc_core::Hlc {
        wall_ms: 1_800_000_000_000,
        counter: 0,
        replica: cbddc_core::ReplicaId::new("0123456789abcdef0123456789abcdef").unwrap(),
    };
    let mut state = FieldState::default();
    state.apply(&stamp, &stamp.replica, &write);
    let document = state.value();
    assert_eq!(document.as_ref(), Some(&value));
    let field = cbddc_core::Operation::Merge { write }
        .to_columns()
        .1
        .unwrap();
    let paths = serde_json::json!({ "paths": changed_paths(None, document.as_ref()) });
    (
        field,
        state.to_json_beside(document.as_ref()),
        paths.to_string(),
    )
}

/// Raw rusqlite inserting what a catch-up of field entries stores, in batches of 1,000.
fn raw_field_rows(path: &std::path::Path, (field, state, paths): &(String, String, String)) {
    let mut conn = Connection::open(path).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
         CREATE TABLE documents (collection TEXT NOT NULL, key TEXT NOT NULL, value TEXT,
             hlc_wall INTEGER NOT NULL, hlc_counter INTEGER NOT NULL, hlc_node TEXT NOT NULL,
             seq INTEGER, position INTEGER,
             PRIMARY KEY (collection, key)) WITHOUT ROWID;
         CREATE TABLE oplog (origin TEXT NOT NULL, seq INTEGER NOT NULL, collection TEXT NOT NULL,
             key TEXT NOT NULL, value TEXT, hlc_wall INTEGER NOT NULL, hlc_counter INTEGER NOT NULL,
             field TEXT, PRIMARY KEY (origin, seq)) WITHOUT ROWID;
         CREATE TABLE field_states (collection TEXT NOT NULL, key TEXT NOT NULL,
             state TEXT NOT NULL, PRIMARY KEY (collection, key)) WITHOUT ROWID;
         CREATE TABLE changes (position INTEGER PRIMARY KEY, origin TEXT NOT NULL,
             seq INTEGER NOT NULL, merged TEXT);",
    )
    .unwrap();
    for batch in 0..DOCUMENTS / BATCH {
        let tx = conn.transaction().unwrap();
        {
            let mut op = tx
                .prepare_cached("INSERT INTO oplog VALUES (?1, ?2, ?3, ?4, NULL, ?5, ?6, ?7)")
                .unwrap();
            let mut doc = tx
                .prepare_cached("INSERT INTO documents VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)")
                .unwrap();
            let mut states = tx
                .prepare_cached("INSERT INTO field_states VALUES (?1, ?2, ?3)")
                .unwrap();
            let mut changes = tx
                .prepare_cached("INSERT INTO changes VALUES (?1, ?2, ?3, ?4)")
                .unwrap();
            for i in 0..BATCH {
                let seq = (batch * BATCH + i + 1) as i64;
                let key = format!("doc-{seq:06}");
                op.execute(params!["source", seq, "docs", key, seq, 0, field])
                    .unwrap();
                doc.execute(params!["docs", key, VALUE, seq, 0, "source", seq, seq])
                    .unwrap();
                states.execute(params!["docs", key, state]).unwrap();
                changes.execute(params![seq, "source", seq, paths]).unwrap();
            }
        }
        tx.commit().unwrap();
    }
}

/// A source node named `name` holding 100,000 documents, written as puts or (once
/// field-level merge is in force) as patches.
async fn holding(name: &str, dir: &std::path::Path, patches: bool) -> Node {
    let mut config = PeerNodeConfiguration::new(NodeId::new(name).unwrap(), dir);
    config.tcp_port = 0;
    config.cluster_key = "bench".into();
    let node = Node::start(config).await.unwrap();
    if patches {
        support::field_merge_in_force(&node).await;
    }
    for batch in 0..DOCUMENTS / BATCH {
        let writes = (0..BATCH)
            .map(|i| {
                let key = format!("doc-{:06}", batch * BATCH + i);
                if patches {
                    LocalWrite::patch("docs", key, VALUE)
                } else {
                    LocalWrite::put("docs", key, VALUE)
                }
            })
            .collect();
        let written = node.write(writes).await.unwrap();
        assert_eq!(
            patches,
            matches!(written[0].op, cbddc_core::Operation::Merge { .. })
        );
    }
    node
}

/// Seconds of `iterations` newcomers catching up with the node at `source_address`.
async fn newcomers(
    source: &str,
    source_address: &str,
    iterations: u64,
    named: &mut u64,
) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iterations {
        let dir = tempfile::tempdir().unwrap();
        // A fresh data dir is a fresh node key: a new name each time, or the source
        // (which pinned the last newcomer's key) rightly refuses it.
        *named += 1;
        let name = format!("newcomer-{named}");
        let mut config = PeerNodeConfiguration::new(NodeId::new(name).unwrap(), dir.path());
        config.tcp_port = 0;
        config.cluster_key = "bench".into();
        config.known_peers.push(
            KnownPeer::new(
                NodeId::new(source).unwrap(),
                source_address.to_string(),
                PeerType::StaticRemote,
            )
            .unwrap(),
        );
        let start = Instant::now();
        let node = Node::start(config).await.unwrap();
        let deadline = start + Duration::from_secs(300);
        loop {
            let vv = node.store().version_vector().await.unwrap();
            if vv.total() >= DOCUMENTS as u64 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "catch-up did not finish in 300 s"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        total += start.elapsed();
        node.shutdown().await;
    }
    total
}

fn catch_up(c: &mut Criterion) {
    let runtime = support::runtime();
    let source_dir = tempfile::tempdir().unwrap();
    let patched_dir = tempfile::tempdir().unwrap();
    let source = runtime.block_on(holding("source", source_dir.path(), false));
    let patched = runtime.block_on(holding("patched", patched_dir.path(), true));
    let source_address = source.local_addr().to_string();
    let patched_address = patched.local_addr().to_string();

    let mut group = c.benchmark_group("catch_up_100k");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(100))
        .measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Elements(DOCUMENTS as u64));
    group.bench_function("raw_sqlite_insert", |b| {
        b.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                let dir = tempfile::tempdir().unwrap();
                let start = Instant::now();
                raw_copy(&dir.path().join("raw.db"));
                total += start.elapsed();
            }
            total
        })
    });
    let field_rows = field_rows_texts();
    group.bench_function("raw_sqlite_insert_field_rows", |b| {
        b.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                let dir = tempfile::tempdir().unwrap();
                let start = Instant::now();
                raw_field_rows(&dir.path().join("raw.db"), &field_rows);
                total += start.elapsed();
            }
            total
        })
    });
    let mut named = 0u64;
    group.bench_function("node_catch_up", |b| {
        b.iter_custom(|iterations| {
            runtime.block_on(newcomers("source", &source_address, iterations, &mut named))
        })
    });
    group.bench_function("node_catch_up_field_entries", |b| {
        b.iter_custom(|iterations| {
            runtime.block_on(newcomers(
                "patched",
                &patched_address,
                iterations,
                &mut named,
            ))
        })
    });
    group.finish();
    runtime.block_on(source.shutdown());
    runtime.block_on(patched.shutdown());
}

criterion_group!(benches, catch_up);
criterion_main!(benches);
