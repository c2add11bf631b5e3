//! The SyncOrchestrator keeps this node and its peers in step: push on every local write,
//! and a periodic anti-entropy round (pull what we lack, then push what the peer lacks)
//! that catches up after any absence. One task per peer; a peer that cannot be reached is
//! retried with exponential backoff capped at [`MAX_BACKOFF`]; at most [`FAN_OUT`]
//! catch-up rounds run at once; every request has a timeout.
//!
//! The peers synced with are the enabled known peers and the LAN peers discovered alive;
//! cloud remotes only while this node is the elected leader: losing leadership stops those
//! tasks at once, gaining it starts them at once, beginning with a full catch-up.

use crate::peers::PeerBook;
use cbddc_core::PeerType;
use cbddc_core::{
    ApplyOutcome, DocumentStore, KnownPeer, NodeId, OplogEntry, PageLimits, VersionVector,
};
use cbddc_net::{ClientSettings, ClusterKey, LocalIdentity, NetError, PeerClient};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Longest wait between two connection attempts to an unreachable peer.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Catch-up rounds running at once, whatever the number of peers.
pub const FAN_OUT: usize = 3;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// An idle session pings its peer this long after its last exchange...
const KEEPALIVE_EVERY: Duration = Duration::from_millis(500);
/// ...and a peer that does not answer within this is unreachable: at most 1.5 s after it
/// went silent, the node knows (`status` shows why, the election stops counting it).
const ANSWER_WITHIN: Duration = Duration::from_secs(1);
/// A catch-up round moves at most this many pages each way before yielding to pushes.
const MAX_PAGES_PER_ROUND: usize = 1_000;
/// A peer that is still ahead of us after this many snapshots in one round is retried
/// later rather than asked again at once.
const MAX_SNAPSHOTS_PER_ROUND: usize = 2;
/// A snapshot chunk holds at most this many documents...
const SNAPSHOT_DOCUMENTS: usize = 8_192;
/// The first chunk holds fewer, so that applying starts while the rest travel; each next
/// one holds twice as many, up to [`SNAPSHOT_DOCUMENTS`].
const FIRST_SNAPSHOT_DOCUMENTS: usize = 1_024;
/// ...and about this many bytes.
const SNAPSHOT_BYTES: usize = 4 * 1024 * 1024;
/// A peer that never says "no more" cannot keep us taking its snapshot forever.
const MAX_SNAPSHOT_CHUNKS: usize = 1_000_000;

/// What every peer task shares.
#[derive(Debug, Clone)]
pub struct SyncContext {
    /// This node's id.
    pub node_id: NodeId,
    /// Our node id, key and pins, for every session we open.
    pub identity: LocalIdentity,
    /// The documents synced.
    pub store: Arc<dyn DocumentStore>,
    /// The cluster key every session proves.
    pub key: ClusterKey,
    /// Liveness, last exchange and last error per peer.
    pub book: Arc<PeerBook>,
    /// How often a catch-up round runs with each peer.
    pub interval: Duration,
    /// Bounds on the pages pulled and pushed.
    pub limits: PageLimits,
    /// How sessions are opened (whether this node says it may lead, timeouts).
    pub client: ClientSettings,
    /// Opens the stream under every session (TCP for a node; anything else in a test).
    pub connector: Arc<dyn cbddc_net::Connector>,
    /// Catch-up rounds running at once, at most [`FAN_OUT`].
    pub fan_out: Arc<Semaphore>,
    /// Two live processes under one node id, seen here or told by peers.
    pub duplicates: Arc<crate::duplicates::DuplicateWatch>,
    /// This node's floors, and what it knows to raise them.
    pub fold: Arc<crate::fold::FoldTracker>,
    /// Peers' acknowledgements, and the oplog compaction they allow.
    pub compactor: Arc<crate::compaction::Compactor>,
    /// Sync rounds and failures are counted here.
    pub metrics: Arc<dyn crate::SyncMetrics>,
}

