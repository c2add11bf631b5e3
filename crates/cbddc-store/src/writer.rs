//! The single writer: a thread that owns the write connection and the node's clock, and
//! commits whatever is queued as one transaction (group commit).

use crate::batch_apply::{self, Applying};
use crate::batch_merge::{self, MergingEntry};
use crate::document_write::{DocumentRow, DocumentWriter, Overwrite};
use crate::error::{SqlContext, StoreError};
use crate::rows::{APPEND_OPLOG, QUEUE_TOMBSTONE, RECORD_CHANGE, set_meta};
use crate::write_connection::WriteConnection;
use cbddc_core::{
    ApplyOutcome, CompactionOutcome, CompactionPlan, Coverage, Edit, HybridClock, Interest,
    KnownPeer, LocalWrite, NodeId, Operation, OplogEntry, ReplicaId, SnapshotDocument,
    SnapshotProgress, StorageError, VersionVector,
};
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::BTreeSet;
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

/// At most this many commands share one transaction.
const MAX_GROUP_COMMANDS: usize = 512;
/// A group stops growing once it holds about this many writes.
const MAX_GROUP_WRITES: usize = 20_000;

type Reply<T> = oneshot::Sender<Result<T, StorageError>>;

/// Writes or entries whose content was checked (`validate`) before they were queued:
/// the checks run on the caller's thread, and the writer's time goes to SQL.
#[derive(Debug)]
pub(crate) struct Checked<T>(Vec<T>);

/// What [`Checked`] checks.
pub(crate) trait Validate {
    fn validate(&self) -> Result<(), cbddc_core::CoreError>;
}

impl Validate for OplogEntry {
    fn validate(&self) -> Result<(), cbddc_core::CoreError> {
        OplogEntry::validate(self)
    }
}

impl Validate for LocalWrite {
    fn validate(&self) -> Result<(), cbddc_core::CoreError> {
        LocalWrite::validate(self)
    }
}

impl Validate for SnapshotDocument {
    fn validate(&self) -> Result<(), cbddc_core::CoreError> {
        cbddc_core::validate_collection(&self.collection)?;
        cbddc_core::validate_key(&self.key)?;
        if let Some(value) = &self.value {
            cbddc_core::validate_json_value(value)?;
        }
        if let Some(state) = &self.field_state {
            let document = crate::field_apply::parse_document(self.value.as_deref());
            crate::field_apply::parse_state(state, document.as_ref()).map_err(|reason| {
                cbddc_core::CoreError::InvalidValue {
                    reason: format!(
                        "snapshot document {}/{}: {reason}",
                        self.collection, self.key
                    ),
                }
            })?;
        }
        Ok(())
    }
}

impl<T: Validate> Checked<T> {
    pub(crate) fn check(items: Vec<T>) -> Result<Self, StorageError> {
        for item in &items {
            item.validate()?;
        }
        Ok(Self(items))
    }
}

/// A request to the writer thread.
#[derive(Debug)]
pub(crate) enum Command {
    Local {
        writes: Checked<LocalWrite>,
        reply: Reply<Vec<OplogEntry>>,
    },
    Remote {
        entries: Checked<OplogEntry>,
        coverage: Coverage,
        reply: Reply<ApplyOutcome>,
    },
    SavePeer {
        peer: KnownPeer,
        reply: Reply<()>,
    },
    RemovePeer {
        node_id: NodeId,
        reply: Reply<bool>,
    },
    ReplaceConfiguredPeers {
        peers: Vec<KnownPeer>,
        reply: Reply<()>,
    },
    PinKey {
        node_id: NodeId,
        key: String,
        reply: Reply<()>,
    },
    UnpinKey {
        node_id: NodeId,
        reply: Reply<bool>,
    },
    RaiseFloors {
        floors: VersionVector,
        reply: Reply<()>,
    },
    AcknowledgeFeed {
        name: String,
        position: u64,
        reply: Reply<()>,
    },
    ForgetFeedConsumer {
        name: String,
        reply: Reply<bool>,
    },
    RaiseFeatures {
        features: std::collections::BTreeSet<String>,
        reply: Reply<()>,
    },
}

/// What the writer thread receives: commands it groups into one transaction, or work
/// that runs alone.
#[derive(Debug)]
pub(crate) enum Queued {
    Grouped(Command),
    Solo(Solo),
}

impl From<Command> for Queued {
    fn from(command: Command) -> Self {
        Queued::Grouped(command)
    }
}

impl From<Solo> for Queued {
    fn from(solo: Solo) -> Self {
        Queued::Solo(solo)
    }
}

/// Work that runs alone: large or long, it must not hold up a caller's commit.
#[derive(Debug)]
pub(crate) enum Solo {
    Compact {
        plan: CompactionPlan,
        reply: Reply<CompactionOutcome>,
    },
    StageSnapshot {
        source: NodeId,
        version_vector: Option<VersionVector>,
        documents: Checked<SnapshotDocument>,
        reply: Reply<SnapshotProgress>,
    },
    FinishSnapshot {
        source: NodeId,
        reply: Reply<u64>,
    },
    DeclareIndexes {
        indexes: Vec<cbddc_core::IndexDefinition>,
        reply: Reply<()>,
    },
    BuildIndexes {
        documents: usize,
        reply: Reply<Vec<cbddc_core::IndexDefinition>>,
    },
    /// A fold of the writes pending in the indexes, if none came for `quiet_for`.
    FoldIndexes {
        quiet_for: std::time::Duration,
        reply: Reply<bool>,
    },
    /// A read of an index a reader found behind its documents: folded, then read here.
    ReadIndex {
        read: cbddc_core::IndexRead,
        reply: Reply<Option<cbddc_core::IndexPage>>,
    },
}

