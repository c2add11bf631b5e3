//! What an embedder may do with a node's store directly: read. Every write goes through
//! [`crate::Node`] (`put`, `delete`, `write`), so it passes the same gate (a retired or
//! not-yet-admitted node refuses it), the metrics and the change feed as every other
//! write; there is no side door.

use cbddc_core::{
    ChangePage, Document, DocumentStore, EntryPage, FeedConsumer, Interest, NodeId, OplogEntry,
    PageLimits, ReplicaId, StorageError, StoreStats, VersionVector,
};
use std::sync::Arc;
use tokio::sync::watch;

/// A read-only view of a node's document store ([`crate::Node::store`]). A node id
/// change opens another database: take a new view after one.
#[derive(Debug, Clone)]
pub struct StoreView {
    inner: Arc<dyn DocumentStore>,
}

impl StoreView {
    pub(crate) fn new(inner: Arc<dyn DocumentStore>) -> Self {
        Self { inner }
    }

    /// The node id the store is bound to.
    pub fn node_id(&self) -> &NodeId {
        self.inner.node_id()
    }

    /// The replica this opening of the store writes as.
    pub fn replica(&self) -> &ReplicaId {
        self.inner.replica()
    }

    /// Every replica this store has been, the running one included.
    pub fn own_replicas(&self) -> Vec<ReplicaId> {
        self.inner.own_replicas()
    }

    /// The collections this store replicates.
    pub fn interest(&self) -> Interest {
        self.inner.interest()
    }

    /// The live document at `(collection, key)`, if any.
    pub async fn get(&self, collection: &str, key: &str) -> Result<Option<Document>, StorageError> {
        self.inner.get(collection, key).await
    }

    /// Live documents of a collection in key order, after `after_key`.
    pub async fn list(
        &self,
        collection: &str,
        after_key: Option<String>,
        limit: usize,
    ) -> Result<Vec<Document>, StorageError> {
        self.inner.list(collection, after_key, limit).await
    }

    /// The store's version vector.
    pub async fn version_vector(&self) -> Result<VersionVector, StorageError> {
        self.inner.version_vector().await
    }

    /// Entries the store holds that `theirs` lacks.
    pub async fn entries_missing_from(
        &self,
        theirs: VersionVector,
        limits: PageLimits,
    ) -> Result<EntryPage, StorageError> {
        self.inner.entries_missing_from(theirs, limits).await
    }

    /// The store's floors.
    pub async fn floors(&self) -> Result<VersionVector, StorageError> {
        self.inner.floors().await
    }

    /// Document, oplog and change-feed counts.
    pub async fn stats(&self) -> Result<StoreStats, StorageError> {
        self.inner.stats().await
    }

    /// Per origin, the highest sequence number compaction removed.
    pub async fn collected_upto(&self) -> Result<VersionVector, StorageError> {
        self.inner.collected_upto().await
    }

    /// A page of the change feed (see [`crate::Node::changes`] for a feed that waits).
    pub async fn changes_after(
        &self,
        after: u64,
        collection: Option<String>,
        limit: usize,
    ) -> Result<ChangePage, StorageError> {
        self.inner.changes_after(after, collection, limit).await
    }

    /// The change feed's last position, as it moves.
    pub fn watch_changes(&self) -> watch::Receiver<u64> {
        self.inner.watch_changes()
    }

    /// Live documents as the entries that wrote them, in `(collection, key)` order.
    pub async fn current_state(
        &self,
        collection: Option<String>,
        after: Option<(String, String)>,
        limit: usize,
    ) -> Result<Vec<OplogEntry>, StorageError> {
        self.inner.current_state(collection, after, limit).await
    }

    /// The named feed consumers.
    pub async fn feed_consumers(&self) -> Result<Vec<FeedConsumer>, StorageError> {
        self.inner.feed_consumers().await
    }
}
