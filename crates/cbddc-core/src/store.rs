use crate::{
    CompactionOutcome, CompactionPlan, Coverage, Document, Interest, KnownPeer, LocalWrite, NodeId,
    OplogEntry, PeerAck, ReplicaId, SnapshotChunk, SnapshotDocument, SnapshotProgress,
    StorageError, VersionVector,
};
use async_trait::async_trait;
use std::collections::BTreeSet;
use std::sync::Arc;
use tokio::sync::{broadcast, watch};

/// Bounds on one page of oplog entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageLimits {
    /// At most this many entries.
    pub max_entries: usize,
    /// At most about this many bytes ([`OplogEntry::approx_size`]); a page always holds
    /// at least one entry if any is missing, even a larger one.
    pub max_bytes: usize,
}

impl Default for PageLimits {
    fn default() -> Self {
        Self {
            max_entries: 5_000,
            max_bytes: 4 * 1024 * 1024,
        }
    }
}

/// A page of oplog entries missing from someone's version vector.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryPage {
    /// Entries, each origin's in sequence order.
    pub entries: Vec<OplogEntry>,
    /// True when more entries are missing than this page holds.
    pub more: bool,
    /// What the page speaks for (see [`Coverage`]): with it, a receiver that does not
    /// replicate every collection steps over entries it was not sent.
    pub coverage: Coverage,
    /// The asker lacks entries this store has collected: it must take a snapshot
    /// ([`DocumentStore::snapshot_chunk`]) first; the page is empty.
    pub behind: bool,
}

/// What applying a remote batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyOutcome {
    /// Entries new to this store (recorded in its oplog).
    pub applied: usize,
    /// Entries the store already held, ignored.
    pub duplicates: usize,
    /// Entries skipped because an earlier entry of the same origin is missing; the
    /// sender should resend from the receiver's version vector.
    pub out_of_order: usize,
    /// Entries of collections this store does not replicate: counted as held, not stored.
    pub filtered: usize,
    /// The store's version vector after the batch.
    pub version_vector: VersionVector,
}

/// A change to the documents, as the store applied it: a local write, or an entry from a
/// peer that won by LWW (an entry that lost changes nothing and is no change).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Where the change stands in this store's change feed: 1, 2, 3, … in apply order.
    /// Resume a feed after this position to get the changes that followed.
    pub position: u64,
    /// The write, with its origin, writer and stamp.
    pub entry: OplogEntry,
    /// For a write merged field by field: what the merge left. `None` for a
    /// whole-document write, whose entry is the document.
    pub merged: Option<MergedChange>,
}

/// What a write merged field by field left of its document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergedChange {
    /// The document as it stands when the feed is read (after this write, and after any
    /// that followed it), as JSON text; `None` when it does not exist.
    pub document: Option<String>,
    /// The dotted paths whose values the write changed (`""`: the whole document).
    pub paths: Vec<String>,
}

impl Change {
    /// The document after this change, as JSON text; `None` when it was deleted.
    pub fn document_text(&self) -> Option<&str> {
        match (&self.merged, &self.entry.op) {
            (Some(merged), _) => merged.document.as_deref(),
            (None, crate::Operation::Put { value }) => Some(value),
            (None, _) => None,
        }
    }

    /// The document after this change, parsed; `None` when it was deleted.
    pub fn document(&self) -> Option<serde_json::Value> {
        self.document_text()
            .and_then(|text| serde_json::from_str(text).ok())
    }

    /// Whether the change left the document deleted.
    pub fn deletes(&self) -> bool {
        self.document_text().is_none()
    }
}

/// A page of the change feed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangePage {
    /// Changes after the asked position, in order (only the asked collection's, if any).
    pub changes: Vec<Change>,
    /// The position the page read up to, matching or not: the next page starts after it.
    pub scanned_to: u64,
    /// The last position of the whole feed when the page was read.
    pub last_position: u64,
}

/// Figures for `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Live (non-deleted) documents.
    pub documents: u64,
    /// Entries in the oplog.
    pub oplog_entries: u64,
    /// Superseded entries and tombstones waiting for every peer's acknowledgement.
    pub collectable: u64,
    /// Entries and tombstones compaction removed over the database's life.
    pub collected: u64,
    /// Deletes the change feed keeps for its consumers after compaction collected their
    /// tombstones (counted apart from `oplog_entries`).
    pub feed_entries: u64,
    /// The oldest position the change feed can resume after (0: every position).
    pub feed_oldest: u64,
    /// Documents merged field by field that keep a field state (compaction drops a
    /// state once every peer holds its document's every write, unless it counts).
    pub field_states: u64,
}