#[derive(Debug, Default)]
struct Wanted {
    known: Vec<KnownPeer>,
    discovered: Vec<KnownPeer>,
    is_leader: bool,
    /// With a control plane: the other members of the running configuration, which
    /// replace the known and discovered peers (cloud remotes stay).
    members: Option<Vec<KnownPeer>>,
}

/// Keeps exactly one sync task per peer that should be synced with (see the module docs).
#[derive(Debug)]
pub struct SyncOrchestrator {
    context: Mutex<SyncContext>,
    wanted: Mutex<Wanted>,
    running: Mutex<BTreeMap<NodeId, (KnownPeer, CancellationToken)>>,
    tracker: TaskTracker,
    token: CancellationToken,
    read_ahead: Arc<crate::SnapshotReadAhead>,
}

impl SyncContext {
    /// Opens a session with the node at `address`, through this context's connector, as
    /// this node, with the cluster key in force.
    pub async fn dial(&self, address: &str) -> Result<PeerClient, NetError> {
        PeerClient::connect_with(
            self.connector.as_ref(),
            address,
            &self.key,
            &self.identity,
            self.client,
        )
        .await
    }
}

impl SyncOrchestrator {
    /// An orchestrator with no peer yet (see `set_known` and friends), stopped by `token`.
    pub fn new(context: SyncContext, token: CancellationToken) -> Self {
        Self {
            context: Mutex::new(context),
            read_ahead: Default::default(),
            wanted: Mutex::new(Wanted::default()),
            running: Mutex::new(BTreeMap::new()),
            tracker: TaskTracker::new(),
            token,
        }
    }

    fn change(&self, update: impl FnOnce(&mut Wanted)) {
        update(&mut self.wanted.lock().unwrap_or_else(|p| p.into_inner()));
        self.reconcile();
    }

    /// The known peers (enabled or not) from the peer store; the directory follows too.
    pub fn set_known(&self, peers: Vec<KnownPeer>) {
        self.book().set_known(peers.clone());
        self.change(|w| w.known = peers);
    }

    /// The LAN peers discovered alive.
    pub fn set_discovered(&self, peers: Vec<KnownPeer>) {
        self.change(|w| w.discovered = peers);
    }

    /// With a control plane, the other members of the running configuration (`None`
    /// without one): only they, and cloud remotes, are synced with.
    pub fn set_members(&self, members: Option<Vec<KnownPeer>>) {
        self.change(|w| w.members = members);
    }

