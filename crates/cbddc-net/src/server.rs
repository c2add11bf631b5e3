use crate::identity::{LocalIdentity, NodeKey, PeerVerifier, PublicKey};
use crate::secure::{self, ClusterKey, SecureStream};
use crate::{NetError, proto};
use async_trait::async_trait;
use cbddc_core::NodeId;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Settings of a [`TcpSyncServer`].
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Our node id, sent to every peer in the handshake.
    pub node_id: NodeId,
    /// Our static key, proved to every peer in the handshake.
    pub node_key: NodeKey,
    /// Checks each initiating node's id and key (`None`: accept any key holder).
    pub verifier: Option<Arc<dyn PeerVerifier>>,
    /// The replica this node writes as, told to peers.
    pub replica: Option<cbddc_core::ReplicaId>,
    /// The cluster's pre-shared key at start ([`TcpSyncServer::set_cluster_key`] changes it).
    pub cluster_key: ClusterKey,
    /// A connection must complete the handshake within this time.
    pub handshake_timeout: Duration,
    /// The handler must answer a request within this time, or the peer gets a timeout error.
    pub request_timeout: Duration,
    /// A session with no request for this long is closed.
    pub idle_timeout: Duration,
    /// Connections beyond this number are refused as busy.
    pub max_connections: usize,
    /// Whether this node may be elected leader (told to peers in the handshake) at start;
    /// [`TcpSyncServer::set_eligible`] changes it.
    pub eligible: bool,
    /// Where sessions count their bytes and refused handshakes (`None`: not counted).
    pub meter: Option<Arc<crate::NetMeter>>,
    /// The collections this node replicates, told to peers.
    pub interest: cbddc_core::Interest,
}

impl ServerSettings {
    /// Defaults: 5 s handshake, 30 s per request, 5 min idle, 256 connections, no
    /// verifier.
    pub fn new(node_id: NodeId, node_key: NodeKey, cluster_key: ClusterKey) -> Self {
        Self {
            node_id,
            node_key,
            verifier: None,
            replica: None,
            cluster_key,
            handshake_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(300),
            max_connections: 256,
            eligible: true,
            meter: None,
            interest: cbddc_core::Interest::all(),
        }
    }
}

/// Who is on the other end of a session.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// The peer's node id, or `None` for a tool such as the CLI.
    pub peer: Option<NodeId>,
    /// The static key the peer proved (a tool's is one of its own for this run).
    pub peer_key: Option<PublicKey>,
    /// The replica the peer writes as now, if it said.
    pub peer_replica: Option<cbddc_core::ReplicaId>,
    /// Whether the peer says it may lead.
    pub peer_eligible: bool,
    /// The collections the peer replicates (every one for tools).
    pub peer_interest: cbddc_core::Interest,
    /// The peer's socket address.
    pub address: SocketAddr,
}

/// Answers requests of authenticated sessions. The server calls it once per request,
/// bounded by [`ServerSettings::request_timeout`]; it may be called concurrently from
/// many sessions.
#[async_trait]
pub trait RequestHandler: Send + Sync + 'static {
    /// Produces the answer to one request.
    async fn handle(
        &self,
        session: &SessionInfo,
        request: proto::request::Body,
    ) -> proto::response::Body;
}

/// The TCP server of a node: accepts connections, runs the handshake, then serves
/// requests strictly one at a time per session.
///
/// It takes an already bound listener, so callers (and tests) choose the port — `:0`
/// included — and a port change can bind the new port before the old server stops.
#[derive(Debug)]
pub struct TcpSyncServer {
    local_addr: SocketAddr,
    token: CancellationToken,
    tracker: TaskTracker,
    terms: Arc<RwLock<Terms>>,
    acceptor: tokio::sync::Mutex<Option<tokio::task::JoinHandle<TcpListener>>>,
}

/// What a new session is offered: the cluster key, and whether we say we may lead. Both
/// change live; sessions already established keep theirs.
#[derive(Debug, Clone)]
struct Terms {
    key: ClusterKey,
    eligible: bool,
}

impl TcpSyncServer {
    /// Starts serving `listener` until `token` (or [`TcpSyncServer::stop`]) cancels.
    pub fn start(
        listener: TcpListener,
        settings: ServerSettings,
        handler: Arc<dyn RequestHandler>,
        token: CancellationToken,
    ) -> Result<Self, NetError> {
        let local_addr = listener.local_addr()?;
        let tracker = TaskTracker::new();
        let terms = Arc::new(RwLock::new(Terms {
            key: settings.cluster_key.clone(),
            eligible: settings.eligible,
        }));
        let settings = Arc::new(settings);
        let limit = Arc::new(Semaphore::new(settings.max_connections));
        let acceptor = tokio::spawn(accept_loop(
            listener,
            settings,
            terms.clone(),
            handler,
            limit,
            token.clone(),
            tracker.clone(),
        ));
        tracing::info!(address = %local_addr, "sync server listening");
        Ok(Self {
            local_addr,
            token,
            tracker,
            terms,
            acceptor: tokio::sync::Mutex::new(Some(acceptor)),
        })
    }

    /// Uses `key` for every session that starts from now on; sessions already
    /// established keep theirs.
    pub fn set_cluster_key(&self, key: ClusterKey) {
        self.terms.write().unwrap_or_else(|p| p.into_inner()).key = key;
    }

