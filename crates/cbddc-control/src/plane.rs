//! The control-plane thread: owns the node's [`Membership`] (whose OmniPaxos instances
//! do blocking SQLite I/O), ticks it, feeds it frames and commands, and carries out its
//! actions. A panic inside is a crash of the control plane only: it is rebuilt from the
//! database, and the node keeps serving.

use crate::command::{Command, FramesAnswer};
use crate::links::Links;
use crate::view::{ClusterStatus, ClusterView};
use cbddc_core::NodeId;
use cbddc_election::membership::{
    Action, Configuration, ControlEntry, Membership, MembershipError,
};
use cbddc_store::{ClusterRecords, ControlDatabase, SqliteLogStorage};
use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};

/// The control plane's clock and election timeout, from `[cluster]`.
#[derive(Debug, Clone, Copy)]
pub struct Timers {
    /// How often the control plane ticks (`tick_ms`).
    pub tick: Duration,
    /// Ticks without news of a leader before electing another.
    pub election_ticks: u64,
}
/// Rebuilds after panics before the control plane gives up (the node keeps serving).
const MAX_REBUILDS: u32 = 5;

type Log = SqliteLogStorage<ControlEntry>;

pub struct PlaneSettings {
    pub local: NodeId,
    pub database: ControlDatabase,
    /// Bootstrapped when the database holds no configuration yet (`None`: wait to join).
    pub bootstrap: Option<Configuration>,
    /// Cancelled when the node stops, even if nobody sends [`Command::Stop`].
    pub token: tokio_util::sync::CancellationToken,
    pub timers: Timers,
}

/// Why the plane stopped serving.
enum Halt {
    /// It cannot start (e.g. a damaged database): retrying will not help.
    Fatal(String),
    /// Its storage failed mid-run: rebuild it from what was committed.
    Crash(String),
}

/// Runs until [`Command::Stop`] or until every command sender is gone.
pub fn run(
    settings: PlaneSettings,
    commands: Receiver<Command>,
    links: Arc<Links>,
    view: watch::Sender<ClusterView>,
) {
    for attempt in 0..=MAX_REBUILDS {
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let mut plane = Plane::open(&settings, links.clone(), &view).map_err(Halt::Fatal)?;
            plane.serve(&commands, &view).map_err(Halt::Crash)
        }));
        // A step cut short may have left its batch open: the store's writer waits for it.
        settings.database.abandon();
        let crash = match outcome {
            Ok(Ok(())) => return,
            Ok(Err(Halt::Fatal(e))) => {
                tracing::error!(node = %settings.local, error = %e, "the control plane cannot start; the node keeps serving without it");
                view.send_modify(|v| v.failure = Some(e));
                return;
            }
            Ok(Err(Halt::Crash(e))) => e,
            Err(_) => "a panic".to_string(),
        };
        tracing::error!(node = %settings.local, attempt, cause = %crash, "the control plane crashed; rebuilding it from the database");
        std::thread::sleep(Duration::from_millis(100 * u64::from(attempt + 1)));
    }
    let message = format!("the control plane crashed {MAX_REBUILDS} times; restart the node");
    tracing::error!(node = %settings.local, "{message}");
    view.send_modify(|v| v.failure = Some(message));
}

/// A reconfiguration asked for here: the configuration id it proposed, the configuration
/// itself, and where to answer once a seal for that id is decided.
type Waiter = (
    u32,
    Configuration,
    oneshot::Sender<Result<Configuration, String>>,
);

/// Commands handled in one batch (one transaction) at most.
const MAX_COMMANDS_PER_BATCH: usize = 64;

struct Plane {
    local: NodeId,
    tick: Duration,
    membership: Membership<Log>,
    /// The logs' shared connection: each step is one transaction, committed before any
    /// message it produced is sent.
    database: ControlDatabase,
    records: ClusterRecords,
    links: Arc<Links>,
    token: tokio_util::sync::CancellationToken,
    /// Reconfigurations asked for here, waiting for their seal to be decided.
    waiting: Vec<Waiter>,
    /// Members that departed a configuration known here (see the membership crate docs).
    departed: BTreeMap<NodeId, u32>,
    /// Senders of this step's frames, answered once the step is durable.
    answering: Vec<(NodeId, FramesAnswer, oneshot::Sender<FramesAnswer>)>,
}