    /// What every peer task shares.
    pub fn context(&self) -> SyncContext {
        self.context
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether this node leads (and so syncs with cloud remotes).
    pub fn set_leader(&self, is_leader: bool) {
        let changed = {
            let mut wanted = self.wanted.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::replace(&mut wanted.is_leader, is_leader) != is_leader
        };
        if changed {
            tracing::info!(
                is_leader,
                "cloud remotes are {}",
                if is_leader {
                    "synced by this node"
                } else {
                    "left to the leader"
                }
            );
            self.reconcile();
        }
    }

    fn reconcile(&self) {
        let context = self
            .context
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let want: BTreeMap<NodeId, KnownPeer> = {
            let wanted = self.wanted.lock().unwrap_or_else(|p| p.into_inner());
            let mut peers: BTreeMap<NodeId, KnownPeer> = BTreeMap::new();
            match &wanted.members {
                None => {
                    for peer in wanted.discovered.iter().chain(wanted.known.iter()) {
                        // Known peers come second and win over a discovery of the same node.
                        peers.insert(peer.node_id.clone(), peer.clone());
                    }
                }
                Some(members) => {
                    let clouds = wanted
                        .known
                        .iter()
                        .filter(|p| p.peer_type == PeerType::CloudRemote);
                    for peer in members.iter().chain(clouds) {
                        peers.insert(peer.node_id.clone(), peer.clone());
                    }
                }
            }
            peers.retain(|id, p| {
                p.enabled
                    && *id != context.node_id
                    && (p.peer_type != PeerType::CloudRemote || wanted.is_leader)
            });
            peers
        };
        context.compactor.set_wanted(want.keys().cloned().collect());
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        running.retain(|id, (peer, token)| {
            let keep = want.get(id) == Some(peer);
            if !keep {
                tracing::info!(peer = %id, "stopping sync with peer");
                token.cancel();
            }
            keep
        });
        for (id, peer) in want {
            if running.contains_key(&id) {
                continue;
            }
            let token = self.token.child_token();
            self.tracker
                .spawn(run_peer(context.clone(), peer.clone(), token.clone()));
            running.insert(id, (peer, token));
        }
    }

    /// Restarts every peer task with a new cluster key and sync interval.
    pub fn update(&self, key: ClusterKey, interval: Duration) {
        {
            let mut context = self.context.lock().unwrap_or_else(|p| p.into_inner());
            context.key = key;
            context.interval = interval;
        }
        self.restart_tasks();
    }

    /// Restarts every peer task saying whether this node may lead.
    pub fn set_eligible(&self, eligible: bool) {
        self.context
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .client
            .eligible = eligible;
        self.restart_tasks();
    }

    fn restart_tasks(&self) {
        {
            let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            for (_, token) in running.values() {
                token.cancel();
            }
            running.clear();
        }
        self.reconcile();
    }

    /// Snapshot chunks read ahead for the peers taking one from this node.
    pub fn read_ahead(&self) -> Arc<crate::SnapshotReadAhead> {
        self.read_ahead.clone()
    }

    /// Peers' acknowledgements, and the oplog compaction they allow.
    pub fn compactor(&self) -> Arc<crate::compaction::Compactor> {
        self.context
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .compactor
            .clone()
    }

    /// Starts compacting the oplog in the background, until the orchestrator stops.
    pub fn start_compaction(&self) {
        let context = self.context();
        self.tracker.spawn(crate::compaction::run(
            context.compactor,
            context.store,
            self.token.child_token(),
        ));
    }

    /// This node's floors.
    pub fn fold(&self) -> Arc<crate::fold::FoldTracker> {
        self.context
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .fold
            .clone()
    }

    /// The watch for two live processes under one node id.
    pub fn duplicates(&self) -> Arc<crate::duplicates::DuplicateWatch> {
        self.context
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .duplicates
            .clone()
    }

    /// The activity record the tasks write to.
    pub fn book(&self) -> Arc<PeerBook> {
        self.context
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .book
            .clone()
    }

    /// Stops every task, waiting up to `grace` for them.
    pub async fn stop(&self, grace: Duration) {
        self.token.cancel();
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("sync tasks did not stop within the grace period");
        }
    }
}

/// Runs until `token` is cancelled.
pub async fn run_peer(ctx: SyncContext, peer: KnownPeer, token: CancellationToken) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let attempt = async {
            // Subscribe before catching up, so no write made meanwhile is missed.
            let local = ctx.store.subscribe_local_writes();
            let mut client = ctx.dial(&peer.address).await?;
            if client.remote_node() != &peer.node_id {
                return Err(SyncError::Identity {
                    expected: peer.node_id.clone(),
                    found: client.remote_node().clone(),
                });
            }
            tracing::info!(peer = %peer.node_id, address = %peer.address, "connected to peer");
            if let Some(replica) = client.remote_replica() {
                ctx.fold.live(&peer.node_id, replica);
            }
            ctx.book
                .exchanged(&peer.node_id, &peer.address, Some(client.remote_eligible()));
            session(&ctx, &peer, &mut client, local, &token, &mut backoff).await
        };
        let result = tokio::select! {
            _ = token.cancelled() => return,
            result = attempt => result,
        };
        match result {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(peer = %peer.node_id, address = %peer.address, error = %e, retry_in = ?backoff, "sync with peer failed");
                ctx.metrics.sync_failed();
                if e.means_unreachable() {
                    ctx.book
                        .unreachable(&peer.node_id, &format!("unreachable: {e}; reconnecting"));
                } else {
                    ctx.book.failed(&peer.node_id, &e.to_string());
                }
            }
        }
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

