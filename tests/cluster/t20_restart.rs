use cbddc_core::PeerType;
use cbddc_tests::{TestNode, wait_until};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_keeps_its_data_and_known_peers_and_catches_up() {
    let mut a = TestNode::spawn("node-a", |_| {}).await;
    let b = TestNode::spawn("node-b", |c| c.known_peers.push(a.as_peer())).await;
    // a learns of b at run time, not from its configuration.
    a.node().save_peer(b.as_peer()).await.unwrap();
    for i in 0..50 {
        a.node()
            .put("items", &format!("i{i:02}"), &i.to_string())
            .await
            .unwrap();
    }
    wait_until(
        "b to receive a's writes",
        Duration::from_secs(10),
        || async { b.documents("items").await.len() == 50 },
    )
    .await;
    let before = a.documents("items").await;
    a.stop().await;

    // While a is down, b keeps accepting writes.
    b.node().put("items", "while-away", "true").await.unwrap();
    b.node().delete("items", "i00").await.unwrap();

    // a comes back on the same configuration, which does not name b: the saved peer remains.
    let config = a.config.clone();
    a.restart_with(config).await;
    // Catch-up may already be running, so only b's own changes may differ.
    let after_restart = a.documents("items").await;
    for (key, value) in before.iter().filter(|(k, _)| k != "i00") {
        assert!(
            after_restart.contains(&(key.clone(), value.clone())),
            "{key} lost in the restart"
        );
    }
    let peers = a.node().known_peers().await.unwrap();
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].node_id.as_str(), "node-b");
    assert_eq!(peers[0].peer_type, PeerType::StaticRemote);

    wait_until(
        "a to catch up with what b wrote meanwhile",
        Duration::from_secs(10),
        || async {
            a.node().get("items", "while-away").await.unwrap().is_some()
                && a.node().get("items", "i00").await.unwrap().is_none()
        },
    )
    .await;
    // A restarted node is a new replica: its writes never reuse an (origin, seq) pair.
    let next = a.node().put("items", "after", "1").await.unwrap();
    assert_eq!((next.node.as_str(), next.seq), ("node-a", 1));
    assert_eq!(&next.origin, a.node().store().replica());
    let own = a.node().store().own_replicas();
    let vv = a.node().store().version_vector().await.unwrap();
    assert_eq!(
        own.iter().map(|r| vv.get(r)).collect::<Vec<_>>(),
        [50, 1],
        "the first run's 50 writes stay under its replica"
    );
}

/// Every start is a new replica; the floors keep the version vectors that peers exchange
/// down to the live replicas however often a node restarts, and nothing is skipped for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_many_times_does_not_carry_a_replica_per_start() {
    const STARTS: usize = 25;
    let mut a = TestNode::spawn("node-a", |_| {}).await;
    let b = TestNode::spawn("node-b", |c| c.known_peers.push(a.as_peer())).await;
    a.node().save_peer(b.as_peer()).await.unwrap();
    for start in 0..STARTS {
        a.node()
            .put("items", &format!("start-{start:02}"), "1")
            .await
            .unwrap();
        let config = a.config.clone();
        a.restart_with(config).await;
        a.node().save_peer(b.as_peer()).await.unwrap();
    }
    let vv = a.node().store().version_vector().await.unwrap();
    assert_eq!(vv.len(), STARTS, "one replica per start that wrote");
    wait_until(
        "a and b fold every quiet replica into identical floors",
        Duration::from_secs(30),
        || async {
            let (sa, sb) = (
                a.node().status().await.unwrap(),
                b.node().status().await.unwrap(),
            );
            sa.folded_replicas >= STARTS as u64
                && sa.folded_replicas == sb.folded_replicas
                && sa.live_version_vector_entries <= 2
                && sb.live_version_vector_entries <= 2
                && a.node().store().floors().await.unwrap()
                    == b.node().store().floors().await.unwrap()
        },
    )
    .await;
    // Folding skips nothing: new writes still cross both ways, and a newcomer with no
    // floors gets everything.
    a.node().put("items", "after-a", "1").await.unwrap();
    b.node().put("items", "after-b", "1").await.unwrap();
    let c = TestNode::spawn("node-c", |c| c.known_peers.push(a.as_peer())).await;
    wait_until("everything everywhere", Duration::from_secs(30), || async {
        let (da, db, dc) = (
            a.documents("items").await,
            b.documents("items").await,
            c.documents("items").await,
        );
        da.len() == STARTS + 2 && da == db && da == dc
    })
    .await;
}