impl Command {
    fn kind(&self) -> &'static str {
        match self {
            Command::Local { .. } => "local",
            Command::Remote { .. } => "remote",
            Command::SavePeer { .. } => "save_peer",
            Command::RemovePeer { .. } => "remove_peer",
            Command::ReplaceConfiguredPeers { .. } => "replace_configured_peers",
            Command::PinKey { .. } => "pin_key",
            Command::UnpinKey { .. } => "unpin_key",
            Command::RaiseFloors { .. } => "raise_floors",
            Command::AcknowledgeFeed { .. } => "acknowledge_feed",
            Command::ForgetFeedConsumer { .. } => "forget_feed_consumer",
            Command::RaiseFeatures { .. } => "raise_features",
        }
    }

    fn weight(&self) -> usize {
        match self {
            Command::Local { writes, .. } => writes.0.len(),
            Command::Remote { entries, .. } => entries.0.len(),
            Command::ReplaceConfiguredPeers { peers, .. } => peers.len(),
            Command::SavePeer { .. }
            | Command::RemovePeer { .. }
            | Command::PinKey { .. }
            | Command::UnpinKey { .. }
            | Command::AcknowledgeFeed { .. }
            | Command::ForgetFeedConsumer { .. }
            | Command::RaiseFeatures { .. } => 1,
            Command::RaiseFloors { floors, .. } => floors.len(),
        }
    }
}

/// A command executed inside the open transaction, waiting for the commit.
enum Executed {
    Local(
        Result<Vec<OplogEntry>, StorageError>,
        Reply<Vec<OplogEntry>>,
    ),
    Remote(Result<ApplyOutcome, StorageError>, Reply<ApplyOutcome>),
    SavePeer(Result<(), StorageError>, Reply<()>),
    RemovePeer(Result<bool, StorageError>, Reply<bool>),
}

pub(crate) struct Writer {
    /// Shared with the control plane (see [`crate::write_connection`]).
    pub(crate) conn: Arc<WriteConnection>,
    pub(crate) clock: HybridClock,
    pub(crate) node: NodeId,
    /// This opening of the database: the origin of every local write it takes.
    pub(crate) replica: ReplicaId,
    /// Mirrors the `origins` table; restored whenever a transaction or savepoint rolls back.
    pub(crate) vv: VersionVector,
    pub(crate) local_tx: broadcast::Sender<Arc<Vec<OplogEntry>>>,
    /// The change feed's last position; restored like `vv` on a rollback.
    pub(crate) last_change: u64,
    pub(crate) change_tx: watch::Sender<u64>,
    /// The collections replicated: local writes outside are refused, remote entries
    /// outside are counted as held and not stored.
    pub(crate) interest: Interest,
    /// The indexes each write keeps current.
    pub(crate) indexes: crate::indexes::IndexSet,
    /// Whether local writes merge field by field, and whether any document keeps a
    /// field state (see [`crate::field_apply`]).
    pub(crate) field_merge: crate::field_apply::FieldMerge,
}

fn to_i64(value: u64, what: &'static str) -> Result<i64, StorageError> {
    i64::try_from(value).map_err(|_| {
        StorageError::Invalid(cbddc_core::CoreError::InvalidValue {
            reason: format!("{what} {value} is out of range"),
        })
    })
}

fn sql(operation: &'static str) -> impl FnOnce(rusqlite::Error) -> StorageError {
    move |source| StoreError::Sqlite { operation, source }.into()
}

impl Writer {
    /// Runs until every sender is gone, then checkpoints and closes the database.
    pub(crate) fn run(mut self, mut rx: mpsc::Receiver<Queued>) {
        let mut group = Vec::new();
        while let Some(first) = rx.blocking_recv() {
            let first = match first {
                Queued::Solo(solo) => {
                    self.commit_solo(solo);
                    continue;
                }
                Queued::Grouped(command) => command,
            };
            let mut weight = first.weight();
            group.push(first);
            let mut after = None;
            while group.len() < MAX_GROUP_COMMANDS && weight < MAX_GROUP_WRITES {
                match rx.try_recv() {
                    Ok(Queued::Solo(solo)) => {
                        after = Some(solo);
                        break;
                    }
                    Ok(Queued::Grouped(next)) => {
                        weight += next.weight();
                        group.push(next);
                    }
                    Err(_) => break,
                }
            }
            self.commit_group(std::mem::take(&mut group));
            if let Some(solo) = after {
                self.commit_solo(solo);
            }
        }
        if let Err(e) = self
            .conn
            .hold()
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        {
            tracing::warn!(error = %e, "final checkpoint failed; the WAL will be replayed at the next open");
        }
        tracing::debug!(node = %self.node, "store writer stopped");
    }

