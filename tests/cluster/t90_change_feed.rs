use cbddc_core::Operation;
use cbddc_node::{ChangeFeed, ChangeFilter, FeedStart};
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
        out.push(match change.entry.op {
            Operation::Put { value } => format!("{}={value}", change.entry.key),
            Operation::Delete => format!("{} deleted", change.entry.key),
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
