use cbddc_core::LocalWrite;
use cbddc_tests::{TestNode, two_peers, wait_until};
use std::sync::Arc;
use std::time::Duration;

async fn same_state(a: &TestNode, b: &TestNode) -> bool {
    let (va, vb) = (
        a.node().store().version_vector().await.unwrap(),
        b.node().store().version_vector().await.unwrap(),
    );
    va == vb && a.documents("shared").await == b.documents("shared").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_on_both_nodes_converge_to_identical_documents() {
    let (a, b) = two_peers("node-a", "node-b").await;
    let (a, b) = (Arc::new(a), Arc::new(b));
    let mut writers = Vec::new();
    for (side, node) in [("a", a.clone()), ("b", b.clone())] {
        for task in 0..4 {
            let node = node.clone();
            writers.push(tokio::spawn(async move {
                for i in 0..60u32 {
                    // Both nodes write the same 40 keys, so most writes conflict.
                    let key = format!("k{}", (i * 7 + task) % 40);
                    if i % 9 == 4 {
                        node.node().delete("shared", &key).await.unwrap();
                    } else {
                        let value = format!(r#"{{"by":"{side}","task":{task},"i":{i}}}"#);
                        node.node().put("shared", &key, &value).await.unwrap();
                    }
                }
            }));
        }
    }
    // A batch, too, racing with the single writes.
    let batch = (0..40)
        .map(|i| LocalWrite::put("shared", format!("k{i}"), "\"batch\""))
        .collect();
    a.node().write(batch).await.unwrap();
    for w in writers {
        w.await.unwrap();
    }
    wait_until(
        "both nodes to hold the same documents",
        Duration::from_secs(30),
        || same_state(&a, &b),
    )
    .await;

    let vv = a.node().store().version_vector().await.unwrap();
    assert_eq!(
        vv.total(),
        2 * 4 * 60 + 40,
        "every write of both nodes is accounted for"
    );
    let docs = a.documents("shared").await;
    assert_eq!(docs, b.documents("shared").await);
    assert!(!docs.is_empty() && docs.len() <= 40);
    // The winner of each key is the same write on both nodes, stamp included.
    for (key, _) in &docs {
        let da = a.node().get("shared", key).await.unwrap().unwrap();
        let db = b.node().get("shared", key).await.unwrap().unwrap();
        assert_eq!(da.hlc, db.hlc);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_reaches_the_peer_and_a_delete_follows_it() {
    let (a, b) = two_peers("left", "right").await;
    a.node()
        .put("notes", "n1", r#"{"text":"hello"}"#)
        .await
        .unwrap();
    wait_until("the put to reach b", Duration::from_secs(10), || async {
        b.node().get("notes", "n1").await.unwrap().is_some()
    })
    .await;
    b.node().delete("notes", "n1").await.unwrap();
    wait_until("the delete to reach a", Duration::from_secs(10), || async {
        a.node().get("notes", "n1").await.unwrap().is_none()
    })
    .await;
    let status = b.node().status().await.unwrap();
    let peer = status
        .peers
        .iter()
        .find(|p| p.node_id.as_str() == "left")
        .unwrap();
    assert!(peer.last_exchange_ms.is_some_and(|t| t > 0));
    assert_eq!(peer.peer_type, Some(cbddc_core::PeerType::StaticRemote));

    let mut client = cbddc_net::PeerClient::connect(
        &a.address(),
        &cbddc_net::ClusterKey::derive("test-cluster"),
        &cbddc_net::LocalIdentity::tool().unwrap(),
        cbddc_net::ClientSettings::default(),
    )
    .await
    .unwrap();
    let peers = client.peers().await.unwrap();
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].node_id, "right");
    assert!(peers[0].last_exchange_ms > 0);
}