/// A named consumer of the change feed, as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedConsumer {
    /// The consumer's name.
    pub name: String,
    /// The position it acknowledged: it has processed every change up to it.
    pub position: u64,
    /// When it acknowledged last (Unix ms).
    pub acked_ms: u64,
}

/// Longest name of a feed consumer, in bytes.
pub const MAX_CONSUMER_NAME_LEN: usize = 128;

/// Checks a feed consumer's name: 1 to 128 bytes of `A-Z a-z 0-9 . _ -`.
pub fn validate_consumer_name(name: &str) -> Result<(), crate::CoreError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_CONSUMER_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(crate::CoreError::InvalidValue {
            reason: format!(
                "{name:?} is not a feed consumer name: use 1 to {MAX_CONSUMER_NAME_LEN} characters from A-Z a-z 0-9 . _ -"
            ),
        })
    }
}

/// Documents and their oplog, as one node stores them.
///
/// Contract for implementors:
/// - A local write stamps a fresh HLC, takes the next sequence number of this store's
///   running replica ([`DocumentStore::replica`], new at every opening) and stores the
///   document and its oplog entry atomically; `Ok` means durable per the store's
///   durability setting.
/// - [`DocumentStore::apply_remote`] applies a batch atomically. Entries of one origin are
///   applied in sequence order only; an entry already held is ignored; an entry after a gap
///   is skipped (counted in [`ApplyOutcome::out_of_order`]) unless the sender vouches for
///   the gap ([`Coverage`]). An entry of a collection outside [`DocumentStore::interest`]
///   counts as held and is not stored ([`ApplyOutcome::filtered`]); a local write to one
///   is refused ([`StorageError::NotReplicated`]). Per `(collection, key)` the
///   entry with the greater HLC wins, deletes included. Applying never creates a local
///   entry. A stamp beyond the clock's drift limit refuses the whole batch, and so does an
///   entry of the store's running replica ([`StorageError::OwnReplica`]).
/// - Every change to a document (a local write, or a peer's entry that won) gets the next
///   position of the change feed in the same transaction ([`DocumentStore::changes_after`]).
/// - Calls may block on disk I/O internally but never block the calling async worker.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait DocumentStore: Send + Sync + std::fmt::Debug {
    /// The node id the store is bound to.
    fn node_id(&self) -> &NodeId;

    /// The replica this opening of the store writes as: never used before, by any store.
    fn replica(&self) -> &ReplicaId;

    /// Every replica this store has been (its own history), the running one included.
    fn own_replicas(&self) -> Vec<ReplicaId>;

    /// Writes a batch of local puts and deletes in one transaction, in order.
    async fn write(&self, writes: Vec<LocalWrite>) -> Result<Vec<OplogEntry>, StorageError>;

    /// The live document at `(collection, key)`, if any.
    async fn get(&self, collection: &str, key: &str) -> Result<Option<Document>, StorageError>;

    /// Live documents of a collection in key order, starting after `after_key`.
    async fn list(
        &self,
        collection: &str,
        after_key: Option<String>,
        limit: usize,
    ) -> Result<Vec<Document>, StorageError>;

    /// This store's version vector.
    async fn version_vector(&self) -> Result<VersionVector, StorageError>;

    /// The collections this store replicates.
    fn interest(&self) -> Interest;

    /// Entries this store holds that `theirs` lacks, each origin's in order, within `limits`.
    async fn entries_missing_from(
        &self,
        theirs: VersionVector,
        limits: PageLimits,
    ) -> Result<EntryPage, StorageError> {
        self.entries_for(theirs, limits, Interest::all()).await
    }

    /// Like [`DocumentStore::entries_missing_from`], for a receiver that replicates
    /// `wanted` only: the page holds only those collections' entries, and its
    /// [`EntryPage::coverage`] says what it speaks for. A store that replicates less than
    /// `wanted` speaks only for the stretches of its oplog without a gap.
    async fn entries_for(
        &self,
        theirs: VersionVector,
        limits: PageLimits,
        wanted: Interest,
    ) -> Result<EntryPage, StorageError>;

    /// Applies entries received from a peer (see the trait docs for the rules).
    async fn apply_remote(&self, entries: Vec<OplogEntry>) -> Result<ApplyOutcome, StorageError> {
        self.apply_covered(entries, Coverage::default()).await
    }

    /// Applies entries with what their sender vouches for ([`Coverage`]): an origin's
    /// entries after a gap are taken when the coverage spans the gap from at most what
    /// this store holds, and the store then counts itself as holding the coverage's end.
    async fn apply_covered(
        &self,
        entries: Vec<OplogEntry>,
        coverage: Coverage,
    ) -> Result<ApplyOutcome, StorageError>;

    /// This store's floors: replicas it holds up to a sequence number that every peer it
    /// syncs with has reported holding too (see `cbddc_net::Floors`).
    async fn floors(&self) -> Result<VersionVector, StorageError>;

    /// Raises floors (a floor never goes down), durably. Each must be held here.
    async fn raise_floors(&self, floors: VersionVector) -> Result<(), StorageError>;

    /// Document and oplog counts.
    async fn stats(&self) -> Result<StoreStats, StorageError>;

    /// Runs one bounded compaction step (see [`crate::horizons`]) in a transaction of its
    /// own, never inside a caller's commit.
    async fn compact(&self, plan: CompactionPlan) -> Result<CompactionOutcome, StorageError>;

    /// The acknowledgements persisted by [`DocumentStore::compact`].
    async fn peer_acks(&self) -> Result<Vec<PeerAck>, StorageError>;

    /// Per origin, the highest sequence number compaction removed (or that a snapshot
    /// stepped over): a peer below it for some origin is sent a snapshot.
    async fn collected_upto(&self) -> Result<VersionVector, StorageError>;

    /// A chunk of this store's documents (tombstones included) for a snapshot, after
    /// `after` in `(collection, key)` order, of the collections `wanted`, within `limits`
    /// (their `max_entries` counts documents). Without `after`, the chunk also carries the
    /// version vector the snapshot stands for, read in the same transaction.
    async fn snapshot_chunk(
        &self,
        after: Option<(String, String)>,
        limits: PageLimits,
        wanted: Interest,
    ) -> Result<SnapshotChunk, StorageError>;

    /// The snapshot being received, if one was started and not finished.
    async fn snapshot_progress(&self) -> Result<Option<SnapshotProgress>, StorageError>;

    /// Applies a chunk of a snapshot from `source` in a transaction of its own, with its
    /// progress (a crash resumes after it): every document by last-writer-wins (never
    /// over a newer write of this store), and a document this store holds in the chunk's
    /// key range whose write the snapshot's version vector covers but which the chunk
    /// lacks was deleted and collected at the source, so it goes. The version vector is
    /// not merged yet ([`DocumentStore::finish_snapshot`]): a partial snapshot is like
    /// entries taken ahead of their oplog, which last-writer-wins makes harmless. With
    /// `version_vector` (the first chunk) any snapshot in progress is dropped; without,
    /// the chunk must follow the progress from the same source. A chunk with an invalid
    /// document, one out of order or a stamp beyond the clock's drift is refused whole.
    async fn apply_snapshot_chunk(
        &self,
        source: NodeId,
        version_vector: Option<VersionVector>,
        documents: Vec<SnapshotDocument>,
    ) -> Result<SnapshotProgress, StorageError>;

    /// Ends the snapshot from `source` after its last chunk, in one durable transaction:
    /// removes what it covers but lacks after its last document, and merges its version
    /// vector (this store then holds no entries up to it). Returns the documents the
    /// whole snapshot changed.
    async fn finish_snapshot(&self, source: NodeId) -> Result<u64, StorageError>;

    /// Entries of local writes, as they commit. A receiver that lags should fall back to
    /// [`DocumentStore::entries_missing_from`].
    fn subscribe_local_writes(&self) -> broadcast::Receiver<Arc<Vec<OplogEntry>>>;

    /// Changes after position `after`, in apply order, at most `limit` of them; with a
    /// collection, only that collection's. A page reads a bounded range of positions, so
    /// it may hold fewer changes than `limit` (even none) while more follow: continue from
    /// [`ChangePage::scanned_to`] until it reaches [`ChangePage::last_position`].
    ///
    /// For every document changed after `after`, the feed holds its latest state
    /// (deletes included) at a later position; a superseded change may be gone. When it
    /// can no longer promise that (deletes dropped past the feed retention, a snapshot
    /// applied), it answers [`StorageError::FeedCompacted`] instead of a page with a gap.
    async fn changes_after(
        &self,
        after: u64,
        collection: Option<String>,
        limit: usize,
    ) -> Result<ChangePage, StorageError>;

    /// The last position of the change feed, updated after every commit that changed a
    /// document. Waiting on it costs the writer nothing.
    fn watch_changes(&self) -> watch::Receiver<u64>;

    /// Live documents as entries (each as the write that made it; `node` is empty when
    /// that entry was collected), in `(collection, key)` order after `after`, only
    /// `collection`'s when given: the current state a feed consumer resyncs from.
    async fn current_state(
        &self,
        collection: Option<String>,
        after: Option<(String, String)>,
        limit: usize,
    ) -> Result<Vec<OplogEntry>, StorageError>;

    /// The named feed consumers, by name.
    async fn feed_consumers(&self) -> Result<Vec<FeedConsumer>, StorageError>;

    /// Records that consumer `name` processed every change up to `position`, durably.
    /// A consumer that acknowledged within the feed retention keeps the deletes after its
    /// position in the feed (see [`FeedRetention`]).
    async fn acknowledge_feed(&self, name: String, position: u64) -> Result<(), StorageError>;

    /// Forgets a named consumer; `Ok(false)` if it was not known.
    async fn forget_feed_consumer(&self, name: String) -> Result<bool, StorageError>;

    /// The formats this node writes (its feature level), as recorded.
    async fn features_in_force(&self) -> Result<BTreeSet<String>, StorageError>;

    /// Adds `features` to the formats in force, durably; none is ever removed.
    async fn raise_features(&self, features: BTreeSet<String>) -> Result<(), StorageError>;

    /// Makes this store's indexes exactly `indexes`: one not held yet is created and
    /// left to [`DocumentStore::build_indexes`] (writes keep it current from now on),
    /// one held but not named is dropped.
    async fn declare_indexes(
        &self,
        indexes: Vec<crate::IndexDefinition>,
    ) -> Result<(), StorageError>;

    /// Builds the entries of up to `documents` documents of the indexes not yet built, in
    /// a transaction of its own. Returns the indexes still being built after it (none:
    /// every index is built).
    async fn build_indexes(
        &self,
        documents: usize,
    ) -> Result<Vec<crate::IndexDefinition>, StorageError>;

    /// Folds the writes pending in the indexes (see `cbddc_store::indexes`) if none came
    /// for `quiet_for`, in a transaction of its own, so that the next query does not wait
    /// for it. Whether it folded anything.
    async fn fold_indexes(&self, quiet_for: std::time::Duration) -> Result<bool, StorageError>;

    /// The indexes held, built or being built.
    async fn indexes(&self) -> Result<Vec<crate::IndexStatus>, StorageError>;

    /// A page of a built index's entries with their documents
    /// ([`StorageError::IndexUnavailable`] if it is not built, or not held).
    async fn read_index(&self, read: crate::IndexRead) -> Result<crate::IndexPage, StorageError>;
}