    /// Tells every session that starts from now on whether this node may lead.
    pub fn set_eligible(&self, eligible: bool) {
        self.terms
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .eligible = eligible;
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, lets sessions finish the request in flight, and waits up to
    /// `grace` for them. Returns false if some were still running at the deadline.
    pub async fn stop(&self, grace: Duration) -> bool {
        self.stop_keeping_listener(grace).await.1
    }

    /// Like [`TcpSyncServer::stop`], but hands back the still-bound listener, so a new
    /// server can take over the same address without a moment in which it is unbound.
    pub async fn stop_keeping_listener(&self, grace: Duration) -> (Option<TcpListener>, bool) {
        self.token.cancel();
        let listener = match self.acceptor.lock().await.take() {
            Some(acceptor) => acceptor.await.ok(),
            None => None,
        };
        self.tracker.close();
        let finished = tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_ok();
        tracing::info!(address = %self.local_addr, clean = finished, "sync server stopped");
        (listener, finished)
    }
}

async fn accept_loop(
    listener: TcpListener,
    settings: Arc<ServerSettings>,
    terms: Arc<RwLock<Terms>>,
    handler: Arc<dyn RequestHandler>,
    limit: Arc<Semaphore>,
    token: CancellationToken,
    tracker: TaskTracker,
) -> TcpListener {
    loop {
        let accepted = tokio::select! {
            _ = token.cancelled() => return listener,
            accepted = listener.accept() => accepted,
        };
        let (mut socket, address) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            tracing::warn!(%address, "refusing a connection: connection limit reached");
            if let Some(meter) = &settings.meter {
                meter.refuse(proto::RejectReason::Busy);
            }
            tracker.spawn(async move {
                let _ =
                    tokio::time::timeout(Duration::from_secs(1), secure::refuse_busy(&mut socket))
                        .await;
            });
            continue;
        };
        let (settings, handler, token) = (settings.clone(), handler.clone(), token.child_token());
        let terms = terms.read().unwrap_or_else(|p| p.into_inner()).clone();
        tracker.spawn(async move {
            let _permit = permit;
            if let Err(reason) =
                serve(socket, address, &settings, &terms, handler.as_ref(), &token).await
            {
                match reason {
                    NetError::Closed => tracing::debug!(%address, "session ended by the peer"),
                    reason => tracing::warn!(%address, %reason, "closing connection"),
                }
            }
        });
    }
}

async fn serve(
    socket: TcpStream,
    address: SocketAddr,
    settings: &ServerSettings,
    terms: &Terms,
    handler: &dyn RequestHandler,
    token: &CancellationToken,
) -> Result<(), NetError> {
    let local = LocalIdentity {
        node_id: Some(settings.node_id.clone()),
        key: settings.node_key.clone(),
        verifier: settings.verifier.clone(),
        replica: settings.replica.clone(),
        meter: settings.meter.clone(),
        interest: settings.interest.clone(),
    };
    let handshake = secure::respond(socket, &terms.key, &local, terms.eligible);
    let (mut stream, peer) = tokio::select! {
        _ = token.cancelled() => return Ok(()),
        result = tokio::time::timeout(settings.handshake_timeout, handshake) => result.map_err(|_| NetError::Timeout {
            during: "waiting for the handshake",
            after: settings.handshake_timeout,
        })??,
    };
    let session = SessionInfo {
        peer_eligible: peer.as_ref().is_some_and(|p| p.eligible),
        peer_key: peer.as_ref().map(|p| p.key),
        peer_replica: peer.as_ref().and_then(|p| p.replica.clone()),
        peer_interest: peer
            .as_ref()
            .map(|p| p.interest.clone())
            .unwrap_or_default(),
        peer: peer.map(|p| p.node_id),
        address,
    };
    tracing::debug!(%address, peer = ?session.peer, "session established");
    loop {
        let request: proto::Request = tokio::select! {
            _ = token.cancelled() => break,
            received = tokio::time::timeout(settings.idle_timeout, stream.recv()) => match received {
                Err(_) => return Err(NetError::Timeout { during: "waiting for a request", after: settings.idle_timeout }),
                Ok(Err(NetError::Closed)) => return Ok(()),
                Ok(other) => other?,
            },
        };
        let body = match request.body {
            None => error_body(proto::ErrorCode::InvalidRequest, "the request has no body"),
            Some(body) => {
                match tokio::time::timeout(settings.request_timeout, handler.handle(&session, body))
                    .await
                {
                    Ok(body) => body,
                    Err(_) => error_body(
                        proto::ErrorCode::Timeout,
                        &format!(
                            "the request took longer than {:?}",
                            settings.request_timeout
                        ),
                    ),
                }
            }
        };
        respond(&mut stream, request.id, body).await?;
    }
    stream.shutdown().await;
    Ok(())
}

async fn respond(
    stream: &mut SecureStream<TcpStream>,
    id: u64,
    body: proto::response::Body,
) -> Result<(), NetError> {
    let response = proto::Response {
        id,
        body: Some(body),
    };
    match stream.send(&response).await {
        Err(NetError::TooLarge { size, max }) => {
            let message = format!(
                "the answer ({size} bytes) exceeds the message limit ({max} bytes); ask for smaller pages"
            );
            stream
                .send(&proto::Response {
                    id,
                    body: Some(error_body(proto::ErrorCode::InvalidRequest, &message)),
                })
                .await
        }
        other => other,
    }
}

/// An error answer.
pub fn error_body(code: proto::ErrorCode, message: &str) -> proto::response::Body {
    proto::response::Body::Error(proto::ErrorResponse {
        code: code as i32,
        message: message.to_string(),
    })
}
