//! Failure detection: a peer that goes silent without closing anything (paused, or its
//! link black-holed) is known unreachable in seconds, with the reason in `status`, and
//! stops counting for the election; when it answers again, it counts again.

use cbddc_tests::{Switch, TestCluster, TestNode, wait_until};
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(15);

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
    // Default timers; every link to or from a runs through the switch.
    let nodes = TestCluster::mesh_with_one_behind(&["a", "b", "c"], &switch, 0)
        .await
        .start()
        .await;
    let [a, b, c] = &nodes[..] else {
        unreachable!()
    };
    wait_until("everyone follows a", DEADLINE, || async {
        for node in [a, b, c] {
            if node.leader().await.as_deref() != Some("a") {
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
                    || node.leader().await.as_deref() != Some("b")
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
            if error_about(node, "a").await.is_some() || node.leader().await.as_deref() != Some("a")
            {
                return false;
            }
        }
        true
    })
    .await;
}