/// What the change feed keeps of deletes whose tombstones compaction collected (part of
/// a [`CompactionPlan`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeedRetention {
    /// Deletes the feed took over before this time (Unix ms) may leave it.
    pub cutoff_ms: u64,
    /// Deletes after this position stay whatever their age: a named consumer that
    /// acknowledged within the retention has not read them yet.
    pub hold_after: Option<u64>,
}

/// Known peers, persisted.
///
/// Peers come from two places: the configuration, and operators at run time. A
/// configuration reload replaces the configured set only; peers saved at run time stay
/// until removed. A peer named by both counts as configured.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait PeerStore: Send + Sync + std::fmt::Debug {
    /// Inserts or replaces the peer with this node id, as added at run time.
    async fn save_peer(&self, peer: KnownPeer) -> Result<(), StorageError>;
    /// Makes `peers` the configured set, atomically: configured peers not in it are
    /// removed, and each of it is inserted or replaced.
    async fn replace_configured_peers(&self, peers: Vec<KnownPeer>) -> Result<(), StorageError>;
    /// Removes the peer; `Ok(false)` if it was not known.
    async fn remove_peer(&self, node_id: NodeId) -> Result<bool, StorageError>;
    /// Every known peer, ordered by node id.
    async fn list_peers(&self) -> Result<Vec<KnownPeer>, StorageError>;
    /// The node keys pinned per node id (public keys as 64 hex digits), by node id.
    async fn pinned_keys(&self) -> Result<Vec<(NodeId, String)>, StorageError>;
    /// Pins `key` for `node` (replacing an earlier pin), durably.
    async fn pin_key(&self, node: NodeId, key: String) -> Result<(), StorageError>;
    /// Forgets the key pinned for `node`; `Ok(false)` if none was.
    async fn unpin_key(&self, node: NodeId) -> Result<bool, StorageError>;
}
