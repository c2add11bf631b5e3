use crate::admission::{Admission, Refusal};
use crate::identity::{LocalIdentity, NodeKey, PeerVerifier, PublicKey};
use crate::secure::{self, ClusterKey, SecureStream};
use crate::{NetError, proto};
use async_trait::async_trait;
use cbddc_core::NodeId;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
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
    /// Sessions beyond this number are refused as busy. Connections still in their
    /// handshake do not count: they have `max_handshakes` of their own.
    pub max_connections: usize,
    /// Connections in their handshake at once; a newer one evicts the oldest.
    pub max_handshakes: usize,
    /// Connections in their handshake at once from one address; a newer one from it
    /// evicts its own oldest.
    pub max_handshakes_per_address: usize,
    /// Bytes of large incoming messages (over 64 KiB) buffered at once across every
    /// session; a session whose message does not fit waits for room.
    pub max_buffered_bytes: usize,
    /// Whether this node may be elected leader (told to peers in the handshake) at start;
    /// [`TcpSyncServer::set_eligible`] changes it.
    pub eligible: bool,
    /// Where sessions count their bytes and refused handshakes (`None`: not counted).
    pub meter: Option<Arc<crate::NetMeter>>,
    /// The collections this node replicates, told to peers.
    pub interest: cbddc_core::Interest,
    /// The protocols, release and formats this node says it has, and its feature gate.
    pub versions: crate::version::Versions,
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
            max_handshakes: 64,
            max_handshakes_per_address: 32,
            max_buffered_bytes: 256 * 1024 * 1024,
            eligible: true,
            meter: None,
            interest: cbddc_core::Interest::all(),
            versions: crate::version::Versions::default(),
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
    /// The formats the peer said it reads (`None` for tools).
    pub peer_features: Option<std::collections::BTreeSet<String>>,
    /// The peer's socket address.
    pub address: SocketAddr,
    /// Cancelled when the server stops: a handler that waits (a long poll) answers
    /// promptly instead of holding the stop up.
    pub stopping: CancellationToken,
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
    acceptor: tokio::sync::Mutex<Option<tokio::task::JoinHandle<Option<TcpListener>>>>,
    /// Set before a stop that hands the listener on.
    keep_listener: Arc<AtomicBool>,
}