impl Plane {
    fn open(
        settings: &PlaneSettings,
        links: Arc<Links>,
        view: &watch::Sender<ClusterView>,
    ) -> Result<Self, String> {
        let database = settings.database.clone();
        let records = cbddc_store::ClusterRecords::on(database.clone());
        let stored = records.list().map_err(|e| e.to_string())?;
        let logs = database.clone();
        let mut membership = Membership::new(settings.local.clone(), move |id| {
            logs.log(id).map_err(|e| e.to_string())
        })
        .with_pacing(cbddc_election::membership::Pacing::for_tick(
            settings.timers.tick,
            settings.timers.election_ticks,
        ));
        // Resuming from the first configuration replays every seal since, in order, so
        // this node can again tell late members where the cluster went.
        let first = match stored.first() {
            Some((id, text)) => Some(serde_json::from_str::<Configuration>(text).map_err(|e| {
                format!(
                    "the stored configuration {id} is unreadable ({e}); the database is damaged"
                )
            })?),
            None => settings.bootstrap.clone(),
        };
        match first {
            Some(configuration) => {
                membership
                    .bootstrap(configuration)
                    .map_err(|e| e.to_string())?;
            }
            None => {
                tracing::info!(node = %settings.local, "waiting to be invited into a cluster");
            }
        }
        // A node removed and later added again resumes the later configuration too.
        for (id, text) in stored.iter().skip(1) {
            let running = membership.configuration().map(|c| c.configuration_id);
            if running.is_none_or(|r| r < *id)
                && let Ok(configuration) = serde_json::from_str::<Configuration>(text)
            {
                membership.join(configuration).map_err(|e| e.to_string())?;
            }
        }
        let mut departed = BTreeMap::new();
        for (node, configuration_id) in records.departed().map_err(|e| e.to_string())? {
            match NodeId::new(node.as_str()) {
                Ok(node) => {
                    departed.insert(node, configuration_id);
                }
                Err(e) => {
                    tracing::warn!(%node, error = %e, "a recorded departed member has an invalid id; ignored")
                }
            }
        }
        let mut plane = Self {
            local: settings.local.clone(),
            tick: settings.timers.tick,
            membership,
            database,
            records,
            links,
            token: settings.token.clone(),
            waiting: Vec::new(),
            departed,
            answering: Vec::new(),
        };
        let actions = plane.membership.take_actions();
        plane.carry_out(actions);
        plane.publish(view);
        Ok(plane)
    }

