//! Cluster membership, sans I/O: which nodes form each configuration, agreed through one
//! OmniPaxos instance per configuration and changed by a decided seal.
//!
//! [`Membership`] takes ticks, frames and commands, and returns [`Action`]s for its driver
//! (send this frame, offer this newcomer to join, this configuration is sealed, …). It
//! builds what the `omnipaxos` crate leaves to its user:
//!
//! - **Agreed dense pids.** The members of a configuration are ordered by node id and
//!   numbered 1, 2, 3, …; every node derives the same numbers from the member list, which
//!   travels in the seal.
//! - **Fencing.** A frame is handed to the crate only if it names a configuration running
//!   here, comes from one of its members and is addressed to this node (a stray pid would
//!   panic inside the crate).
//! - **The seal is an entry.** A configuration is sealed by the first [`ControlBody::Seal`]
//!   entry decided in its log, not by OmniPaxos' StopSign: the crate's StopSign path
//!   (0.2.4) loses or overwrites decided entries when messages are delayed (see
//!   `bare_omnipaxos_keeps_a_whole_log_before_its_stopsign` in the tests), while its
//!   ordinary entries stay consistent. Entries decided after the seal do not count in
//!   that configuration, on any member alike, and are proposed again in the next one.
//! - **The switch.** When the seal is decided, members of the next configuration start
//!   its instance (with empty storage: positions are `(configuration, index)`), members
//!   that are not retire, and newcomers are offered to join until they speak in the new
//!   configuration. The old instance keeps running for a while so every old member learns
//!   the seal; one that missed it learns it out of band ([`Membership::learn_seal`]).
//! - **FIFO links.** The crate detects lost messages but expects each link to keep its
//!   order; the driver must send a peer's frames over one ordered connection.
//! - **One member.** OmniPaxos refuses one-node clusters; a configuration of one member
//!   decides locally in the same storage, and can grow to two.
//! - **Nothing silently lost.** Undecided proposals — the seal included — are proposed
//!   again every [`RETRY_EVERY_TICKS`] (the crate drops forwarded proposals without a
//!   word) and in the next configuration; a retried entry is applied once; a node that
//!   retires reports what it proposed and never saw decided as [`Action::Dropped`].
//!
//! ## Acknowledged writes of a departing member
//!
//! The data plane never waits for the control plane, so a member keeps taking writes
//! until it learns that the configuration that removed it is sealed — and a member cut
//! off during its own removal learns it only when the partition heals. The rule that
//! keeps those writes:
//!
//! - A member's own writes up to the moment it learns of the seal that removed it are
//!   writes of the cluster. From that moment it refuses writes (it is retired: reads
//!   still work), so the set of its writes is closed.
//! - It then hands that set over: it pushes its own writes to every member of the
//!   configuration that followed its last one ([`Membership::successor`]) until each
//!   holds them, or is itself retired.
//! - Members accept such a hand-over from a node that departed a configuration they
//!   know ([`Action::Sealed`] names the departed), restricted to the departed node's
//!   own writes (entries naming it as their node); it gets no data in return.
//!
//! A node that waits to be invited (`join`) has no writes of the cluster yet and
//! refuses writes until it is admitted.
//!
//! The node (`cbddc-node`, module `cluster`) drives it on a thread of its own, carries
//! its frames over cbddc-net sessions (one per peer, in order), copies the data to
//! newcomers before they join, and restricts sync and election to members.

use cbddc_core::NodeId;
use omnipaxos::messages::Message;
use omnipaxos::storage::{Entry, NoSnapshot, Storage};
use omnipaxos::util::LogEntry;
use omnipaxos::{ClusterConfig, OmniPaxos, ServerConfig};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Ticks an old configuration keeps running after its seal, so old members learn it.
pub const SEAL_GRACE_TICKS: u32 = 200;
/// Ticks between two offers to a newcomer that has not spoken yet.
pub const OFFER_EVERY_TICKS: u32 = 50;
/// Ticks after which undecided proposals are proposed again: the crate drops a proposal
/// forwarded to a leader that is lost or gone, without telling anyone.
pub const RETRY_EVERY_TICKS: u32 = 40;