    fn commit_group(&mut self, group: Vec<Command>) {
        tracing::trace!(commands = ?group.iter().map(Command::kind).collect::<Vec<_>>(), "committing a group");
        // The whole group is one hold: the control plane waits for its commit, and the
        // group waits for a control-plane step's.
        let shared = self.conn.clone();
        let conn = &*shared.hold();
        let vv_before = self.vv.clone();
        let change_before = self.last_change;
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            let message = format!("cannot start a transaction: {e}");
            for command in group {
                fail(command, &message);
            }
            return;
        }
        // A command alone needs no savepoint of its own (journaling its pages for one
        // cost catch-up several percent): if it fails, the whole transaction goes.
        let alone = group.len() == 1;
        let mut executed = Vec::with_capacity(group.len());
        for command in group {
            executed.push(self.execute(conn, command, !alone));
        }
        if alone && executed.iter().any(|done| !done.is_ok()) {
            // `execute` has put the version vector and the change position back.
            let _ = conn.execute_batch("ROLLBACK");
            self.indexes.recount(conn);
            for done in executed {
                done.reply();
            }
            return;
        }
        if self.indexes.due()
            && let Err(e) = self.indexes.fold(conn)
        {
            // Folding again is harmless (removals and insertions of entries already
            // moved change nothing): the writes commit, and the next fold retries.
            tracing::warn!(error = %e, "cannot fold pending writes into the indexes; a later fold retries");
        }
        let commit = self.persist_clock(conn).and_then(|()| {
            conn.execute_batch("COMMIT")
                .map_err(sql("committing a transaction"))
        });
        if let Err(e) = commit {
            let _ = conn.execute_batch("ROLLBACK");
            self.indexes.recount(conn);
            self.vv = vv_before;
            self.last_change = change_before;
            tracing::error!(error = %e, "a group commit failed; its writes are not stored");
            let message = format!("the transaction failed to commit: {e}");
            for done in executed {
                done.fail(&message);
            }
            return;
        }
        if self.last_change != change_before {
            self.change_tx.send_replace(self.last_change);
        }
        for done in executed {
            if let Executed::Local(Ok(entries), _) = &done
                && self.local_tx.receiver_count() > 0
            {
                // A receiver may go away meanwhile: then nobody needs the entries.
                let _ = self.local_tx.send(Arc::new(entries.clone()));
            }
            done.reply();
        }
    }

    fn commit_solo(&mut self, solo: Solo) {
        match solo {
            Solo::Compact { plan, reply } => {
                if plan.acks.is_empty() && plan.forget.is_empty() {
                    // Nothing to record and nothing queued: no transaction, no disk flush.
                    match crate::compaction::nothing_to_do(&self.conn.hold(), &plan) {
                        Ok(true) => {
                            let _ = reply.send(Ok(CompactionOutcome::default()));
                            return;
                        }
                        Ok(false) => {}
                        Err(e) => {
                            let _ = reply.send(Err(e));
                            return;
                        }
                    }
                }
                let done = self.alone(false, |_, conn| crate::compaction::compact(conn, &plan));
                if let Ok(outcome) = &done {
                    tracing::debug!(
                        entries = outcome.entries,
                        tombstones = outcome.tombstones,
                        more = outcome.more,
                        "compacted"
                    );
                }
                let _ = reply.send(done);
            }
            Solo::StageSnapshot {
                source,
                version_vector,
                documents,
                reply,
            } => {
                // A chunk lost to a power cut is fetched again (the progress goes with it),
                // so a chunk need not wait for the disk; the last step does, and its flush
                // makes every chunk before it durable too (one write-ahead log).
                let relaxed = self.conn.durability() == cbddc_core::Durability::Full;
                if relaxed {
                    let _ = self
                        .conn
                        .hold()
                        .execute_batch("PRAGMA synchronous = NORMAL");
                }
                let change_before = self.last_change;
                let done = self.alone(true, |writer, conn| {
                    let documents = writer.admit_snapshot(documents)?;
                    let position = to_i64(writer.last_change + 1, "a change position")?;
                    let (progress, changed) = crate::snapshot::apply_chunk(
                        conn,
                        (&writer.indexes, writer.field_merge.any_state),
                        &source,
                        version_vector,
                        &documents,
                        position,
                    )?;
                    if documents.iter().any(|d| d.field_state.is_some()) {
                        writer.field_merge.any_state = true;
                    }
                    if let Some((wall, counter)) = progress.latest {
                        // Before any local write could stamp below what this node holds.
                        writer.clock.restore(wall, counter);
                    }
                    writer.took_snapshot_position(conn, changed)?;
                    Ok(progress)
                });
                if relaxed
                    && let Err(e) = self.conn.hold().execute_batch("PRAGMA synchronous = FULL")
                {
                    tracing::error!(error = %e, "cannot restore synchronous = FULL after a snapshot chunk");
                }
                self.settle_change(change_before, done.is_ok());
                let _ = reply.send(done);
            }
            Solo::FinishSnapshot { source, reply } => {
                let change_before = self.last_change;
                let done = self.alone(true, |writer, conn| writer.finish_snapshot(conn, &source));
                self.settle_change(change_before, done.is_ok());
                let _ = reply.send(done);
            }
            Solo::DeclareIndexes { indexes, reply } => {
                let done = self.alone(false, |writer, conn| {
                    // Pending moves name the indexes of now: fold them while they exist.
                    writer.indexes.fold(conn)?;
                    crate::indexes::declare(conn, &indexes)
                });
                // What the database records now, committed or not.
                let loaded = crate::indexes::IndexSet::load(&self.conn.hold());
                let done = match (done, loaded) {
                    (Ok(()), Ok(set)) => {
                        self.indexes = set;
                        Ok(())
                    }
                    (Err(e), Ok(set)) => {
                        self.indexes = set;
                        Err(e)
                    }
                    (_, Err(e)) => Err(e.into()),
                };
                let _ = reply.send(done);
            }
            Solo::BuildIndexes { documents, reply } => {
                let done = self.alone(false, |writer, conn| {
                    // A document the build reads has every move of its entry folded: a
                    // pending move from an entry the build adds would leave it behind.
                    writer.indexes.fold(conn)?;
                    crate::indexes::build(conn, documents)
                });
                let _ = reply.send(done);
            }
            Solo::FoldIndexes { quiet_for, reply } => {
                let done = if self.indexes.quiet_for(quiet_for) {
                    self.alone(false, |writer, conn| Ok(writer.indexes.fold(conn)?))
                        .map(|()| true)
                } else {
                    Ok(false)
                };
                let _ = reply.send(done);
            }
            Solo::ReadIndex { read, reply } => {
                let done = self
                    .alone(false, |writer, conn| Ok(writer.indexes.fold(conn)?))
                    .and_then(|()| match crate::indexes::read(&self.conn.hold(), &read)? {
                        crate::indexes::IndexLookup::Page(page) => Ok(Some(page)),
                        crate::indexes::IndexLookup::NotBuilt => Ok(None),
                        crate::indexes::IndexLookup::Behind => Err(StorageError::Backend {
                            operation: "reading an index",
                            message: "writes are pending after the fold that preceded this read"
                                .into(),
                        }),
                    });
                let _ = reply.send(done);
            }
        }
    }

    /// After work that may have taken a change position: put it back if the work rolled
    /// back, or tell the feed's watchers.
    fn settle_change(&mut self, before: u64, committed: bool) {
        if !committed {
            self.last_change = before;
        } else if self.last_change != before {
            self.change_tx.send_replace(self.last_change);
        }
    }

    /// A snapshot step that changed documents takes the next feed position: they have
    /// none of their own, so a consumer from before it must resync, and it is the oldest
    /// position to resume after.
    fn took_snapshot_position(
        &mut self,
        conn: &Connection,
        changed: u64,
    ) -> Result<(), StorageError> {
        if changed > 0 {
            self.last_change += 1;
            crate::feed::raise_oldest(conn, self.last_change)?;
        }
        Ok(())
    }

    /// Runs `work` in a transaction of its own; on failure nothing of it stays. With
    /// `moves_clock`, the clock is recorded in it too.
    fn alone<T>(
        &mut self,
        moves_clock: bool,
        work: impl FnOnce(&mut Self, &Connection) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        let shared = self.conn.clone();
        let conn = &*shared.hold();
        let vv_before = self.vv.clone();
        conn.execute_batch("BEGIN IMMEDIATE")
            .map_err(sql("starting a transaction"))?;
        let done = work(self, conn).and_then(|value| {
            if self.indexes.due() {
                self.indexes.fold(conn)?;
            }
            if moves_clock {
                self.persist_clock(conn)?;
            }
            conn.execute_batch("COMMIT")
                .map_err(sql("committing a transaction"))?;
            Ok(value)
        });
        if done.is_err() {
            let _ = conn.execute_batch("ROLLBACK");
            self.indexes.recount(conn);
            self.vv = vv_before;
        }
        done
    }

    /// The documents of a snapshot chunk this store takes: valid, within the clock's
    /// drift, of the collections it replicates. Anything invalid refuses the chunk.
    fn admit_snapshot(
        &mut self,
        documents: Checked<SnapshotDocument>,
    ) -> Result<Vec<SnapshotDocument>, StorageError> {
        let Checked(documents) = documents;
        let mut kept = Vec::with_capacity(documents.len());
        self.clock.check_all(documents.iter().map(|doc| &doc.hlc))?;
        for doc in documents {
            to_i64(doc.hlc.wall_ms, "a clock reading")?;
            to_i64(doc.seq, "a sequence number")?;
            if doc.hlc.replica == self.replica && doc.seq > self.vv.get(&self.replica) {
                // Nobody else can hold writes of this opening that it has not made.
                return Err(StorageError::OwnReplica {
                    replica: self.replica.clone(),
                    seq: doc.seq,
                });
            }
            if self.interest.includes(&doc.collection) {
                kept.push(doc);
            }
        }
        Ok(kept)
    }

    fn finish_snapshot(&mut self, conn: &Connection, source: &NodeId) -> Result<u64, StorageError> {
        let (progress, removed) = crate::snapshot::finish(conn, &self.indexes, source)?;
        for (origin, seq) in progress.version_vector.iter() {
            if seq <= self.vv.get(origin) {
                continue;
            }
            if origin == &self.replica {
                return Err(StorageError::OwnReplica {
                    replica: origin.clone(),
                    seq,
                });
            }
            // Entries of `origin` up to `seq` are not in this oplog: a peer behind that
            // takes a snapshot from here too.
            crate::compaction::raise_collected(
                conn,
                origin.as_str(),
                to_i64(seq, "a sequence number")?,
            )?;
            self.vv.advance(origin, seq);
            self.record_origin(conn, origin, seq)?;
        }
        self.took_snapshot_position(conn, removed)?;
        tracing::info!(%source, documents = progress.staged, changed = progress.changed, "applied a snapshot");
        Ok(progress.changed)
    }

    /// Runs one command of a group; with `savepoint`, a failed command rolls back alone.
    fn execute(&mut self, conn: &Connection, command: Command, savepoint: bool) -> Executed {
        let vv_before = self.vv.clone();
        let change_before = self.last_change;
        if savepoint && let Err(e) = conn.execute_batch("SAVEPOINT command") {
            let executed = precommit_failure(command, &format!("cannot open a savepoint: {e}"));
            return executed;
        }
        let executed = match command {
            Command::Local { writes, reply } => Executed::Local(self.local(conn, &writes), reply),
            Command::Remote {
                entries,
                coverage,
                reply,
            } => Executed::Remote(self.remote(conn, entries, &coverage), reply),
            Command::SavePeer { peer, reply } => {
                Executed::SavePeer(self.save_peer(conn, &peer, "runtime"), reply)
            }
            Command::ReplaceConfiguredPeers { peers, reply } => {
                Executed::SavePeer(self.replace_configured_peers(conn, &peers), reply)
            }
            Command::RemovePeer { node_id, reply } => {
                Executed::RemovePeer(self.remove_peer(conn, &node_id), reply)
            }
            Command::PinKey {
                node_id,
                key,
                reply,
            } => Executed::SavePeer(self.pin_key(conn, &node_id, &key), reply),
            Command::UnpinKey { node_id, reply } => {
                Executed::RemovePeer(self.unpin_key(conn, &node_id), reply)
            }
            Command::RaiseFloors { floors, reply } => {
                Executed::SavePeer(self.raise_floors(conn, &floors), reply)
            }
            Command::AcknowledgeFeed {
                name,
                position,
                reply,
            } => Executed::SavePeer(crate::feed::acknowledge(conn, &name, position), reply),
            Command::RaiseFeatures { features, reply } => {
                if features.contains(crate::field_apply::FEATURE) {
                    // Only raised once every peer reads it: writing it early is harmless.
                    self.field_merge.in_force = true;
                }
                Executed::SavePeer(crate::features::raise(conn, &features), reply)
            }
            Command::ForgetFeedConsumer { name, reply } => {
                Executed::RemovePeer(crate::feed::forget(conn, &name), reply)
            }
        };
        if !executed.is_ok() {
            self.vv = vv_before;
            self.last_change = change_before;
        }
        if savepoint {
            let end = if executed.is_ok() {
                "RELEASE command"
            } else {
                "ROLLBACK TO command; RELEASE command"
            };
            if let Err(e) = conn.execute_batch(end) {
                tracing::error!(error = %e, "closing a savepoint failed");
            }
        }
        executed
    }

    fn persist_clock(&mut self, conn: &Connection) -> Result<(), StorageError> {
        let (wall, counter) = self.clock.last();
        set_meta(conn, "hlc", &format!("{wall}:{counter}")).map_err(sql("recording the clock"))
    }

    fn local(
        &mut self,
        conn: &Connection,
        writes: &Checked<LocalWrite>,
    ) -> Result<Vec<OplogEntry>, StorageError> {
        let Checked(writes) = writes;
        for write in writes {
            if !self.interest.includes(&write.collection) {
                return Err(StorageError::NotReplicated {
                    collection: write.collection.clone(),
                    interest: self.interest.to_string(),
                });
            }
        }
        let mut seq = self.vv.get(&self.replica);
        let mut entries = Vec::with_capacity(writes.len());
        {
            let mut append = conn
                .prepare_cached(APPEND_OPLOG)
                .map_err(sql("preparing an oplog append"))?;
            let mut record_change = conn
                .prepare_cached(RECORD_CHANGE)
                .map_err(sql("preparing a change record"))?;
            let mut tombstone = conn
                .prepare_cached(QUEUE_TOMBSTONE)
                .map_err(sql("preparing to queue a tombstone"))?;
            let mut documents = DocumentWriter::new(conn, &self.indexes)
                .map_err(sql("preparing to write documents"))?;
            let mut current = conn
                .prepare_cached("SELECT value FROM documents WHERE collection = ?1 AND key = ?2")
                .map_err(sql("preparing to read a document"))?;
            for write in writes {
                let merges = (self.field_merge.in_force
                    && matches!(write.edit, Edit::Patch(_) | Edit::Increment { .. }))
                    || self
                        .field_merge
                        .has_state(conn, &write.collection, &write.key)
                        .map_err(sql("looking for a field state"))?;
                seq += 1;
                let hlc = self.clock.tick();
                let wall = to_i64(hlc.wall_ms, "a clock reading")?;
                self.last_change += 1;
                let position = to_i64(self.last_change, "a change position")?;
                let seq_i64 = to_i64(seq, "a sequence number")?;
                let op = if merges {
                    self.field_merge.any_state = true;
                    crate::field_apply::local(
                        conn,
                        &self.indexes,
                        self.field_merge.in_force,
                        write,
                        &hlc,
                        (seq_i64, position),
                    )?
                } else {
                    let op = resolve_whole(&mut current, write)?;
                    let value = match &op {
                        Operation::Put { value } => Some(value.as_str()),
                        _ => None,
                    };
                    documents
                        .write(
                            &DocumentRow {
                                collection: &write.collection,
                                key: &write.key,
                                value,
                                wall,
                                counter: hlc.counter,
                                replica: self.replica.as_str(),
                                seq: seq_i64,
                                position,
                            },
                            Overwrite::Always,
                        )
                        .map_err(sql("writing a document"))?;
                    if value.is_none() {
                        tombstone
                            .execute(params![self.replica.as_str(), seq_i64, position])
                            .map_err(sql("queuing a tombstone"))?;
                    }
                    record_change
                        .execute(params![position, self.replica.as_str(), seq_i64])
                        .map_err(sql("recording a change"))?;
                    op
                };
                let (value, field) = op.to_columns();
                append
                    .execute(params![
                        self.replica.as_str(),
                        seq_i64,
                        write.collection,
                        write.key,
                        value,
                        wall,
                        hlc.counter,
                        self.node.as_str(),
                        field
                    ])
                    .map_err(sql("appending to the oplog"))?;
                entries.push(OplogEntry {
                    origin: self.replica.clone(),
                    node: self.node.clone(),
                    seq,
                    collection: write.collection.clone(),
                    key: write.key.clone(),
                    op,
                    hlc,
                });
            }
        }
        if !entries.is_empty() {
            let replica = self.replica.clone();
            self.record_origin(conn, &replica, seq)?;
            self.vv.advance(&replica, seq);
        }
        Ok(entries)
    }

    fn remote(
        &mut self,
        conn: &Connection,
        entries: Checked<OplogEntry>,
        coverage: &Coverage,
    ) -> Result<ApplyOutcome, StorageError> {
        // Everything is checked before anything is written: a refused batch changes nothing.
        let Checked(mut entries) = entries;
        self.clock
            .check_all(entries.iter().map(|entry| &entry.hlc))?;
        for entry in &entries {
            if entry.origin == self.replica {
                // Nobody else can hold writes of this opening of the database: forged.
                return Err(StorageError::OwnReplica {
                    replica: entry.origin.clone(),
                    seq: entry.seq,
                });
            }
            to_i64(entry.seq, "a sequence number")?;
            to_i64(entry.hlc.wall_ms, "a clock reading")?;
        }
        entries.sort_by(|a, b| (&a.origin, a.seq).cmp(&(&b.origin, b.seq)));
        let mut outcome = ApplyOutcome::default();
        let mut touched = BTreeSet::new();
        // Which entries apply is decided from the version vector alone; they are then
        // written together (`batch_apply`). Each gets the next change position, used if
        // its write wins.
        let mut applying = Vec::with_capacity(entries.len());
        // Entries of documents merged field by field: every entry of a document that
        // keeps a field state, or that a field-level entry of this batch reaches.
        let merge_keys: BTreeSet<(&str, &str)> = entries
            .iter()
            .filter(|e| matches!(e.op, Operation::Merge { .. }))
            .map(|e| (e.collection.as_str(), e.key.as_str()))
            .collect();
        let mut merging = Vec::new();
        let mut position = self.last_change;
        for entry in &entries {
            let held = self.vv.get(&entry.origin);
            if entry.seq <= held {
                outcome.duplicates += 1;
                continue;
            }
            // A gap is stepped over only where the sender vouches that it holds
            // nothing this store replicates.
            let spanned = coverage
                .get(&entry.origin)
                .is_some_and(|(after, upto)| after <= held && upto >= entry.seq);
            if entry.seq != held + 1 && !spanned {
                outcome.out_of_order += 1;
                continue;
            }
            self.vv.advance(&entry.origin, entry.seq);
            if touched.last() != Some(&entry.origin) {
                // Sorted by origin: each origin is met in one run.
                touched.insert(entry.origin.clone());
            }
            if !self.interest.includes(&entry.collection) {
                outcome.filtered += 1;
                continue;
            }
            position += 1;
            let document = DocumentRow {
                collection: &entry.collection,
                key: &entry.key,
                value: match &entry.op {
                    Operation::Put { value } => Some(value.as_str()),
                    Operation::Delete | Operation::Merge { .. } => None,
                },
                wall: to_i64(entry.hlc.wall_ms, "a clock reading")?,
                counter: entry.hlc.counter,
                replica: entry.hlc.replica.as_str(),
                seq: to_i64(entry.seq, "a sequence number")?,
                position: to_i64(position, "a change position")?,
            };
            let merges = merge_keys.contains(&(entry.collection.as_str(), entry.key.as_str()))
                || self
                    .field_merge
                    .has_state(conn, &entry.collection, &entry.key)
                    .map_err(sql("looking for a field state"))?;
            if merges {
                merging.push(MergingEntry { document, entry });
            } else {
                applying.push(Applying {
                    document,
                    origin: entry.origin.as_str(),
                    node: entry.node.as_str(),
                });
            }
            self.clock.restore(entry.hlc.wall_ms, entry.hlc.counter);
            outcome.applied += 1;
        }
        let mut last_changed = batch_apply::write(conn, &applying, &self.indexes)
            .map_err(sql("writing remote entries"))?;
        if !merging.is_empty() {
            self.field_merge.any_state = true;
        }
        let merged = batch_merge::write(conn, &self.indexes, &merging)?;
        last_changed = last_changed.max(merged);
        if let Some(last) = last_changed {
            self.last_change = u64::try_from(last).unwrap_or(self.last_change);
        }
        for (origin, (after, upto)) in coverage.iter() {
            if self.vv.get(origin) >= after && upto > self.vv.get(origin) {
                if origin == &self.replica {
                    return Err(StorageError::OwnReplica {
                        replica: origin.clone(),
                        seq: upto,
                    });
                }
                self.vv.advance(origin, upto);
                touched.insert(origin.clone());
            }
        }
        for origin in touched {
            let seq = self.vv.get(&origin);
            self.record_origin(conn, &origin, seq)?;
        }
        outcome.version_vector = self.vv.clone();
        Ok(outcome)
    }

    fn record_origin(
        &mut self,
        conn: &Connection,
        origin: &ReplicaId,
        seq: u64,
    ) -> Result<(), StorageError> {
        conn.prepare_cached(
            "INSERT INTO origins (origin, max_seq) VALUES (?1, ?2)
                 ON CONFLICT (origin) DO UPDATE SET max_seq = excluded.max_seq",
        )
        .and_then(|mut stmt| stmt.execute(params![origin.as_str(), seq as i64]))
        .map(|_| ())
        .map_err(sql("recording the version vector"))
    }

    fn save_peer(
        &mut self,
        conn: &Connection,
        peer: &KnownPeer,
        source: &str,
    ) -> Result<(), StorageError> {
        cbddc_core::validate_peer_address(&peer.address)?;
        conn
            .prepare_cached(
                "INSERT INTO known_peers (node_id, address, peer_type, enabled, source) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (node_id) DO UPDATE SET address = excluded.address,
                     peer_type = excluded.peer_type, enabled = excluded.enabled, source = excluded.source",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    peer.node_id.as_str(),
                    peer.address,
                    peer.peer_type.as_str(),
                    peer.enabled,
                    source
                ])
            })
            .map(|_| ())
            .map_err(sql("saving a known peer"))
    }

    fn replace_configured_peers(
        &mut self,
        conn: &Connection,
        peers: &[KnownPeer],
    ) -> Result<(), StorageError> {
        let keep: Vec<&str> = peers.iter().map(|p| p.node_id.as_str()).collect();
        let stale: Vec<String> = {
            let mut stmt = conn
                .prepare_cached("SELECT node_id FROM known_peers WHERE source = 'config'")
                .map_err(sql("listing configured peers"))?;
            let rows = stmt
                .query_map([], |r| r.get::<_, String>(0))
                .map_err(sql("listing configured peers"))?;
            let mut out = Vec::new();
            for row in rows {
                let id = row.map_err(sql("listing configured peers"))?;
                if !keep.contains(&id.as_str()) {
                    out.push(id);
                }
            }
            out
        };
        for id in stale {
            conn.execute("DELETE FROM known_peers WHERE node_id = ?1", [id])
                .map_err(sql("removing a configured peer"))?;
        }
        for peer in peers {
            self.save_peer(conn, peer, "config")?;
        }
        Ok(())
    }

    fn pin_key(
        &mut self,
        conn: &Connection,
        node_id: &NodeId,
        key: &str,
    ) -> Result<(), StorageError> {
        conn.prepare_cached(
            "INSERT INTO pinned_keys (node_id, public_key, pinned_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (node_id) DO UPDATE SET public_key = excluded.public_key,
                     pinned_ms = excluded.pinned_ms",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![
                node_id.as_str(),
                key,
                i64::try_from(cbddc_core::unix_millis()).unwrap_or(i64::MAX)
            ])
        })
        .map(|_| ())
        .map_err(sql("pinning a node key"))
    }

    fn raise_floors(
        &mut self,
        conn: &Connection,
        floors: &VersionVector,
    ) -> Result<(), StorageError> {
        for (replica, floor) in floors.iter() {
            let held = self.vv.get(replica);
            if floor > held {
                return Err(StorageError::Invalid(cbddc_core::CoreError::InvalidValue {
                    reason: format!(
                        "a floor of {floor} for replica {replica}, which is held only up to {held}"
                    ),
                }));
            }
            let floor = to_i64(floor, "a floor")?;
            conn.prepare_cached(
                "INSERT INTO replica_floors (replica, floor) VALUES (?1, ?2)
                     ON CONFLICT (replica) DO UPDATE SET floor = max(floor, excluded.floor)",
            )
            .and_then(|mut stmt| stmt.execute(params![replica.as_str(), floor]))
            .map_err(sql("raising a floor"))?;
        }
        Ok(())
    }

    fn unpin_key(&mut self, conn: &Connection, node_id: &NodeId) -> Result<bool, StorageError> {
        conn.prepare_cached("DELETE FROM pinned_keys WHERE node_id = ?1")
            .and_then(|mut stmt| stmt.execute([node_id.as_str()]))
            .map(|changed| changed > 0)
            .map_err(sql("forgetting a pinned node key"))
    }

    fn remove_peer(&mut self, conn: &Connection, node_id: &NodeId) -> Result<bool, StorageError> {
        // A peer removed on purpose holds nothing back any more.
        conn.prepare_cached("DELETE FROM peer_acks WHERE node_id = ?1")
            .and_then(|mut stmt| stmt.execute([node_id.as_str()]))
            .map_err(sql("forgetting a removed peer's acknowledgement"))?;
        conn.prepare_cached("DELETE FROM known_peers WHERE node_id = ?1")
            .and_then(|mut stmt| stmt.execute([node_id.as_str()]))
            .map(|changed| changed > 0)
            .map_err(sql("removing a known peer"))
    }
}

