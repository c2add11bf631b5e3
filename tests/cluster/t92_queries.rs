//! Queries through the public API: random selectors on 20,000 documents of nested fields
//! and mixed types return exactly what the test's own filter gives, in the requested
//! order, read through indexes and by scans alike, and paging with cursors while writes
//! go on skips and repeats nothing that did not change.

use cbddc_core::LocalWrite;
use cbddc_node::{NodeError, Query, Sort};
use cbddc_tests::TestNode;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};

const DOCUMENTS: usize = 20_000;
const QUERIES: usize = 200;

/// A small deterministic generator (xorshift): the same documents and queries each run.
struct Dice(u64);

impl Dice {
    fn roll(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }

    fn scalar(&mut self) -> Value {
        match self.roll(5) {
            0 => Value::Null,
            1 => json!(self.roll(2) == 0),
            2 => json!(self.roll(10) as i64 - 5),
            3 => json!(["a", "b", "c", "ab"][self.roll(4) as usize]),
            _ => json!(self.roll(100) as f64 / 10.0),
        }
    }

    fn document(&mut self) -> Value {
        let mut doc = serde_json::Map::new();
        for name in ["a", "c"] {
            if self.roll(5) > 0 {
                doc.insert(name.into(), self.scalar());
            }
        }
        if self.roll(4) > 0 {
            doc.insert("nested".into(), json!({ "b": self.scalar() }));
        }
        Value::Object(doc)
    }
}

/// The documented order, written out apart for the types generated here.
fn rank(v: Option<&Value>) -> (u8, f64, &str) {
    match v {
        None => (0, 0.0, ""),
        Some(Value::Null) => (1, 0.0, ""),
        Some(Value::Bool(false)) => (2, 0.0, ""),
        Some(Value::Bool(true)) => (3, 0.0, ""),
        Some(Value::Number(n)) => (4, n.as_f64().unwrap(), ""),
        Some(Value::String(s)) => (5, 0.0, s),
        Some(other) => panic!("not generated: {other}"),
    }
}

fn cmp(a: Option<&Value>, b: Option<&Value>) -> std::cmp::Ordering {
    let (x, y) = (rank(a), rank(b));
    x.0.cmp(&y.0)
        .then(x.1.total_cmp(&y.1))
        .then_with(|| x.2.cmp(y.2))
}

fn field<'a>(doc: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(doc, |v, p| v.as_object()?.get(p))
}

fn holds(doc: &Value, path: &str, op: &str, operand: &Value) -> bool {
    use std::cmp::Ordering::*;
    let f = field(doc, path);
    let o = cmp(f, Some(operand));
    match op {
        "$eq" => o == Equal,
        "$ne" => o != Equal,
        "$gt" => f.is_some() && o == Greater,
        "$gte" => f.is_some() && o != Less,
        "$lt" => f.is_some() && o == Less,
        "$lte" => f.is_some() && o != Greater,
        "$exists" => f.is_some() == operand.as_bool().unwrap(),
        _ => unreachable!(),
    }
}