/// Ticks without news of the leader before a member starts an election, by default.
pub const DEFAULT_ELECTION_TICKS: u64 = 5;

/// How many ticks each of the membership's timers lasts. The defaults suit a 10 ms tick;
/// [`Pacing::for_tick`] keeps their durations for another tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pacing {
    /// Ticks without news of the leader before an election (OmniPaxos' timeout; also
    /// its heartbeat period), at least 2.
    pub election_ticks: u64,
    /// Ticks between proposals of entries not yet decided.
    pub retry_ticks: u32,
    /// Ticks between offers to a newcomer that has not spoken yet.
    pub offer_ticks: u32,
    /// Ticks a sealed configuration keeps running so its members learn the seal.
    pub seal_grace_ticks: u32,
}

impl Default for Pacing {
    fn default() -> Self {
        Self {
            election_ticks: DEFAULT_ELECTION_TICKS,
            retry_ticks: RETRY_EVERY_TICKS,
            offer_ticks: OFFER_EVERY_TICKS,
            seal_grace_ticks: SEAL_GRACE_TICKS,
        }
    }
}

impl Pacing {
    /// The default durations (retries every 0.4 s, offers every 0.5 s, 2 s of grace) in
    /// ticks of `tick`, with an election after `election_ticks`.
    pub fn for_tick(tick: std::time::Duration, election_ticks: u64) -> Self {
        let ticks = |default: u32| {
            let millis = u128::from(default) * 10 / tick.as_millis().max(1);
            u32::try_from(millis).unwrap_or(u32::MAX).max(1)
        };
        Self {
            election_ticks: election_ticks.max(2),
            retry_ticks: ticks(RETRY_EVERY_TICKS),
            offer_ticks: ticks(OFFER_EVERY_TICKS),
            seal_grace_ticks: ticks(SEAL_GRACE_TICKS),
        }
    }
}

/// A control-plane log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlEntry {
    /// Unique per proposer and proposal, so a re-proposed entry is recognised.
    pub id: (String, u64),
    /// What it carries.
    pub body: ControlBody,
}

/// The content of a [`ControlEntry`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlBody {
    /// An entry for the user of the control plane, opaque here.
    Data(Vec<u8>),
    /// Seals this configuration: `next` follows it. The first one decided wins; entries
    /// decided after it do not count in this configuration.
    Seal {
        /// The next configuration.
        next: Configuration,
        /// The caller's metadata.
        metadata: Option<Vec<u8>>,
    },
}

impl Entry for ControlEntry {
    type Snapshot = NoSnapshot;
}

/// One member of a configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Its node id.
    pub node_id: NodeId,
    /// Its OmniPaxos pid in this configuration (its position, from 1, in node id order).
    pub pid: u64,
    /// Where it listens.
    pub address: String,
    /// Its node key (64 hex digits), which members pin for its node id; `None` until the
    /// proposer of a configuration had contact with it (then first contact pins it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// A configuration: its id and its members, with their pids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Configuration {
    /// Starts at 1 and grows by one with each reconfiguration.
    pub configuration_id: u32,
    /// Ordered by node id; pids 1, 2, 3, ….
    pub members: Vec<Member>,
}

/// A membership call was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    /// The member list is unusable.
    #[error("invalid member list: {0}")]
    InvalidMembers(String),
    /// A reconfiguration is already under way.
    #[error("configuration {0} is already being replaced; wait for it to finish")]
    ReconfigurationInFlight(u32),
    /// This node is not a member of the running configuration.
    #[error("this node is not a member of the running configuration")]
    NotAMember,
    /// A frame was refused (fencing).
    #[error("control frame refused: {0}")]
    Fenced(String),
    /// The frame's configuration is sealed here: its sender must learn the seal
    /// ([`Membership::learn_seal`]) and move on to `next`.
    #[error("configuration {configuration_id} is sealed; configuration {} follows", next.configuration_id)]
    Superseded {
        /// The sealed configuration.
        configuration_id: u32,
        /// The configuration after it.
        next: Box<Configuration>,
        /// The sealed configuration's decided log, up to its seal.
        decided: Vec<ControlEntry>,
    },
    /// The storage failed.
    #[error("control-plane storage failed: {0}")]
    Storage(String),
}