#[derive(Debug, thiserror::Error)]
enum SyncError {
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    Storage(#[from] cbddc_core::StorageError),
    #[error("the peer at this address is {found}, not {expected}; fix the known peer's address")]
    Identity { expected: NodeId, found: NodeId },
    #[error("no answer to a keepalive within {after:?} (down, paused or cut off)")]
    Unresponsive { after: Duration },
    #[error("{peer} still says this node is behind what it retains after a snapshot; will retry")]
    StillBehind { peer: NodeId },
    #[error(
        "{peer} stopped its snapshot midway (said more would come, gave no document to go on from); the chunks applied stay and it will resume after them"
    )]
    SnapshotIncomplete { peer: NodeId },
    #[error("{peer} sent a snapshot without the version vector it stands for")]
    SnapshotWithoutVector { peer: NodeId },
}

impl SyncError {
    /// The peer went silent on a session that was up (no answer to a keepalive, a
    /// request timed out, or its host stopped acknowledging what we sent): counted dead
    /// at once rather than after a second failed attempt.
    fn means_unreachable(&self) -> bool {
        match self {
            SyncError::Unresponsive { .. } => true,
            SyncError::Net(NetError::Timeout { .. }) => true,
            SyncError::Net(NetError::Io(e)) => e.kind() == std::io::ErrorKind::TimedOut,
            _ => false,
        }
    }
}

async fn session(
    ctx: &SyncContext,
    peer: &KnownPeer,
    client: &mut PeerClient,
    mut local: tokio::sync::broadcast::Receiver<Arc<Vec<OplogEntry>>>,
    token: &CancellationToken,
    backoff: &mut Duration,
) -> Result<(), SyncError> {
    catch_up(ctx, client).await?;
    ctx.book.exchanged(&peer.node_id, &peer.address, None);
    *backoff = FIRST_BACKOFF;
    let mut ticker = tokio::time::interval(ctx.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let mut last_exchange = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = token.cancelled() => return Ok(()),
            // Exactly KEEPALIVE_EVERY after the last exchange, whatever it was.
            _ = tokio::time::sleep_until(last_exchange + KEEPALIVE_EVERY) => {
                client.ping(ANSWER_WITHIN).await.map_err(|e| match e {
                    NetError::Timeout { .. } => SyncError::Unresponsive { after: ANSWER_WITHIN },
                    other => SyncError::Net(other),
                })?;
            }
            _ = ticker.tick() => {
                // Bounded fan-out: a node with many peers does not pull from all at once.
                let _permit = ctx.fan_out.acquire().await;
                catch_up(ctx, client).await?;
            }
            received = local.recv() => match received {
                Ok(entries) => {
                    let (entries, coverage) = for_peer(&entries, client.remote_interest());
                    let outcome = client.push_covered(&entries, &coverage, &ctx.fold.floors()).await?;
                    heard(ctx, client.remote_node(), &outcome.holder);
                    if outcome.out_of_order > 0 {
                        push_missing(ctx, client, outcome.holder).await?;
                    }
                }
                // We fell behind the write stream: a full round resends whatever is missing.
                Err(RecvError::Lagged(_)) => catch_up(ctx, client).await?,
                Err(RecvError::Closed) => return Ok(()),
            },
        }
        ctx.book.exchanged(&peer.node_id, &peer.address, None);
        last_exchange = tokio::time::Instant::now();
    }
}

/// The entries of a local commit that `interest` replicates, with what they speak for:
/// a commit holds consecutive entries of our replica, so leaving some out is a gap the
/// peer may step over.
fn for_peer<'a>(
    entries: &'a [OplogEntry],
    interest: &cbddc_core::Interest,
) -> (std::borrow::Cow<'a, [OplogEntry]>, cbddc_core::Coverage) {
    let mut coverage = cbddc_core::Coverage::default();
    if interest.is_all() {
        // The usual case, on every local commit: nothing to copy.
        return (std::borrow::Cow::Borrowed(entries), coverage);
    }
    if let (Some(first), Some(last)) = (entries.first(), entries.last())
        && first.origin == last.origin
        && last.seq >= first.seq
        && last.seq - first.seq + 1 == entries.len() as u64
    {
        coverage.cover(&first.origin, first.seq - 1, last.seq);
    }
    let kept = entries
        .iter()
        .filter(|e| interest.includes(&e.collection))
        .cloned()
        .collect();
    (std::borrow::Cow::Owned(kept), coverage)
}

