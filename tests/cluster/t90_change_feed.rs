use cbddc_node::{ChangeFeed, ChangeFilter, FeedStart, NodeError};
use cbddc_tests::{TestNode, two_peers};
use std::time::Duration;

/// The next `count` changes of `feed`, as "key=value" ("key deleted" for a delete).
async fn take(feed: &mut ChangeFeed, count: usize) -> Vec<String> {
    let mut out = Vec::new();
    while out.len() < count {
        let change = tokio::time::timeout(Duration::from_secs(20), feed.next())
            .await
            .expect("the feed to yield the next change within 20 s")
            .unwrap()
            .expect("the feed to stay open");
        out.push(match change.document_text() {
            Some(value) => format!("{}={value}", change.entry.key),
            None => format!("{} deleted", change.entry.key),
        });
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_on_one_node_yields_another_nodes_puts_and_deletes_in_order() {
    let (a, b) = two_peers("feed-node-a", "feed-node-b").await;
    let mut feed = b
        .node()
        .changes(ChangeFilter::collection("users"))
        .await
        .unwrap();
    a.node().put("users", "ada", r#"{"v":1}"#).await.unwrap();
    a.node().put("elsewhere", "x", "0").await.unwrap();
    a.node().put("users", "bob", "2").await.unwrap();
    a.node().delete("users", "ada").await.unwrap();
    let seen = take(&mut feed, 3).await;
    assert_eq!(seen, [r#"ada={"v":1}"#, "bob=2", "ada deleted"]);
    b.node().put("users", "cy", "3").await.unwrap();
    assert_eq!(
        take(&mut feed, 1).await,
        ["cy=3"],
        "local writes are changes too"
    );
    drop((a, b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_resumed_after_a_restart_misses_nothing_and_repeats_nothing() {
    let mut a = TestNode::spawn("feed-node-r", |_| {}).await;
    for i in 0..5 {
        a.node()
            .put("c", &format!("k{i}"), &i.to_string())
            .await
            .unwrap();
    }
    let mut feed = a
        .node()
        .changes(ChangeFilter::default().starting(FeedStart::Beginning))
        .await
        .unwrap();
    assert_eq!(take(&mut feed, 3).await, ["k0=0", "k1=1", "k2=2"]);
    let resume = feed.position();
    drop(feed);

    let config = a.config.clone();
    a.stop().await;
    a.restart_with(config).await;
    a.node().put("c", "k5", "5").await.unwrap();
    a.node().delete("c", "k0").await.unwrap();

    let mut feed = a
        .node()
        .changes(ChangeFilter::default().starting(FeedStart::After(resume)))
        .await
        .unwrap();
    assert_eq!(
        take(&mut feed, 4).await,
        ["k3=3", "k4=4", "k5=5", "k0 deleted"]
    );
    // Nothing more: the next change to come is the next write.
    let page = feed
        .next_page(10, Duration::from_millis(200))
        .await
        .unwrap();
    assert_eq!(page, Some(Vec::new()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_never_holds_writes_up_and_loses_nothing() {
    let a = TestNode::spawn("feed-node-s", |_| {}).await;
    let mut feed = a.node().changes(ChangeFilter::default()).await.unwrap();
    // Far more than any in-memory buffer of the node holds, written before one is read.
    let writes: Vec<_> = (0..5_000)
        .map(|i| cbddc_core::LocalWrite::put("c", format!("k{i:04}"), i.to_string()))
        .collect();
    for chunk in writes.chunks(500) {
        a.node().write(chunk.to_vec()).await.unwrap();
    }
    let seen = take(&mut feed, 5_000).await;
    assert_eq!(seen.first().map(String::as_str), Some("k0000=0"));
    assert_eq!(seen.last().map(String::as_str), Some("k4999=4999"));
    assert_eq!(feed.position(), 5_000);
}

/// Until the node's oplog holds `entries` and its feed keeps `kept` deletes.
async fn compacted_to(node: &TestNode, entries: u64, kept: u64) {
    cbddc_tests::wait_until(
        "compaction to collect what every peer holds",
        Duration::from_secs(30),
        || async {
            let status = node.node().status().await.unwrap();
            status.oplog_entries == entries && status.feed.feed_entries == kept
        },
    )
    .await;
}

/// The issue's reproduction on two nodes: b acknowledged a's delete, both collected the
/// tombstone, and a consumer of either feed that resumes from before it still gets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_every_peer_acknowledged_stays_in_the_feed() {
    let (a, b) = two_peers("feed-ack-a", "feed-ack-b").await;
    a.node().put("c", "k1", "1").await.unwrap();
    a.node().put("c", "k2", "2").await.unwrap();
    let mut read_to_2 = a
        .node()
        .changes(ChangeFilter::default().starting(FeedStart::Beginning))
        .await
        .unwrap();
    assert_eq!(take(&mut read_to_2, 2).await, ["k1=1", "k2=2"]);
    assert_eq!(read_to_2.position(), 2);
    a.node().put("c", "k1", "3").await.unwrap();
    a.node().delete("c", "k2").await.unwrap();
    compacted_to(&a, 1, 1).await;
    compacted_to(&b, 1, 1).await;

    let mut resumed = a
        .node()
        .changes(ChangeFilter::default().starting(FeedStart::After(2)))
        .await
        .unwrap();
    assert_eq!(take(&mut resumed, 2).await, ["k1=3", "k2 deleted"]);
    let mut on_b = b
        .node()
        .changes(ChangeFilter::default().starting(FeedStart::Beginning))
        .await
        .unwrap();
    let mut seen = take(&mut on_b, 2).await;
    seen.sort();
    assert_eq!(seen, ["k1=3", "k2 deleted"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_retention_the_feed_says_so_and_a_resync_gets_the_current_state() {
    let a = TestNode::spawn("feed-retention", |c| c.feed_retention_ms = 0).await;
    a.node().put("c", "k1", "1").await.unwrap();
    a.node().put("c", "k2", "2").await.unwrap();
    a.node().put("c", "k1", "3").await.unwrap();
    a.node().delete("c", "k2").await.unwrap();
    compacted_to(&a, 1, 0).await;

    match a
        .node()
        .changes(ChangeFilter::default().starting(FeedStart::After(2)))
        .await
    {
        Err(NodeError::FeedCompacted { after, oldest }) => assert_eq!((after, oldest), (2, 4)),
        other => panic!("expected FeedCompacted, got {other:?}"),
    }
    let mut resync = a
        .node()
        .changes(ChangeFilter::default().starting(FeedStart::Current))
        .await
        .unwrap();
    assert_eq!(take(&mut resync, 1).await, ["k1=3"]);
    a.node().put("c", "k3", "5").await.unwrap();
    assert_eq!(take(&mut resync, 1).await, ["k3=5"]);
    assert_eq!(resync.position(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_consumer_resumes_where_it_acknowledged_and_shows_in_status() {
    let a = TestNode::spawn("feed-consumer", |c| c.feed_retention_ms = 0).await;
    a.node().put("c", "k1", "1").await.unwrap();
    let filter = || ChangeFilter::collection("c").consumer("indexer");
    let mut feed = a.node().changes(filter()).await.unwrap();
    // New to the node: the current state first.
    let first = feed.next().await.unwrap().unwrap();
    assert_eq!((first.position, first.entry.key.as_str()), (0, "k1"));
    a.node().put("c", "k2", "2").await.unwrap();
    let second = feed.next().await.unwrap().unwrap();
    assert_eq!((second.position, second.entry.key.as_str()), (2, "k2"));
    feed.acknowledge(second.position).await.unwrap();
    drop(feed);

    a.node().delete("c", "k2").await.unwrap();
    a.node().put("c", "k1", "4").await.unwrap();
    // The retention is 0, but the delete waits for the consumer that has not read it.
    compacted_to(&a, 1, 1).await;
    let status = a.node().status().await.unwrap();
    assert_eq!(status.feed.consumers.len(), 1);
    assert_eq!(
        (
            status.feed.consumers[0].name.as_str(),
            status.feed.consumers[0].lag
        ),
        ("indexer", 2)
    );

    let mut feed = a.node().changes(filter()).await.unwrap();
    assert_eq!(take(&mut feed, 2).await, ["k2 deleted", "k1=4"]);
    feed.acknowledge(feed.position()).await.unwrap();
    compacted_to(&a, 1, 0).await;
    assert!(a.node().forget_feed_consumer("indexer").await.unwrap());
    assert!(matches!(
        a.node()
            .changes(ChangeFilter::default().starting(FeedStart::Acknowledged))
            .await,
        Err(NodeError::InvalidRequest { .. })
    ));
}

/// A stopping node answers a long poll at once with an empty page (it used to hold the
/// stop until the poll's wait ran out or the grace period cut the session), and a new
/// connection is refused instead of left waiting in the listener's backlog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_node_answers_a_long_poll_and_refuses_new_connections() {
    let mut a = TestNode::spawn("feed-stopping", |_| {}).await;
    let address = a.address();
    let key = cbddc_net::ClusterKey::derive("test-cluster");
    let mut client = cbddc_net::PeerClient::connect(
        &address,
        &key,
        &cbddc_net::LocalIdentity::tool().unwrap(),
        cbddc_net::ClientSettings::default(),
    )
    .await
    .unwrap();
    a.node().put("c", "k", "1").await.unwrap();
    let poll = tokio::spawn(async move {
        // A named consumer asking after 1 acknowledges 1 before it waits: status shows
        // when the poll is in the node.
        let ask = cbddc_net::ChangesAsk {
            collection: None,
            start: cbddc_net::FeedFrom::After(1),
            consumer: Some("probe".into()),
        };
        client.changes(ask, Duration::from_secs(20)).await
    });
    cbddc_tests::wait_until(
        "the poll to wait in the node",
        Duration::from_secs(20),
        || async {
            let status = a.node().status().await.unwrap();
            status
                .feed
                .consumers
                .iter()
                .any(|c| c.name == "probe" && c.position == 1)
        },
    )
    .await;
    a.stop().await;
    let answer = tokio::time::timeout(Duration::from_secs(20), poll)
        .await
        .expect("the poll to end")
        .unwrap();
    let page = answer.expect("an answer, not a dropped session");
    assert!(page.changes.is_empty());
    let refused = tokio::net::TcpStream::connect(&address).await;
    assert!(refused.is_err(), "a stopped node's port still accepts");
}