impl Configuration {
    /// Numbers `members` by node id order. Refuses an empty list, duplicates and empty addresses.
    pub fn new(
        configuration_id: u32,
        members: Vec<(NodeId, String)>,
    ) -> Result<Self, MembershipError> {
        if configuration_id == 0 {
            return Err(MembershipError::InvalidMembers(
                "configuration ids start at 1".into(),
            ));
        }
        if members.is_empty() {
            return Err(MembershipError::InvalidMembers(
                "a configuration needs at least one member".into(),
            ));
        }
        let mut sorted: BTreeMap<NodeId, String> = BTreeMap::new();
        for (node, address) in members {
            if address.is_empty() {
                return Err(MembershipError::InvalidMembers(format!(
                    "{node} has no known address"
                )));
            }
            if sorted.insert(node.clone(), address).is_some() {
                return Err(MembershipError::InvalidMembers(format!(
                    "{node} is listed twice"
                )));
            }
        }
        Ok(Self {
            configuration_id,
            members: sorted
                .into_iter()
                .enumerate()
                .map(|(i, (node_id, address))| Member {
                    node_id,
                    pid: i as u64 + 1,
                    address,
                    key: None,
                })
                .collect(),
        })
    }

    /// The same configuration with each member's node key from `keys` (members `keys`
    /// does not name keep theirs).
    pub fn with_keys(mut self, keys: &BTreeMap<NodeId, String>) -> Self {
        for member in &mut self.members {
            if let Some(key) = keys.get(&member.node_id) {
                member.key = Some(key.clone());
            }
        }
        self
    }

    /// The member with this node id.
    pub fn member(&self, node: &NodeId) -> Option<&Member> {
        self.members.iter().find(|m| &m.node_id == node)
    }

    /// The member with this pid.
    pub fn by_pid(&self, pid: u64) -> Option<&Member> {
        self.members.iter().find(|m| m.pid == pid)
    }

    fn paxos(&self) -> ClusterConfig {
        let nodes: Vec<u64> = self.members.iter().map(|m| m.pid).collect();
        ClusterConfig {
            configuration_id: self.configuration_id,
            nodes,
            ..Default::default()
        }
    }
}

/// A control message between two members, tagged with its configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ControlFrame {
    /// The configuration whose instance the message belongs to.
    pub configuration_id: u32,
    /// The OmniPaxos message.
    pub message: Message<ControlEntry>,
}

impl ControlFrame {
    /// A message of the leader election's heartbeats: these may arrive in any order (each
    /// carries its round), unlike the log's messages, which need a FIFO link.
    pub fn is_heartbeat(&self) -> bool {
        matches!(self.message, Message::BLE(_))
    }
}

/// What the driver must do.
#[derive(Debug, Clone)]
pub enum Action {
    /// Send `frame` to `to` at `address`.
    Send {
        /// Recipient.
        to: NodeId,
        /// Its address.
        address: String,
        /// The frame.
        frame: ControlFrame,
    },
    /// An entry was decided at `(configuration_id, index)`.
    Decided {
        /// Configuration.
        configuration_id: u32,
        /// Index within it.
        index: usize,
        /// The entry.
        entry: ControlEntry,
    },
    /// Configuration `configuration_id` is sealed; `next` follows it.
    Sealed {
        /// The sealed configuration.
        configuration_id: u32,
        /// The one after it.
        next: Configuration,
        /// Members of the sealed configuration that are not in `next`: they may still
        /// hand over the writes they took while they were members (see the crate docs).
        departed: Vec<NodeId>,
        /// The metadata given to [`Membership::reconfigure`].
        metadata: Option<Vec<u8>>,
    },
    /// This node now runs `configuration`.
    Started {
        /// The configuration.
        configuration: Configuration,
    },
    /// This node is not a member of the configuration after `configuration_id`.
    Retired {
        /// The last configuration it was a member of.
        configuration_id: u32,
    },
    /// Offer `to` (new in `configuration`) to join: it must receive the state up to the
    /// seal, then call [`Membership::join`].
    OfferJoin {
        /// The newcomer.
        to: NodeId,
        /// Its address.
        address: String,
        /// The configuration it joins.
        configuration: Configuration,
    },
    /// An entry proposed here will not be decided (this node retired before it was).
    Dropped {
        /// The entry.
        entry: ControlEntry,
    },
}