/// `peer` reported holding `holder`: for floors and for compaction.
fn heard(ctx: &SyncContext, peer: &NodeId, holder: &VersionVector) {
    ctx.fold.observed(peer, holder.clone());
    ctx.compactor.acknowledged(peer, holder);
}

/// Pulls every entry we lack, then pushes every entry the peer lacks; then raises the
/// floors if the peers now all hold more of some quiet replica.
async fn catch_up(ctx: &SyncContext, client: &mut PeerClient) -> Result<(), SyncError> {
    ctx.metrics.sync_round();
    let (holder, _) = pull_missing(ctx, client).await?;
    heard(ctx, client.remote_node(), &holder);
    push_missing(ctx, client, holder).await?;
    if let Err(e) = ctx.fold.fold(ctx.store.as_ref()).await {
        tracing::warn!(error = %e, "cannot raise the floors; version vectors stay larger");
    }
    Ok(())
}

/// A page handed to the store, being checked and applied.
type Applying = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<ApplyOutcome, cbddc_core::StorageError>> + Send>,
>;

/// Runs `work` to its end while `applying` (if any) goes on beside it; `applying`'s
/// outcome, if it ended meanwhile, is kept in `ended`.
async fn beside<T>(
    work: impl std::future::Future<Output = T>,
    applying: &mut Option<Applying>,
    ended: &mut Option<Result<ApplyOutcome, cbddc_core::StorageError>>,
) -> T {
    tokio::pin!(work);
    loop {
        let running = applying.as_mut().filter(|_| ended.is_none());
        tokio::select! {
            // The earlier page first: it reaches the store's queue before the later one.
            biased;
            outcome = async { running?.await.into() }, if running.is_some() => {
                *ended = outcome;
            }
            done = &mut work => return done,
        }
    }
}

