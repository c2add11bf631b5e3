//! When this node compacts its oplog: it keeps every peer's acknowledgement (the version
//! vector the peer last reported holding, from any exchange in either direction), and
//! once a second runs bounded compaction steps up to what every peer that holds entries
//! back has acknowledged (the rules are `cbddc_core::horizons`).
//!
//! Who holds entries back: every peer this node replicates with now (known peers,
//! discovered peers, members), acknowledged or not, and any peer that acknowledged within
//! the retention (`oplog_retention_ms`). A peer silent for longer than the retention holds
//! nothing back; when it returns it is behind what this node still holds and takes a
//! snapshot.

use cbddc_core::{
    CompactionPlan, DocumentStore, FeedConsumer, FeedRetention, NodeId, PeerAck, StorageError,
    VersionVector, horizons,
};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often compaction looks for work.
const COMPACT_EVERY: Duration = Duration::from_secs(1);
/// Entries one step removes at most: one step is one short transaction of the writer.
const STEP_ENTRIES: usize = 2_000;
/// Steps one round runs at most before it waits for the next tick.
const STEPS_PER_ROUND: usize = 50;
/// An unchanged acknowledgement is persisted again after this long, so its age read
/// after a restart is within this of the truth.
const REFRESH_MS: u64 = 10_000;
/// This many changes to the documents since the last round start the next one early.
const WAKE_AFTER_CHANGES: u64 = 5_000;

/// What `status` shows of compaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactionReport {
    /// The retention in force.
    pub retention_ms: u64,
    /// Peers holding entries back now.
    pub holding_back: u64,
    /// The peer whose acknowledgement is the oldest among those that lack something this
    /// node holds, and its age in milliseconds.
    pub oldest_unacknowledged: Option<(NodeId, u64)>,
    /// Superseded entries and tombstones waiting for peers' acknowledgements.
    pub collectable: u64,
    /// Entries and tombstones removed over the database's life.
    pub collected: u64,
    /// A snapshot being received: from whom, and the documents staged so far.
    pub snapshot: Option<(NodeId, u64)>,
    /// Documents merged field by field that keep a field state.
    pub field_states: u64,
}

#[derive(Debug, Default)]
struct Book {
    acks: BTreeMap<NodeId, PeerAck>,
    /// The holders' acknowledgements at the last round (for tombstones).
    previous: BTreeMap<NodeId, VersionVector>,
    /// Peers replicated with now.
    wanted: BTreeSet<NodeId>,
    /// Acknowledgements changed since the last round, to persist with it.
    dirty: BTreeSet<NodeId>,
    /// When each peer's acknowledgement was last persisted.
    saved: BTreeMap<NodeId, u64>,
    report: CompactionReport,
}

/// Peers' acknowledgements, and the compaction rounds they allow (see the module docs).
#[derive(Debug)]
pub struct Compactor {
    book: Mutex<Book>,
    retention_ms: AtomicU64,
    feed_retention_ms: AtomicU64,
}

/// What the change feed may drop: deletes it took over before `now - retention`, and
/// none after the position of a named consumer that acknowledged within the retention.
pub fn feed_retention(consumers: &[FeedConsumer], retention_ms: u64, now_ms: u64) -> FeedRetention {
    FeedRetention {
        cutoff_ms: now_ms.saturating_sub(retention_ms),
        hold_after: consumers
            .iter()
            .filter(|c| now_ms.saturating_sub(c.acked_ms) <= retention_ms)
            .map(|c| c.position)
            .min(),
    }
}

fn now_ms() -> u64 {
    cbddc_core::unix_millis()
}