/// What a new session is offered: the cluster key, and whether we say we may lead. Both
/// change live; sessions already established keep their key, but close on a change of
/// role (`renewed`), so their initiators reconnect and learn it.
#[derive(Debug, Clone)]
struct Terms {
    key: ClusterKey,
    eligible: bool,
    renewed: CancellationToken,
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
            renewed: CancellationToken::new(),
        }));
        let settings = Arc::new(settings);
        let gates = Gates {
            sessions: Arc::new(Semaphore::new(settings.max_connections)),
            handshakes: Admission::new(
                settings.max_handshakes,
                settings.max_handshakes_per_address,
            ),
            buffered: Arc::new(crate::secure::BufferBudget::new(
                settings.max_buffered_bytes,
            )),
        };
        let keep_listener = Arc::new(AtomicBool::new(false));
        let acceptor = tokio::spawn(accept_loop(
            listener,
            settings,
            terms.clone(),
            handler,
            gates,
            (token.clone(), keep_listener.clone()),
            tracker.clone(),
        ));
        tracing::info!(address = %local_addr, "sync server listening");
        Ok(Self {
            local_addr,
            token,
            tracker,
            terms,
            acceptor: tokio::sync::Mutex::new(Some(acceptor)),
            keep_listener,
        })
    }

    /// Uses `key` for every session that starts from now on; sessions already
    /// established keep theirs.
    pub fn set_cluster_key(&self, key: ClusterKey) {
        self.terms.write().unwrap_or_else(|p| p.into_inner()).key = key;
    }

    /// Tells every session that starts from now on whether this node may lead. A change
    /// closes the sessions established before it (each after its request in flight):
    /// their initiators reconnect and hear the new role, rather than keep counting this
    /// node by the old one.
    pub fn set_eligible(&self, eligible: bool) {
        let mut terms = self.terms.write().unwrap_or_else(|p| p.into_inner());
        if terms.eligible != eligible {
            terms.eligible = eligible;
            std::mem::replace(&mut terms.renewed, CancellationToken::new()).cancel();
        }
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting (the listener closes at once: a new connection is refused, not
    /// left waiting), lets sessions finish the request in flight, and waits up to `grace`
    /// for them. Returns false if some were still running at the deadline.
    pub async fn stop(&self, grace: Duration) -> bool {
        let (listener, finished) = self.stop_inner(grace, false).await;
        drop(listener);
        finished
    }

    /// Like [`TcpSyncServer::stop`], but hands back the still-bound listener, so a new
    /// server can take over the same address without a moment in which it is unbound.
    /// (A stop that came from the token instead closes the listener at once.)
    pub async fn stop_keeping_listener(&self, grace: Duration) -> (Option<TcpListener>, bool) {
        self.stop_inner(grace, true).await
    }

    async fn stop_inner(&self, grace: Duration, keep: bool) -> (Option<TcpListener>, bool) {
        self.keep_listener.store(keep, Ordering::SeqCst);
        self.token.cancel();
        let mut listener = match self.acceptor.lock().await.take() {
            Some(acceptor) => acceptor.await.ok().flatten(),
            None => None,
        };
        if !keep {
            listener = None;
        }
        self.tracker.close();
        let finished = tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_ok();
        tracing::info!(address = %self.local_addr, clean = finished, "sync server stopped");
        (listener, finished)
    }
}

/// What a connection must get through: a handshake place, then a session slot; and the
/// budget of bytes buffered for large messages, shared by every session.
#[derive(Debug, Clone)]
struct Gates {
    sessions: Arc<Semaphore>,
    handshakes: Arc<Admission>,
    buffered: Arc<crate::secure::BufferBudget>,
}

async fn accept_loop(
    listener: TcpListener,
    settings: Arc<ServerSettings>,
    terms: Arc<RwLock<Terms>>,
    handler: Arc<dyn RequestHandler>,
    gates: Gates,
    (token, keep_listener): (CancellationToken, Arc<AtomicBool>),
    tracker: TaskTracker,
) -> Option<TcpListener> {
    loop {
        let accepted = tokio::select! {
            _ = token.cancelled() => {
                // Kept only for a server taking over the address; otherwise closed now,
                // so a client is refused at once instead of waiting in the backlog.
                return keep_listener.load(Ordering::SeqCst).then_some(listener);
            }
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
        if gates.sessions.available_permits() == 0 {
            gates.handshakes.refused(Refusal::Busy);
            if let Some(meter) = &settings.meter {
                meter.refuse(proto::RejectReason::Busy);
            }
            let versions = settings.versions.clone();
            tracker.spawn(async move {
                let _ = tokio::time::timeout(
                    Duration::from_secs(1),
                    secure::refuse_busy(&mut socket, &versions),
                )
                .await;
            });
            continue;
        }
        let ticket = gates.handshakes.begin_handshake(address.ip());
        let (settings, handler, token) = (settings.clone(), handler.clone(), token.child_token());
        let terms = terms.read().unwrap_or_else(|p| p.into_inner()).clone();
        let gates = gates.clone();
        tracker.spawn(async move {
            let Some((stream, session)) =
                handshake(socket, address, &settings, &terms, &gates, ticket, &token).await
            else {
                return;
            };
            let Ok(_permit) = gates.sessions.clone().try_acquire_owned() else {
                // Every slot was taken while this one shook hands.
                gates.handshakes.refused(Refusal::Busy);
                return;
            };
            if let Err(reason) = serve(
                stream,
                &session,
                &settings,
                handler.as_ref(),
                &token,
                &terms.renewed,
            )
            .await
            {
                match reason {
                    NetError::Closed => tracing::debug!(%address, "session ended by the peer"),
                    reason => tracing::warn!(%address, %reason, "closing connection"),
                }
            }
        });
    }
}

/// Runs the responder's handshake, within its timeout and until a newer connection
/// evicts it. A failure is counted for the refusal summary, not logged one by one:
/// strangers can make as many as they like.
async fn handshake(
    socket: TcpStream,
    address: SocketAddr,
    settings: &ServerSettings,
    terms: &Terms,
    gates: &Gates,
    ticket: crate::admission::HandshakeTicket,
    token: &CancellationToken,
) -> Option<(SecureStream<TcpStream>, SessionInfo)> {
    let local = LocalIdentity {
        node_id: Some(settings.node_id.clone()),
        key: settings.node_key.clone(),
        verifier: settings.verifier.clone(),
        replica: settings.replica.clone(),
        meter: settings.meter.clone(),
        interest: settings.interest.clone(),
        versions: settings.versions.clone(),
    };
    let handshake = secure::respond_telling(socket, &terms.key, &local, terms.eligible, || {
        ticket.proved()
    });
    let outcome = tokio::select! {
        _ = token.cancelled() => return None,
        _ = ticket.evicted().cancelled() => return None,
        result = tokio::time::timeout(settings.handshake_timeout, handshake) => result,
    };
    drop(ticket);
    let (stream, peer) = match outcome {
        Ok(Ok(done)) => done,
        Ok(Err(reason)) => {
            tracing::debug!(%address, %reason, "handshake failed");
            gates.handshakes.refused(Refusal::Failed);
            return None;
        }
        Err(_) => {
            tracing::debug!(%address, "handshake timed out");
            gates.handshakes.refused(Refusal::Failed);
            return None;
        }
    };
    let session = SessionInfo {
        peer_eligible: peer.as_ref().is_some_and(|p| p.eligible),
        peer_key: peer.as_ref().map(|p| p.key),
        peer_replica: peer.as_ref().and_then(|p| p.replica.clone()),
        peer_interest: peer
            .as_ref()
            .map(|p| p.interest.clone())
            .unwrap_or_default(),
        peer_features: peer.as_ref().map(|p| p.build.features.clone()),
        peer: peer.map(|p| p.node_id),
        address,
        stopping: token.clone(),
    };
    tracing::debug!(%address, peer = ?session.peer, "session established");
    Some((stream.with_buffer_budget(gates.buffered.clone()), session))
}

async fn serve(
    mut stream: SecureStream<TcpStream>,
    session: &SessionInfo,
    settings: &ServerSettings,
    handler: &dyn RequestHandler,
    token: &CancellationToken,
    renewed: &CancellationToken,
) -> Result<(), NetError> {
    loop {
        let request: proto::Request = tokio::select! {
            _ = token.cancelled() => break,
            _ = renewed.cancelled() => break,
            received = tokio::time::timeout(settings.idle_timeout, stream.recv()) => match received {
                Err(_) => {
                    let message = format!(
                        "no request for {:?}: closing the idle session (send ping to keep one open)",
                        settings.idle_timeout
                    );
                    let _ = respond(&mut stream, 0, error_body(proto::ErrorCode::Timeout, &message)).await;
                    return Err(NetError::Timeout { during: "waiting for a request", after: settings.idle_timeout });
                }
                Ok(Err(NetError::Closed)) => return Ok(()),
                Ok(Err(NetError::Malformed { detail })) => {
                    // The stream is still in step (the message's bytes were read whole),
                    // so the reason can reach the client before the session closes.
                    let message = format!(
                        "the request is not a protobuf Request ({detail}); closing the session"
                    );
                    let _ = respond(&mut stream, 0, error_body(proto::ErrorCode::InvalidRequest, &message)).await;
                    return Err(NetError::Malformed { detail });
                }
                Ok(Err(NetError::TooLarge { size, max })) => {
                    // What follows the announcement cannot be read in step any more; the
                    // reason still goes out before the session closes.
                    let message = format!(
                        "a request of {size} bytes exceeds the message limit ({max} bytes); closing the session"
                    );
                    let _ = respond(&mut stream, 0, error_body(proto::ErrorCode::InvalidRequest, &message)).await;
                    return Err(NetError::TooLarge { size, max });
                }
                Ok(other) => other?,
            },
        };
        let body = match request.body {
            None => error_body(
                proto::ErrorCode::InvalidRequest,
                &format!(
                    "the request has no body, or one this node does not know (it speaks protocol {})",
                    crate::PROTOCOL_VERSION
                ),
            ),
            // Keepalives are the session's business: answered here, whatever the handler.
            Some(proto::request::Body::Ping(_)) => {
                proto::response::Body::Pong(proto::PongResponse {})
            }
            Some(body) => {
                let handling =
                    tokio::time::timeout(settings.request_timeout, handler.handle(session, body));
                tokio::pin!(handling);
                // While it works, it says so: the caller tells busy from gone by this.
                let every = crate::liveness::PROGRESS_EVERY;
                let mut progress =
                    tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                loop {
                    tokio::select! {
                        done = &mut handling => break match done {
                            Ok(body) => body,
                            Err(_) => error_body(
                                proto::ErrorCode::Timeout,
                                &format!(
                                    "the request took longer than {:?}",
                                    settings.request_timeout
                                ),
                            ),
                        },
                        _ = progress.tick() => {
                            stream
                                .send(&proto::Response {
                                    id: request.id,
                                    body: Some(proto::response::Body::Pong(proto::PongResponse {})),
                                })
                                .await?;
                        }
                    }
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
        feed_oldest: 0,
    })
}