/// A local write to a document that keeps no field state, as the operation it stores:
/// a patch or an increment resolved into the whole document it makes of `current` (the
/// document as stored, earlier writes of the batch included).
fn resolve_whole(
    current: &mut rusqlite::CachedStatement<'_>,
    write: &LocalWrite,
) -> Result<Operation, StorageError> {
    let value = match &write.edit {
        Edit::Put(value) => Some(value.clone()),
        Edit::Delete => None,
        edit => {
            let held: Option<String> = current
                .query_row(params![write.collection, write.key], |r| r.get(0))
                .optional()
                .map_err(sql("reading the document to edit"))?
                .flatten();
            let value =
                cbddc_core::field_merge::resolve_whole(held.as_deref(), edit).map_err(|e| {
                    StorageError::Invalid(cbddc_core::CoreError::InvalidValue {
                        reason: format!("{}/{}: {e}", write.collection, write.key),
                    })
                })?;
            if let Some(value) = &value {
                cbddc_core::validate_json_value(value)?;
            }
            value
        }
    };
    Ok(match value {
        Some(value) => Operation::Put { value },
        None => Operation::Delete,
    })
}

/// Records the collections a database replicates, refusing a configuration that asks it
/// for more than it ever took (it stepped over those entries).
pub(crate) fn bind_interest(
    conn: &Connection,
    path: &std::path::Path,
    wanted: &Interest,
) -> Result<(), StoreError> {
    let stored: Option<String> = conn
        .query_row("SELECT value FROM meta WHERE key = 'interest'", [], |r| {
            r.get(0)
        })
        .optional()
        .during("reading the replicated collections")?;
    let stored = match stored {
        None => Interest::all(),
        Some(text) => Interest::only(serde_json::from_str::<Vec<String>>(&text).map_err(|e| {
            StoreError::Corrupt {
                operation: "reading the replicated collections",
                detail: e.to_string(),
            }
        })?),
    };
    if !stored.covers(wanted) {
        return Err(StoreError::InterestWidened {
            path: path.to_path_buf(),
            stored: stored.to_string(),
            wanted: wanted.to_string(),
        });
    }
    if let Some(collections) = wanted.collections() {
        let text = serde_json::to_string(collections).map_err(|e| StoreError::Corrupt {
            operation: "recording the replicated collections",
            detail: e.to_string(),
        })?;
        set_meta(conn, "interest", &text).during("recording the replicated collections")?;
    }
    Ok(())
}

