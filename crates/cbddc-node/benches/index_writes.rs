//! Writes into a growing collection with two indexes, the way a long-running node takes
//! them: 500,000 documents in batches of 1,000, with a query on the collection after
//! every 10 batches (each query has the writer fold the pending writes into the indexes
//! first, see `cbddc_store::indexes`), beside the same writes into a collection without
//! an index. Documents per second for each 100,000, and their ratio: it stays about the
//! same as the collection grows, where moving each entry in the write's own transaction
//! fell to a quarter of the unindexed rate at 500,000 documents.
//!
//! Prints the figures and writes them to `target/cbddc-bench/index_writes.json`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;
use support::{free_port, write_report};

use cbddc_config::{PeerNodeConfiguration, StaticProvider};
use cbddc_core::{IndexDefinition, LocalWrite, NodeId};
use cbddc_node::{Node, Query};
use std::sync::Arc;
use std::time::Instant;

const STEPS: u64 = 5;
const STEP: u64 = 100_000;
const BATCH: u64 = 1_000;

fn document(i: u64) -> String {
    format!(
        r#"{{"shop":"s{:05}","total":{},"status":"open","payload":"{}"}}"#,
        (i * 7_919) % 10_000,
        (i * 1_000_003) % 1_000_000,
        "x".repeat(60)
    )
}

/// Documents per second of each step of STEP writes to `collection`.
async fn rates(node: &Node, collection: &str, indexed: bool) -> Vec<f64> {
    let mut rates = Vec::new();
    for step in 0..STEPS {
        let started = Instant::now();
        for batch in 0..STEP / BATCH {
            let base = step * STEP + batch * BATCH;
            let writes = (base..base + BATCH)
                .map(|i| LocalWrite::put(collection, format!("k{i:07}"), document(i)))
                .collect();
            node.write(writes).await.unwrap();
            if indexed && batch % 10 == 9 {
                let query = Query::parse(r#"{"shop":"s00000"}"#, &[], 1).unwrap();
                let found = node.find(collection, &query, None).await.unwrap();
                assert!(found.plan.starts_with("index"), "{}", found.plan);
            }
        }
        rates.push(STEP as f64 / started.elapsed().as_secs_f64());
    }
    rates
}

fn main() {
    let runtime = support::runtime();
    let dir = tempfile::tempdir().unwrap();
    runtime.block_on(async {
        let mut config = PeerNodeConfiguration::new(NodeId::new("writes").unwrap(), dir.path());
        config.tcp_port = free_port();
        config.cluster_key = "bench-index-writes".into();
        config.indexes = vec![
            IndexDefinition::new("indexed", &["shop"]),
            IndexDefinition::new("indexed", &["total"]),
        ];
        let provider = Arc::new(StaticProvider::new(config).unwrap());
        let node = Node::start_with_provider(provider).await.unwrap();
        let plain = rates(&node, "plain", false).await;
        let indexed = rates(&node, "indexed", true).await;
        node.shutdown().await;
        let mut steps = Vec::new();
        for (i, (plain, indexed)) in plain.iter().zip(&indexed).enumerate() {
            let documents = (i as u64 + 1) * STEP;
            eprintln!(
                "up to {documents} documents: {indexed:.0}/s with two indexes, {plain:.0}/s without ({:.0}%)",
                100.0 * indexed / plain
            );
            steps.push(serde_json::json!({
                "documents": documents,
                "two_indexes_per_second": indexed,
                "no_index_per_second": plain,
                "ratio": indexed / plain,
            }));
        }
        write_report(
            "index_writes.json",
            &serde_json::json!({ "batch": BATCH, "query_every_batches": 10, "steps": steps }),
        );
    });
}