/// Pulls and applies, from our own version vector, until the peer has nothing more (at
/// most [`MAX_PAGES_PER_ROUND`] pages). Returns the peer's version vector and the number
/// of entries applied.
async fn pull_missing(
    ctx: &SyncContext,
    client: &mut PeerClient,
) -> Result<(VersionVector, u64), SyncError> {
    let mut holder = VersionVector::default();
    let mut applied = 0;
    let mut snapshots = 0;
    // Pages are asked for while earlier ones are applied: `have` runs ahead of the store
    // by what was handed to it. Up to two pages are in the store's hands at once, so the
    // later one is checked while the writer applies the earlier (the store takes them in
    // the order handed: an entry after one it lacks is skipped, never misapplied). A page
    // the store could not take whole (an entry after a gap) sends the round back to the
    // store's own vector.
    let mut have = ctx.store.version_vector().await?;
    let mut applying: Option<Applying> = None;
    let mut ended = None;
    let apply = |entries: Vec<OplogEntry>, coverage: cbddc_core::Coverage| -> Applying {
        let store = ctx.store.clone();
        Box::pin(async move { store.apply_covered(entries, coverage).await })
    };
    // Pages start small and double: the first arrives (and the store starts on it) sooner.
    let mut limits = PageLimits {
        max_entries: (ctx.limits.max_entries / 8).max(1),
        ..ctx.limits
    };
    for _ in 0..MAX_PAGES_PER_ROUND {
        let floors = ctx.fold.floors();
        let page = beside(
            client.pull_with_floors(&have, &floors, limits),
            &mut applying,
            &mut ended,
        )
        .await;
        limits.max_entries = (limits.max_entries * 2).min(ctx.limits.max_entries);
        let page = match page {
            Ok(page) => page,
            Err(e) => {
                // What was handed stays handed: wait for it, then report the pull.
                finish(&mut applying, &mut ended).await?;
                return Err(e.into());
            }
        };
        if let Some(notice) = &page.notice {
            ctx.duplicates.told(client.remote_node(), notice);
        }
        let received = page.entries.len();
        let spoken = !page.coverage.is_empty();
        let mut next = None;
        // A page that says we are behind holds nothing: the snapshot comes once the store
        // applied what it was handed (below).
        if !page.behind {
            holder = page.holder;
            if received > 0 || spoken {
                for entry in &page.entries {
                    have.advance(&entry.origin, entry.seq);
                }
                for (origin, (after, upto)) in page.coverage.iter() {
                    if have.get(origin) >= after {
                        have.advance(origin, upto);
                    }
                }
                tracing::debug!(peer = %client.remote_node(), received, "pulled");
                next = Some(apply(page.entries, page.coverage));
            }
        }
        // The earlier page's outcome, while the store starts checking this one.
        let earlier = match applying.take() {
            Some(earlier) => {
                let mut later = next.take();
                let mut later_ended = None;
                let outcome = match ended.take() {
                    Some(outcome) => outcome,
                    None => beside(earlier, &mut later, &mut later_ended).await,
                };
                next = later;
                ended = later_ended;
                Some(outcome?)
            }
            None => None,
        };
        applying = next;
        let mut out_of_order = false;
        if let Some(outcome) = earlier {
            applied += outcome.applied as u64;
            out_of_order = outcome.out_of_order > 0;
        }
        if page.behind || out_of_order {
            let outcome = finish(&mut applying, &mut ended).await?;
            if let Some(outcome) = outcome {
                applied += outcome.applied as u64;
            }
            if page.behind {
                if snapshots >= MAX_SNAPSHOTS_PER_ROUND {
                    return Err(SyncError::StillBehind {
                        peer: client.remote_node().clone(),
                    });
                }
                snapshots += 1;
                applied += fetch_snapshot(ctx, client).await?;
            }
            have = ctx.store.version_vector().await?;
            continue;
        }
        if !page.more || (received == 0 && !spoken) {
            break;
        }
    }
    if let Some(outcome) = finish(&mut applying, &mut ended).await? {
        applied += outcome.applied as u64;
    }
    Ok((holder, applied))
}

/// Waits for the page in the store's hands, if any.
async fn finish(
    applying: &mut Option<Applying>,
    ended: &mut Option<Result<ApplyOutcome, cbddc_core::StorageError>>,
) -> Result<Option<ApplyOutcome>, cbddc_core::StorageError> {
    let outcome = match (applying.take(), ended.take()) {
        (_, Some(outcome)) => outcome,
        (Some(applying), None) => applying.await,
        (None, None) => return Ok(None),
    };
    outcome.map(Some)
}

async fn push_missing(
    ctx: &SyncContext,
    client: &mut PeerClient,
    mut holder: VersionVector,
) -> Result<(), SyncError> {
    for _ in 0..MAX_PAGES_PER_ROUND {
        let page = ctx
            .store
            .entries_for(holder.clone(), ctx.limits, client.remote_interest().clone())
            .await?;
        if page.behind {
            // The peer lacks entries we collected: it takes a snapshot when it pulls.
            tracing::debug!(peer = %client.remote_node(), "peer is behind what this node retains");
            break;
        }
        if page.entries.is_empty() && page.coverage.is_empty() {
            break;
        }
        let outcome = client
            .push_covered(&page.entries, &page.coverage, &ctx.fold.floors())
            .await?;
        tracing::debug!(peer = %client.remote_node(), sent = page.entries.len(), applied = outcome.applied, "pushed");
        heard(ctx, client.remote_node(), &outcome.holder);
        if outcome.holder == holder {
            // The peer took nothing: stop rather than resend the same page forever.
            break;
        }
        holder = outcome.holder;
        if !page.more {
            break;
        }
    }
    Ok(())
}

