//! A [`DocumentStore`] that counts and times the writes and applies going through it, so
//! every path (client requests, the embedding API, sync, hand-over) is measured once.

use crate::metrics::NodeMetrics;
use async_trait::async_trait;
use cbddc_core::{
    ApplyOutcome, ChangePage, CompactionOutcome, CompactionPlan, Coverage, Document, DocumentStore,
    EntryPage, FeedConsumer, Interest, LocalWrite, NodeId, OplogEntry, PageLimits, PeerAck,
    ReplicaId, SnapshotChunk, SnapshotDocument, SnapshotProgress, StorageError, StoreStats,
    VersionVector,
};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{broadcast, watch};

#[derive(Debug)]
/// A [`DocumentStore`] that counts and times what goes through it into [`NodeMetrics`].
pub struct MeteredStore {
    inner: Arc<dyn DocumentStore>,
    metrics: Arc<NodeMetrics>,
}

impl MeteredStore {
    /// Wraps `inner`, counting into `metrics`.
    pub fn new(inner: Arc<dyn DocumentStore>, metrics: Arc<NodeMetrics>) -> Self {
        Self { inner, metrics }
    }
}

#[async_trait]
impl DocumentStore for MeteredStore {
    fn node_id(&self) -> &NodeId {
        self.inner.node_id()
    }

    fn replica(&self) -> &ReplicaId {
        self.inner.replica()
    }

    fn own_replicas(&self) -> Vec<ReplicaId> {
        self.inner.own_replicas()
    }

    async fn write(&self, writes: Vec<LocalWrite>) -> Result<Vec<OplogEntry>, StorageError> {
        let started = Instant::now();
        let entries = self.inner.write(writes).await?;
        self.metrics
            .commit_seconds
            .observe(started.elapsed().as_secs_f64());
        self.metrics.local_writes.inc_by(entries.len() as u64);
        Ok(entries)
    }

    async fn get(&self, collection: &str, key: &str) -> Result<Option<Document>, StorageError> {
        self.inner.get(collection, key).await
    }

    async fn list(
        &self,
        collection: &str,
        after_key: Option<String>,
        limit: usize,
    ) -> Result<Vec<Document>, StorageError> {
        self.inner.list(collection, after_key, limit).await
    }

    async fn version_vector(&self) -> Result<VersionVector, StorageError> {
        self.inner.version_vector().await
    }

    fn interest(&self) -> Interest {
        self.inner.interest()
    }

    async fn entries_for(
        &self,
        theirs: VersionVector,
        limits: PageLimits,
        wanted: Interest,
    ) -> Result<EntryPage, StorageError> {
        self.inner.entries_for(theirs, limits, wanted).await
    }

    async fn apply_covered(
        &self,
        entries: Vec<OplogEntry>,
        coverage: Coverage,
    ) -> Result<ApplyOutcome, StorageError> {
        if entries.is_empty() {
            return self.inner.apply_covered(entries, coverage).await;
        }
        let started = Instant::now();
        let outcome = self.inner.apply_covered(entries, coverage).await?;
        self.metrics
            .apply_seconds
            .observe(started.elapsed().as_secs_f64());
        self.metrics.entries_applied.inc_by(outcome.applied as u64);
        Ok(outcome)
    }

    async fn floors(&self) -> Result<VersionVector, StorageError> {
        self.inner.floors().await
    }

    async fn raise_floors(&self, floors: VersionVector) -> Result<(), StorageError> {
        self.inner.raise_floors(floors).await
    }

    async fn stats(&self) -> Result<StoreStats, StorageError> {
        self.inner.stats().await
    }

    async fn compact(&self, plan: CompactionPlan) -> Result<CompactionOutcome, StorageError> {
        let outcome = self.inner.compact(plan).await?;
        self.metrics
            .entries_collected
            .inc_by(outcome.entries + outcome.tombstones);
        Ok(outcome)
    }

    async fn peer_acks(&self) -> Result<Vec<PeerAck>, StorageError> {
        self.inner.peer_acks().await
    }

    async fn collected_upto(&self) -> Result<VersionVector, StorageError> {
        self.inner.collected_upto().await
    }

    async fn snapshot_chunk(
        &self,
        after: Option<(String, String)>,
        limits: PageLimits,
        wanted: Interest,
    ) -> Result<SnapshotChunk, StorageError> {
        self.inner.snapshot_chunk(after, limits, wanted).await
    }

    async fn snapshot_progress(&self) -> Result<Option<SnapshotProgress>, StorageError> {
        self.inner.snapshot_progress().await
    }

    async fn apply_snapshot_chunk(
        &self,
        source: NodeId,
        version_vector: Option<VersionVector>,
        documents: Vec<SnapshotDocument>,
    ) -> Result<SnapshotProgress, StorageError> {
        self.inner
            .apply_snapshot_chunk(source, version_vector, documents)
            .await
    }

    async fn finish_snapshot(&self, source: NodeId) -> Result<u64, StorageError> {
        let changed = self.inner.finish_snapshot(source).await?;
        self.metrics.snapshots_applied.inc();
        Ok(changed)
    }

    fn subscribe_local_writes(&self) -> broadcast::Receiver<Arc<Vec<OplogEntry>>> {
        self.inner.subscribe_local_writes()
    }

    async fn changes_after(
        &self,
        after: u64,
        collection: Option<String>,
        limit: usize,
    ) -> Result<ChangePage, StorageError> {
        self.inner.changes_after(after, collection, limit).await
    }

    fn watch_changes(&self) -> watch::Receiver<u64> {
        self.inner.watch_changes()
    }

    async fn current_state(
        &self,
        collection: Option<String>,
        after: Option<(String, String)>,
        limit: usize,
    ) -> Result<Vec<OplogEntry>, StorageError> {
        self.inner.current_state(collection, after, limit).await
    }

    async fn feed_consumers(&self) -> Result<Vec<FeedConsumer>, StorageError> {
        self.inner.feed_consumers().await
    }

    async fn acknowledge_feed(&self, name: String, position: u64) -> Result<(), StorageError> {
        self.inner.acknowledge_feed(name, position).await
    }

    async fn forget_feed_consumer(&self, name: String) -> Result<bool, StorageError> {
        self.inner.forget_feed_consumer(name).await
    }

    async fn features_in_force(&self) -> Result<std::collections::BTreeSet<String>, StorageError> {
        self.inner.features_in_force().await
    }

    async fn declare_indexes(
        &self,
        indexes: Vec<cbddc_core::IndexDefinition>,
    ) -> Result<(), StorageError> {
        self.inner.declare_indexes(indexes).await
    }

    async fn build_indexes(
        &self,
        documents: usize,
    ) -> Result<Vec<cbddc_core::IndexDefinition>, StorageError> {
        self.inner.build_indexes(documents).await
    }

    async fn fold_indexes(&self, quiet_for: std::time::Duration) -> Result<bool, StorageError> {
        self.inner.fold_indexes(quiet_for).await
    }

    async fn indexes(&self) -> Result<Vec<cbddc_core::IndexStatus>, StorageError> {
        self.inner.indexes().await
    }

    async fn read_index(
        &self,
        read: cbddc_core::IndexRead,
    ) -> Result<cbddc_core::IndexPage, StorageError> {
        self.inner.read_index(read).await
    }

    async fn raise_features(
        &self,
        features: std::collections::BTreeSet<String>,
    ) -> Result<(), StorageError> {
        self.inner.raise_features(features).await
    }
}
