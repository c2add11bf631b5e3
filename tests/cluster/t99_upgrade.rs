//! A rolling upgrade in one process: three nodes, each in turn restarted as a build that
//! reads a new format ("next"), under writes on the nodes that run. Nothing acknowledged
//! is lost, no running node refuses a write, the format goes into force only once every
//! node reads it, and a node rolled back to a build that cannot read it is refused by its
//! peers with the reason. (`cargo xtask upgrade` runs the same against a real older
//! release's binary.)

use cbddc_tests::{TestCluster, TestNode, wait_until};
use std::collections::BTreeSet;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(30);
const FEATURE: &str = "next";

async fn write_some(node: &TestNode, step: usize, acknowledged: &mut BTreeSet<String>) {
    for i in 0..20 {
        let key = format!("{}-{step}-{i}", node.config.node_id);
        // A running node never refuses a write during the upgrade: unwrap says so.
        node.node().put("ledger", &key, "1").await.unwrap();
        acknowledged.insert(key);
    }
}

/// Whether `node` writes the new format.
async fn writes_format(node: &TestNode) -> bool {
    writes_feature(node, FEATURE).await
}

/// Whether `node` writes `feature` (it is in force there).
async fn writes_feature(node: &TestNode, feature: &str) -> bool {
    let status = node.node().status().await.unwrap();
    status.features.in_force.contains(feature)
}