/// Takes `client`'s peer's snapshot (docs/compaction.md): resumes one from the same peer
/// that a crash or a lost session interrupted, applies it chunk by chunk as it arrives
/// (the next chunk is fetched while the last one is written), then finishes it (the
/// version vector it stands for). Logs
/// progress every second. Returns the documents it changed.
async fn fetch_snapshot(ctx: &SyncContext, client: &mut PeerClient) -> Result<u64, SyncError> {
    let source = client.remote_node().clone();
    let started = std::time::Instant::now();
    let resumed = ctx
        .store
        .snapshot_progress()
        .await?
        .filter(|p| p.source == source && p.after.is_some());
    let mut after = resumed.as_ref().and_then(|p| p.after.clone());
    let mut received = resumed.as_ref().map_or(0, |p| p.staged);
    match &resumed {
        Some(p) => tracing::info!(peer = %source, received = p.staged, "resuming a snapshot"),
        None => {
            tracing::info!(peer = %source, "taking a snapshot: this node is behind what the peer retains")
        }
    }
    let (chunks, mut to_apply) =
        tokio::sync::mpsc::channel::<(Option<VersionVector>, Vec<cbddc_core::SnapshotDocument>)>(2);
    // Applying runs beside fetching, as a task of its own so the two use both cores: the
    // next chunk is fetched and decoded while the last one is checked and written. It
    // ends when fetching does (the channel closes), and with this future if it is dropped.
    let apply = tokio_util::task::AbortOnDropHandle::new(tokio::spawn({
        let (store, source) = (ctx.store.clone(), source.clone());
        async move {
            while let Some((vv, documents)) = to_apply.recv().await {
                store
                    .apply_snapshot_chunk(source.clone(), vv, documents)
                    .await?;
            }
            Ok::<(), cbddc_core::StorageError>(())
        }
    }));
    let limits = PageLimits {
        max_entries: SNAPSHOT_DOCUMENTS,
        max_bytes: SNAPSHOT_BYTES,
    };
    let mut last_report = started;
    let fetch = async {
        // Dropped when fetching ends, which ends applying.
        let chunks = chunks;
        for round in 0..MAX_SNAPSHOT_CHUNKS {
            let first = after.is_none();
            // A small first chunk starts the writer early; the next ones double up to full
            // size, each read ahead by the source while the one before is written.
            let limits = PageLimits {
                max_entries: FIRST_SNAPSHOT_DOCUMENTS
                    .saturating_mul(1 << round.min(16))
                    .min(limits.max_entries),
                ..limits
            };
            let chunk = client.snapshot_chunk(after.as_ref(), limits).await?;
            let vv = match (first, chunk.version_vector) {
                (true, Some(vv)) => Some(vv),
                (true, None) => {
                    return Err(SyncError::SnapshotWithoutVector {
                        peer: source.clone(),
                    });
                }
                (false, _) => None,
            };
            if let Some(last) = chunk.documents.last() {
                after = Some((last.collection.clone(), last.key.clone()));
            }
            received += chunk.documents.len() as u64;
            if chunks.send((vv, chunk.documents)).await.is_err() {
                break;
            }
            if last_report.elapsed() >= Duration::from_secs(1) {
                last_report = std::time::Instant::now();
                tracing::info!(peer = %source, received, elapsed = ?started.elapsed(), "taking a snapshot");
            }
            if !chunk.more {
                return Ok(true);
            }
            if after.is_none() {
                // "More" but no document to go on from: a broken peer.
                return Ok(false);
            }
        }
        Ok::<bool, SyncError>(false)
    };
    let (fetched, applying) = tokio::join!(fetch, apply);
    applying.map_err(|e| cbddc_core::StorageError::Backend {
        operation: "applying a snapshot",
        message: format!("the task applying it stopped: {e}"),
    })??;
    let complete = fetched?;
    if !complete {
        return Err(SyncError::SnapshotIncomplete { peer: source });
    }
    let changed = ctx.store.finish_snapshot(source.clone()).await?;
    tracing::info!(peer = %source, received, changed, elapsed = ?started.elapsed(), "applied a snapshot");
    Ok(changed)
}

