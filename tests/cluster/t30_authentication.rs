use cbddc_net::{ClientSettings, ClusterKey, NetError, PeerClient};
use cbddc_tests::{TestNode, wait_until};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_with_the_wrong_key_gets_nothing_and_gives_nothing() {
    let a = TestNode::spawn("node-a", |_| {}).await;
    a.node()
        .put("secret", "plan", r#""the plan""#)
        .await
        .unwrap();
    let intruder = TestNode::spawn("intruder", |c| {
        c.cluster_key = "another-key".into();
        c.known_peers.push(a.as_peer());
    })
    .await;
    intruder.node().put("secret", "forged", "1").await.unwrap();

    wait_until(
        "the intruder to report its failure",
        Duration::from_secs(10),
        || async {
            let status = intruder.node().status().await.unwrap();
            status.peers.iter().any(|p| {
                p.last_error
                    .as_deref()
                    .is_some_and(|e| e.contains("cluster key"))
            })
        },
    )
    .await;
    // The attempt that failed moved nothing, in either direction.
    assert!(
        intruder
            .node()
            .get("secret", "plan")
            .await
            .unwrap()
            .is_none()
    );
    assert!(a.node().get("secret", "forged").await.unwrap().is_none());
    let status = a.node().status().await.unwrap();
    assert!(
        status
            .peers
            .iter()
            .all(|p| p.node_id.as_str() != "intruder"),
        "a must not record an exchange with the intruder"
    );

    let err = PeerClient::connect(
        &a.address(),
        &ClusterKey::derive("guess"),
        &cbddc_net::LocalIdentity::tool().unwrap(),
        ClientSettings::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, NetError::WrongClusterKey { .. }), "{err}");
}
