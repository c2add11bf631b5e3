use cbddc_core::{KnownPeer, PeerType};
use cbddc_tests::{TestNode, node_id, wait_until};
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(20);

/// Fast timers so elections settle in well under a second.
fn fast(config: &mut cbddc_config::PeerNodeConfiguration) {
    config.sync_interval_ms = 100;
    config.election.interval_ms = 100;
    config.election.peer_timeout_ms = 600;
}

async fn leader_of(node: &TestNode) -> String {
    node.leader().await.unwrap_or_default()
}

async fn all_agree(nodes: Vec<&TestNode>, leader: &str) -> bool {
    for node in nodes {
        if leader_of(node).await != leader {
            return false;
        }
    }
    true
}

/// Peers the cloud has exchanged data with.
async fn cloud_contacts(cloud: &TestNode) -> Vec<String> {
    cloud
        .node()
        .status()
        .await
        .unwrap()
        .peers
        .into_iter()
        .map(|p| p.node_id.to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_smallest_node_syncs_with_the_cloud_and_leadership_moves_when_it_dies() {
    let cloud = TestNode::spawn("cloud", fast).await;
    let names = ["node-a", "node-b", "node-c"];
    let mut configs: Vec<_> = names.iter().map(|n| TestNode::configure(n)).collect();
    let ports: Vec<u16> = configs.iter().map(|(c, _)| c.tcp_port).collect();
    for (config, _) in configs.iter_mut() {
        fast(config);
        for (name, port) in names.iter().zip(&ports) {
            if *name != config.node_id.as_str() {
                config.known_peers.push(
                    KnownPeer::new(
                        node_id(name),
                        format!("127.0.0.1:{port}"),
                        PeerType::StaticRemote,
                    )
                    .unwrap(),
                );
            }
        }
        config.known_peers.push(
            KnownPeer::new(node_id("cloud"), cloud.address(), PeerType::CloudRemote).unwrap(),
        );
    }
    let mut nodes = Vec::new();
    for (config, dir) in configs {
        nodes.push(TestNode::start(config, dir).await);
    }
    let [a, b, c] = &mut nodes[..] else {
        unreachable!()
    };

    wait_until("a, b and c to agree that node-a leads", DEADLINE, || {
        all_agree(vec![&*a, &*b, &*c], "node-a")
    })
    .await;
    assert!(a.node().status().await.unwrap().is_leader);
    c.node().put("c", "from-c", "1").await.unwrap();
    wait_until("c's write to reach the cloud", DEADLINE, || async {
        cloud.node().get("c", "from-c").await.unwrap().is_some()
    })
    .await;
    assert_eq!(
        cloud_contacts(&cloud).await,
        ["node-a"],
        "only the leader talks to the cloud"
    );

    a.stop().await;
    wait_until("b and c to elect node-b", DEADLINE, || {
        all_agree(vec![&*b, &*c], "node-b")
    })
    .await;
    c.node().put("c", "after-failover", "1").await.unwrap();
    wait_until("writes to keep reaching the cloud", DEADLINE, || async {
        cloud
            .node()
            .get("c", "after-failover")
            .await
            .unwrap()
            .is_some()
    })
    .await;
    assert!(cloud_contacts(&cloud).await.contains(&"node-b".to_string()));
    assert!(
        !cloud_contacts(&cloud).await.contains(&"node-c".to_string()),
        "c never leads while b lives"
    );

    let config = a.config.clone();
    a.restart_with(config).await;
    wait_until("node-a to lead again everywhere", DEADLINE, || {
        all_agree(vec![&*a, &*b, &*c], "node-a")
    })
    .await;
    assert!(!b.node().status().await.unwrap().is_leader);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_with_discovery_on_loopback_find_each_other_and_elect() {
    let nodes = discovering(&["lan-a", "lan-b", "lan-c"]).await;
    wait_until("all three to elect lan-a", DEADLINE, || {
        all_agree(nodes.iter().collect(), "lan-a")
    })
    .await;

    nodes[2].node().put("c", "found", "1").await.unwrap();
    wait_until(
        "a write to travel between discovered peers",
        DEADLINE,
        || async { nodes[0].node().get("c", "found").await.unwrap().is_some() },
    )
    .await;
    let status = nodes[1].node().status().await.unwrap();
    assert!(
        status.peers.iter().any(|p| p.node_id.as_str() == "lan-c"
            && p.peer_type == Some(cbddc_core::PeerType::LanDiscovered)),
        "{:?}",
        status.peers
    );
}

/// Issue 12's first report: a live port change restarted discovery and election while
/// the old tasks still held the UDP port, so the moved node stopped hearing anyone and
/// kept following a dead leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_port_change_keeps_discovery_and_election_working_when_the_leader_dies() {
    let mut nodes = discovering(&["lan-e", "lan-f", "lan-g"]).await;
    wait_until("all three to elect lan-e", DEADLINE, || {
        all_agree(nodes.iter().collect(), "lan-e")
    })
    .await;
    let moved_to = cbddc_tests::free_port();
    nodes[1].reconfigure(|c| c.tcp_port = moved_to);
    wait_until("lan-f to listen on its new port", DEADLINE, || async {
        nodes[1].node().local_addr().port() == moved_to
    })
    .await;
    nodes[0].stop().await;
    wait_until("lan-f and lan-g to agree on lan-f", DEADLINE, || {
        all_agree(vec![&nodes[1], &nodes[2]], "lan-f")
    })
    .await;
    // And lan-g still syncs with lan-f at its new address.
    nodes[1].node().put("c", "after-move", "1").await.unwrap();
    wait_until("lan-g to receive lan-f's write", DEADLINE, || async {
        nodes[2]
            .node()
            .get("c", "after-move")
            .await
            .unwrap()
            .is_some()
    })
    .await;
}

/// Nodes with fast timers that find each other only by discovery beacons on loopback.
async fn discovering(names: &[&str]) -> Vec<TestNode> {
    let udp: Vec<u16> = names.iter().map(|_| free_udp_port()).collect();
    let mut nodes = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let udp = udp.clone();
        nodes.push(
            TestNode::spawn(name, |c| {
                fast(c);
                c.discovery.enabled = true;
                c.discovery.interval_ms = 100;
                c.discovery.port = udp[i];
                c.discovery.targets = udp
                    .iter()
                    .map(|p| format!("127.0.0.1:{p}").parse().unwrap())
                    .collect();
            })
            .await,
        );
    }
    nodes
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A node that may not lead says so on both sides of its sessions: here b learns of a
/// only from a's side as a responder, which used to claim every node eligible.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_may_not_lead_is_never_taken_for_eligible() {
    let (mut ca, da) = TestNode::configure("node-a");
    let (mut cb, db) = TestNode::configure("node-b");
    fast(&mut ca);
    fast(&mut cb);
    ca.election.eligible = false;
    cb.known_peers.push(static_peer(&ca));
    let a = TestNode::start(ca, da).await;
    let b = TestNode::start(cb, db).await;
    wait_until("b leads in b's view", DEADLINE, || async {
        leader_of(&b).await == "node-b"
    })
    .await;
    for _ in 0..20 {
        assert_eq!(leader_of(&b).await, "node-b", "b took a for eligible");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(a);
}

/// A live role change reaches the peers: the leader's configuration makes it ineligible,
/// and everyone moves to the next node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_made_ineligible_live_hands_leadership_on() {
    let (mut ca, da) = TestNode::configure("node-a");
    let (mut cb, db) = TestNode::configure("node-b");
    fast(&mut ca);
    fast(&mut cb);
    ca.known_peers.push(static_peer(&cb));
    cb.known_peers.push(static_peer(&ca));
    let mut a = TestNode::start(ca, da).await;
    let b = TestNode::start(cb, db).await;
    wait_until("both follow node-a", DEADLINE, || async {
        all_agree(vec![&a, &b], "node-a").await
    })
    .await;
    let mut events = b.node().subscribe();
    let mut leadership = b.node().leadership();
    assert_eq!(
        leadership.borrow_and_update().leader,
        Some(node_id("node-a"))
    );
    a.reconfigure(|c| c.election.eligible = false);
    wait_until("both follow node-b", DEADLINE, || async {
        all_agree(vec![&a, &b], "node-b").await
    })
    .await;
    // The embedder of node-b heard it: as an event and as the watched value. (A view
    // in between, such as no leader for a moment, is an event of its own.)
    let mut heard = Vec::new();
    tokio::time::timeout(DEADLINE, async {
        loop {
            match events.recv().await {
                Ok(cbddc_node::NodeEvent::LeadershipChanged { leader, is_leader }) => {
                    let done = leader == Some(node_id("node-b")) && is_leader;
                    heard.push((leader, is_leader));
                    if done {
                        return;
                    }
                }
                Ok(_) => continue,
                Err(e) => panic!("the event stream ended: {e}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no LeadershipChanged naming node-b; heard {heard:?}"));
    assert!(leadership.has_changed().unwrap());
    assert!(leadership.borrow().is_leader);
}

fn static_peer(config: &cbddc_config::PeerNodeConfiguration) -> KnownPeer {
    KnownPeer::new(
        config.node_id.clone(),
        format!("127.0.0.1:{}", config.tcp_port),
        PeerType::StaticRemote,
    )
    .unwrap()
}
