use crate::error::{SqlContext, StoreError};
use crate::reader::{self, ReaderPool};
use crate::write_connection::WriteConnection;
use crate::writer::{Checked, Command, Queued, Solo, Writer};
use crate::{checkpoint, schema};
use async_trait::async_trait;
use cbddc_core::{
    ApplyOutcome, ChangePage, CompactionOutcome, CompactionPlan, Coverage, Document, DocumentStore,
    EntryPage, FeedConsumer, HybridClock, Interest, KnownPeer, LocalWrite, NodeId, OplogEntry,
    PageLimits, PeerAck, PeerStore, ReplicaId, SnapshotChunk, SnapshotDocument, SnapshotProgress,
    StorageError, StoreStats, SystemTimeSource, TimeSource, VersionVector,
};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

pub use cbddc_core::Durability;

/// Settings for [`SqliteStore::open`].
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Commit durability.
    pub durability: Durability,
    /// Remote stamps further ahead of the local clock than this are refused.
    pub max_clock_drift_ms: u64,
    /// How often the background checkpointer runs.
    pub checkpoint_interval: Duration,
    /// The wall clock for stamps (replaceable in tests).
    pub time: Arc<dyn TimeSource>,
    /// The collections replicated. A database that replicated some only never widens
    /// ([`StoreError::InterestWidened`]).
    pub interest: Interest,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            durability: Durability::Full,
            max_clock_drift_ms: 60_000,
            checkpoint_interval: Duration::from_millis(250),
            time: Arc::new(SystemTimeSource),
            interest: Interest::all(),
        }
    }
}

/// Where the database of `node` lives inside `data_dir`.
pub fn database_path(data_dir: &Path, node: &NodeId) -> PathBuf {
    data_dir.join(format!("node-{node}.db"))
}

/// A node's SQLite database: see the crate docs.
#[derive(Debug)]
pub struct SqliteStore {
    node: NodeId,
    replica: ReplicaId,
    /// Every replica this database has been, oldest first, this opening's last.
    own_replicas: Vec<ReplicaId>,
    path: PathBuf,
    commands: Mutex<Option<mpsc::Sender<Queued>>>,
    writer_done: tokio::sync::Mutex<Option<oneshot::Receiver<()>>>,
    checkpointer: Mutex<Option<(std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>)>>,
    readers: Arc<ReaderPool>,
    local_tx: broadcast::Sender<Arc<Vec<OplogEntry>>>,
    changes: watch::Receiver<u64>,
    interest: Interest,
    /// The writer thread's connection, lent to the control plane too.
    write: Arc<WriteConnection>,
}

/// What opening a database reads on the blocking pool, before the writer starts.
struct Opened {
    conn: rusqlite::Connection,
    /// The clock as last persisted.
    clock: Option<(u64, u32)>,
    vv: VersionVector,
    replica: ReplicaId,
    own: Vec<ReplicaId>,
    last_change: u64,
    checkpoint_conn: rusqlite::Connection,
    indexes: crate::indexes::IndexSet,
    field_merge: crate::field_apply::FieldMerge,
}

