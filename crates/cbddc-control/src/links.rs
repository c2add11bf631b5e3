//! Carries control frames to other members: one task and one session per peer, so each
//! link keeps its order (OmniPaxos detects lost messages but needs FIFO links). A link
//! that fails drops what it was sending and reconnects; the crate resends what matters.

use crate::command::Command;
use crate::wire;
use cbddc_core::NodeId;
use cbddc_election::membership::{Configuration, ControlEntry, ControlFrame};
use cbddc_net::proto::{control_request::Call, control_response::Reply};
use cbddc_net::{ClientSettings, ClusterKey, PeerClient};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::mpsc::Sender;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Frames sent in one request at most.
const MAX_BATCH: usize = 256;
/// Pause after a failed connection before the link tries again.
const RECONNECT_AFTER: Duration = Duration::from_millis(200);

#[derive(Debug, Clone)]
pub struct LinkSettings {
    pub local: NodeId,
    pub identity: cbddc_net::LocalIdentity,
    /// Changes live with the node's `cluster_key`.
    pub key: Arc<std::sync::RwLock<ClusterKey>>,
    pub client: ClientSettings,
    /// Opens the stream under every link (TCP for a node).
    pub connector: Arc<dyn cbddc_net::Connector>,
}

/// The outgoing side of the control plane.
pub struct Links {
    settings: LinkSettings,
    runtime: tokio::runtime::Handle,
    /// The control plane's tasks: every link and invitation runs on it.
    tasks: tokio_util::task::TaskTracker,
    token: CancellationToken,
    commands: Sender<Command>,
    open: Mutex<BTreeMap<NodeId, (String, mpsc::UnboundedSender<ControlFrame>)>>,
}

impl std::fmt::Debug for Links {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Links")
            .field("local", &self.settings.local)
            .finish()
    }
}

impl Links {
    pub fn new(
        settings: LinkSettings,
        runtime: tokio::runtime::Handle,
        tasks: tokio_util::task::TaskTracker,
        token: CancellationToken,
        commands: Sender<Command>,
    ) -> Self {
        Self {
            settings,
            runtime,
            tasks,
            token,
            commands,
            open: Mutex::new(BTreeMap::new()),
        }
    }

    /// Queues `frame` for `to`, opening its link if needed (callable from any thread).
    pub fn send(&self, to: &NodeId, address: &str, frame: ControlFrame) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((known, link)) = open.get(to)
            && known == address
            && link.send(frame.clone()).is_ok()
        {
            return;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(frame);
        self.tasks.spawn_on(
            link(
                self.settings.clone(),
                to.clone(),
                address.to_string(),
                rx,
                self.commands.clone(),
                self.token.child_token(),
            ),
            &self.runtime,
        );
        open.insert(to.clone(), (address.to_string(), tx));
    }

    /// Uses `key` from now on: open links close, and reconnect with it at their next frame.
    pub fn set_key(&self, key: ClusterKey) {
        *self.settings.key.write().unwrap_or_else(|p| p.into_inner()) = key;
        self.open.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Invites `to` into `configuration`, handing it the log sealed before it.
    pub fn offer(
        &self,
        to: &NodeId,
        address: &str,
        configuration: Configuration,
        sealed_log: Vec<ControlEntry>,
        departed: Vec<(NodeId, u32)>,
    ) {
        let settings = self.settings.clone();
        let to = to.clone();
        let address = address.to_string();
        let token = self.token.clone();
        self.tasks.spawn_on(async move {
            let call = Call::Offer(cbddc_net::proto::ControlOffer {
                configuration: Some(wire::configuration_to_wire(&configuration)),
                sealed_log: wire::entries_to_wire(&sealed_log),
                departed: wire::departed_to_wire(&departed),
            });
            let offered = tokio::select! {
                _ = token.cancelled() => return,
                answer = exchange(&settings, &to, &address, call) => answer,
            };
            match offered {
                Ok(_) => tracing::info!(peer = %to, %address, "invited a new member"),
                Err(e) => {
                    tracing::warn!(peer = %to, %address, error = %e, "inviting a new member failed; it is invited again shortly")
                }
            }
        }, &self.runtime);
    }
}

async fn connect(
    settings: &LinkSettings,
    to: &NodeId,
    address: &str,
) -> Result<PeerClient, String> {
    let key = settings
        .key
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let client = PeerClient::connect_with(
        settings.connector.as_ref(),
        address,
        &key,
        &settings.identity,
        settings.client,
    )
    .await
    .map_err(|e| e.to_string())?;
    if client.remote_node() != to {
        return Err(format!(
            "the node at {address} is {}, not {to}",
            client.remote_node()
        ));
    }
    Ok(client)
}

async fn exchange(
    settings: &LinkSettings,
    to: &NodeId,
    address: &str,
    call: Call,
) -> Result<Reply, String> {
    let mut client = connect(settings, to, address).await?;
    client.control(call).await.map_err(|e| e.to_string())
}

async fn link(
    settings: LinkSettings,
    to: NodeId,
    address: String,
    mut frames: mpsc::UnboundedReceiver<ControlFrame>,
    commands: Sender<Command>,
    token: CancellationToken,
) {
    let mut client: Option<PeerClient> = None;
    loop {
        let first = tokio::select! {
            _ = token.cancelled() => return,
            first = frames.recv() => match first {
                Some(frame) => frame,
                None => return,
            },
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match frames.try_recv() {
                Ok(frame) => batch.push(frame),
                Err(_) => break,
            }
        }
        if client.is_none() {
            match connect(&settings, &to, &address).await {
                Ok(c) => client = Some(c),
                Err(e) => {
                    tracing::debug!(peer = %to, %address, error = %e, dropped = batch.len(), "control link down");
                    tokio::select! {
                        _ = token.cancelled() => return,
                        _ = tokio::time::sleep(RECONNECT_AFTER) => {}
                    }
                    // What queued meanwhile is stale too: OmniPaxos resends what matters.
                    while frames.try_recv().is_ok() {}
                    continue;
                }
            }
        }
        let Some(session) = client.as_mut() else {
            continue;
        };
        let call = Call::Frames(cbddc_net::proto::ControlFrames {
            frames: wire::frames_to_wire(&batch),
        });
        match session.control(call).await {
            Ok(Reply::Superseded(sealed)) => match wire::entries_from_wire(sealed.decided) {
                Ok(decided) => {
                    tracing::info!(peer = %to, configuration_id = sealed.configuration_id, "a peer says our configuration is sealed");
                    let _ = commands.send(Command::LearnSeal {
                        configuration_id: sealed.configuration_id,
                        decided,
                    });
                }
                Err(e) => {
                    tracing::warn!(peer = %to, error = %e, "a peer's seal was unreadable")
                }
            },
            Ok(Reply::Accepted(answers)) if !answers.frames.is_empty() => {
                match wire::frames_from_wire(answers.frames) {
                    Ok(frames) => {
                        let _ = commands.send(Command::Frames {
                            from: to.clone(),
                            frames,
                            reply: None,
                        });
                    }
                    Err(e) => {
                        tracing::debug!(peer = %to, error = %e, "a peer's heartbeat answers were unreadable")
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(peer = %to, %address, error = %e, "control link failed; reconnecting");
                client = None;
            }
        }
    }
}
