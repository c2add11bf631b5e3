//! Queries on 1,000,000 documents, each beside raw SQLite doing the same in the same run:
//!
//! - an equality on an indexed field (about 100 documents per lookup) through
//!   `Node::find`, vs a plain indexed column of a rowid table read with one prepared
//!   statement; through a plain index (each document looked up where it is stored) and
//!   through a covering one (`covering = true`: the documents are in the index), on two
//!   collections of the same documents;
//! - a range returning 1% of the collection (10,000 documents), likewise;
//! - the first page of 100 of a range sorted by its field (`ORDER BY … LIMIT 100` on the
//!   raw side), read in the index's order;
//! - writes in batches of 1,000 to a collection with two indexes, until a query has them
//!   folded into the indexes, vs writes before any index was declared (and, for the record, to a collection without index beside
//!   indexed ones), and what two indexes cost raw SQLite itself on the same writes (the
//!   floor of that ratio);
//! - the peak memory of a `find` that reads the whole collection and of `list` paging
//!   through it, on 100,000 and on 1,000,000 documents: flat means the larger is not
//!   ten times the smaller.
//!
//! Each figure is documents per second; the raw side reads the same key and JSON text
//! per document. Prints the figures and writes them to `target/cbddc-bench/queries.json`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;
use support::{free_port, memory_mib, reset_peak_rss, write_report};

use cbddc_config::{PeerNodeConfiguration, StaticProvider};
use cbddc_core::{IndexDefinition, LocalWrite, NodeId};
use cbddc_node::{Node, Query};
use rusqlite::{Connection, params};
use std::sync::Arc;
use std::time::{Duration, Instant};

const DOCUMENTS: u64 = 1_000_000;
const SMALL: u64 = 100_000;
const SHOPS: u64 = 10_000;
const RANGE: u64 = DOCUMENTS / 100;
const BATCH: u64 = 10_000;
const ROUNDS: usize = 7;

fn shop(i: u64) -> String {
    format!("s{:05}", (i * 7_919) % SHOPS)
}

/// Every total is distinct, so a range of RANGE totals holds RANGE documents.
fn total(i: u64) -> u64 {
    (i * 1_000_003) % DOCUMENTS
}

fn document(i: u64) -> String {
    format!(
        r#"{{"shop":"{}","total":{},"status":"open","payload":"{}"}}"#,
        shop(i),
        total(i),
        "x".repeat(60)
    )
}

/// A rowid table with the two fields as plain indexed columns beside the JSON text.
fn raw_database(path: &std::path::Path) -> Connection {
    let mut conn = Connection::open(path).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
         CREATE TABLE docs (id INTEGER PRIMARY KEY, key TEXT NOT NULL, shop TEXT NOT NULL,
             total INTEGER NOT NULL, value TEXT NOT NULL);",
    )
    .unwrap();
    for start in (0..DOCUMENTS).step_by(BATCH as usize) {
        raw_insert(&mut conn, "docs", start..start + BATCH);
    }
    conn.execute_batch(
        "CREATE INDEX docs_shop ON docs (shop); CREATE INDEX docs_total ON docs (total);",
    )
    .unwrap();
    conn
}

/// Rows `range` of the documents inserted into `table` in one transaction.
fn raw_insert(conn: &mut Connection, table: &str, range: std::ops::Range<u64>) {
    let tx = conn.transaction().unwrap();
    {
        let mut insert = tx
            .prepare_cached(&format!(
                "INSERT INTO {table} (key, shop, total, value) VALUES (?1, ?2, ?3, ?4)"
            ))
            .unwrap();
        for i in range {
            insert
                .execute(params![
                    format!("k{i:07}"),
                    shop(i),
                    total(i) as i64,
                    document(i)
                ])
                .unwrap();
        }
    }
    tx.commit().unwrap();
}

