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
    let peers = a.node().peer_store().list_peers().await.unwrap();
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
