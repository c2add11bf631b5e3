//! The node's state as one value: what the live page shows and the gauges report.

use super::metrics::NodeMetrics;
use crate::service::NodeService;
use cbddc_core::{PeerDirectory, StorageError, VersionVector};
use serde::Serialize;

/// One peer as the page shows it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PeerView {
    pub(crate) node_id: String,
    pub(crate) address: Option<String>,
    pub(crate) alive: bool,
    pub(crate) last_exchange_ms: Option<u64>,
    pub(crate) last_error: Option<String>,
    /// Entries this node holds that the peer did not hold at its last report; `None`
    /// before the first exchange.
    pub(crate) lag: Option<u64>,
}

/// A named consumer of the change feed as the page shows it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ConsumerView {
    pub(crate) name: String,
    /// Positions of the feed after the one it acknowledged.
    pub(crate) lag: u64,
}

/// This node, its peers, the leader and the cluster configuration.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct NodeView {
    pub(crate) node_id: String,
    pub(crate) replica: String,
    pub(crate) listen: String,
    pub(crate) documents: u64,
    pub(crate) oplog_entries: u64,
    /// Deletes the change feed keeps for its consumers.
    pub(crate) feed_entries: u64,
    pub(crate) consumers: Vec<ConsumerView>,
    pub(crate) leader: Option<String>,
    pub(crate) is_leader: bool,
    pub(crate) configuration_id: Option<u32>,
    pub(crate) members: Vec<String>,
    pub(crate) retired: bool,
    pub(crate) peers: Vec<PeerView>,
    pub(crate) local_writes: u64,
    pub(crate) entries_applied: u64,
    pub(crate) now_ms: u64,
}

/// Entries of `ours` beyond `theirs`.
pub(crate) fn entries_behind(ours: &VersionVector, theirs: &VersionVector) -> u64 {
    ours.iter()
        .map(|(origin, seq)| seq.saturating_sub(theirs.get(origin)))
        .sum()
}

impl NodeView {
    pub(crate) async fn read(
        service: &NodeService,
        metrics: &NodeMetrics,
    ) -> Result<Self, StorageError> {
        let stats = service.store.stats().await?;
        let ours = service.store.version_vector().await?;
        let known = service.peers.list_peers().await?;
        let directory = service.book.peers();
        let fold = service.sync.fold();
        let peers = service
            .book
            .report(&known)
            .into_iter()
            .map(|report| PeerView {
                alive: directory
                    .iter()
                    .any(|p| p.node_id == report.node_id && p.is_alive()),
                lag: fold
                    .holder(&report.node_id)
                    .map(|theirs| entries_behind(&ours, &theirs)),
                node_id: report.node_id.to_string(),
                address: report.address,
                last_exchange_ms: report.last_exchange_ms,
                last_error: report.last_error,
            })
            .collect();
        let leadership = service.signals.leadership();
        let cluster = service.cluster.as_ref().and_then(|c| c.status().ok());
        let feed = crate::FeedReport::read(
            service.store.as_ref(),
            service.sync.compactor().feed_retention_ms(),
        )
        .await?;
        Ok(Self {
            node_id: service.store.node_id().to_string(),
            replica: service.store.replica().to_string(),
            listen: service.listen().to_string(),
            documents: stats.documents,
            oplog_entries: stats.oplog_entries,
            feed_entries: feed.feed_entries,
            consumers: feed
                .consumers
                .into_iter()
                .map(|c| ConsumerView {
                    name: c.name,
                    lag: c.lag,
                })
                .collect(),
            leader: leadership.leader.map(|l| l.to_string()),
            is_leader: leadership.is_leader,
            configuration_id: cluster.as_ref().and_then(|c| c.configuration_id),
            members: cluster
                .as_ref()
                .map(|c| c.members.clone())
                .unwrap_or_default(),
            retired: cluster.as_ref().is_some_and(|c| c.retired),
            peers,
            local_writes: metrics.local_writes.get(),
            entries_applied: metrics.entries_applied.get(),
            now_ms: cbddc_core::unix_millis(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::entries_behind;
    use cbddc_core::{ReplicaId, VersionVector};

    #[test]
    fn lag_counts_only_what_the_peer_lacks() {
        let (a, b) = (ReplicaId::new("a").unwrap(), ReplicaId::new("b").unwrap());
        let mut ours = VersionVector::default();
        ours.advance(&a, 10);
        ours.advance(&b, 3);
        let mut theirs = VersionVector::default();
        theirs.advance(&a, 7);
        theirs.advance(&b, 5);
        assert_eq!(entries_behind(&ours, &theirs), 3);
        assert_eq!(entries_behind(&ours, &ours), 0);
        assert_eq!(entries_behind(&ours, &VersionVector::default()), 13);
    }
}