/// The nodes holding the format back, as `node` names them, each with the release it
/// heard from it.
async fn holders(node: &TestNode) -> Option<BTreeSet<(String, Option<String>)>> {
    let status = node.node().status().await.unwrap();
    let pending = status
        .features
        .pending
        .iter()
        .find(|p| p.feature == FEATURE)?;
    Some(
        pending
            .held_back_by
            .iter()
            .map(|(id, release)| (id.to_string(), release.clone()))
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_upgrade_under_writes_turns_a_format_on_only_when_every_node_reads_it() {
    let names = ["up-a", "up-b", "up-c"];
    let mut nodes = TestCluster::mesh(&names).start().await;
    let mut acknowledged = BTreeSet::new();
    for step in 0..names.len() {
        // Node `step` is replaced while the others take writes.
        let (upgraded, running) = {
            let (left, right) = nodes.split_at_mut(step);
            let (this, rest) = right.split_first_mut().unwrap();
            (this, left.iter().chain(rest.iter()).collect::<Vec<_>>())
        };
        let mut written = BTreeSet::new();
        let writes = async {
            for node in &running {
                write_some(node, step, &mut written).await;
            }
        };
        tokio::join!(upgraded.restart_reading(&[FEATURE]), writes);
        acknowledged.extend(written);
        write_some(&nodes[step], step, &mut acknowledged).await;

        // The upgraded node names who holds the format back: the nodes not upgraded yet.
        let not_yet: BTreeSet<(String, Option<String>)> = names[step + 1..]
            .iter()
            .map(|n| (n.to_string(), Some(cbddc_net::RELEASE.to_string())))
            .collect();
        if !not_yet.is_empty() {
            let node = &nodes[step];
            wait_until(
                "the upgraded node to name who holds the format back",
                DEADLINE,
                || async { holders(node).await.as_ref() == Some(&not_yet) },
            )
            .await;
            assert!(!writes_format(&nodes[step]).await);
        }
        for node in &nodes {
            wait_until(
                "every acknowledged write on every node",
                DEADLINE,
                || async {
                    let held: BTreeSet<String> = node
                        .documents("ledger")
                        .await
                        .into_iter()
                        .map(|(k, _)| k)
                        .collect();
                    held.is_superset(&acknowledged)
                },
            )
            .await;
        }
    }
    for node in &nodes {
        wait_until("the format in force on every node", DEADLINE, || {
            writes_format(node)
        })
        .await;
    }

    // up-a rolled back to a build that cannot read it: its peers refuse it, saying why,
    // and the level does not fall back on them.
    nodes[0].restart_reading(&[]).await;
    let rolled_back = &nodes[0];
    wait_until(
        "the peers to refuse the rolled-back node with the reason",
        DEADLINE,
        || async {
            rolled_back
                .node()
                .status()
                .await
                .unwrap()
                .peers
                .iter()
                .filter(|p| p.node_id.as_str() != "up-a")
                .all(|p| {
                    p.last_error
                        .as_deref()
                        .is_some_and(|e| e.contains("cannot") && e.contains(FEATURE))
                })
        },
    )
    .await;
    assert!(writes_format(&nodes[1]).await && writes_format(&nodes[2]).await);
    for node in &mut nodes {
        node.stop().await;
    }
}

async fn has(node: &TestNode, key: &str, value: &str) -> bool {
    node.node()
        .get("docs", key)
        .await
        .unwrap()
        .is_some_and(|d| d.value == value)
}

/// a -- x -- c: a and x read field-level entries, c (an older build) does not. a writes
/// them (its only peer reads them); x, held back by c, relays a's writes to c only up to
/// a's first field-level entry: c never reads a patch as a delete, and waits for its
/// upgrade for the rest of a's writes while x's own still reach it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_entry_never_reaches_a_peer_that_cannot_read_it() {
    let (mut a_config, a_dir) = TestNode::configure("relay-a");
    let (mut x_config, x_dir) = TestNode::configure("relay-x");
    let (mut c_config, c_dir) = TestNode::configure("relay-c");
    let peer = |config: &cbddc_config::PeerNodeConfiguration| {
        cbddc_core::KnownPeer::new(
            config.node_id.clone(),
            format!("127.0.0.1:{}", config.tcp_port),
            cbddc_core::PeerType::StaticRemote,
        )
        .unwrap()
    };
    a_config.known_peers = vec![peer(&x_config)];
    c_config.known_peers = vec![peer(&x_config)];
    x_config.known_peers = vec![peer(&a_config), peer(&c_config)];
    let a = TestNode::start(a_config, a_dir).await;
    let x = TestNode::start(x_config, x_dir).await;
    let c = TestNode::start_reading_only(c_config, c_dir, &[]).await;
    let field_merge = cbddc_core::field_merge::FEATURE;
    wait_until("a to write field-level entries", DEADLINE, || {
        writes_feature(&a, field_merge)
    })
    .await;

    a.node().put("docs", "d", r#"{"x":1}"#).await.unwrap();
    wait_until("the put to reach c", DEADLINE, || {
        has(&c, "d", r#"{"x":1}"#)
    })
    .await;
    let patch = a.node().patch("docs", "d", r#"{"y":2}"#).await.unwrap();
    assert!(matches!(patch.op, cbddc_core::Operation::Merge { .. }));
    wait_until("the patch to reach x", DEADLINE, || {
        has(&x, "d", r#"{"x":1,"y":2}"#)
    })
    .await;
    x.node().put("docs", "later", "1").await.unwrap();
    wait_until("x's later write to reach c", DEADLINE, || {
        has(&c, "later", "1")
    })
    .await;
    // Two rounds of c with x that began after x held the patch.
    for round in 0..2 {
        let since = cbddc_core::unix_millis();
        wait_until(
            &format!("sync round {round} of c with x"),
            DEADLINE,
            || async {
                c.node().status().await.unwrap().peers.iter().any(|p| {
                    p.node_id.as_str() == "relay-x" && p.last_exchange_ms.is_some_and(|t| t > since)
                })
            },
        )
        .await;
    }
    assert!(
        has(&c, "d", r#"{"x":1}"#).await,
        "c holds the document as before the patch, not deleted"
    );
    let held = c.node().store().version_vector().await.unwrap();
    assert!(held.get(&patch.origin) < patch.seq, "{held:?}");
    assert!(!writes_feature(&x, field_merge).await);
}
