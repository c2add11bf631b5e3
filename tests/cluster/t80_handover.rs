//! Acknowledged means kept across a member's removal: a member cut off from the others
//! keeps taking writes; when the others remove it, it hands those writes over once it is
//! reachable again, then refuses writes. A node waiting to be invited refuses writes too.

use cbddc_config::{ClusterConfig, PeerNodeConfiguration};
use cbddc_core::{KnownPeer, LocalWrite, PeerType};
use cbddc_node::{ClusterStatus, NodeError};
use cbddc_tests::{Switch, TestCluster, TestNode, node_id, wait_until};
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(30);

fn status(node: &TestNode) -> ClusterStatus {
    node.node().cluster_status().unwrap()
}

/// a, b and c bootstrap configuration 1; every link to or from c runs through `switch`.
async fn cluster_with_c_behind(switch: &Switch) -> Vec<TestNode> {
    let nodes = TestCluster::mesh_with_one_behind(&["a", "b", "c"], switch, 2)
        .await
        .fast_election()
        .with_members(3)
        .start()
        .await;
    wait_until("configuration 1 everywhere", DEADLINE, || async {
        nodes
            .iter()
            .all(|n| status(n).configuration_id == Some(1) && status(n).leader.is_some())
    })
    .await;
    nodes
}

fn writes(prefix: &str, n: usize) -> Vec<LocalWrite> {
    (0..n)
        .map(|i| LocalWrite::put("docs", format!("{prefix}{i:02}"), format!("{{\"n\":{i}}}")))
        .collect()
}

async fn holds_all(node: &TestNode, prefix: &str, n: usize) -> bool {
    let docs = node.documents("docs").await;
    docs.iter().filter(|(k, _)| k.starts_with(prefix)).count() == n
}

