use cbddc_net::{ClientSettings, ClusterKey, PeerClient};
use cbddc_tests::{two_peers, wait_until};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_oversized_and_truncated_frames_do_not_stop_the_node_serving_others() {
    let (a, b) = two_peers("node-a", "node-b").await;
    let address = a.address();

    let mut garbage = tokio::net::TcpStream::connect(&address).await.unwrap();
    garbage
        .write_all(&[
            0x00, 0x10, 0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11,
        ])
        .await
        .unwrap();
    let mut oversized = tokio::net::TcpStream::connect(&address).await.unwrap();
    oversized.write_all(&[0xff, 0xff]).await.unwrap();
    oversized.write_all(&vec![0x41; 1024]).await.unwrap();
    let mut truncated = tokio::net::TcpStream::connect(&address).await.unwrap();
    truncated.write_all(&[0x00, 0x40, 1, 2, 3]).await.unwrap();
    drop(truncated);
    let mut empty = tokio::net::TcpStream::connect(&address).await.unwrap();
    empty.write_all(&[0x00, 0x00]).await.unwrap();

    // A client, and the peer's sync, are still served.
    let mut client = PeerClient::connect(
        &address,
        &ClusterKey::derive("test-cluster"),
        &cbddc_net::LocalIdentity::tool().unwrap(),
        ClientSettings::default(),
    )
    .await
    .unwrap();
    client.put("docs", "d1", r#"{"ok":true}"#).await.unwrap();
    assert_eq!(
        client.get("docs", "d1").await.unwrap().unwrap().value,
        r#"{"ok":true}"#
    );
    wait_until(
        "the write to reach b despite the garbage",
        Duration::from_secs(10),
        || async { b.node().get("docs", "d1").await.unwrap().is_some() },
    )
    .await;

    // Invalid requests from an authenticated client are refused without storing anything.
    for (key, value) in [("bad", "{not json"), ("", "1")] {
        let err = client.put("docs", key, value).await.unwrap_err();
        assert!(err.to_string().contains("invalid"), "{err}");
    }
    assert_eq!(a.documents("docs").await.len(), 1);
    assert!(client.status().await.is_ok());
}
