use cbddc_tests::{TestNode, http_get, parse_prometheus, two_peers, wait_until};
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(20);

async fn scrape(address: std::net::SocketAddr) -> std::collections::BTreeMap<String, f64> {
    let (status, body) = tokio::task::spawn_blocking(move || http_get(address, "/metrics"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, 200, "{body}");
    parse_prometheus(&body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text_and_count_every_write() {
    let (a, b) = two_peers("metrics-a", "metrics-b").await;
    assert_eq!(a.node().metrics_addr().await, None, "off by default");
    let mut b = b;
    b.reconfigure(|c| c.metrics_address = Some("127.0.0.1:0".parse().unwrap()));
    wait_until("b to serve its metrics", DEADLINE, || async {
        b.node().metrics_addr().await.is_some()
    })
    .await;
    let address = b.node().metrics_addr().await.unwrap();
    // A named feed consumer that read nothing yet: its lag is every change after it.
    b.node().put("m", "first", "0").await.unwrap();
    let feed = b
        .node()
        .changes(cbddc_node::ChangeFilter::default().consumer("metered"))
        .await
        .unwrap();
    feed.acknowledge(1).await.unwrap();
    let before = scrape(address).await;
    let writes = before["cbddc_local_writes_total"];

    for i in 0..25 {
        b.node().put("m", &format!("k{i}"), "1").await.unwrap();
    }
    a.node().put("m", "from-a", "2").await.unwrap();
    wait_until("b to apply a's write", DEADLINE, || async {
        b.node().get("m", "from-a").await.unwrap().is_some()
    })
    .await;
    let after = scrape(address).await;
    assert_eq!(after["cbddc_local_writes_total"], writes + 25.0);
    assert!(after["cbddc_entries_applied_total"] >= before["cbddc_entries_applied_total"] + 1.0);
    assert_eq!(after["cbddc_documents"], 27.0);
    assert!(after["cbddc_oplog_entries"] >= 27.0);
    assert_eq!(after["cbddc_feed_consumer_lag{consumer=\"metered\"}"], 26.0);
    assert!(after.contains_key("cbddc_feed_entries"));
    assert_eq!(after["cbddc_peers_alive"], 1.0);
    assert!(after["cbddc_bytes_sent_total"] > 0.0 && after["cbddc_bytes_received_total"] > 0.0);
    assert!(after["cbddc_sync_rounds_total"] >= 1.0);
    assert!(after.contains_key("cbddc_handshakes_refused_total{reason=\"auth_failed\"}"));
    assert!(after["cbddc_commit_seconds_count"] >= 25.0);
    assert!(after.contains_key("cbddc_commit_seconds_bucket{le=\"+Inf\"}"));
    assert!(after.contains_key("cbddc_apply_seconds_sum"));
    assert!(after.contains_key("cbddc_replication_lag_entries{peer=\"metrics-a\"}"));
    assert!(after.contains_key("cbddc_is_leader"));

    // A key holder with the wrong cluster key is refused and counted by reason.
    let refused = cbddc_net::PeerClient::connect(
        &b.address(),
        &cbddc_net::ClusterKey::derive("another-cluster"),
        &cbddc_net::LocalIdentity::tool().unwrap(),
        cbddc_net::ClientSettings::default(),
    )
    .await;
    assert!(refused.is_err());
    let counted = scrape(address).await;
    assert_eq!(
        counted["cbddc_handshakes_refused_total{reason=\"auth_failed\"}"],
        after["cbddc_handshakes_refused_total{reason=\"auth_failed\"}"] + 1.0
    );

    // The page and its data are served beside the metrics; anything else is refused.
    let (status, page) = http_get(address, "/").unwrap();
    assert_eq!(status, 200);
    assert!(page.contains("<title>CBDDC node</title>"));
    let (status, state) = http_get(address, "/api/state").unwrap();
    assert_eq!(status, 200);
    let state: serde_json::Value = serde_json::from_str(&state).unwrap();
    assert_eq!(state["node_id"], "metrics-b");
    assert_eq!(http_get(address, "/nothing").unwrap().0, 404);
    // A hostile client gets a refusal, not the node's memory: a head past 8 KiB.
    let answer = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let huge = format!("GET / HTTP/1.1\r\nX-Padding: {}\r\n", "x".repeat(20_000));
        let _ = stream.write_all(huge.as_bytes());
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");

    b.reconfigure(|c| c.metrics_address = None);
    wait_until("b to stop serving its metrics", DEADLINE, || async {
        b.node().metrics_addr().await.is_none()
    })
    .await;
    assert!(http_get(address, "/metrics").is_err());
    drop(a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metrics_address_in_use_refuses_the_start_with_its_cause() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap();
    let (mut config, dir) = TestNode::configure("metrics-busy");
    config.metrics_address = Some(address);
    let err = cbddc_node::Node::start(config)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(&address.to_string()), "{err}");
    drop(dir);
}