/// The entries a plan says it read ("…, 51 entries read, …").
fn entries_read(plan: &str) -> usize {
    plan.split(" entr")
        .next()
        .and_then(|before| before.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(usize::MAX)
}

/// Every page of `query` on `collection`, and how the node said it ran each.
async fn all_pages(
    node: &TestNode,
    collection: &str,
    query: &Query,
    mut between: impl AsyncFnMut(),
) -> Result<(Vec<String>, Vec<String>), NodeError> {
    let mut keys = Vec::new();
    let mut plans = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..DOCUMENTS + 1 {
        let page = node
            .node()
            .find(collection, query, after.as_deref())
            .await?;
        plans.push(page.plan);
        keys.extend(page.documents.into_iter().map(|d| d.key));
        between().await;
        match page.next {
            Some(cursor) => after = Some(cursor),
            None => break,
        }
    }
    Ok((keys, plans))
}

/// Polls until no index of `node` is being built.
async fn indexes_built(node: &TestNode) {
    for _ in 0..600 {
        let status = node.node().status().await.unwrap();
        if status.indexes.iter().all(|i| i.building.is_none()) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the indexes were not built within a minute");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_queries_return_what_a_filter_gives_in_order_and_pages_stay_stable() {
    use cbddc_core::IndexDefinition;
    // `items` has indexes (one declared before the documents, the others built after
    // them, in the background, one of them covering); `plain` holds the same documents
    // and none.
    let mut node = TestNode::spawn("query-node", |config| {
        config.indexes = vec![IndexDefinition::new("items", &["a"])];
    })
    .await;
    let mut dice = Dice(0x5eed_1234_abcd_ef01);
    let mut documents: BTreeMap<String, Value> = BTreeMap::new();
    for chunk in (0..DOCUMENTS).collect::<Vec<_>>().chunks(1_000) {
        let mut writes = Vec::new();
        for i in chunk {
            let (key, doc) = (format!("k{i:05}"), dice.document());
            documents.insert(key.clone(), doc.clone());
            writes.push(LocalWrite::put("items", key.clone(), doc.to_string()));
            writes.push(LocalWrite::put("plain", key, doc.to_string()));
        }
        node.node().write(writes).await.unwrap();
    }
    // Added live: built in the background from the documents already held.
    node.reconfigure(|config| {
        config
            .indexes
            .push(IndexDefinition::new("items", &["nested.b"]));
        config
            .indexes
            .push(IndexDefinition::new("items", &["c", "a"]).covering_documents());
    });
    cbddc_tests::wait_until(
        "the new indexes are declared",
        std::time::Duration::from_secs(30),
        || async { node.node().status().await.unwrap().indexes.len() == 3 },
    )
    .await;
    indexes_built(&node).await;
    let mut indexed = 0;
    let paths = ["a", "c", "nested.b"];
    let ops = ["$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$exists"];
    for round in 0..QUERIES {
        let (p1, o1) = (paths[dice.roll(3) as usize], ops[dice.roll(7) as usize]);
        let (p2, o2) = (paths[dice.roll(3) as usize], ops[dice.roll(7) as usize]);
        let operand = |dice: &mut Dice, op: &str| {
            if op == "$exists" {
                json!(dice.roll(2) == 0)
            } else {
                dice.scalar()
            }
        };
        let (v1, v2) = (operand(&mut dice, o1), operand(&mut dice, o2));
        let either = dice.roll(2) == 0;
        let selector = if either {
            json!({"$or": [{p1: {o1: v1}}, {p2: {o2: v2}}]})
        } else {
            json!({"$and": [{p1: {o1: v1}}, {p2: {o2: v2}}]})
        };
        let sort_path = paths[dice.roll(3) as usize];
        let descending = dice.roll(2) == 0;
        let sort = Sort::parse(&format!(
            "{sort_path}:{}",
            if descending { "desc" } else { "asc" }
        ))
        .unwrap();
        let limit = [10_000, 10_000, 10_000, 4_000][round % 4];
        let query = Query::parse(&selector.to_string(), &[sort], limit).unwrap();

        let mut expected: Vec<(&String, &Value)> = documents
            .iter()
            .filter(|(_, d)| {
                let (a, b) = (holds(d, p1, o1, &v1), holds(d, p2, o2, &v2));
                if either { a || b } else { a && b }
            })
            .collect();
        expected.sort_by(|(ka, a), (kb, b)| {
            let o = cmp(field(a, sort_path), field(b, sort_path));
            (if descending { o.reverse() } else { o }).then_with(|| ka.cmp(kb))
        });
        let expected: Vec<String> = expected.into_iter().map(|(k, _)| k.clone()).collect();
        let (found, plans) = all_pages(&node, "items", &query, async || {})
            .await
            .unwrap();
        let plan = &plans[0];
        assert_eq!(
            found, expected,
            "{selector} sorted by {sort_path} desc={descending}, {plan}"
        );
        if plan.starts_with("index") {
            indexed += 1;
        }
        // The scan gives the same (every fourth query: a scan reads the whole collection).
        if round % 4 == 0 {
            let (scanned, plans) = all_pages(&node, "plain", &query, async || {})
                .await
                .unwrap();
            let plan = &plans[0];
            assert!(plan.starts_with("a scan"), "{plan}");
            assert_eq!(scanned, expected, "{selector} by a scan");
        }
    }
    assert!(
        indexed > QUERIES / 3,
        "only {indexed} of {QUERIES} queries read an index"
    );

    // Equalities on every field of an index read their documents in key order: each page
    // starts at the cursor's key and reads at most one more than its limit per range.
    for (selector, values) in [
        (json!({"a": 1}), vec![json!(1)]),
        (
            json!({"a": {"$in": [1, "ab", 1.0]}}),
            vec![json!(1), json!("ab")],
        ),
    ] {
        let query = Query::parse(&selector.to_string(), &[], 50).unwrap();
        let expected: Vec<&String> = documents
            .iter()
            .filter(|(_, d)| {
                values
                    .iter()
                    .any(|v| cmp(field(d, "a"), Some(v)) == std::cmp::Ordering::Equal)
            })
            .map(|(k, _)| k)
            .collect();
        assert!(expected.len() > 200, "{selector}: {}", expected.len());
        let (keys, plans) = all_pages(&node, "items", &query, async || {})
            .await
            .unwrap();
        for plan in &plans {
            assert!(
                entries_read(plan) <= values.len() * 51,
                "{selector}: {plan}"
            );
        }
        assert_eq!(keys.iter().collect::<Vec<_>>(), expected, "{selector}");
    }

    // Sorted by the fields of an index after its equalities, a query reads that index in
    // its order. Ascending, each page of 50 reads one more entry than it returns, not the
    // collection. Descending, equal values come by rising key while the index gives them
    // by falling key: the page that reaches a value reads all of its documents, and the
    // next page reads the rest of the cursor's value upwards from its key.
    for (selector, descending) in [
        (json!({}), false),
        (json!({"c": 2}), false),
        (json!({}), true),
        (json!({"c": 2}), true),
    ] {
        let sort = Sort::parse(if descending { "a:desc" } else { "a" }).unwrap();
        let query = Query::parse(&selector.to_string(), &[sort], 50).unwrap();
        let mut expected: Vec<(&String, &Value)> = documents
            .iter()
            .filter(|(_, d)| {
                selector
                    .get("c")
                    .is_none_or(|c| cmp(field(d, "c"), Some(c)) == std::cmp::Ordering::Equal)
            })
            .collect();
        expected.sort_by(|(ka, a), (kb, b)| {
            let o = cmp(field(a, "a"), field(b, "a"));
            (if descending { o.reverse() } else { o }).then_with(|| ka.cmp(kb))
        });
        let expected: Vec<&String> = expected.into_iter().map(|(k, _)| k).collect();
        assert!(expected.len() > 200, "{selector}: {}", expected.len());
        let (keys, plans) = all_pages(&node, "items", &query, async || {})
            .await
            .unwrap();
        for plan in &plans {
            assert!(plan.contains("in the sort's order"), "{selector}: {plan}");
            assert!(
                descending || entries_read(plan) <= 51,
                "{selector} desc={descending}: {plan}"
            );
        }
        let pages = plans.len();
        let read_in_all: usize = plans.iter().map(|plan| entries_read(plan)).sum();
        assert_eq!(
            keys.iter().collect::<Vec<_>>(),
            expected,
            "{selector} sorted by a desc={descending}"
        );
        // Each run of one value is read whole once (by the page that reaches it from
        // above); the pages within it read the rest of the cursor's value upwards.
        assert!(
            read_in_all <= 2 * expected.len() + pages * 2 * 51,
            "{selector} desc={descending}: {read_in_all} entries for {pages} pages"
        );
    }

    // Paging while writes change some documents: every unchanged one exactly once.
    let query = Query::parse(
        r#"{"a": {"$exists": true}}"#,
        &[Sort::parse("a").unwrap()],
        1_000,
    )
    .unwrap();
    let mut changed = BTreeSet::new();
    let mut n = 0usize;
    let (seen, plans) = all_pages(&node, "items", &query, async || {
        for _ in 0..20 {
            n += 1;
            let key = format!("k{:05}", (n * 7919) % DOCUMENTS);
            let doc = json!({"a": (n % 11) as i64 - 5});
            node.node()
                .put("items", &key, &doc.to_string())
                .await
                .unwrap();
            changed.insert(key);
        }
    })
    .await
    .unwrap();
    assert!(plans[0].starts_with("index items(a)"), "{}", plans[0]);
    let matching_unchanged: Vec<&String> = documents
        .iter()
        .filter(|(k, d)| !changed.contains(*k) && field(d, "a").is_some())
        .map(|(k, _)| k)
        .collect();
    assert!(!matching_unchanged.is_empty());
    for key in matching_unchanged {
        assert_eq!(seen.iter().filter(|s| *s == key).count(), 1, "{key}");
    }

    // Refusals name the part.
    let cursor_of_another = {
        let other = Query::parse(r#"{"c": 1}"#, &[], 1).unwrap();
        node.node().find("items", &other, None).await.unwrap().next
    };
    if let Some(cursor) = cursor_of_another {
        let refused = node
            .node()
            .find("items", &query, Some(&cursor))
            .await
            .unwrap_err();
        assert!(refused.to_string().contains("another query"), "{refused}");
    }
    let refused = Query::parse(r#"{"a": {"$near": 1}}"#, &[], 10).unwrap_err();
    assert!(refused.to_string().contains("$near at a"), "{refused}");
}

/// A query no index serves names the index that would, with the configuration that
/// declares it; declared, that index serves the query in its sort's order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_no_index_serves_names_the_index_that_would() {
    use cbddc_core::IndexDefinition;
    let mut node = TestNode::spawn("advised-node", |_| {}).await;
    let writes = (0..2_000)
        .map(|i| {
            let doc = json!({"shop": format!("s{}", i % 20), "total": i % 97});
            LocalWrite::put("items", format!("k{i:05}"), doc.to_string())
        })
        .collect();
    node.node().write(writes).await.unwrap();
    let query = Query::parse(r#"{"shop": "s3"}"#, &[Sort::parse("total").unwrap()], 10).unwrap();

    let scanned = node.node().find("items", &query, None).await.unwrap();
    assert!(
        scanned.plan.starts_with("a scan of items"),
        "{}",
        scanned.plan
    );
    assert!(
        scanned.plan.ends_with(
            r#"; an index on items(shop, total) would serve it: [[indexes]] collection = "items", fields = ["shop", "total"]"#
        ),
        "{}",
        scanned.plan
    );

    node.reconfigure(|config| {
        config.indexes = vec![IndexDefinition::new("items", &["shop", "total"])];
    });
    cbddc_tests::wait_until(
        "the advised index is declared",
        std::time::Duration::from_secs(30),
        || async { node.node().status().await.unwrap().indexes.len() == 1 },
    )
    .await;
    indexes_built(&node).await;
    let served = node.node().find("items", &query, None).await.unwrap();
    assert!(
        served
            .plan
            .starts_with("index items(shop, total): 1 range in the sort's order, 11 entries read"),
        "{}",
        served.plan
    );
    assert!(!served.plan.contains("would serve"), "{}", served.plan);
    let keys = |found: &cbddc_node::Found| {
        found
            .documents
            .iter()
            .map(|d| d.key.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(keys(&served), keys(&scanned));
    assert_eq!(served.documents.len(), 10);

    // Writes after it are folded into the index once writes stop, with no query asking.
    let more = (2_000..2_050)
        .map(|i| {
            let doc = json!({"shop": "s3", "total": -1 - i});
            LocalWrite::put("items", format!("k{i:05}"), doc.to_string())
        })
        .collect();
    node.node().write(more).await.unwrap();
    cbddc_tests::wait_until(
        "the writes are folded in while no query asks",
        std::time::Duration::from_secs(30),
        || async {
            let status = node.node().status().await.unwrap();
            status.indexes.iter().all(|i| i.pending == 0)
        },
    )
    .await;
    let first = node.node().find("items", &query, None).await.unwrap();
    assert_eq!(
        first.documents[0].key, "k02049",
        "the lowest total comes first"
    );
}

/// `Node::watch_query`: the current matches enter first; puts, patches and deletes, here
/// and from a peer, enter, stay and leave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_query_follows_documents_in_and_out_of_its_result() {
    use cbddc_node::{FeedStart, Match};
    let (a, b) = cbddc_tests::two_peers("live-a", "live-b").await;
    a.node()
        .put("orders", "o1", r#"{"status":"open"}"#)
        .await
        .unwrap();
    a.node()
        .put("orders", "o2", r#"{"status":"closed"}"#)
        .await
        .unwrap();
    let query = Query::parse(r#"{"status":"open"}"#, &[], 1).unwrap();
    let mut live = a
        .node()
        .watch_query("orders", query, FeedStart::Current)
        .await
        .unwrap();
    let mut next = async || {
        let change = tokio::time::timeout(std::time::Duration::from_secs(20), live.next())
            .await
            .expect("a change within 20 s")
            .unwrap()
            .unwrap();
        (change.key, change.matched)
    };
    assert_eq!(next().await, ("o1".into(), Match::Enter));
    b.node()
        .put("orders", "o3", r#"{"status":"open"}"#)
        .await
        .unwrap();
    assert_eq!(next().await, ("o3".into(), Match::Enter));
    a.node().patch("orders", "o1", r#"{"n":1}"#).await.unwrap();
    assert_eq!(next().await, ("o1".into(), Match::Stay));
    b.node()
        .put("orders", "o2", r#"{"status":"closed","n":2}"#)
        .await
        .unwrap();
    a.node()
        .patch("orders", "o1", r#"{"status":"closed"}"#)
        .await
        .unwrap();
    assert_eq!(
        next().await,
        ("o1".into(), Match::Leave),
        "o2 never matched: no line"
    );
    b.node().delete("orders", "o3").await.unwrap();
    assert_eq!(next().await, ("o3".into(), Match::Leave));
}