fn raw_read(conn: &Connection, sql: &str, bind: impl rusqlite::Params) -> usize {
    let mut stmt = conn.prepare_cached(sql).unwrap();
    let rows: Vec<(String, String)> = stmt
        .query_map(bind, |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    rows.len()
}

/// Raw SQLite's own price of two indexes: documents per second written in 10 batches of
/// 1,000 new rows to a table like the read baseline's, without and with the two indexes,
/// rounds alternating, both tables growing as the node's collections do.
fn raw_write_rates(path: &std::path::Path) -> (f64, f64) {
    let mut conn = Connection::open(path).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
         CREATE TABLE plain (id INTEGER PRIMARY KEY, key TEXT NOT NULL, shop TEXT NOT NULL,
             total INTEGER NOT NULL, value TEXT NOT NULL);
         CREATE TABLE indexed (id INTEGER PRIMARY KEY, key TEXT NOT NULL, shop TEXT NOT NULL,
             total INTEGER NOT NULL, value TEXT NOT NULL);
         CREATE INDEX indexed_shop ON indexed (shop);
         CREATE INDEX indexed_total ON indexed (total);",
    )
    .unwrap();
    let mut write = |table: &str, next: &mut u64| {
        let started = Instant::now();
        for _ in 0..10 {
            raw_insert(&mut conn, table, *next..*next + 1_000);
            *next += 1_000;
        }
        per_second(10_000, started.elapsed())
    };
    let (mut plain, mut indexed) = (Vec::new(), Vec::new());
    let (mut next_plain, mut next_indexed) = (DOCUMENTS, DOCUMENTS);
    for _ in 0..ROUNDS {
        plain.push(write("plain", &mut next_plain));
        indexed.push(write("indexed", &mut next_indexed));
    }
    (Duel::median(&mut indexed), Duel::median(&mut plain))
}

async fn load(node: &Node, collection: &str, count: u64) {
    for start in (0..count).step_by(BATCH as usize) {
        let writes = (start..start + BATCH)
            .map(|i| LocalWrite::put(collection, format!("k{i:07}"), document(i)))
            .collect();
        node.write(writes).await.unwrap();
    }
}

async fn find_count(
    node: &Node,
    collection: &str,
    selector: &str,
    limit: usize,
) -> (usize, String) {
    let query = Query::parse(selector, &[], limit).unwrap();
    let found = node.find(collection, &query, None).await.unwrap();
    (found.documents.len(), found.plan)
}

/// The best of ROUNDS rounds, documents per second: each round alternates the two sides
/// so a noisy moment hits both.
struct Duel {
    ours: Vec<f64>,
    raw: Vec<f64>,
    /// The same through covering indexes.
    covering: Vec<f64>,
}

impl Duel {
    fn new() -> Self {
        Self {
            ours: Vec::new(),
            raw: Vec::new(),
            covering: Vec::new(),
        }
    }

    /// The covering side's median, and its ratio to the raw median.
    fn covering(&mut self) -> (f64, f64) {
        let covering = Self::median(&mut self.covering);
        (covering, covering / Self::median(&mut self.raw))
    }

    fn median(values: &mut [f64]) -> f64 {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    }

    fn report(mut self) -> (f64, f64, f64) {
        let (ours, raw) = (Self::median(&mut self.ours), Self::median(&mut self.raw));
        (ours, raw, ours / raw)
    }
}

fn per_second(documents: usize, elapsed: Duration) -> f64 {
    documents as f64 / elapsed.as_secs_f64()
}

/// Peak memory above the current while `work` runs, in MiB.
async fn peak_above<F: std::future::Future<Output = ()>>(work: F) -> f64 {
    let before = memory_mib("VmRSS:");
    reset_peak_rss();
    work.await;
    memory_mib("VmHWM:") - before
}