/// Runs `$body` on whichever executed command `$e` is, bound as `($result, $reply)`:
/// the one place that lists the variants.
macro_rules! each_executed {
    ($e:expr, ($result:pat, $reply:pat) => $body:expr) => {
        match $e {
            Executed::Local($result, $reply) => $body,
            Executed::Remote($result, $reply) => $body,
            Executed::SavePeer($result, $reply) => $body,
            Executed::RemovePeer($result, $reply) => $body,
        }
    };
}

impl Executed {
    fn is_ok(&self) -> bool {
        each_executed!(self, (r, _) => r.is_ok())
    }

    fn reply(self) {
        // A caller that went away no longer needs its answer; the write is committed anyway.
        each_executed!(self, (r, tx) => drop(tx.send(r)))
    }

    fn fail(self, message: &str) {
        let err = || StorageError::Backend {
            operation: "committing",
            message: message.to_string(),
        };
        each_executed!(self, (_, tx) => drop(tx.send(Err(err()))))
    }
}

fn precommit_failure(command: Command, message: &str) -> Executed {
    let err = || StorageError::Backend {
        operation: "writing",
        message: message.to_string(),
    };
    match command {
        Command::Local { reply, .. } => Executed::Local(Err(err()), reply),
        Command::Remote { reply, .. } => Executed::Remote(Err(err()), reply),
        Command::SavePeer { reply, .. }
        | Command::ReplaceConfiguredPeers { reply, .. }
        | Command::PinKey { reply, .. }
        | Command::RaiseFloors { reply, .. }
        | Command::AcknowledgeFeed { reply, .. }
        | Command::RaiseFeatures { reply, .. } => Executed::SavePeer(Err(err()), reply),
        Command::RemovePeer { reply, .. }
        | Command::UnpinKey { reply, .. }
        | Command::ForgetFeedConsumer { reply, .. } => Executed::RemovePeer(Err(err()), reply),
    }
}

