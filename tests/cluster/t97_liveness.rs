//! Failure detection: a peer that goes silent without closing anything (paused, or its
//! link black-holed) is known unreachable in seconds, with the reason in `status`, and
//! stops counting for the election; when it answers again, it counts again.

use cbddc_core::{KnownPeer, PeerType};
use cbddc_tests::{Switch, TestNode, wait_until};
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(15);

/// a, b and c with default timers; every link to or from a runs through `switch`.
async fn three_with_a_behind(switch: &Switch) -> Vec<TestNode> {
    let mut relays = Vec::new();
    for _ in 0..3 {
        relays.push(switch.relay().await);
    }
    let relayed: Vec<String> = relays.iter().map(|r| r.address.clone()).collect();
    let mut configs: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|n| TestNode::configure(n))
        .collect();
    let direct: Vec<String> = configs
        .iter()
        .map(|(c, _)| format!("127.0.0.1:{}", c.tcp_port))
        .collect();
    for (relay, target) in relays.into_iter().zip(&direct) {
        relay.forward_to(target.clone());
    }
    let ids: Vec<_> = configs.iter().map(|(c, _)| c.node_id.clone()).collect();
    for (index, (config, _)) in configs.iter_mut().enumerate() {
        config.known_peers = (0..3)
            .filter(|other| *other != index)
            .map(|other| {
                let address = if index == 0 || other == 0 {
                    relayed[other].clone()
                } else {
                    direct[other].clone()
                };
                KnownPeer::new(ids[other].clone(), address, PeerType::StaticRemote).unwrap()
            })
            .collect();
    }
    let mut nodes = Vec::new();
    for (config, dir) in configs {
        nodes.push(TestNode::start(config, dir).await);
    }
    nodes
}

async fn leader(node: &TestNode) -> Option<String> {
    node.node()
        .status()
        .await
        .unwrap()
        .leader
        .map(|l| l.to_string())
}

async fn error_about(node: &TestNode, peer: &str) -> Option<String> {
    node.node()
        .status()
        .await
        .unwrap()
        .peers
        .into_iter()
        .find(|p| p.node_id.as_str() == peer)
        .and_then(|p| p.last_error)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_leader_is_known_unreachable_and_replaced_then_counts_again_when_it_answers() {
    let switch = Switch::new();
    let nodes = three_with_a_behind(&switch).await;
    let [a, b, c] = &nodes[..] else {
        unreachable!()
    };
    wait_until("everyone follows a", DEADLINE, || async {
        for node in [a, b, c] {
            if leader(node).await.as_deref() != Some("a") {
                return false;
            }
        }
        true
    })
    .await;

    // Nothing is closed: only silence tells b and c that a is gone.
    switch.freeze();
    wait_until(
        "b and c report a unreachable and follow b",
        DEADLINE,
        || async {
            for node in [b, c] {
                let said = error_about(node, "a").await;
                if !said.is_some_and(|e| e.contains("unreachable"))
                    || leader(node).await.as_deref() != Some("b")
                {
                    return false;
                }
            }
            true
        },
    )
    .await;

    switch.heal();
    wait_until("a answers again and leads again", DEADLINE, || async {
        for node in [b, c] {
            if error_about(node, "a").await.is_some() || leader(node).await.as_deref() != Some("a")
            {
                return false;
            }
        }
        true
    })
    .await;
}
