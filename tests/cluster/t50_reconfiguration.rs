use cbddc_core::PeerType;
use cbddc_net::{ClientSettings, ClusterKey, NetError, PeerClient};
use cbddc_node::NodeEvent;
use cbddc_tests::{TestNode, free_port, node_id, two_peers, wait_until};
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(15);

async fn answers(address: &str, key: &str) -> Result<String, NetError> {
    let mut client = PeerClient::connect(
        address,
        &ClusterKey::derive(key),
        &cbddc_net::LocalIdentity::tool().unwrap(),
        ClientSettings::default(),
    )
    .await?;
    Ok(client.status().await?.node_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_change_moves_the_listener_and_sync_goes_on() {
    let (mut a, b) = two_peers("node-a", "node-b").await;
    let old = a.address();
    let new_port = free_port();
    a.reconfigure(|c| c.tcp_port = new_port);
    wait_until("a to listen on the new port", DEADLINE, || async {
        a.node().local_addr().port() == new_port
    })
    .await;
    let new = a.address();
    assert_eq!(answers(&new, "test-cluster").await.unwrap(), "node-a");
    assert!(
        matches!(
            answers(&old, "test-cluster").await,
            Err(NetError::Connect { .. })
        ),
        "the old port must be closed"
    );
    assert_eq!(a.node().status().await.unwrap().listen.port(), new_port);

    // Both directions still sync: a's own tasks push and pull.
    a.node().put("c", "from-a", "1").await.unwrap();
    b.node().put("c", "from-b", "2").await.unwrap();
    wait_until("both writes on both nodes", DEADLINE, || async {
        a.documents("c").await.len() == 2 && b.documents("c").await.len() == 2
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_in_use_leaves_the_node_on_its_old_port_and_says_why() {
    let mut a = TestNode::spawn("node-a", |_| {}).await;
    let mut events = a.node().subscribe();
    let old = a.address();
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = squatter.local_addr().unwrap().port();
    a.reconfigure(|c| {
        c.tcp_port = taken;
        c.sync_interval_ms = 250;
    });
    let event = tokio::time::timeout(DEADLINE, events.recv())
        .await
        .unwrap()
        .unwrap();
    match event {
        NodeEvent::Reconfigured {
            not_applied,
            listen,
            ..
        } => {
            assert_eq!(listen.to_string(), old);
            assert!(
                not_applied
                    .iter()
                    .any(|w| w.contains("listen address") && w.contains(&taken.to_string())),
                "{not_applied:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(a.address(), old);
    assert_eq!(answers(&old, "test-cluster").await.unwrap(), "node-a");
    assert_eq!(
        a.node().config().sync_interval_ms,
        250,
        "the rest of the change still applies"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_id_change_opens_a_new_database_and_catches_up_from_a_peer() {
    let (mut a, b) = two_peers("node-a", "node-b").await;
    for i in 0..20 {
        a.node()
            .put("c", &format!("k{i}"), &i.to_string())
            .await
            .unwrap();
    }
    wait_until("b to hold a's documents", DEADLINE, || async {
        b.documents("c").await.len() == 20
    })
    .await;
    let old_db = cbddc_store::database_path(&a.data_dir(), &node_id("node-a"));
    let address = a.address();

    a.reconfigure(|c| c.node_id = node_id("node-a2"));
    wait_until("a to run as node-a2", DEADLINE, || async {
        a.node().node_id().as_str() == "node-a2"
    })
    .await;
    assert_eq!(a.address(), address, "the listener stays");
    assert_eq!(answers(&address, "test-cluster").await.unwrap(), "node-a2");
    let new_db = cbddc_store::database_path(&a.data_dir(), &node_id("node-a2"));
    assert!(new_db.exists() && old_db.exists());
    let old_bytes = std::fs::read(&old_db).unwrap();

    wait_until(
        "the renamed node to get the data back from b",
        DEADLINE,
        || async { a.documents("c").await.len() == 20 },
    )
    .await;
    let entry = a.node().put("c", "new", "1").await.unwrap();
    assert_eq!(
        (entry.node.as_str(), entry.seq),
        ("node-a2", 1),
        "a new identity starts its own sequence"
    );
    wait_until("the new identity's write to reach b", DEADLINE, || async {
        b.node().get("c", "new").await.unwrap().is_some()
    })
    .await;
    assert_eq!(
        std::fs::read(&old_db).unwrap(),
        old_bytes,
        "the old database is left untouched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_peers_follow_the_configuration_live() {
    let mut a = TestNode::spawn("node-a", |_| {}).await;
    let b = TestNode::spawn("node-b", |_| {}).await;
    b.node().put("c", "on-b", "1").await.unwrap();
    a.reconfigure(|c| c.known_peers.push(b.as_peer()));
    wait_until(
        "a to sync with the peer it was just given",
        DEADLINE,
        || async { a.node().get("c", "on-b").await.unwrap().is_some() },
    )
    .await;

    // A peer added at run time stays when the configuration changes again.
    let c = TestNode::spawn("node-c", |_| {}).await;
    a.node().save_peer(c.as_peer()).await.unwrap();
    a.reconfigure(|cfg| cfg.known_peers.clear());
    wait_until("b to leave the known peers", DEADLINE, || async {
        let peers = a.node().known_peers().await.unwrap();
        peers.len() == 1 && peers[0].node_id.as_str() == "node-c"
    })
    .await;
    assert_eq!(
        a.node().known_peers().await.unwrap()[0].peer_type,
        PeerType::StaticRemote
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_cluster_key_applies_to_new_sessions_both_ways() {
    let (mut a, mut b) = two_peers("node-a", "node-b").await;
    a.reconfigure(|c| c.cluster_key = "rotated".into());
    wait_until("a to accept only the new key", DEADLINE, || async {
        answers(&a.address(), "rotated").await.is_ok()
    })
    .await;
    assert!(matches!(
        answers(&a.address(), "test-cluster").await,
        Err(NetError::WrongClusterKey { .. })
    ));

    b.reconfigure(|c| c.cluster_key = "rotated".into());
    b.node().put("c", "after-rotation", "1").await.unwrap();
    wait_until("sync under the new key", DEADLINE, || async {
        a.node().get("c", "after-rotation").await.unwrap().is_some()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_configuration_is_refused_and_a_burst_ends_in_the_last_one() {
    let mut a = TestNode::spawn("node-a", |_| {}).await;
    let mut invalid = a.config.clone();
    invalid.sync_interval_ms = 1;
    let err = a.provider.set(invalid).unwrap_err();
    assert!(err.to_string().contains("sync_interval_ms"), "{err}");
    assert_eq!(a.node().config().sync_interval_ms, 100);

    let ports: Vec<u16> = (0..5).map(|_| free_port()).collect();
    for port in &ports {
        a.reconfigure(|c| c.tcp_port = *port);
    }
    let last = *ports.last().unwrap();
    wait_until("the last configuration of the burst", DEADLINE, || async {
        a.node().local_addr().port() == last
    })
    .await;
    assert_eq!(
        answers(&a.address(), "test-cluster").await.unwrap(),
        "node-a"
    );
}

/// Issue 12: a node id change that failed half-way left the node stopped while it
/// reported that it ran. Now it resumes the identity it had, and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_id_change_that_cannot_start_resumes_the_old_identity() {
    let mut a = TestNode::spawn("node-keeps", |_| {}).await;
    a.node().put("c", "before", "1").await.unwrap();
    let address = a.address();
    let mut events = a.node().subscribe();
    let broken = a.data_dir().with_file_name("broken-data");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("node.key"), "not a key").unwrap();
    a.reconfigure(|c| {
        c.node_id = node_id("node-new");
        c.data_dir = broken.clone();
    });
    let reason = tokio::time::timeout(DEADLINE, async {
        loop {
            if let Ok(NodeEvent::ReconfigurationFailed { reason }) = events.recv().await {
                return reason;
            }
        }
    })
    .await
    .expect("the failure is announced");
    assert!(reason.contains("node key"), "{reason}");
    assert_eq!(a.node().node_id().as_str(), "node-keeps");
    assert_eq!(a.address(), address);
    assert_eq!(
        answers(&address, "test-cluster").await.unwrap(),
        "node-keeps"
    );
    assert!(a.node().get("c", "before").await.unwrap().is_some());
    a.node().put("c", "after", "2").await.unwrap();
}
