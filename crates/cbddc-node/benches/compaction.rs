//! A node that lives long: 1,000,000 overwrites spread over 10,000 keys through a running
//! node (its background compaction on, as shipped), then its oplog entries per live
//! document and its database file beside a fresh node's holding the same 10,000
//! documents, written once. Both databases are closed (checkpointed) before measuring.
//!
//! Then what the change feed's kept deletes cost on disk: the same keys written and
//! deleted on a node that keeps deletes in its feed (the default retention) and on one
//! that does not (`feed_retention_ms = 0`), both compacted.
//!
//! Then the same for documents merged field by field: 1,000,000 one-field patches of
//! random fields on 10,000 documents of 10 fields, then oplog entries per live field and
//! the file beside a fresh node's holding the same documents.
//!
//! Prints the figures and writes them to `target/cbddc-bench/compaction.json`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;
use support::free_port;

use cbddc_config::PeerNodeConfiguration;
use cbddc_core::{LocalWrite, NodeId};
use cbddc_node::Node;
use std::time::{Duration, Instant};

const BATCH: usize = 1_000;

fn value(round: usize, key: usize) -> String {
    format!(
        "{{\"key\":{key},\"round\":{round},\"payload\":\"{}\"}}",
        "x".repeat(48)
    )
}

fn config(name: &str, dir: &std::path::Path) -> PeerNodeConfiguration {
    let mut config = PeerNodeConfiguration::new(NodeId::new(name).unwrap(), dir);
    config.tcp_port = free_port();
    config.cluster_key = "bench-compaction".into();
    config
}

fn database_bytes(dir: &std::path::Path, name: &str) -> u64 {
    let path = cbddc_store::database_path(dir, &NodeId::new(name).unwrap());
    let wal = path.with_extension("db-wal");
    std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0)
        + std::fs::metadata(wal).map(|m| m.len()).unwrap_or(0)
}

/// Writes `writes` overwrites over `keys` keys (the last round leaves every key at its
/// newest value) and waits for compaction to finish; returns (entries, documents, the
/// time writing took, the time compaction needed after the last write).
async fn overwrite(
    dir: &std::path::Path,
    keys: usize,
    writes: usize,
) -> (u64, u64, Duration, Duration) {
    let node = Node::start(config("churn", dir)).await.unwrap();
    let started = Instant::now();
    let mut written = 0;
    let mut round = 0;
    while written < writes {
        for chunk in (0..keys).collect::<Vec<_>>().chunks(BATCH) {
            let batch = chunk
                .iter()
                .map(|k| LocalWrite::put("docs", format!("key-{k:05}"), value(round, *k)))
                .collect();
            node.write(batch).await.unwrap();
            written += chunk.len();
        }
        round += 1;
    }
    let wrote = started.elapsed();
    let settle = Instant::now();
    let status = settled(&node, |s| s.compaction.collectable == 0).await;
    give_back(dir, "churn").await;
    node.shutdown().await;
    (
        status.oplog_entries,
        status.documents,
        wrote,
        settle.elapsed(),
    )
}

