//! The node's state for observability ([`cbddc_observe`]): read from the service of the
//! database in use, which a node id change replaces.

use crate::Shared;
use crate::service::NodeService;
use async_trait::async_trait;
use cbddc_core::{PeerDirectory, StorageError};
use cbddc_observe::{ConsumerView, NodeMetrics, NodeView, PeerView, StateSource, entries_behind};
use std::sync::{Arc, Weak};

/// The node's state as the page and the gauges show it.
pub(crate) async fn read_view(
    service: &NodeService,
    metrics: &NodeMetrics,
) -> Result<NodeView, StorageError> {
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
    Ok(NodeView {
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

/// The state of whichever database the node runs on now.
#[derive(Debug)]
pub(crate) struct CurrentState {
    pub(crate) shared: Weak<Shared>,
    pub(crate) metrics: Arc<NodeMetrics>,
}

#[async_trait]
impl StateSource for CurrentState {
    async fn view(&self) -> Result<NodeView, String> {
        let shared = self.shared.upgrade().ok_or("the node is stopping")?;
        let service = shared
            .snapshot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .service
            .clone();
        read_view(&service, &self.metrics)
            .await
            .map_err(|e| format!("the node's database cannot be read: {e}"))
    }
}