enum Engine<S: Storage<ControlEntry>> {
    Paxos(Box<OmniPaxos<ControlEntry, S>>),
    Solo(S),
}

struct Instance<S: Storage<ControlEntry>> {
    config: Configuration,
    pid: u64,
    engine: Engine<S>,
    /// Log positions read so far.
    applied: usize,
    sealed: bool,
    /// Ids of the entries decided in this configuration: a retried proposal may be
    /// decided twice, and is applied once.
    decided_ids: BTreeSet<(String, u64)>,
    /// The decided log up to the seal (control logs are small).
    log: Vec<ControlEntry>,
}

impl<S: Storage<ControlEntry>> Instance<S> {
    /// Decided entries from log position `from`.
    fn decided(&self, from: usize) -> Vec<ControlEntry> {
        match &self.engine {
            Engine::Paxos(op) => op
                .read_decided_suffix(from)
                .unwrap_or_default()
                .into_iter()
                .map_while(|e| match e {
                    LogEntry::Decided(entry) => Some(entry),
                    _ => None,
                })
                .collect(),
            Engine::Solo(storage) => storage.get_suffix(from).unwrap_or_default(),
        }
    }
}

/// The membership of one node (see the module docs).
pub struct Membership<S: Storage<ControlEntry>> {
    pacing: Pacing,
    local: NodeId,
    open: Box<dyn FnMut(u32) -> Result<S, String> + Send>,
    current: Option<Instance<S>>,
    sealed: Vec<(Instance<S>, u32)>,
    /// Proposed here, not yet seen decided, in proposal order (the seal included).
    pending: Vec<ControlEntry>,
    next_proposal: u64,
    retry_in: u32,
    offers: BTreeMap<NodeId, (Member, Configuration, u32)>,
    /// The seals seen here with the sealed decided logs, to tell members that missed them.
    seals: BTreeMap<u32, (Configuration, Vec<ControlEntry>)>,
    retired_after: Option<u32>,
    actions: Vec<Action>,
    outgoing: Vec<Message<ControlEntry>>,
}

impl<S: Storage<ControlEntry>> std::fmt::Debug for Membership<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("local", &self.local)
            .field(
                "configuration",
                &self.configuration().map(|c| c.configuration_id),
            )
            .field("retired_after", &self.retired_after)
            .finish()
    }
}

fn storage_error(e: impl std::fmt::Display) -> MembershipError {
    MembershipError::Storage(e.to_string())
}

impl<S: Storage<ControlEntry>> Membership<S> {
    /// A node that waits to be invited (or to [`Membership::bootstrap`]). `open` returns
    /// the storage of a configuration (the same one again after a restart).
    pub fn new(local: NodeId, open: impl FnMut(u32) -> Result<S, String> + Send + 'static) -> Self {
        Self {
            pacing: Pacing::default(),
            local,
            open: Box::new(open),
            current: None,
            sealed: Vec::new(),
            pending: Vec::new(),
            next_proposal: 1,
            retry_in: RETRY_EVERY_TICKS,
            offers: BTreeMap::new(),
            seals: BTreeMap::new(),
            retired_after: None,
            actions: Vec::new(),
            outgoing: Vec::new(),
        }
    }

    /// Starts elections after `ticks` ticks without news of the leader (at least 2).
    pub fn with_election_ticks(mut self, ticks: u64) -> Self {
        self.pacing.election_ticks = ticks.max(2);
        self
    }

    /// Uses `pacing` for every timer.
    pub fn with_pacing(mut self, pacing: Pacing) -> Self {
        self.pacing = Pacing {
            election_ticks: pacing.election_ticks.max(2),
            ..pacing
        };
        self.retry_in = self.pacing.retry_ticks;
        self
    }