impl SqliteStore {
    /// Opens (or creates) the database of `node` in `data_dir`.
    ///
    /// Fails with [`StoreError::WrongNode`] if the file is bound to another node id.
    pub async fn open(
        data_dir: impl AsRef<Path>,
        node: NodeId,
        options: StoreOptions,
    ) -> Result<Self, StoreError> {
        let data_dir = data_dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&data_dir).map_err(|source| StoreError::DataDir {
            path: data_dir.clone(),
            source,
        })?;
        Self::open_path(database_path(&data_dir, &node), node, options).await
    }

    /// Opens (or creates) the database at `path` for `node`.
    pub async fn open_path(
        path: PathBuf,
        node: NodeId,
        options: StoreOptions,
    ) -> Result<Self, StoreError> {
        let opened = {
            let (path, node, durability) = (path.clone(), node.clone(), options.durability);
            let interest = options.interest.clone();
            tokio::task::spawn_blocking(move || -> Result<Opened, StoreError> {
                let mut conn = schema::open_writer(&path, durability)?;
                schema::migrate(&mut conn, &path)?;
                let indexes = crate::indexes::IndexSet::load(&conn)?;
                let field_merge = crate::field_apply::FieldMerge::load(&conn)?;
                let (clock, vv) = crate::writer::load_state(&conn, &path, &node)?;
                crate::writer::bind_interest(&conn, &path, &interest)?;
                let replica = crate::writer::start_replica(&conn)?;
                let own = crate::reader::local_replicas(&conn)?;
                let last_change = crate::feed::last_position(&conn)?;
                let checkpoint_conn = rusqlite::Connection::open(&path)
                    .during("opening the checkpoint connection")?;
                Ok(Opened {
                    conn,
                    clock,
                    vv,
                    replica,
                    own,
                    last_change,
                    checkpoint_conn,
                    indexes,
                    field_merge,
                })
            })
            .await
            .map_err(|e| StoreError::Corrupt {
                operation: "opening the database",
                detail: e.to_string(),
            })??
        };
        let Opened {
            conn,
            clock: stored_clock,
            vv,
            replica,
            own,
            last_change,
            checkpoint_conn,
            indexes,
            field_merge,
        } = opened;
        let (change_tx, changes) = watch::channel(last_change);
        let mut clock = HybridClock::new(
            replica.clone(),
            options.max_clock_drift_ms,
            options.time.clone(),
        );
        if let Some((wall, counter)) = stored_clock {
            clock.restore(wall, counter);
        }
        let (local_tx, _) = broadcast::channel(1024);
        let (tx, rx) = mpsc::channel(4096);
        let (done_tx, done_rx) = oneshot::channel();
        let conn = Arc::new(WriteConnection::new(conn, options.durability));
        let writer = Writer {
            conn: conn.clone(),
            clock,
            node: node.clone(),
            replica: replica.clone(),
            vv,
            local_tx: local_tx.clone(),
            last_change,
            change_tx,
            interest: options.interest.clone(),
            indexes,
            field_merge,
        };
        std::thread::Builder::new()
            .name(format!("cbddc-writer-{node}"))
            .spawn(move || {
                writer.run(rx);
                let _ = done_tx.send(());
            })
            .map_err(|source| StoreError::Thread {
                thread: "writer",
                source,
            })?;
        let (stop_tx, stop_rx) = std::sync::mpsc::channel();
        let interval = options.checkpoint_interval;
        let checkpointer = std::thread::Builder::new()
            .name(format!("cbddc-checkpoint-{node}"))
            .spawn(move || checkpoint::run(checkpoint_conn, interval, stop_rx))
            .map_err(|source| StoreError::Thread {
                thread: "checkpoint",
                source,
            })?;
        tracing::info!(node = %node, replica = %replica, path = %path.display(), "store opened");
        Ok(Self {
            readers: Arc::new(ReaderPool::new(path.clone())),
            node,
            replica,
            own_replicas: own,
            path,
            commands: Mutex::new(Some(tx)),
            writer_done: tokio::sync::Mutex::new(Some(done_rx)),
            checkpointer: Mutex::new(Some((stop_tx, checkpointer))),
            local_tx,
            changes,
            interest: options.interest,
            write: conn,
        })
    }

    /// The control plane's logs and records in this database, on the store's own write
    /// connection: the file keeps a single writer, and a control-plane step waits for the
    /// store's commit in flight (and the other way round) instead of a busy timeout.
    pub fn control_database(&self) -> crate::ControlDatabase {
        crate::ControlDatabase::on(self.write.clone())
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Finishes queued writes, checkpoints and closes the database. Later calls fail with
    /// [`StorageError::Closed`]. Safe to call more than once.
    pub async fn close(&self) {
        drop(
            self.commands
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take(),
        );
        self.readers.close();
        if let Some(done) = self.writer_done.lock().await.take() {
            let _ = done.await;
        }
        let checkpointer = self
            .checkpointer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some((stop, handle)) = checkpointer {
            drop(stop);
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
        tracing::info!(node = %self.node, path = %self.path.display(), "store closed");
    }

    async fn send<T, Q: Into<Queued>>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StorageError>>) -> Q,
    ) -> Result<T, StorageError> {
        let sender = self
            .commands
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(StorageError::Closed)?;
        let (tx, rx) = oneshot::channel();
        sender
            .send(make(tx).into())
            .await
            .map_err(|_| StorageError::Closed)?;
        rx.await.map_err(|_| StorageError::Closed)?
    }
}

#[async_trait]
impl DocumentStore for SqliteStore {
    fn node_id(&self) -> &NodeId {
        &self.node
    }

    fn replica(&self) -> &ReplicaId {
        &self.replica
    }

    fn own_replicas(&self) -> Vec<ReplicaId> {
        self.own_replicas.clone()
    }

    async fn write(&self, writes: Vec<LocalWrite>) -> Result<Vec<OplogEntry>, StorageError> {
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        let writes = Checked::check(writes)?;
        self.send(|reply| Command::Local { writes, reply }).await
    }