impl Compactor {
    /// The acknowledgements this store persisted.
    pub async fn load(
        store: &dyn DocumentStore,
        retention_ms: u64,
        feed_retention_ms: u64,
    ) -> Result<Self, StorageError> {
        let acks = store
            .peer_acks()
            .await?
            .into_iter()
            .map(|ack| (ack.peer.clone(), ack))
            .collect();
        Ok(Self {
            book: Mutex::new(Book {
                acks,
                ..Book::default()
            }),
            retention_ms: AtomicU64::new(retention_ms),
            feed_retention_ms: AtomicU64::new(feed_retention_ms),
        })
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `peer` reported holding `holds`.
    pub fn acknowledged(&self, peer: &NodeId, holds: &VersionVector) {
        let now = now_ms();
        let mut book = self.book();
        // Persisted again when it says something new, or its age would drift too far.
        let changed = book.acks.get(peer).is_none_or(|ack| &ack.holds != holds)
            || book
                .saved
                .get(peer)
                .is_none_or(|saved| now.saturating_sub(*saved) >= REFRESH_MS);
        book.acks.insert(
            peer.clone(),
            PeerAck {
                peer: peer.clone(),
                holds: holds.clone(),
                at_ms: now,
            },
        );
        if changed {
            book.dirty.insert(peer.clone());
        }
    }

    /// The peers this node replicates with now. One never heard of holds everything back
    /// from now on, until it acknowledges or the retention passes.
    pub fn set_wanted(&self, peers: BTreeSet<NodeId>) {
        let mut book = self.book();
        for peer in &peers {
            if !book.acks.contains_key(peer) {
                book.acks.insert(
                    peer.clone(),
                    PeerAck {
                        peer: peer.clone(),
                        holds: VersionVector::default(),
                        at_ms: now_ms(),
                    },
                );
                book.dirty.insert(peer.clone());
            }
        }
        book.wanted = peers;
    }

    /// `peer` was removed on purpose: it holds nothing back any more (the store forgot
    /// its persisted acknowledgement with it).
    pub fn forget(&self, peer: &NodeId) {
        let mut book = self.book();
        book.acks.remove(peer);
        book.previous.remove(peer);
        book.dirty.remove(peer);
    }

    /// Makes `retention_ms` the oplog retention (`oplog_retention_ms`) from the next round.
    pub fn set_retention(&self, retention_ms: u64) {
        self.retention_ms.store(retention_ms, Ordering::Relaxed);
    }

    /// Makes `retention_ms` the change feed's (`feed_retention_ms`) from the next round.
    pub fn set_feed_retention(&self, retention_ms: u64) {
        self.feed_retention_ms
            .store(retention_ms, Ordering::Relaxed);
    }

    /// How long the change feed keeps a delete after its tombstone was collected.
    pub fn feed_retention_ms(&self) -> u64 {
        self.feed_retention_ms.load(Ordering::Relaxed)
    }

    /// What `status` shows of compaction.
    pub fn report(&self) -> CompactionReport {
        let mut report = self.book().report.clone();
        report.retention_ms = self.retention_ms.load(Ordering::Relaxed);
        report
    }

    /// One round: persists the acknowledgements and collects what they allow, in
    /// bounded steps. Returns the entries and tombstones removed.
    pub async fn round(&self, store: &dyn DocumentStore) -> Result<u64, StorageError> {
        let ours = store.version_vector().await?;
        let retention = self.retention_ms.load(Ordering::Relaxed);
        let consumers = store.feed_consumers().await?;
        let now = now_ms();
        let feed = feed_retention(&consumers, self.feed_retention_ms(), now);
        let (holders, previous, acks, forget) = {
            let mut book = self.book();
            let mut holders = BTreeMap::new();
            let mut forget = Vec::new();
            let mut oldest: Option<(NodeId, u64)> = None;
            for (peer, ack) in &book.acks {
                let age = now.saturating_sub(ack.at_ms);
                if age > retention {
                    if !book.wanted.contains(peer) {
                        forget.push(peer.clone());
                    }
                    continue;
                }
                if !ack.holds.dominates(&ours) && oldest.as_ref().is_none_or(|(_, a)| age > *a) {
                    oldest = Some((peer.clone(), age));
                }
                holders.insert(peer.clone(), ack.holds.clone());
            }
            for peer in &forget {
                book.acks.remove(peer);
            }
            let dirty = std::mem::take(&mut book.dirty);
            let acks: Vec<PeerAck> = dirty
                .iter()
                .filter_map(|peer| book.acks.get(peer).cloned())
                .collect();
            for ack in &acks {
                book.saved.insert(ack.peer.clone(), ack.at_ms);
            }
            book.report = CompactionReport {
                retention_ms: retention,
                holding_back: holders.len() as u64,
                oldest_unacknowledged: oldest,
                ..CompactionReport::default()
            };
            let previous = book.previous.clone();
            (holders, previous, acks, forget)
        };
        let (horizon, tombstone_horizon) = horizons(&ours, &holders, &previous);
        let mut plan = CompactionPlan {
            horizon,
            tombstone_horizon,
            acks,
            forget,
            max_entries: STEP_ENTRIES,
            feed,
        };
        let mut removed = 0;
        for _ in 0..STEPS_PER_ROUND {
            let outcome = store.compact(plan.clone()).await?;
            removed += outcome.entries + outcome.tombstones;
            if outcome.feed_dropped > 0 {
                tracing::debug!(
                    dropped = outcome.feed_dropped,
                    "deletes left the change feed past its retention"
                );
            }
            if !outcome.more {
                break;
            }
            plan.acks.clear();
            plan.forget.clear();
            // Let callers' commits in between steps.
            tokio::task::yield_now().await;
        }
        self.book().previous = holders;
        Ok(removed)
    }
}

/// Runs a round every [`COMPACT_EVERY`] until `token` is cancelled.
pub async fn run(
    compactor: std::sync::Arc<Compactor>,
    store: std::sync::Arc<dyn DocumentStore>,
    token: CancellationToken,
) {
    let mut ticker = tokio::time::interval(COMPACT_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut changes = store.watch_changes();
    let mut compacted_at = *changes.borrow();
    loop {
        // Once a second, and sooner under heavy writing: the backlog, and so the file's
        // high-water mark, stays small.
        let busy = async {
            loop {
                if changes.changed().await.is_err() {
                    return std::future::pending::<()>().await;
                }
                if changes.borrow().saturating_sub(compacted_at) >= WAKE_AFTER_CHANGES {
                    return;
                }
            }
        };
        tokio::select! {
            _ = token.cancelled() => return,
            _ = ticker.tick() => {}
            _ = busy => {}
        }
        compacted_at = *changes.borrow();
        match compactor.round(store.as_ref()).await {
            Ok(0) => {}
            Ok(removed) => tracing::debug!(removed, "compacted the oplog"),
            Err(StorageError::Closed) => return,
            Err(e) => tracing::warn!(error = %e, "compaction failed; will retry"),
        }
    }
}