/// Copies everything `peer` at `address` holds that this node lacks: its snapshot, then
/// the entries that followed it. How a newcomer receives the cluster's data before it
/// joins. Returns the documents and entries applied.
pub async fn copy_from(ctx: &SyncContext, peer: &NodeId, address: &str) -> Result<u64, String> {
    let mut client = ctx.dial(address).await.map_err(|e| e.to_string())?;
    if client.remote_node() != peer {
        return Err(SyncError::Identity {
            expected: peer.clone(),
            found: client.remote_node().clone(),
        }
        .to_string());
    }
    let started = std::time::Instant::now();
    let mut applied = fetch_snapshot(ctx, &mut client)
        .await
        .map_err(|e| e.to_string())?;
    let (_, late) = pull_missing(ctx, &mut client)
        .await
        .map_err(|e| e.to_string())?;
    applied += late;
    tracing::info!(%peer, applied, elapsed = ?started.elapsed(), "copied the cluster's data");
    Ok(applied)
}

#[cfg(test)]
mod interest_tests {
    use super::for_peer;
    use cbddc_core::{Hlc, Interest, NodeId, Operation, OplogEntry, ReplicaId};

    fn entry(seq: u64, collection: &str) -> OplogEntry {
        let origin = ReplicaId::new("r").unwrap();
        OplogEntry {
            origin: origin.clone(),
            node: NodeId::new("n").unwrap(),
            seq,
            collection: collection.into(),
            key: "k".into(),
            op: Operation::Delete,
            hlc: Hlc {
                wall_ms: seq,
                counter: 0,
                replica: origin,
            },
        }
    }

    #[test]
    fn a_peer_is_pushed_only_its_collections_and_told_the_gap() {
        let commit = vec![entry(4, "a"), entry(5, "b"), entry(6, "a")];
        let (kept, coverage) = for_peer(&commit, &Interest::only(["b"]));
        assert_eq!(kept.iter().map(|e| e.seq).collect::<Vec<_>>(), [5]);
        assert_eq!(coverage.get(&ReplicaId::new("r").unwrap()), Some((3, 6)));
        let (kept, coverage) = for_peer(&commit, &Interest::all());
        assert_eq!(kept.len(), 3);
        assert!(coverage.is_empty());
    }
}

#[cfg(test)]
mod pipeline_tests {
    use super::{Applying, beside};
    use cbddc_core::ApplyOutcome;
    use std::sync::{Arc, Mutex};

    fn recorded(log: &Arc<Mutex<Vec<&'static str>>>, name: &'static str) -> Applying {
        let log = log.clone();
        Box::pin(async move {
            log.lock().unwrap().push(name);
            tokio::task::yield_now().await;
            log.lock().unwrap().push("applied");
            Ok(ApplyOutcome {
                applied: 7,
                ..ApplyOutcome::default()
            })
        })
    }

    #[tokio::test]
    async fn the_page_in_the_stores_hands_is_polled_before_the_next_pull_and_its_outcome_kept() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut applying = Some(recorded(&log, "earlier page handed"));
        let mut ended = None;
        let pulled = beside(
            {
                let log = log.clone();
                async move {
                    log.lock().unwrap().push("next page pulled");
                    for _ in 0..3 {
                        tokio::task::yield_now().await;
                    }
                    "page"
                }
            },
            &mut applying,
            &mut ended,
        )
        .await;
        assert_eq!(pulled, "page");
        // The earlier page reached the store first, and ended while the pull went on.
        assert_eq!(
            log.lock().unwrap()[..2],
            ["earlier page handed", "next page pulled"]
        );
        assert_eq!(ended.unwrap().unwrap().applied, 7);
    }

    #[tokio::test]
    async fn nothing_in_the_stores_hands_leaves_the_pull_alone() {
        let (mut applying, mut ended) = (None, None);
        assert_eq!(beside(async { 5 }, &mut applying, &mut ended).await, 5);
        assert!(ended.is_none());
    }
}
