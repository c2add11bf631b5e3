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

/// Opens TCP streams like a node does, counting them; while cut it refuses new ones and
/// breaks the open ones: the in-process switch a test or a simulation puts under sessions.
#[derive(Debug, Default)]
struct SwitchedConnector {
    opened: std::sync::atomic::AtomicUsize,
    refused: std::sync::atomic::AtomicUsize,
    cut: Arc<std::sync::atomic::AtomicBool>,
}

/// A stream that fails every read and write while its switch is cut.
#[derive(Debug)]
struct Switched {
    inner: Box<dyn cbddc_net::Transport>,
    cut: Arc<std::sync::atomic::AtomicBool>,
}

impl Switched {
    fn check(&self) -> std::io::Result<()> {
        if self.cut.load(std::sync::atomic::Ordering::SeqCst) {
            Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the switch cut this link",
            ))
        } else {
            Ok(())
        }
    }
}

impl tokio::io::AsyncRead for Switched {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if let Err(e) = self.check() {
            return std::task::Poll::Ready(Err(e));
        }
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Switched {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if let Err(e) = self.check() {
            return std::task::Poll::Ready(Err(e));
        }
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[async_trait::async_trait]
impl cbddc_net::Connector for SwitchedConnector {
    async fn connect(
        &self,
        address: &str,
        settings: &cbddc_net::ClientSettings,
    ) -> std::io::Result<Box<dyn cbddc_net::Transport>> {
        use std::sync::atomic::Ordering;
        if self.cut.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(std::io::Error::other("the switch cut this link"));
        }
        self.opened.fetch_add(1, Ordering::SeqCst);
        let inner = cbddc_net::TcpConnector.connect(address, settings).await?;
        Ok(Box::new(Switched {
            inner,
            cut: self.cut.clone(),
        }))
    }
}

/// The data plane on its own (a store and an orchestrator, no node around them) pulls
/// from a node through whatever connector it is given: here a switch that can cut it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_plane_alone_syncs_over_the_connector_it_is_given() {
    use cbddc_core::NodeId;
    use std::sync::atomic::Ordering;
    const DEADLINE: Duration = Duration::from_secs(20);
    let b = TestNode::spawn("switched-b", |_| {}).await;
    b.node().put("c", "k1", "1").await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let local = NodeId::new("switched-a").unwrap();
    let store = Arc::new(
        cbddc_store::SqliteStore::open(dir.path(), local.clone(), Default::default())
            .await
            .unwrap(),
    );
    let switch = Arc::new(SwitchedConnector::default());
    let context = cbddc_sync::SyncContext {
        node_id: local.clone(),
        identity: cbddc_net::LocalIdentity::node(
            local,
            cbddc_net::NodeKey::generate().unwrap(),
            None,
        ),
        store: store.clone(),
        key: cbddc_net::ClusterKey::derive("test-cluster"),
        book: Arc::new(cbddc_sync::PeerBook::new(Duration::from_secs(3))),
        interval: Duration::from_millis(100),
        limits: Default::default(),
        client: Default::default(),
        connector: switch.clone(),
        fan_out: Arc::new(tokio::sync::Semaphore::new(cbddc_sync::FAN_OUT)),
        duplicates: Default::default(),
        fold: Arc::new(
            cbddc_sync::fold::FoldTracker::load(store.as_ref())
                .await
                .unwrap(),
        ),
        compactor: Arc::new(
            cbddc_sync::compaction::Compactor::load(store.as_ref(), 60_000, 60_000)
                .await
                .unwrap(),
        ),
        metrics: Arc::new(cbddc_sync::NoMetrics),
    };
    let token = tokio_util::sync::CancellationToken::new();
    let sync = Arc::new(cbddc_sync::SyncOrchestrator::new(context, token.clone()));
    sync.set_known(vec![b.as_peer()]);
    let holds = |key: &'static str| {
        let store = store.clone();
        move || {
            let store = store.clone();
            async move {
                cbddc_core::DocumentStore::get(store.as_ref(), "c", key)
                    .await
                    .unwrap()
                    .is_some()
            }
        }
    };
    wait_until("a pulls k1 through the switch", DEADLINE, holds("k1")).await;
    assert!(switch.opened.load(Ordering::SeqCst) > 0);

    switch.cut.store(true, Ordering::SeqCst);
    b.node().put("c", "k2", "2").await.unwrap();
    wait_until("the cut link to be tried and refused", DEADLINE, || async {
        switch.refused.load(Ordering::SeqCst) > 0
    })
    .await;
    switch.cut.store(false, Ordering::SeqCst);
    wait_until("a pulls k2 once the link is back", DEADLINE, holds("k2")).await;
    sync.stop(Duration::from_secs(5)).await;
    token.cancel();
    store.close().await;
}