    fn serve(
        &mut self,
        commands: &Receiver<Command>,
        view: &watch::Sender<ClusterView>,
    ) -> Result<(), String> {
        let tick = self.tick;
        let mut next_tick = Instant::now() + tick;
        loop {
            if self.token.is_cancelled() {
                return Ok(());
            }
            let wait = next_tick.saturating_duration_since(Instant::now());
            let first = match commands.recv_timeout(wait) {
                Ok(Command::Stop) | Err(RecvTimeoutError::Disconnected) => return Ok(()),
                Ok(command) => Some(command),
                Err(RecvTimeoutError::Timeout) => None,
            };
            self.database
                .begin()
                .map_err(|e| format!("cannot start a batch: {e}"))?;
            let mut stop = false;
            match first {
                Some(command) => {
                    self.command(command);
                    // Commands that queued meanwhile share the batch (one fsync).
                    for _ in 1..MAX_COMMANDS_PER_BATCH {
                        match commands.try_recv() {
                            Ok(Command::Stop) => {
                                stop = true;
                                break;
                            }
                            Ok(command) => self.command(command),
                            Err(_) => break,
                        }
                    }
                }
                None => {
                    self.membership.tick();
                    next_tick += tick;
                    // After a stall, do not tick in a burst to catch up.
                    if next_tick < Instant::now() {
                        next_tick = Instant::now() + tick;
                    }
                }
            }
            let actions = self.membership.take_actions();
            // Durable before anything the step produced leaves this node.
            self.database
                .commit()
                .map_err(|e| format!("cannot commit a batch: {e}"))?;
            self.carry_out(actions);
            for (_, answer, reply) in self.answering.drain(..) {
                let _ = reply.send(answer);
            }
            self.publish(view);
            if stop {
                return Ok(());
            }
        }
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Frames {
                from,
                frames,
                reply,
            } => {
                let mut superseded = None;
                for frame in frames {
                    match self.membership.handle(&from, frame) {
                        Ok(()) => {}
                        Err(MembershipError::Superseded {
                            configuration_id,
                            decided,
                            ..
                        }) => superseded = Some((configuration_id, decided)),
                        Err(e) => {
                            tracing::debug!(peer = %from, error = %e, "control frame refused")
                        }
                    }
                }
                if let Some(reply) = reply {
                    let answer = FramesAnswer {
                        superseded,
                        frames: Vec::new(),
                    };
                    self.answering.push((from, answer, reply));
                }
            }
            Command::LearnSeal {
                configuration_id,
                decided,
            } => {
                if let Err(e) = self.membership.learn_seal(configuration_id, decided) {
                    tracing::warn!(error = %e, "a peer's seal was refused");
                }
            }
            Command::Join {
                configuration,
                sealed_log,
                departed,
                reply,
            } => {
                let joined = self
                    .membership
                    .join_with_log(configuration, sealed_log)
                    .map_err(|e| e.to_string());
                if joined.is_ok() {
                    for (node, configuration_id) in departed {
                        self.record_departed(node, configuration_id);
                    }
                }
                let _ = reply.send(joined);
            }
            Command::Reconfigure {
                members,
                keys,
                reply,
            } => match self.membership.reconfigure_with_keys(members, &keys, None) {
                Ok(next) => {
                    tracing::info!(node = %self.local, next = next.configuration_id, members = ?next.members.iter().map(|m| m.node_id.as_str()).collect::<Vec<_>>(), "reconfiguration proposed");
                    self.waiting.push((next.configuration_id, next, reply));
                }
                Err(e) => {
                    let _ = reply.send(Err(e.to_string()));
                }
            },
            Command::Stop => {}
            #[cfg(test)]
            Command::Crash => {
                // Mid-step, with the step's transaction open on the store's connection.
                let _ = self.records.save_departed("crashed-mid-step", u32::MAX);
                panic!("a crash injected by a test")
            }
        }
    }

    fn carry_out(&mut self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Send {
                    to, address, frame, ..
                } => {
                    let answer = frame
                        .is_heartbeat()
                        .then(|| self.answering.iter_mut().find(|(from, ..)| from == &to))
                        .flatten();
                    match answer {
                        Some((_, answer, _)) => {
                            tracing::trace!(peer = %to, "a heartbeat answer rides back on the reply");
                            answer.frames.push(frame)
                        }
                        None => {
                            tracing::trace!(peer = %to, heartbeat = frame.is_heartbeat(), "a frame goes out on the link");
                            self.links.send(&to, &address, frame)
                        }
                    }
                }
                Action::Started { configuration } => {
                    match serde_json::to_string(&configuration) {
                        Ok(text) => {
                            if let Err(e) = self.records.save(configuration.configuration_id, &text)
                            {
                                // Without the record a restart resumes an older
                                // configuration and learns the seal again from peers.
                                tracing::error!(error = %e, "cannot record the configuration");
                            }
                        }
                        Err(e) => tracing::error!(error = %e, "cannot encode the configuration"),
                    }
                }
                Action::Sealed {
                    configuration_id,
                    next,
                    departed,
                    ..
                } => {
                    tracing::info!(node = %self.local, sealed = configuration_id, next = next.configuration_id, "the cluster moved to a new configuration");
                    for node in departed {
                        self.record_departed(node, configuration_id);
                    }
                    for (id, wanted, reply) in std::mem::take(&mut self.waiting) {
                        if id != next.configuration_id {
                            self.waiting.push((id, wanted, reply));
                        } else if wanted == next {
                            let _ = reply.send(Ok(next.clone()));
                        } else {
                            let _ = reply.send(Err(format!(
                                "another reconfiguration was decided first: configuration {} has members {}",
                                next.configuration_id,
                                member_names(&next)
                            )));
                        }
                    }
                }
                Action::OfferJoin {
                    to,
                    address,
                    configuration,
                } => {
                    let sealed = configuration.configuration_id.saturating_sub(1);
                    if let Some(log) = self.membership.sealed_log(sealed) {
                        let departed = self
                            .departed
                            .iter()
                            .map(|(node, id)| (node.clone(), *id))
                            .collect();
                        self.links
                            .offer(&to, &address, configuration, log, departed);
                    }
                }
                Action::Retired { configuration_id } => {
                    tracing::info!(node = %self.local, configuration_id, "this node is no longer a member of the cluster");
                }
                Action::Dropped { entry } => {
                    tracing::warn!(id = ?entry.id, "a control entry proposed here was not decided before this node retired");
                }
                Action::Decided { .. } => {}
            }
        }
    }

    /// Remembers (durably) that `node` left the cluster after
    /// configuration `configuration_id`.
    fn record_departed(&mut self, node: NodeId, configuration_id: u32) {
        if node == self.local
            || self
                .departed
                .get(&node)
                .is_some_and(|known| *known >= configuration_id)
        {
            return;
        }
        if let Err(e) = self.records.save_departed(node.as_str(), configuration_id) {
            // Kept in memory still; a restart rebuilds it from the seals it replays.
            tracing::error!(%node, error = %e, "cannot record a departed member");
        }
        self.departed.insert(node, configuration_id);
    }

    fn publish(&self, view: &watch::Sender<ClusterView>) {
        let status = ClusterStatus {
            configuration_id: self.membership.configuration().map(|c| c.configuration_id),
            members: self
                .membership
                .configuration()
                .map(|c| c.members.iter().map(|m| m.node_id.to_string()).collect())
                .unwrap_or_default(),
            leader: self.membership.leader().map(|l| l.to_string()),
            decided_idx: self.membership.decided_idx() as u64,
            retired: self.membership.retired_after().is_some(),
            retired_after: self.membership.retired_after(),
            handover: None,
        };
        let configuration = self.membership.configuration().cloned();
        let successor = self.membership.successor().cloned();
        view.send_if_modified(|v| {
            let changed = !v.ready
                || v.status != status
                || v.configuration != configuration
                || v.successor != successor
                || v.departed != self.departed;
            if changed {
                v.ready = true;
                v.status = status;
                v.configuration = configuration;
                v.successor = successor;
                v.departed.clone_from(&self.departed);
            }
            changed
        });
    }
}

pub fn member_names(configuration: &Configuration) -> String {
    configuration
        .members
        .iter()
        .map(|m| m.node_id.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}