async fn full_collection_find(node: &Node, collection: &str) -> usize {
    // Every document matches, and a page keeps 1,000: the scan reads them all.
    let query = Query::parse(r#"{"payload": {"$exists": true}}"#, &[], 1_000).unwrap();
    node.find(collection, &query, None)
        .await
        .unwrap()
        .documents
        .len()
}

async fn list_all(node: &Node, collection: &str) -> usize {
    let mut after: Option<String> = None;
    let mut seen = 0;
    loop {
        let (docs, more) = node
            .list(collection, after.as_deref(), 1_000)
            .await
            .unwrap();
        seen += docs.len();
        after = docs.last().map(|d| d.key.clone());
        if !more {
            return seen;
        }
    }
}

/// Documents per second written to `collection` in 10 batches of 1,000 new keys. With
/// `indexed`, the time includes folding the writes into the indexes: a query on the
/// collection at the end has the writer fold what is pending before it reads.
async fn write_rate(node: &Node, collection: &str, next_key: &mut u64, indexed: bool) -> f64 {
    let started = Instant::now();
    for _ in 0..10 {
        let writes = (*next_key..*next_key + 1_000)
            .map(|i| LocalWrite::put(collection, format!("k{i:07}"), document(i)))
            .collect();
        node.write(writes).await.unwrap();
        *next_key += 1_000;
    }
    if indexed {
        let query = Query::parse(r#"{"shop":"s00000"}"#, &[], 1).unwrap();
        let found = node.find(collection, &query, None).await.unwrap();
        assert!(found.plan.starts_with("index"), "{}", found.plan);
    }
    per_second(10_000, started.elapsed())
}

/// The peak memory above the current of a full-collection find, then of a full list.
async fn memory(node: &Node, collection: &str) -> (f64, f64) {
    let find = peak_above(async {
        assert_eq!(full_collection_find(node, collection).await, 1_000);
    })
    .await;
    let list = peak_above(async {
        assert!(list_all(node, collection).await > 0);
    })
    .await;
    (find, list)
}

fn main() {
    let runtime = support::runtime();
    let dir = tempfile::tempdir().unwrap();
    eprintln!("raw SQLite: {DOCUMENTS} rows, two indexed columns");
    let raw = raw_database(&dir.path().join("raw.db"));
    let (raw_writes_indexed, raw_writes_plain) = raw_write_rates(&dir.path().join("writes.db"));
    runtime.block_on(async {
        let mut config = PeerNodeConfiguration::new(NodeId::new("queries").unwrap(), dir.path());
        config.tcp_port = free_port();
        config.cluster_key = "bench-queries".into();
        let provider = Arc::new(StaticProvider::new(config.clone()).unwrap());
        let node = Node::start_with_provider(provider.clone()).await.unwrap();
        eprintln!("the node: {DOCUMENTS} documents, then {SMALL} in another collection");
        load(&node, "items", DOCUMENTS).await;
        load(&node, "covered", DOCUMENTS).await;
        load(&node, "small", SMALL).await;

        let (find_small, list_small) = memory(&node, "small").await;
        let (find_large, list_large) = memory(&node, "items").await;

        // Writes with no index at all (no index on any collection): the baseline.
        let mut next_key = DOCUMENTS;
        let mut writes = Duel::new();
        for _ in 0..ROUNDS {
            writes
                .raw
                .push(write_rate(&node, "plain", &mut next_key, false).await);
        }

        eprintln!("declaring two indexes on {DOCUMENTS} documents");
        let mut indexed = config.clone();
        indexed.indexes = vec![
            IndexDefinition::new("items", &["shop"]),
            IndexDefinition::new("items", &["total"]),
            IndexDefinition::new("covered", &["shop"]).covering_documents(),
            IndexDefinition::new("covered", &["total"]).covering_documents(),
            // Where the writes go, so the lookups keep reading the same documents.
            IndexDefinition::new("written", &["shop"]),
            IndexDefinition::new("written", &["total"]),
            IndexDefinition::new("written_covered", &["shop"]).covering_documents(),
            IndexDefinition::new("written_covered", &["total"]).covering_documents(),
        ];
        let started = Instant::now();
        provider.set(indexed).unwrap();
        loop {
            let status = node.status().await.unwrap();
            if status.indexes.len() == 8 && status.indexes.iter().all(|i| i.building.is_none()) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(600),
                "indexes not built"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let build = started.elapsed();
        eprintln!("built in {build:?}");

        let mut equality = Duel::new();
        let mut range = Duel::new();
        let mut sorted_page = Duel::new();
        let mut beside = Vec::new();
        let mut plans = Vec::new();
        for round in 0..ROUNDS as u64 {
            let shops: Vec<String> = (0..200)
                .map(|i| format!("s{:05}", (round * 200 + i) * 37 % SHOPS))
                .collect();
            let started = Instant::now();
            let mut n = 0;
            for s in &shops {
                n += raw_read(&raw, "SELECT key, value FROM docs WHERE shop = ?1", [s]);
            }
            equality.raw.push(per_second(n, started.elapsed()));
            for (collection, side) in [
                ("items", &mut equality.ours),
                ("covered", &mut equality.covering),
            ] {
                let started = Instant::now();
                let mut m = 0;
                for s in &shops {
                    let selector = format!(r#"{{"shop":"{s}"}}"#);
                    let (count, plan) = find_count(&node, collection, &selector, 10_000).await;
                    m += count;
                    if round == 0 && !plans.contains(&plan) {
                        plans.push(plan);
                    }
                }
                side.push(per_second(m, started.elapsed()));
                assert_eq!(n, m, "the same documents");
            }

            let lows: Vec<u64> = (0..5)
                .map(|i| (round * 5 + i) * 99_991 % (DOCUMENTS - RANGE))
                .collect();
            let started = Instant::now();
            let mut n = 0;
            for low in &lows {
                n += raw_read(
                    &raw,
                    "SELECT key, value FROM docs WHERE total >= ?1 AND total < ?2",
                    [*low as i64, (*low + RANGE) as i64],
                );
            }
            range.raw.push(per_second(n, started.elapsed()));
            for (collection, side) in [("items", &mut range.ours), ("covered", &mut range.covering)]
            {
                let started = Instant::now();
                let mut m = 0;
                for low in &lows {
                    let selector = format!(r#"{{"total":{{"$gte":{low},"$lt":{}}}}}"#, low + RANGE);
                    let (count, plan) =
                        find_count(&node, collection, &selector, RANGE as usize).await;
                    m += count;
                    if round == 0 && !plans.contains(&plan) {
                        plans.push(plan);
                    }
                }
                side.push(per_second(m, started.elapsed()));
                assert_eq!(n, m, "the same documents");
            }

            let lows: Vec<u64> = (0..50)
                .map(|i| (round * 50 + i) * 19_997 % DOCUMENTS)
                .collect();
            let started = Instant::now();
            let mut n = 0;
            for low in &lows {
                n += raw_read(
                    &raw,
                    "SELECT key, value FROM docs WHERE total >= ?1 ORDER BY total LIMIT 100",
                    [*low as i64],
                );
            }
            sorted_page.raw.push(per_second(n, started.elapsed()));
            for (collection, side) in [
                ("items", &mut sorted_page.ours),
                ("covered", &mut sorted_page.covering),
            ] {
                let started = Instant::now();
                let mut m = 0;
                for low in &lows {
                    let query = Query::parse(
                        &format!(r#"{{"total":{{"$gte":{low}}}}}"#),
                        &[cbddc_node::Sort::parse("total").unwrap()],
                        100,
                    )
                    .unwrap();
                    let found = node.find(collection, &query, None).await.unwrap();
                    m += found.documents.len();
                    if round == 0 && !plans.contains(&found.plan) {
                        plans.push(found.plan);
                    }
                }
                side.push(per_second(m, started.elapsed()));
                assert_eq!(n, m, "the same documents");
            }

            writes
                .ours
                .push(write_rate(&node, "written", &mut next_key, true).await);
            writes
                .covering
                .push(write_rate(&node, "written_covered", &mut next_key, true).await);
            beside.push(write_rate(&node, "plain", &mut next_key, false).await);
        }
        let (eq_covering, eq_covering_ratio) = equality.covering();
        let (range_covering, range_covering_ratio) = range.covering();
        let (sorted_covering, sorted_covering_ratio) = sorted_page.covering();
        let (writes_covering, writes_covering_ratio) = writes.covering();
        let (eq_ours, eq_raw, eq_ratio) = equality.report();
        let (range_ours, range_raw, range_ratio) = range.report();
        let (sorted_ours, sorted_raw, sorted_ratio) = sorted_page.report();
        let (writes_indexed, writes_plain, writes_ratio) = writes.report();
        let writes_beside = Duel::median(&mut beside);
        node.shutdown().await;
        write_report(
            "queries.json",
            &serde_json::json!({
                "documents": DOCUMENTS,
                "equality_per_second": eq_ours,
                "raw_equality_per_second": eq_raw,
                "equality_ratio": eq_ratio,
                "covering_equality_per_second": eq_covering,
                "covering_equality_ratio": eq_covering_ratio,
                "covering_range_per_second": range_covering,
                "covering_range_ratio": range_covering_ratio,
                "covering_sorted_page_per_second": sorted_covering,
                "covering_sorted_page_ratio": sorted_covering_ratio,
                "writes_two_covering_indexes_per_second": writes_covering,
                "writes_covering_ratio": writes_covering_ratio,
                "range_per_second": range_ours,
                "raw_range_per_second": range_raw,
                "range_ratio": range_ratio,
                "sorted_page_per_second": sorted_ours,
                "raw_sorted_page_per_second": sorted_raw,
                "sorted_page_ratio": sorted_ratio,
                "writes_two_indexes_per_second": writes_indexed,
                "writes_no_index_per_second": writes_plain,
                "writes_ratio": writes_ratio,
                "writes_beside_indexes_per_second": writes_beside,
                "raw_writes_two_indexes_per_second": raw_writes_indexed,
                "raw_writes_no_index_per_second": raw_writes_plain,
                "index_build_ms": build.as_secs_f64() * 1e3,
                // Two plain and two covering indexes on DOCUMENTS documents each.
                "index_build_per_second": 4.0 * DOCUMENTS as f64 / build.as_secs_f64(),
                "find_peak_mib_small": find_small,
                "find_peak_mib_large": find_large,
                "list_peak_mib_small": list_small,
                "list_peak_mib_large": list_large,
                "small": SMALL,
                "plans": plans,
            }),
        );
    });
}