async fn acknowledge_on_c_while_cut_off(nodes: &[TestNode], switch: &Switch) {
    let [a, b, c] = nodes else { unreachable!() };
    a.node().write(writes("before-", 10)).await.unwrap();
    wait_until("c holds a's writes", DEADLINE, || {
        holds_all(c, "before-", 10)
    })
    .await;
    wait_until("c to write field-level entries", DEADLINE, || async {
        c.node()
            .status()
            .await
            .unwrap()
            .features
            .in_force
            .contains(cbddc_core::field_merge::FEATURE)
    })
    .await;
    switch.cut();
    // c does not know yet that it is being removed: it acknowledges writes, field-level
    // edits among them, while a edits another field of the same document.
    for write in writes("from-c-", 20) {
        c.node().write(vec![write]).await.unwrap();
    }
    c.node()
        .patch("docs", "before-00", r#"{"by_c":true}"#)
        .await
        .unwrap();
    c.node()
        .increment("docs", "before-01", "n", 5)
        .await
        .unwrap();
    a.node()
        .patch("docs", "before-00", r#"{"by_a":true}"#)
        .await
        .unwrap();
    let next = a
        .node()
        .reconfigure_cluster(vec![node_id("a"), node_id("b")])
        .await
        .unwrap();
    assert_eq!(next, 2);
    assert!(
        !holds_all(a, "from-c-", 20).await && !holds_all(b, "from-c-", 20).await,
        "nothing crossed the cut"
    );
}

async fn the_writes_of_c_were_handed_over(nodes: &[TestNode]) {
    let [a, b, c] = nodes else { unreachable!() };
    wait_until("c learns it was removed", DEADLINE, || async {
        status(c).retired
    })
    .await;
    wait_until(
        "a and b hold every write c acknowledged",
        DEADLINE,
        || async { holds_all(a, "from-c-", 20).await && holds_all(b, "from-c-", 20).await },
    )
    .await;
    for node in [a, b] {
        wait_until(
            "c's field-level edits merged on a and b",
            DEADLINE,
            || async {
                let doc = |key: &'static str| async move {
                    node.node()
                        .get("docs", key)
                        .await
                        .unwrap()
                        .map(|d| serde_json::from_str::<serde_json::Value>(&d.value).unwrap())
                };
                doc("before-00").await == Some(serde_json::json!({"n":0,"by_a":true,"by_c":true}))
                    && doc("before-01").await == Some(serde_json::json!({"n":6}))
            },
        )
        .await;
    }
    wait_until("c reports its hand-over complete", DEADLINE, || async {
        status(c)
            .handover
            .is_some_and(|h| h.complete && h.to_configuration == 2)
    })
    .await;
    match c.node().put("docs", "after-retiring", "{}").await {
        Err(NodeError::Retired {
            configuration_id: 2,
            last_member_of: 1,
        }) => {}
        other => panic!("a retired node must refuse writes, got {other:?}"),
    }
    assert!(
        c.node().get("docs", "from-c-00").await.unwrap().is_some(),
        "reads keep working on a retired node"
    );
    a.node()
        .put("docs", "after-the-change", "{}")
        .await
        .unwrap();
    wait_until("the cluster goes on", DEADLINE, || async {
        b.node()
            .get("docs", "after-the-change")
            .await
            .unwrap()
            .is_some()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_cut_off_during_its_removal_hands_its_writes_over_on_healing() {
    let switch = Switch::new();
    let mut nodes = cluster_with_c_behind(&switch).await;
    acknowledge_on_c_while_cut_off(&nodes, &switch).await;
    switch.heal();
    the_writes_of_c_were_handed_over(&nodes).await;
    for node in &mut nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_stopped_after_its_removal_hands_its_writes_over_when_restarted() {
    let switch = Switch::new();
    let mut nodes = cluster_with_c_behind(&switch).await;
    acknowledge_on_c_while_cut_off(&nodes, &switch).await;
    let config_c = nodes[2].config.clone();
    nodes[2].stop().await;
    switch.heal();
    nodes[2].restart_with(config_c).await;
    the_writes_of_c_were_handed_over(&nodes).await;
    for node in &mut nodes {
        node.stop().await;
    }
}

/// The hand-over dials with the cluster key in force when it runs: c learns of its
/// removal only after every node moved to a new key (while c was cut off), so a
/// hand-over given the key of its start would be refused by every member for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_over_after_a_live_cluster_key_change_uses_the_new_key() {
    let switch = Switch::new();
    let mut nodes = cluster_with_c_behind(&switch).await;
    acknowledge_on_c_while_cut_off(&nodes, &switch).await;
    for node in nodes.iter_mut() {
        node.reconfigure(|c| c.cluster_key = "the-next-cluster-key".into());
    }
    wait_until("every node to apply the new key", DEADLINE, || async {
        nodes
            .iter()
            .all(|n| n.node().config().cluster_key == "the-next-cluster-key")
    })
    .await;
    switch.heal();
    the_writes_of_c_were_handed_over(&nodes).await;
    for node in &mut nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_waiting_to_be_invited_refuses_writes_until_admitted() {
    let (mut a, mut d) = (TestNode::configure("a"), TestNode::configure("d"));
    let peer = |c: &PeerNodeConfiguration| {
        KnownPeer::new(
            c.node_id.clone(),
            format!("127.0.0.1:{}", c.tcp_port),
            PeerType::StaticRemote,
        )
        .unwrap()
    };
    a.0.known_peers = vec![peer(&d.0)];
    d.0.known_peers = vec![peer(&a.0)];
    a.0.cluster = Some(ClusterConfig {
        configuration_id: 1,
        members: vec![node_id("a")],
        join: false,
        ..Default::default()
    });
    d.0.cluster = Some(ClusterConfig {
        configuration_id: 1,
        members: Vec::new(),
        join: true,
        ..Default::default()
    });
    let mut a = TestNode::start(a.0, a.1).await;
    let mut d = TestNode::start(d.0, d.1).await;
    match d.node().put("docs", "too-early", "{}").await {
        Err(NodeError::NotAdmitted) => {}
        other => panic!("a node not admitted yet must refuse writes, got {other:?}"),
    }
    a.node()
        .reconfigure_cluster(vec![node_id("a"), node_id("d")])
        .await
        .unwrap();
    wait_until("d is admitted", DEADLINE, || async {
        status(&d).configuration_id == Some(2)
    })
    .await;
    d.node().put("docs", "admitted", "{}").await.unwrap();
    wait_until("d's write reaches a", DEADLINE, || async {
        a.node().get("docs", "admitted").await.unwrap().is_some()
    })
    .await;
    a.stop().await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retired_member_restarted_under_another_members_id_gets_nothing() {
    let switch = Switch::new();
    let mut nodes = cluster_with_c_behind(&switch).await;
    nodes[0].node().write(writes("secret-", 5)).await.unwrap();
    let next = nodes[0]
        .node()
        .reconfigure_cluster(vec![node_id("a"), node_id("b")])
        .await
        .unwrap();
    assert_eq!(next, 2);
    wait_until("c retires", DEADLINE, || async {
        status(&nodes[2]).retired
    })
    .await;

    // One config line: c's data dir (and so its key) under b's name, pointed at a.
    let mut impostor = nodes[2].config.clone();
    impostor.node_id = node_id("b");
    impostor.cluster = None;
    impostor.known_peers = vec![nodes[0].as_peer()];
    nodes[2].restart_with(impostor).await;
    let c_as_b = &nodes[2];
    c_as_b.node().put("docs", "forged", "{}").await.unwrap();
    wait_until(
        "a refuses the key presented under b's name",
        DEADLINE,
        || async {
            let status = c_as_b.node().status().await.unwrap();
            status.peers.iter().any(|p| {
                p.node_id.as_str() == "a"
                    && p.last_error
                        .as_deref()
                        .is_some_and(|e| e.contains("refused our node key"))
            })
        },
    )
    .await;
    assert!(
        c_as_b
            .documents("docs")
            .await
            .iter()
            .all(|(k, _)| k == "forged"),
        "the impostor received data"
    );
    nodes[0].node().put("docs", "later", "{}").await.unwrap();
    wait_until("the real b still syncs with a", DEADLINE, || async {
        nodes[1]
            .node()
            .get("docs", "later")
            .await
            .unwrap()
            .is_some()
    })
    .await;
    assert!(
        nodes[0]
            .node()
            .get("docs", "forged")
            .await
            .unwrap()
            .is_none()
            && nodes[1]
                .node()
                .get("docs", "forged")
                .await
                .unwrap()
                .is_none(),
        "a write of the impostor was applied"
    );
    for node in &mut nodes {
        node.stop().await;
    }
}