    /// Starts (or, after a restart, resumes from storage) `configuration`, of which this
    /// node must be a member. A resumed configuration reports its decided entries again
    /// from index 0: applying them must be idempotent.
    pub fn bootstrap(&mut self, configuration: Configuration) -> Result<(), MembershipError> {
        let member = configuration
            .member(&self.local)
            .cloned()
            .ok_or(MembershipError::NotAMember)?;
        let storage =
            (self.open)(configuration.configuration_id).map_err(MembershipError::Storage)?;
        let engine = if configuration.members.len() == 1 {
            Engine::Solo(storage)
        } else {
            let server = ServerConfig {
                pid: member.pid,
                // Several round trips per election round, so a dead leader is replaced.
                election_tick_timeout: self.pacing.election_ticks,
                resend_message_tick_timeout: 20,
                buffer_size: 1024,
                ..Default::default()
            };
            let mut op = configuration
                .paxos()
                .build_for_server(server, storage)
                .map_err(storage_error)?;
            for other in configuration.members.iter().filter(|m| m.pid != member.pid) {
                op.reconnected(other.pid);
            }
            Engine::Paxos(Box::new(op))
        };
        tracing::info!(node = %self.local, configuration = configuration.configuration_id, members = configuration.members.len(), "control plane started");
        self.actions.push(Action::Started {
            configuration: configuration.clone(),
        });
        self.current = Some(Instance {
            config: configuration,
            pid: member.pid,
            engine,
            applied: 0,
            sealed: false,
            decided_ids: BTreeSet::new(),
            log: Vec::new(),
        });
        self.retired_after = None;
        // An instance resumed from storage may already be sealed.
        self.poll_current();
        Ok(())
    }

    /// Accepts an offer to join `configuration` (after storing the state up to its seal).
    /// Repeated or stale offers are ignored.
    pub fn join(&mut self, configuration: Configuration) -> Result<(), MembershipError> {
        if let Some(current) = &self.current
            && current.config.configuration_id >= configuration.configuration_id
        {
            return Ok(());
        }
        self.bootstrap(configuration)
    }

    /// Accepts an offer like [`Membership::join`], first storing the decided log of the
    /// configuration before `configuration` (which must end with the seal naming it), so
    /// this node can read it and tell late members of that configuration about the seal.
    pub fn join_with_log(
        &mut self,
        configuration: Configuration,
        sealed_log: Vec<ControlEntry>,
    ) -> Result<(), MembershipError> {
        if let Some(current) = &self.current
            && current.config.configuration_id >= configuration.configuration_id
        {
            return Ok(());
        }
        let sealed_id = configuration.configuration_id.saturating_sub(1);
        match sealed_log.last().map(|e| &e.body) {
            Some(ControlBody::Seal { next, .. }) if next == &configuration => {}
            _ => {
                return Err(MembershipError::Fenced(format!(
                    "the log offered with configuration {} does not end with the seal naming it",
                    configuration.configuration_id
                )));
            }
        }
        if sealed_id > 0 && !self.seals.contains_key(&sealed_id) {
            let mut storage = (self.open)(sealed_id).map_err(MembershipError::Storage)?;
            let stored = storage.get_log_len().map_err(storage_error)?;
            if stored < sealed_log.len() {
                storage
                    .append_entries(sealed_log[stored..].to_vec())
                    .map_err(storage_error)?;
            }
            storage
                .set_decided_idx(sealed_log.len())
                .map_err(storage_error)?;
            self.seals
                .insert(sealed_id, (configuration.clone(), sealed_log));
        }
        self.bootstrap(configuration)
    }

    /// The decided log of sealed configuration `configuration_id`, ending with its seal,
    /// if this node saw that seal.
    pub fn sealed_log(&self, configuration_id: u32) -> Option<Vec<ControlEntry>> {
        self.seals
            .get(&configuration_id)
            .map(|(_, log)| log.clone())
    }

    /// The running configuration.
    pub fn configuration(&self) -> Option<&Configuration> {
        self.current.as_ref().map(|i| &i.config)
    }

    /// The last configuration this node was a member of, if it has retired since.
    pub fn retired_after(&self) -> Option<u32> {
        self.retired_after
    }

    /// After retiring: the configuration that followed this node's last one, whose
    /// members take over the writes this node acknowledged while it was a member.
    pub fn successor(&self) -> Option<&Configuration> {
        let retired_after = self.retired_after?;
        self.seals.get(&retired_after).map(|(next, _)| next)
    }

