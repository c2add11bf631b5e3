//! Field-level merge on a node, beside whole-document writes in the same run:
//!
//! - local one-field patches of 4 KiB documents (batches of 1,000) beside whole puts of
//!   the same documents (group `field_merge`; `cargo xtask bench` prints the ratio);
//! - the bytes one entry takes on the wire: a one-field patch of a 4 KiB document beside
//!   a put of it (written to `target/cbddc-bench/field_merge.json`).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use cbddc_config::PeerNodeConfiguration;
use cbddc_core::{LocalWrite, NodeId};
use cbddc_node::Node;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use prost::Message;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const DOCUMENTS: u64 = 10_000;
const BATCH: u64 = 1_000;
const FIELDS: usize = 32;

/// A document of about 4 KiB: 32 fields of 120 characters, and a round.
fn document(round: u64) -> String {
    let mut fields = serde_json::Map::new();
    for f in 0..FIELDS {
        fields.insert(
            format!("f{f:02}"),
            format!("{f:02}{}", "v".repeat(118)).into(),
        );
    }
    fields.insert("round".into(), round.into());
    serde_json::Value::Object(fields).to_string()
}

fn key(i: u64) -> String {
    format!("doc-{:05}", i % DOCUMENTS)
}

async fn merging_node(dir: &std::path::Path) -> Node {
    let mut config = PeerNodeConfiguration::new(NodeId::new("merger").unwrap(), dir);
    config.tcp_port = 0;
    config.cluster_key = "bench-merge".into();
    let node = Node::start(config).await.unwrap();
    // Alone, nobody holds field-level entries back.
    support::field_merge_in_force(&node).await;
    for batch in 0..DOCUMENTS / BATCH {
        let writes = (0..BATCH)
            .map(|i| LocalWrite::put("docs", key(batch * BATCH + i), document(0)))
            .collect();
        node.write(writes).await.unwrap();
    }
    node
}

fn field_merge(c: &mut Criterion) {
    let runtime = support::runtime();
    let dir = tempfile::tempdir().unwrap();
    let node = runtime.block_on(merging_node(dir.path()));
    let next = AtomicU64::new(0);

    let mut group = c.benchmark_group("field_merge");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(6))
        .warm_up_time(Duration::from_secs(1));
    group.throughput(Throughput::Elements(BATCH));
    let whole = document(1);
    group.bench_function("put_batch_1000", |b| {
        b.to_async(&runtime).iter(|| {
            let first = next.fetch_add(BATCH, Ordering::Relaxed);
            let writes: Vec<_> = (first..first + BATCH)
                .map(|i| LocalWrite::put("docs", key(i), whole.clone()))
                .collect();
            let node = &node;
            async move { node.write(writes).await.unwrap() }
        })
    });
    group.bench_function("patch_batch_1000", |b| {
        b.to_async(&runtime).iter(|| {
            let first = next.fetch_add(BATCH, Ordering::Relaxed);
            let writes: Vec<_> = (first..first + BATCH)
                .map(|i| {
                    LocalWrite::patch(
                        "docs",
                        key(i),
                        format!(r#"{{"f{:02}":"patched {i}"}}"#, i % FIELDS as u64),
                    )
                })
                .collect();
            let node = &node;
            async move { node.write(writes).await.unwrap() }
        })
    });
    group.finish();

    let (put, patch) = runtime.block_on(async {
        let put = node.put("docs", "wire", &document(2)).await.unwrap();
        let patch = node
            .patch("docs", "wire", r#"{"f07":"one field"}"#)
            .await
            .unwrap();
        (put, patch)
    });
    assert!(
        matches!(patch.op, cbddc_core::Operation::Merge { .. }),
        "the patch travels as itself"
    );
    let bytes = |e: &cbddc_core::OplogEntry| cbddc_net::convert::entry_to_wire(e).encoded_len();
    let report = serde_json::json!({
        "document_bytes": document(2).len(),
        "put_entry_bytes": bytes(&put),
        "patch_entry_bytes": bytes(&patch),
        "patch_of": r#"{"f07":"one field"}"#,
    });
    support::write_report("field_merge.json", &report);
    runtime.block_on(node.shutdown());
}

criterion_group!(benches, field_merge);
criterion_main!(benches);
