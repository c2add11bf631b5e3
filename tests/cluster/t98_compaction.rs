//! Nodes that run for years: overwritten and deleted documents leave the oplog once every
//! peer has them, and a node away longer than the retention comes back by snapshot.

use cbddc_core::LocalWrite;
use cbddc_tests::{TestCluster, TestNode, wait_until};
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(60);
const KEYS: usize = 40;

/// `rounds` of writes on `node`: every key overwritten, and every third key of the round
/// deleted.
async fn churn(node: &TestNode, rounds: usize, tag: &str) {
    for round in 0..rounds {
        let mut writes = Vec::new();
        for key in 0..KEYS {
            let key_name = format!("k{key:03}");
            if (key + round) % 3 == 0 {
                writes.push(LocalWrite::delete("docs", key_name));
            } else {
                writes.push(LocalWrite::put(
                    "docs",
                    key_name,
                    format!("{{\"by\":\"{tag}\",\"round\":{round}}}"),
                ));
            }
        }
        node.node().write(writes).await.unwrap();
    }
}

/// Every node holds the same documents and version vector.
async fn converged(nodes: &[&TestNode]) -> bool {
    let first = nodes[0].documents("docs").await;
    let vv = nodes[0].node().store().version_vector().await.unwrap();
    for node in &nodes[1..] {
        if node.documents("docs").await != first
            || node.node().store().version_vector().await.unwrap() != vv
        {
            return false;
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overwrites_and_deletes_on_three_nodes_leave_at_most_two_entries_per_document() {
    let nodes = TestCluster::mesh(&["a", "b", "c"]).start().await;
    let [a, b, c] = &nodes[..] else {
        unreachable!()
    };
    churn(a, 10, "a").await;
    churn(b, 10, "b").await;
    churn(c, 10, "c").await;
    wait_until("the three nodes converge", DEADLINE, || async {
        converged(&[a, b, c]).await
    })
    .await;
    wait_until(
        "every node's oplog to shrink to at most two entries per document",
        DEADLINE,
        || async {
            for node in [a, b, c] {
                let status = node.node().status().await.unwrap();
                if status.oplog_entries > 2 * status.documents {
                    return false;
                }
            }
            true
        },
    )
    .await;
    for node in [a, b, c] {
        let status = node.node().status().await.unwrap();
        assert!(status.documents > 0, "some documents stay live");
        assert!(
            status.compaction.collected >= 3 * 10 * KEYS as u64 - 2 * status.documents,
            "{}: collected {} of {} writes",
            status.node_id,
            status.compaction.collected,
            3 * 10 * KEYS
        );
        assert_eq!(status.compaction.holding_back, 2, "both peers count");
    }
    assert!(
        converged(&[a, b, c]).await,
        "compaction changed no document"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_away_past_the_retention_comes_back_by_snapshot_and_converges() {
    let mut nodes = TestCluster::mesh(&["a", "b", "c"])
        .adjust(|config| config.oplog_retention_ms = 1_000)
        .start()
        .await;
    churn(&nodes[0], 3, "a").await;
    wait_until("the three nodes converge", DEADLINE, || async {
        converged(&[&nodes[0], &nodes[1], &nodes[2]]).await
    })
    .await;
    let c_config = nodes[2].config.clone();
    nodes[2].stop().await;

    // Away past the retention: a and b overwrite and delete everything c holds, and
    // collect the tombstones c never saw.
    churn(&nodes[0], 5, "a-later").await;
    churn(&nodes[1], 5, "b-later").await;
    wait_until(
        "a and b to hold back nothing for c and collect every tombstone",
        DEADLINE,
        || async {
            for node in &nodes[..2] {
                let status = node.node().status().await.unwrap();
                if status.compaction.holding_back != 1 || status.compaction.collectable > 0 {
                    return false;
                }
            }
            converged(&[&nodes[0], &nodes[1]]).await
        },
    )
    .await;
    nodes[2].restart_with(c_config).await;
    wait_until("c to converge with a and b", DEADLINE, || async {
        converged(&[&nodes[0], &nodes[1], &nodes[2]]).await
    })
    .await;
    let stepped_over = nodes[2].node().store().collected_upto().await.unwrap();
    assert!(
        !stepped_over.is_empty(),
        "c came back by snapshot, so it holds no entries up to the snapshot's vector"
    );
    // Keys deleted while c was away are gone on c too, though it never saw their
    // tombstones: the snapshot's vector covered c's old writes of them.
    assert_eq!(
        nodes[2].documents("docs").await,
        nodes[0].documents("docs").await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomer_is_bootstrapped_by_snapshot_then_by_entries() {
    let nodes = TestCluster::mesh(&["a", "b"]).start().await;
    churn(&nodes[0], 4, "a").await;
    wait_until("a and b converge and compact", DEADLINE, || async {
        converged(&[&nodes[0], &nodes[1]]).await
            && nodes[0].node().status().await.unwrap().compaction.collected > 0
    })
    .await;
    let d = TestNode::spawn("d", |config| config.known_peers = vec![nodes[0].as_peer()]).await;
    wait_until("the newcomer holds everything", DEADLINE, || async {
        converged(&[&nodes[0], &d]).await
    })
    .await;
    assert!(
        !d.node().store().collected_upto().await.unwrap().is_empty(),
        "d started from a's snapshot: a had collected entries d never had"
    );
}