    /// The OmniPaxos leader of the running configuration.
    pub fn leader(&self) -> Option<NodeId> {
        let current = self.current.as_ref()?;
        match &current.engine {
            Engine::Paxos(op) => op
                .get_current_leader()
                .and_then(|(pid, _)| current.config.by_pid(pid).map(|m| m.node_id.clone())),
            Engine::Solo(_) => Some(self.local.clone()),
        }
    }

    /// Log positions decided in the running configuration.
    pub fn decided_idx(&self) -> usize {
        self.current.as_ref().map(|i| i.applied).unwrap_or(0)
    }

    /// The decided log of the running configuration from `from` (up to its seal).
    pub fn read_decided(&self, from: usize) -> Vec<ControlEntry> {
        self.current
            .as_ref()
            .map(|i| i.log.iter().skip(from).cloned().collect())
            .unwrap_or_default()
    }

    /// Proposes a control entry; it is decided in this configuration or, if the seal wins
    /// the race, proposed again in the next one.
    pub fn append(&mut self, data: Vec<u8>) -> Result<(String, u64), MembershipError> {
        if self.current.is_none() {
            return Err(MembershipError::NotAMember);
        }
        Ok(self.propose_new(ControlBody::Data(data)))
    }

    fn propose_new(&mut self, body: ControlBody) -> (String, u64) {
        let entry = ControlEntry {
            id: (self.local.to_string(), self.next_proposal),
            body,
        };
        self.next_proposal += 1;
        let id = entry.id.clone();
        self.pending.push(entry.clone());
        self.propose(entry);
        id
    }

    fn propose(&mut self, entry: ControlEntry) {
        let Some(current) = self.current.as_mut() else {
            return;
        };
        match &mut current.engine {
            // Lost proposals are retried (see RETRY_EVERY_TICKS).
            Engine::Paxos(op) => {
                let _ = op.append(entry);
            }
            Engine::Solo(storage) => {
                let decided = storage
                    .append_entry(entry)
                    .and_then(|()| storage.get_log_len())
                    .and_then(|len| storage.set_decided_idx(len));
                if let Err(e) = decided {
                    tracing::error!(node = %self.local, error = %e, "control-plane storage failed; the entry stays pending");
                }
            }
        }
        self.poll_current();
    }

    /// Proposes the seal that replaces the running configuration with `members`; it takes
    /// effect once decided ([`Action::Sealed`]).
    pub fn reconfigure(
        &mut self,
        members: Vec<(NodeId, String)>,
        metadata: Option<Vec<u8>>,
    ) -> Result<Configuration, MembershipError> {
        self.reconfigure_with_keys(members, &BTreeMap::new(), metadata)
    }

    /// Like [`Membership::reconfigure`], with the members' node keys (by node id) carried
    /// in the next configuration, so every member pins them.
    pub fn reconfigure_with_keys(
        &mut self,
        members: Vec<(NodeId, String)>,
        keys: &BTreeMap<NodeId, String>,
        metadata: Option<Vec<u8>>,
    ) -> Result<Configuration, MembershipError> {
        let current = self.current.as_ref().ok_or(MembershipError::NotAMember)?;
        let id = current.config.configuration_id;
        if self
            .pending
            .iter()
            .any(|e| matches!(e.body, ControlBody::Seal { .. }))
        {
            return Err(MembershipError::ReconfigurationInFlight(id));
        }
        let next = Configuration::new(id + 1, members)?.with_keys(keys);
        self.propose_new(ControlBody::Seal {
            next: next.clone(),
            metadata,
        });
        Ok(next)
    }

    /// A member that missed the seal of its configuration (it was down) learns it from a
    /// peer: the sealed configuration's decided log, which ends with its seal (see
    /// [`MembershipError::Superseded`]). Entries it had not applied yet are applied first.
    pub fn learn_seal(
        &mut self,
        configuration_id: u32,
        decided: Vec<ControlEntry>,
    ) -> Result<(), MembershipError> {
        let Some(current) = self.current.as_mut() else {
            return Ok(());
        };
        if current.config.configuration_id != configuration_id || current.sealed {
            return Ok(());
        }
        if !matches!(
            decided.last().map(|e| &e.body),
            Some(ControlBody::Seal { .. })
        ) {
            return Err(MembershipError::Fenced(
                "a sealed log must end with its seal".into(),
            ));
        }
        tracing::info!(node = %self.local, configuration = configuration_id, "learned the seal from a peer");
        let already = current.log.len();
        for entry in decided.into_iter().skip(already) {
            if self.apply(entry) {
                break;
            }
        }
        Ok(())
    }