/// Waits (bounded) for the node's compaction rounds to hand the free pages of the
/// database in `dir` back, as they do once a tenth of the file is free.
async fn give_back(dir: &std::path::Path, name: &str) {
    let path = cbddc_store::database_path(dir, &NodeId::new(name).unwrap());
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let started = Instant::now();
    loop {
        let read = |pragma: &str| -> i64 { conn.query_row(pragma, [], |r| r.get(0)).unwrap() };
        if read("PRAGMA freelist_count") * 10 <= read("PRAGMA page_count") {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the free pages were never handed back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls the node's status until `done` says compaction finished (bounded).
async fn settled(
    node: &Node,
    done: impl Fn(&cbddc_node::NodeStatus) -> bool,
) -> cbddc_node::NodeStatus {
    let started = Instant::now();
    loop {
        let status = node.status().await.unwrap();
        if done(&status) {
            return status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "compaction never caught up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Writes `keys` documents and deletes them all on a node whose feed keeps deletes for
/// `feed_retention_ms`; returns (the deletes its feed keeps, its database bytes) once
/// compaction collected every tombstone.
async fn deleted(dir: &std::path::Path, keys: usize, feed_retention_ms: u64) -> (u64, u64) {
    let mut config = config("deleter", dir);
    config.feed_retention_ms = feed_retention_ms;
    let node = Node::start(config).await.unwrap();
    for chunk in (0..keys).collect::<Vec<_>>().chunks(BATCH) {
        let batch = chunk
            .iter()
            .map(|k| LocalWrite::put("docs", format!("key-{k:05}"), value(0, *k)))
            .collect();
        node.write(batch).await.unwrap();
        let deletes = chunk
            .iter()
            .map(|k| LocalWrite::delete("docs", format!("key-{k:05}")))
            .collect();
        node.write(deletes).await.unwrap();
    }
    // Without a retention, the deletes leave the feed one round after compaction.
    let status = settled(&node, |s| {
        s.oplog_entries == 0
            && s.compaction.collectable == 0
            && (feed_retention_ms > 0 || s.feed.feed_entries == 0)
    })
    .await;
    node.shutdown().await;
    (status.feed.feed_entries, database_bytes(dir, "deleter"))
}

const MERGED_FIELDS: usize = 10;

fn merged_document(values: &[u64]) -> String {
    let fields: serde_json::Map<String, serde_json::Value> = values
        .iter()
        .enumerate()
        .map(|(f, v)| (format!("f{f}"), format!("value {v:>8}").into()))
        .collect();
    serde_json::Value::Object(fields).to_string()
}

/// `writes` one-field patches of random fields (a fixed sequence) on `keys` documents
/// of [`MERGED_FIELDS`] fields, through a node with field-level merge in force; waits
/// for compaction to finish. Returns (entries, documents, field states left, the final
/// documents, the time writing took).
async fn patched(
    dir: &std::path::Path,
    keys: usize,
    writes: usize,
) -> (u64, u64, u64, Vec<Vec<u64>>, Duration) {
    let node = Node::start(config("merger", dir)).await.unwrap();
    support::field_merge_in_force(&node).await;
    let mut documents = vec![vec![0u64; MERGED_FIELDS]; keys];
    for chunk in (0..keys).collect::<Vec<_>>().chunks(BATCH) {
        let batch = chunk
            .iter()
            .map(|k| {
                LocalWrite::put(
                    "docs",
                    format!("key-{k:05}"),
                    merged_document(&documents[*k]),
                )
            })
            .collect();
        node.write(batch).await.unwrap();
    }
    let started = Instant::now();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut written = 0;
    while written < writes {
        let batch = (0..BATCH)
            .map(|_| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let key = (rng % keys as u64) as usize;
                let field = ((rng >> 32) % MERGED_FIELDS as u64) as usize;
                written += 1;
                documents[key][field] = written as u64;
                LocalWrite::patch(
                    "docs",
                    format!("key-{key:05}"),
                    format!(r#"{{"f{field}":"value {written:>8}"}}"#),
                )
            })
            .collect();
        node.write(batch).await.unwrap();
    }
    let wrote = started.elapsed();
    let status = settled(&node, |s| {
        s.compaction.collectable == 0 && s.compaction.field_states == 0
    })
    .await;
    give_back(dir, "merger").await;
    node.shutdown().await;
    (
        status.oplog_entries,
        status.documents,
        status.compaction.field_states,
        documents,
        wrote,
    )
}

async fn fresh(dir: &std::path::Path, keys: usize) {
    let node = Node::start(config("fresh", dir)).await.unwrap();
    for chunk in (0..keys).collect::<Vec<_>>().chunks(BATCH) {
        let batch = chunk
            .iter()
            .map(|k| LocalWrite::put("docs", format!("key-{k:05}"), value(0, *k)))
            .collect();
        node.write(batch).await.unwrap();
    }
    node.shutdown().await;
}

fn main() {
    // `cargo test --benches` runs this without --bench: keep that quick.
    let full = std::env::args().any(|a| a == "--bench");
    let (keys, writes) = if full {
        (10_000, 1_000_000)
    } else {
        (1_000, 20_000)
    };
    let runtime = support::runtime();
    let dir = tempfile::tempdir().unwrap();
    let (entries, documents, wrote, settled) =
        runtime.block_on(overwrite(&dir.path().join("churn"), keys, writes));
    runtime.block_on(fresh(&dir.path().join("fresh"), keys));
    let deletes = if full { 100_000 } else { 5_000 };
    let (kept, kept_bytes) = runtime.block_on(deleted(
        &dir.path().join("kept"),
        deletes,
        7 * 24 * 3_600_000,
    ));
    let (dropped, dropped_bytes) =
        runtime.block_on(deleted(&dir.path().join("dropped"), deletes, 0));
    assert_eq!((kept, dropped), (deletes as u64, 0));
    let (merged_entries, merged_documents, states, final_documents, patching) =
        runtime.block_on(patched(&dir.path().join("merger"), keys, writes));
    runtime.block_on(async {
        let node = Node::start(config("fresh-merged", &dir.path().join("fresh-merged")))
            .await
            .unwrap();
        for (start, chunk) in final_documents.chunks(BATCH).enumerate() {
            let batch = chunk
                .iter()
                .enumerate()
                .map(|(i, values)| {
                    LocalWrite::put(
                        "docs",
                        format!("key-{:05}", start * BATCH + i),
                        merged_document(values),
                    )
                })
                .collect();
            node.write(batch).await.unwrap();
        }
        node.shutdown().await;
    });
    let merged_bytes = database_bytes(&dir.path().join("merger"), "merger");
    let fresh_merged_bytes = database_bytes(&dir.path().join("fresh-merged"), "fresh-merged");
    let churned = database_bytes(&dir.path().join("churn"), "churn");
    let fresh = database_bytes(&dir.path().join("fresh"), "fresh");
    assert_eq!(documents, keys as u64);
    let report = serde_json::json!({
        "keys": keys,
        "writes": writes,
        "oplog_entries": entries,
        "documents": documents,
        "entries_per_document": entries as f64 / documents as f64,
        "database_bytes": churned,
        "fresh_database_bytes": fresh,
        "size_ratio": churned as f64 / fresh as f64,
        "writes_per_second": writes as f64 / wrote.as_secs_f64(),
        "compaction_settle_ms": settled.as_secs_f64() * 1e3,
        "feed_deletes": deletes,
        "feed_kept_bytes": kept_bytes,
        "feed_dropped_bytes": dropped_bytes,
        "feed_bytes_per_kept_delete": (kept_bytes as f64 - dropped_bytes as f64) / deletes as f64,
        "settings": "one in-process node, synchronous=FULL, batches of 1,000, background compaction as shipped",
        "patches": writes,
        "patched_documents": merged_documents,
        "patched_fields": merged_documents * MERGED_FIELDS as u64,
        "patched_oplog_entries": merged_entries,
        "entries_per_live_field": merged_entries as f64 / (merged_documents * MERGED_FIELDS as u64) as f64,
        "field_states_left": states,
        "patched_database_bytes": merged_bytes,
        "fresh_patched_database_bytes": fresh_merged_bytes,
        "patched_size_ratio": merged_bytes as f64 / fresh_merged_bytes as f64,
        "patches_per_second": writes as f64 / patching.as_secs_f64(),
    });
    support::write_report("compaction.json", &report);
}