fn fail(command: Command, message: &str) {
    precommit_failure(command, message).reply();
}

/// Reads `"wall:counter"` as stored in `meta`.
pub(crate) fn parse_clock(text: &str) -> Option<(u64, u32)> {
    let (wall, counter) = text.split_once(':')?;
    Some((wall.parse().ok()?, counter.parse().ok()?))
}

/// Checks the node binding and loads what the writer needs to start.
pub(crate) fn load_state(
    conn: &Connection,
    path: &std::path::Path,
    node: &NodeId,
) -> Result<(Option<(u64, u32)>, VersionVector), StoreError> {
    let bound: Option<String> = conn
        .query_row("SELECT value FROM meta WHERE key = 'node_id'", [], |r| {
            r.get(0)
        })
        .optional()
        .during("reading the node binding")?;
    match bound {
        Some(found) if found != node.as_str() => {
            return Err(StoreError::WrongNode {
                path: path.to_path_buf(),
                found,
                expected: node.clone(),
            });
        }
        Some(_) => {}
        None => {
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('node_id', ?1)",
                [node.as_str()],
            )
            .during("binding the database to its node id")?;
        }
    }
    let clock: Option<String> = conn
        .query_row("SELECT value FROM meta WHERE key = 'hlc'", [], |r| r.get(0))
        .optional()
        .during("reading the clock")?;
    let clock = match clock {
        None => None,
        Some(text) => Some(parse_clock(&text).ok_or_else(|| StoreError::Corrupt {
            operation: "reading the clock",
            detail: format!("meta.hlc is {text:?}"),
        })?),
    };
    let vv = crate::rows::read_version_vector(conn)?;
    Ok((clock, vv))
}

/// Starts a new replica of this database: the origin of the writes this opening takes.
pub(crate) fn start_replica(conn: &Connection) -> Result<ReplicaId, StoreError> {
    let replica = ReplicaId::generate().map_err(|e| StoreError::Corrupt {
        operation: "choosing a replica id",
        detail: e.to_string(),
    })?;
    conn.execute(
        "INSERT INTO local_replicas (replica, opened_ms) VALUES (?1, ?2)",
        params![
            replica.as_str(),
            i64::try_from(cbddc_core::unix_millis()).unwrap_or(i64::MAX)
        ],
    )
    .during("recording the new replica")?;
    Ok(replica)
}
