//! Cluster membership through the control plane: bootstrap, replacing a member, a newcomer
//! receiving the data, fencing of a retired member, and a second reconfiguration.

use cbddc_config::PeerNodeConfiguration;
use cbddc_node::ClusterStatus;
use cbddc_tests::{TestCluster, TestNode, claiming, identity_of, node_id, wait_until};
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(30);

/// Configurations for `names`, each knowing all the others; the first `members` bootstrap
/// a cluster of themselves, the rest wait to be invited.
fn cluster(names: &[&str], members: usize) -> Vec<(PeerNodeConfiguration, tempfile::TempDir)> {
    TestCluster::mesh(names)
        .fast_election()
        .with_members(members)
        .configs
}

fn status(node: &TestNode) -> ClusterStatus {
    node.node().cluster_status().unwrap()
}

fn runs(node: &TestNode, configuration_id: u32, members: &[&str]) -> bool {
    let status = status(node);
    status.configuration_id == Some(configuration_id)
        && status.members == members.iter().map(|m| m.to_string()).collect::<Vec<_>>()
}

async fn count(node: &TestNode) -> usize {
    node.documents("docs").await.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_is_replaced_the_newcomer_gets_the_data_and_the_retired_one_is_fenced() {
    let mut nodes = Vec::new();
    for (config, dir) in cluster(&["a", "b", "c", "d"], 3) {
        nodes.push(TestNode::start(config, dir).await);
    }
    let [a, b, c, d] = &nodes[..] else {
        unreachable!()
    };
    wait_until(
        "a, b and c agree on configuration 1 and a leader",
        DEADLINE,
        || async {
            [a, b, c].iter().all(|n| runs(n, 1, &["a", "b", "c"]))
                && [a, b, c].iter().all(|n| status(n).leader.is_some())
        },
    )
    .await;
    assert_eq!(status(d).configuration_id, None, "d waits to be invited");
    let writes = (0..200)
        .map(|i| cbddc_core::LocalWrite::put("docs", format!("k{i:03}"), format!("{{\"n\":{i}}}")))
        .collect();
    a.node().write(writes).await.unwrap();
    wait_until("b and c hold the 200 documents", DEADLINE, || async {
        count(b).await == 200 && count(c).await == 200
    })
    .await;
    assert_eq!(
        count(d).await,
        0,
        "a node outside the cluster is not synced with"
    );

    let next = a
        .node()
        .reconfigure_cluster(vec![node_id("a"), node_id("b"), node_id("d")])
        .await
        .unwrap();
    assert_eq!(next, 2);
    wait_until("a, b and d run configuration 2", DEADLINE, || async {
        [a, b, d].iter().all(|n| runs(n, 2, &["a", "b", "d"]))
    })
    .await;
    wait_until("c retires", DEADLINE, || async { status(c).retired }).await;
    wait_until("d holds the 200 documents", DEADLINE, || async {
        count(d).await == 200
    })
    .await;

    let mut as_c = cbddc_net::PeerClient::connect(
        &a.address(),
        &cbddc_net::ClusterKey::derive("test-cluster"),
        &identity_of(c),
        cbddc_net::ClientSettings::default(),
    )
    .await
    .unwrap();
    let refused = as_c
        .pull(&Default::default(), Default::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("not a member"), "{refused}");

    d.node().put("docs", "from-d", "{}").await.unwrap();
    wait_until("a write on d reaches b", DEADLINE, || async {
        b.node().get("docs", "from-d").await.unwrap().is_some()
    })
    .await;
    match c.node().put("docs", "from-retired-c", "{}").await {
        Err(cbddc_node::NodeError::Retired {
            configuration_id: 2,
            last_member_of: 1,
        }) => {}
        other => panic!("a retired node must refuse writes, got {other:?}"),
    }
    // Every other public path that writes is refused the same way; the store the node
    // hands out only reads (`StoreView` has no write), so there is no side door.
    let retired = |r: Result<_, cbddc_node::NodeError>| {
        matches!(r, Err(cbddc_node::NodeError::Retired { .. }))
    };
    assert!(retired(c.node().delete("docs", "k1").await.map(drop)));
    assert!(retired(
        c.node()
            .write(vec![cbddc_core::LocalWrite::put("docs", "batch", "1")])
            .await
            .map(drop)
    ));
    let mut tool = cbddc_net::PeerClient::connect(
        &c.address(),
        &cbddc_net::ClusterKey::derive("test-cluster"),
        &cbddc_net::LocalIdentity::tool().unwrap(),
        cbddc_net::ClientSettings::default(),
    )
    .await
    .unwrap();
    let not_a_member = |r: Result<_, cbddc_net::NetError>| {
        matches!(
            r,
            Err(cbddc_net::NetError::Remote {
                code: cbddc_net::proto::ErrorCode::NotAMember,
                ..
            })
        )
    };
    assert!(not_a_member(tool.put("docs", "wire", "1").await.map(drop)));
    assert!(not_a_member(tool.delete("docs", "k1").await.map(drop)));
    assert!(not_a_member(
        tool.write_batch(vec![cbddc_core::LocalWrite::put("docs", "wire-batch", "1")])
            .await
            .map(drop)
    ));
    assert_eq!(count(c).await, 200, "reads keep working on a retired node");
    // Not even as a hand-over: c departed, but these entries are not its own.
    let foreign = a
        .node()
        .store()
        .entries_missing_from(Default::default(), Default::default())
        .await
        .unwrap();
    let mut as_departed_c = cbddc_net::PeerClient::connect(
        &b.address(),
        &cbddc_net::ClusterKey::derive("test-cluster"),
        &identity_of(c),
        cbddc_net::ClientSettings::default(),
    )
    .await
    .unwrap();
    let refused = as_departed_c
        .push(&foreign.entries[..1])
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("only its own writes"), "{refused}");

    let next = b
        .node()
        .reconfigure_cluster(vec![node_id("a"), node_id("d")])
        .await
        .unwrap();
    assert_eq!(next, 3);
    wait_until(
        "a and d run configuration 3; b retires",
        DEADLINE,
        || async { [a, d].iter().all(|n| runs(n, 3, &["a", "d"])) && status(b).retired },
    )
    .await;
    for mut node in nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_control_messages_are_refused_and_the_cluster_goes_on() {
    let mut nodes = Vec::new();
    for (config, dir) in cluster(&["a", "b"], 2) {
        nodes.push(TestNode::start(config, dir).await);
    }
    let [a, b] = &nodes[..] else { unreachable!() };
    wait_until("a and b agree on configuration 1", DEADLINE, || async {
        [a, b]
            .iter()
            .all(|n| runs(n, 1, &["a", "b"]) && status(n).leader.is_some())
    })
    .await;
    let key = cbddc_net::ClusterKey::derive("test-cluster");
    let settings = cbddc_net::ClientSettings::default();
    let mut tool = cbddc_net::PeerClient::connect(
        &a.address(),
        &key,
        &cbddc_net::LocalIdentity::tool().unwrap(),
        settings,
    )
    .await
    .unwrap();
    let mut intruder =
        cbddc_net::PeerClient::connect(&a.address(), &key, &claiming("mallory"), settings)
            .await
            .unwrap();
    // Holding the cluster key is not enough to speak as b: a pinned b's key.
    let impostor =
        cbddc_net::PeerClient::connect(&a.address(), &key, &claiming("b"), settings).await;
    assert!(
        matches!(impostor, Err(cbddc_net::NetError::KeyRefused { .. })),
        "{impostor:?}"
    );
    use cbddc_net::proto::{self, control_request::Call, control_response::Reply};
    let refused = |r: Result<Reply, cbddc_net::NetError>| r.unwrap_err().to_string();
    let frame = |configuration_id: u32, encoding: u32, message: Vec<u8>| proto::ControlFrame {
        configuration_id,
        encoding,
        message,
    };
    let frames = |frames: Vec<proto::ControlFrame>| Call::Frames(proto::ControlFrames { frames });

    let garbage = refused(
        tool.control(frames(vec![frame(
            1,
            proto::OMNIPAXOS_0_2_JSON,
            b"{not json".to_vec(),
        )]))
        .await,
    );
    assert!(garbage.contains("unreadable control message"), "{garbage}");
    let unknown = refused(
        intruder
            .control(frames(vec![frame(1, 7, b"{}".to_vec())]))
            .await,
    );
    assert!(unknown.contains("upgrade the older node"), "{unknown}");
    assert!(refused(tool.control(frames(vec![])).await).contains("only nodes"));
    let reconfigure = Call::Reconfigure(proto::ReconfigureRequest {
        members: vec!["a".into()],
    });
    assert!(refused(intruder.control(reconfigure).await).contains("may not"));
    let offer = Call::Offer(proto::ControlOffer {
        configuration: Some(proto::ClusterConfiguration {
            configuration_id: 9,
            members: vec![proto::ClusterMember {
                node_id: "mallory".into(),
                pid: 1,
                address: "127.0.0.1:1".into(),
                node_key: String::new(),
            }],
        }),
        sealed_log: vec![],
        departed: vec![],
    });
    assert!(refused(intruder.control(offer).await).contains("not a member"));

    // Frames naming configurations, senders and pids that do not fit are dropped before
    // they reach OmniPaxos (a stray pid would panic inside it).
    let mut forged = Vec::new();
    for (configuration_id, from, to) in [(1u32, 7u64, 1u64), (1, 2, 9), (1, 0, 0), (5, 2, 1)] {
        let ballot =
            serde_json::json!({"config_id": configuration_id, "n": 1, "priority": 0, "pid": from});
        let message = serde_json::json!({"SequencePaxos": {"from": from, "to": to, "msg": {"PrepareReq": {"n": ballot}}}});
        forged.push(frame(
            configuration_id,
            proto::OMNIPAXOS_0_2_JSON,
            serde_json::to_vec(&message).unwrap(),
        ));
    }
    let answer = intruder.control(frames(forged)).await.unwrap();
    assert!(matches!(answer, Reply::Accepted(_)), "{answer:?}");
    let next = a
        .node()
        .reconfigure_cluster(vec![node_id("a")])
        .await
        .unwrap();
    assert_eq!(next, 2, "the control plane still decides");
    wait_until(
        "a runs configuration 2 alone and b retires",
        DEADLINE,
        || async { runs(a, 2, &["a"]) && status(b).retired },
    )
    .await;
    for mut node in nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_member_cluster_grows_and_bad_member_lists_are_refused() {
    let mut nodes = Vec::new();
    for (config, dir) in cluster(&["a", "b"], 1) {
        nodes.push(TestNode::start(config, dir).await);
    }
    let [a, b] = &nodes[..] else { unreachable!() };
    wait_until("a runs configuration 1 alone", DEADLINE, || async {
        runs(a, 1, &["a"]) && status(a).leader.as_deref() == Some("a")
    })
    .await;
    a.node().put("docs", "early", "{}").await.unwrap();
    let mut events = b.node().subscribe();
    let membership = a.node().membership();
    assert_eq!(
        *membership.borrow(),
        Some(cbddc_node::ClusterMembership {
            configuration_id: Some(1),
            members: vec![node_id("a")],
            retired: false,
        })
    );
    for (members, expected) in [
        (vec![], "at least one member"),
        (vec![node_id("a"), node_id("a")], "listed twice"),
        (vec![node_id("a"), node_id("zed")], "no known address"),
    ] {
        let err = a
            .node()
            .reconfigure_cluster(members)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "{err}");
    }
    let err = b
        .node()
        .reconfigure_cluster(vec![node_id("b")])
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a member"), "{err}");

    let next = a
        .node()
        .reconfigure_cluster(vec![node_id("a"), node_id("b")])
        .await
        .unwrap();
    assert_eq!(next, 2);
    wait_until(
        "a and b run configuration 2 and b has the data",
        DEADLINE,
        || async {
            runs(a, 2, &["a", "b"])
                && runs(b, 2, &["a", "b"])
                && status(b).leader.is_some()
                && b.node().get("docs", "early").await.unwrap().is_some()
        },
    )
    .await;
    assert_eq!(
        membership.borrow().as_ref().map(|m| m.members.clone()),
        Some(vec![node_id("a"), node_id("b")])
    );
    let joined = tokio::time::timeout(DEADLINE, async {
        loop {
            if let Ok(cbddc_node::NodeEvent::ClusterChanged {
                configuration_id: Some(2),
                members,
                retired,
            }) = events.recv().await
            {
                return (members, retired);
            }
        }
    })
    .await
    .expect("the newcomer announces the configuration it joined");
    assert_eq!(joined, (vec![node_id("a"), node_id("b")], false));
    for mut node in nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_removed_while_down_retires_when_it_comes_back() {
    let mut nodes = Vec::new();
    for (config, dir) in cluster(&["a", "b", "c"], 3) {
        nodes.push(TestNode::start(config, dir).await);
    }
    wait_until("configuration 1 everywhere", DEADLINE, || async {
        nodes.iter().all(|n| runs(n, 1, &["a", "b", "c"]))
    })
    .await;
    let config_c = nodes[2].config.clone();
    nodes[2].stop().await;
    let next = nodes[0]
        .node()
        .reconfigure_cluster(vec![node_id("a"), node_id("b")])
        .await
        .unwrap();
    assert_eq!(next, 2);
    // c learns the seal from the old configuration, still running on a and b for a
    // grace period, or after it from their answer to its frames (`superseded`).
    wait_until("a and b run configuration 2", DEADLINE, || async {
        runs(&nodes[0], 2, &["a", "b"]) && runs(&nodes[1], 2, &["a", "b"])
    })
    .await;
    nodes[2].restart_with(config_c).await;
    wait_until(
        "the restarted c learns it was removed",
        DEADLINE,
        || async { status(&nodes[2]).retired },
    )
    .await;
    assert_eq!(status(&nodes[2]).retired_after, Some(1));
    for mut node in nodes {
        node.stop().await;
    }
}

/// Issue 12: a `cluster_key` changed live never reached the control-plane links, so the
/// members could sync data but never decide anything again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_key_changed_live_reaches_the_control_plane() {
    let mut nodes = Vec::new();
    for (config, dir) in cluster(&["key-a", "key-b"], 2) {
        nodes.push(TestNode::start(config, dir).await);
    }
    wait_until("both run configuration 1", DEADLINE, || async {
        runs(&nodes[0], 1, &["key-a", "key-b"])
            && runs(&nodes[1], 1, &["key-a", "key-b"])
            && status(&nodes[0]).leader.is_some()
    })
    .await;
    for node in nodes.iter_mut() {
        node.reconfigure(|c| c.cluster_key = "a-new-cluster-key".into());
    }
    wait_until("both to apply the new key", DEADLINE, || async {
        nodes
            .iter()
            .all(|n| n.node().config().cluster_key == "a-new-cluster-key")
    })
    .await;
    // Deciding needs both members: only links that use the new key can get there.
    let next = nodes[0]
        .node()
        .reconfigure_cluster(vec![node_id("key-a")])
        .await
        .unwrap();
    assert_eq!(next, 2);
    wait_until("key-b to learn it was removed", DEADLINE, || async {
        status(&nodes[1]).retired
    })
    .await;
    for mut node in nodes {
        node.stop().await;
    }
}