    async fn get(&self, collection: &str, key: &str) -> Result<Option<Document>, StorageError> {
        let (collection, key) = (collection.to_string(), key.to_string());
        self.readers
            .read(move |c| reader::get(c, &collection, &key))
            .await
    }

    async fn list(
        &self,
        collection: &str,
        after_key: Option<String>,
        limit: usize,
    ) -> Result<Vec<Document>, StorageError> {
        let collection = collection.to_string();
        self.readers
            .read(move |c| reader::list(c, &collection, after_key.as_deref(), limit))
            .await
    }

    async fn version_vector(&self) -> Result<VersionVector, StorageError> {
        self.readers.read(crate::rows::read_version_vector).await
    }

    fn interest(&self) -> Interest {
        self.interest.clone()
    }

    async fn entries_for(
        &self,
        theirs: VersionVector,
        limits: PageLimits,
        wanted: Interest,
    ) -> Result<EntryPage, StorageError> {
        let ours = self.interest.clone();
        self.readers
            .read(move |c| reader::entries_missing_from(c, &theirs, limits, &wanted, &ours))
            .await
    }

    async fn apply_covered(
        &self,
        entries: Vec<OplogEntry>,
        coverage: Coverage,
    ) -> Result<ApplyOutcome, StorageError> {
        if entries.is_empty() && coverage.is_empty() {
            return Ok(ApplyOutcome {
                version_vector: self.version_vector().await?,
                ..ApplyOutcome::default()
            });
        }
        let entries = Checked::check(entries)?;
        self.send(|reply| Command::Remote {
            entries,
            coverage,
            reply,
        })
        .await
    }

    async fn floors(&self) -> Result<VersionVector, StorageError> {
        self.readers.read(reader::floors).await
    }

    async fn raise_floors(&self, floors: VersionVector) -> Result<(), StorageError> {
        self.send(|reply| Command::RaiseFloors { floors, reply })
            .await
    }

    async fn stats(&self) -> Result<StoreStats, StorageError> {
        self.readers
            .read(|c| {
                let mut stats = reader::stats(c)?;
                (stats.feed_entries, stats.feed_oldest) = crate::feed::stats(c)?;
                Ok(stats)
            })
            .await
    }

    async fn compact(&self, plan: CompactionPlan) -> Result<CompactionOutcome, StorageError> {
        self.send(|reply| Solo::Compact { plan, reply }).await
    }

    async fn peer_acks(&self) -> Result<Vec<PeerAck>, StorageError> {
        self.readers.read(crate::compaction::peer_acks).await
    }

    async fn collected_upto(&self) -> Result<VersionVector, StorageError> {
        self.readers.read(crate::compaction::collected_upto).await
    }

    async fn snapshot_chunk(
        &self,
        after: Option<(String, String)>,
        limits: PageLimits,
        wanted: Interest,
    ) -> Result<SnapshotChunk, StorageError> {
        if !self.interest.covers(&wanted) {
            return Err(StorageError::Backend {
                operation: "reading a snapshot",
                message: format!(
                    "this node replicates {} only, less than the {} asked for; take the snapshot from a node that replicates them all",
                    self.interest, wanted
                ),
            });
        }
        self.readers
            .read(move |c| crate::snapshot::read_chunk(c, after.as_ref(), limits, &wanted))
            .await
    }

    async fn snapshot_progress(&self) -> Result<Option<SnapshotProgress>, StorageError> {
        self.readers.read(crate::snapshot::progress).await
    }

    async fn apply_snapshot_chunk(
        &self,
        source: NodeId,
        version_vector: Option<VersionVector>,
        documents: Vec<SnapshotDocument>,
    ) -> Result<SnapshotProgress, StorageError> {
        let documents = Checked::check(documents)?;
        self.send(|reply| Solo::StageSnapshot {
            source,
            version_vector,
            documents,
            reply,
        })
        .await
    }

    async fn finish_snapshot(&self, source: NodeId) -> Result<u64, StorageError> {
        self.send(|reply| Solo::FinishSnapshot { source, reply })
            .await
    }

    fn subscribe_local_writes(&self) -> broadcast::Receiver<Arc<Vec<OplogEntry>>> {
        self.local_tx.subscribe()
    }

    async fn changes_after(
        &self,
        after: u64,
        collection: Option<String>,
        limit: usize,
    ) -> Result<ChangePage, StorageError> {
        match self
            .readers
            .read(move |c| crate::feed::changes_after(c, after, collection.as_deref(), limit))
            .await?
        {
            Ok(page) => Ok(page),
            Err(crate::feed::FeedCompacted { oldest }) => {
                Err(StorageError::FeedCompacted { after, oldest })
            }
        }
    }

