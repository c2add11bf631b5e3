use cbddc_core::LocalWrite;
use cbddc_tests::{mesh, wait_until};
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_interested_in_one_collection_never_stores_another() {
    let nodes = mesh(&["coll-a", "coll-b", "coll-c"], |name, config| {
        if name == "coll-b" {
            config.collections = Some(["users".to_string()].into());
        }
    })
    .await;
    let [a, b, c] = &nodes[..] else {
        unreachable!()
    };
    // Interleaved, so every entry of another collection is a gap in coll-b's history.
    let mut writes = Vec::new();
    for i in 0..30 {
        let collection = if i % 3 == 0 { "users" } else { "orders" };
        writes.push(LocalWrite::put(
            collection,
            format!("k{i:02}"),
            i.to_string(),
        ));
    }
    a.node().write(writes).await.unwrap();
    a.node().delete("orders", "k01").await.unwrap();
    b.node().put("users", "from-b", "1").await.unwrap();
    let err = b.node().put("orders", "from-b", "1").await.unwrap_err();
    assert!(
        err.to_string()
            .contains("replicates only the collections users"),
        "{err}"
    );

    wait_until(
        "every node to converge on what it replicates",
        DEADLINE,
        || async {
            a.documents("users").await.len() == 11
                && b.documents("users").await == a.documents("users").await
                && c.documents("users").await == a.documents("users").await
                && c.documents("orders").await == a.documents("orders").await
                && a.documents("orders").await.len() == 19
        },
    )
    .await;
    assert!(b.documents("orders").await.is_empty());
    let stats = b.node().store().stats().await.unwrap();
    assert_eq!(
        stats.oplog_entries, 11,
        "coll-b's oplog holds users' entries only"
    );
    // coll-b counts itself as holding all of coll-a's history: nothing more to ask for.
    let vv_a = a.node().store().version_vector().await.unwrap();
    let vv_b = b.node().store().version_vector().await.unwrap();
    let origin = a.node().store().replica().clone();
    assert_eq!(vv_b.get(&origin), vv_a.get(&origin));
    // coll-c, which replicates everything, got coll-b's own write as well.
    assert!(c.node().get("users", "from-b").await.unwrap().is_some());
}