    /// Hands a received frame to its configuration, after the fencing checks.
    pub fn handle(&mut self, from: &NodeId, frame: ControlFrame) -> Result<(), MembershipError> {
        let local = self.local.clone();
        let running = std::iter::once(self.current.as_ref())
            .flatten()
            .chain(self.sealed.iter().map(|(i, _)| i))
            .any(|i| i.config.configuration_id == frame.configuration_id);
        if !running && let Some((next, decided)) = self.seals.get(&frame.configuration_id) {
            return Err(MembershipError::Superseded {
                configuration_id: frame.configuration_id,
                next: Box::new(next.clone()),
                decided: decided.clone(),
            });
        }
        let instance = std::iter::once(self.current.as_mut())
            .flatten()
            .chain(self.sealed.iter_mut().map(|(i, _)| i))
            .find(|i| i.config.configuration_id == frame.configuration_id)
            .ok_or_else(|| {
                MembershipError::Fenced(format!(
                    "configuration {} is not running here",
                    frame.configuration_id
                ))
            })?;
        let sender = instance.config.member(from).ok_or_else(|| {
            MembershipError::Fenced(format!(
                "{from} is not a member of configuration {}",
                frame.configuration_id
            ))
        })?;
        if frame.message.get_sender() != sender.pid || frame.message.get_receiver() != instance.pid
        {
            return Err(MembershipError::Fenced(format!(
                "a frame from {from} to {local} names pids {} -> {}",
                frame.message.get_sender(),
                frame.message.get_receiver()
            )));
        }
        let Engine::Paxos(op) = &mut instance.engine else {
            return Err(MembershipError::Fenced(
                "a one-member configuration takes no messages".into(),
            ));
        };
        op.handle_incoming(frame.message);
        if let Some((_, offered, _)) = self.offers.get(from)
            && offered.configuration_id == frame.configuration_id
        {
            tracing::info!(node = %from, "newcomer joined");
            self.offers.remove(from);
        }
        self.poll_current();
        Ok(())
    }

    /// Advances every instance's clock, retries undecided proposals, re-offers to
    /// newcomers that did not speak yet.
    pub fn tick(&mut self) {
        if let Some(Instance {
            engine: Engine::Paxos(op),
            ..
        }) = self.current.as_mut()
        {
            op.tick();
        }
        for (instance, left) in &mut self.sealed {
            if let Engine::Paxos(op) = &mut instance.engine {
                op.tick();
            }
            *left = left.saturating_sub(1);
        }
        self.drain_outgoing();
        self.sealed.retain(|(_, left)| *left > 0);
        self.retry_in = self.retry_in.saturating_sub(1);
        if self.retry_in == 0 {
            self.retry_in = self.pacing.retry_ticks;
            if let Some(Instance {
                engine: Engine::Paxos(op),
                ..
            }) = self.current.as_mut()
            {
                for entry in &self.pending {
                    let _ = op.append(entry.clone());
                }
            }
        }
        for (node, (member, configuration, wait)) in &mut self.offers {
            *wait = wait.saturating_sub(1);
            if *wait == 0 {
                *wait = self.pacing.offer_ticks;
                self.actions.push(Action::OfferJoin {
                    to: node.clone(),
                    address: member.address.clone(),
                    configuration: configuration.clone(),
                });
            }
        }
        self.poll_current();
    }

    /// Takes the actions produced since the last call.
    pub fn take_actions(&mut self) -> Vec<Action> {
        self.drain_outgoing();
        std::mem::take(&mut self.actions)
    }