    fn watch_changes(&self) -> watch::Receiver<u64> {
        self.changes.clone()
    }

    async fn current_state(
        &self,
        collection: Option<String>,
        after: Option<(String, String)>,
        limit: usize,
    ) -> Result<Vec<OplogEntry>, StorageError> {
        self.readers
            .read(move |c| {
                crate::feed::current_state(c, collection.as_deref(), after.as_ref(), limit)
            })
            .await
    }

    async fn feed_consumers(&self) -> Result<Vec<FeedConsumer>, StorageError> {
        self.readers.read(crate::feed::consumers).await
    }

    async fn acknowledge_feed(&self, name: String, position: u64) -> Result<(), StorageError> {
        cbddc_core::validate_consumer_name(&name)?;
        self.send(|reply| Command::AcknowledgeFeed {
            name,
            position,
            reply,
        })
        .await
    }

    async fn forget_feed_consumer(&self, name: String) -> Result<bool, StorageError> {
        cbddc_core::validate_consumer_name(&name)?;
        self.send(|reply| Command::ForgetFeedConsumer { name, reply })
            .await
    }

    async fn features_in_force(&self) -> Result<std::collections::BTreeSet<String>, StorageError> {
        self.readers.read(crate::features::in_force).await
    }

    async fn raise_features(
        &self,
        features: std::collections::BTreeSet<String>,
    ) -> Result<(), StorageError> {
        self.send(|reply| Command::RaiseFeatures { features, reply })
            .await
    }

    async fn declare_indexes(
        &self,
        indexes: Vec<cbddc_core::IndexDefinition>,
    ) -> Result<(), StorageError> {
        self.send(|reply| Solo::DeclareIndexes { indexes, reply })
            .await
    }

    async fn build_indexes(
        &self,
        documents: usize,
    ) -> Result<Vec<cbddc_core::IndexDefinition>, StorageError> {
        self.send(|reply| Solo::BuildIndexes { documents, reply })
            .await
    }

    async fn fold_indexes(&self, quiet_for: std::time::Duration) -> Result<bool, StorageError> {
        self.send(|reply| Solo::FoldIndexes { quiet_for, reply })
            .await
    }

    async fn indexes(&self) -> Result<Vec<cbddc_core::IndexStatus>, StorageError> {
        self.readers.read(crate::indexes::list).await
    }

    async fn read_index(
        &self,
        read: cbddc_core::IndexRead,
    ) -> Result<cbddc_core::IndexPage, StorageError> {
        let index = read.index.name();
        let asked = read.clone();
        let page = match self
            .readers
            .read(move |c| crate::indexes::read(c, &asked))
            .await?
        {
            crate::indexes::IndexLookup::Page(page) => Some(page),
            crate::indexes::IndexLookup::NotBuilt => None,
            // Writes are pending: the writer folds them into the indexes and reads.
            crate::indexes::IndexLookup::Behind => {
                self.send(|reply| Solo::ReadIndex { read, reply }).await?
            }
        };
        page.ok_or(StorageError::IndexUnavailable { index })
    }
}

#[async_trait]
impl PeerStore for SqliteStore {
    async fn save_peer(&self, peer: KnownPeer) -> Result<(), StorageError> {
        self.send(|reply| Command::SavePeer { peer, reply }).await
    }

    async fn replace_configured_peers(&self, peers: Vec<KnownPeer>) -> Result<(), StorageError> {
        self.send(|reply| Command::ReplaceConfiguredPeers { peers, reply })
            .await
    }

    async fn remove_peer(&self, node_id: NodeId) -> Result<bool, StorageError> {
        self.send(|reply| Command::RemovePeer { node_id, reply })
            .await
    }

    async fn list_peers(&self) -> Result<Vec<KnownPeer>, StorageError> {
        self.readers.read(reader::list_peers).await
    }

    async fn pinned_keys(&self) -> Result<Vec<(NodeId, String)>, StorageError> {
        self.readers.read(reader::pinned_keys).await
    }

    async fn pin_key(&self, node: NodeId, key: String) -> Result<(), StorageError> {
        self.send(|reply| Command::PinKey {
            node_id: node,
            key,
            reply,
        })
        .await
    }

    async fn unpin_key(&self, node: NodeId) -> Result<bool, StorageError> {
        self.send(|reply| Command::UnpinKey {
            node_id: node,
            reply,
        })
        .await
    }
}