    fn drain_outgoing(&mut self) {
        let routes = |instance: &mut Instance<S>,
                      actions: &mut Vec<Action>,
                      outgoing: &mut Vec<Message<ControlEntry>>| {
            if let Engine::Paxos(op) = &mut instance.engine {
                op.take_outgoing_messages(outgoing);
                for message in outgoing.drain(..) {
                    if let Some(member) = instance.config.by_pid(message.get_receiver()) {
                        actions.push(Action::Send {
                            to: member.node_id.clone(),
                            address: member.address.clone(),
                            frame: ControlFrame {
                                configuration_id: instance.config.configuration_id,
                                message,
                            },
                        });
                    }
                }
            }
        };
        if let Some(current) = self.current.as_mut() {
            routes(current, &mut self.actions, &mut self.outgoing);
        }
        for (instance, _) in &mut self.sealed {
            routes(instance, &mut self.actions, &mut self.outgoing);
        }
    }

    /// Applies newly decided entries of the running configuration, up to its seal.
    fn poll_current(&mut self) {
        let Some(current) = self.current.as_ref() else {
            return;
        };
        if current.sealed {
            return;
        }
        let fresh = current.decided(current.applied);
        for entry in fresh {
            if let Some(current) = self.current.as_mut() {
                current.applied += 1;
            }
            if self.apply(entry) {
                return;
            }
        }
    }

    /// Applies one decided entry of the running configuration; true if it sealed it.
    fn apply(&mut self, entry: ControlEntry) -> bool {
        let Some(current) = self.current.as_mut() else {
            return true;
        };
        self.pending.retain(|p| p.id != entry.id);
        current.log.push(entry.clone());
        if !current.decided_ids.insert(entry.id.clone()) {
            return false;
        }
        let configuration_id = current.config.configuration_id;
        let index = current.log.len() - 1;
        match entry.body {
            ControlBody::Seal { next, metadata } => {
                self.seal(next, metadata);
                true
            }
            ControlBody::Data(_) => {
                self.actions.push(Action::Decided {
                    configuration_id,
                    index,
                    entry,
                });
                false
            }
        }
    }

    fn seal(&mut self, next: Configuration, user: Option<Vec<u8>>) {
        let Some(mut old) = self.current.take() else {
            return;
        };
        old.sealed = true;
        let old_id = old.config.configuration_id;
        tracing::info!(node = %self.local, configuration = old_id, next = next.configuration_id, "configuration sealed");
        self.seals.insert(old_id, (next.clone(), old.log.clone()));
        let departed = old
            .config
            .members
            .iter()
            .filter(|m| next.member(&m.node_id).is_none())
            .map(|m| m.node_id.clone())
            .collect();
        self.actions.push(Action::Sealed {
            configuration_id: old_id,
            next: next.clone(),
            departed,
            metadata: user,
        });
        let newcomers: Vec<Member> = next
            .members
            .iter()
            .filter(|m| old.config.member(&m.node_id).is_none())
            .cloned()
            .collect();
        self.sealed.push((old, self.pacing.seal_grace_ticks));
        // A seal proposed here for this configuration is done, decided or not (another won).
        self.pending
            .retain(|e| !matches!(e.body, ControlBody::Seal { .. }));
        if next.member(&self.local).is_some() {
            if let Err(e) = self.bootstrap(next.clone()) {
                tracing::error!(node = %self.local, error = %e, "cannot start the next configuration");
                return;
            }
            for member in newcomers {
                self.actions.push(Action::OfferJoin {
                    to: member.node_id.clone(),
                    address: member.address.clone(),
                    configuration: next.clone(),
                });
                self.offers.insert(
                    member.node_id.clone(),
                    (member, next.clone(), self.pacing.offer_ticks),
                );
            }
            for entry in self.pending.clone() {
                self.propose(entry);
            }
        } else {
            self.retired_after = Some(old_id);
            tracing::info!(node = %self.local, configuration = old_id, "retired from the control plane");
            self.actions.push(Action::Retired {
                configuration_id: old_id,
            });
            for entry in std::mem::take(&mut self.pending) {
                self.actions.push(Action::Dropped { entry });
            }
        }
    }

    /// Node ids of every member of the running configuration except this node.
    pub fn peers(&self) -> BTreeSet<NodeId> {
        self.configuration()
            .map(|c| {
                c.members
                    .iter()
                    .map(|m| m.node_id.clone())
                    .filter(|n| n != &self.local)
                    .collect()
            })
            .unwrap_or_default()
    }
}
