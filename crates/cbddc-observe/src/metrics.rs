//! The node's Prometheus metrics: counters and histograms kept as the node works, gauges
//! read from its state at every scrape.

use crate::view::NodeView;
use cbddc_net::NetMeter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::Arc;

type Labels = Vec<(String, String)>;

/// Kept for the node's whole life: a node id change keeps counting into the same ones.
#[derive(Debug)]
pub struct NodeMetrics {
    /// Writes this node took from its clients.
    pub local_writes: Counter,
    /// Peers' entries new to this node.
    pub entries_applied: Counter,
    /// Catch-up rounds with peers.
    pub sync_rounds: Counter,
    /// Sync sessions that failed.
    pub sync_failures: Counter,
    /// Entries and tombstones compaction removed.
    pub entries_collected: Counter,
    /// Snapshots taken from peers.
    pub snapshots_applied: Counter,
    /// Time to commit a batch of local writes.
    pub commit_seconds: Histogram,
    /// Time to apply a batch of peers' entries.
    pub apply_seconds: Histogram,
    /// Bytes and refused handshakes of every session.
    pub net: Arc<NetMeter>,
}

impl Default for NodeMetrics {
    fn default() -> Self {
        // 50 µs to about 1.6 s: a commit of one write up to a large catch-up batch.
        let buckets = || Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        Self {
            local_writes: Counter::default(),
            entries_applied: Counter::default(),
            sync_rounds: Counter::default(),
            sync_failures: Counter::default(),
            entries_collected: Counter::default(),
            snapshots_applied: Counter::default(),
            commit_seconds: buckets(),
            apply_seconds: buckets(),
            net: Arc::new(NetMeter::default()),
        }
    }
}

impl NodeMetrics {
    /// The Prometheus text exposition of these metrics and of `view`.
    pub fn render(&self, view: &NodeView) -> Result<String, std::fmt::Error> {
        let mut registry = Registry::with_prefix("cbddc");
        registry.register(
            "local_writes",
            "Writes (puts and deletes) this node took from its clients",
            self.local_writes.clone(),
        );
        registry.register(
            "entries_applied",
            "Oplog entries from peers new to this node",
            self.entries_applied.clone(),
        );
        registry.register(
            "sync_rounds",
            "Catch-up rounds (pull then push) with peers",
            self.sync_rounds.clone(),
        );
        registry.register(
            "sync_failures",
            "Sync sessions with peers that failed",
            self.sync_failures.clone(),
        );
        registry.register(
            "entries_collected",
            "Superseded oplog entries and tombstones compaction removed",
            self.entries_collected.clone(),
        );
        registry.register(
            "snapshots_applied",
            "Snapshots taken from peers because this node was behind what they still held",
            self.snapshots_applied.clone(),
        );
        registry.register(
            "commit_seconds",
            "Time to commit a batch of local writes",
            self.commit_seconds.clone(),
        );
        registry.register(
            "apply_seconds",
            "Time to apply a batch of peers' entries",
            self.apply_seconds.clone(),
        );
        let counter = |value: u64| {
            let c: Counter = Counter::default();
            c.inc_by(value);
            c
        };
        registry.register(
            "bytes_received",
            "Bytes read from sync sessions",
            counter(self.net.bytes_in()),
        );
        registry.register(
            "bytes_sent",
            "Bytes written to sync sessions",
            counter(self.net.bytes_out()),
        );
        let refused = Family::<Labels, Counter>::default();
        for (reason, count) in self.net.refused() {
            refused
                .get_or_create(&vec![("reason".into(), reason.into())])
                .inc_by(count);
        }
        registry.register(
            "handshakes_refused",
            "Connections this node refused before a session, by reason",
            refused,
        );
        let gauge = |value: u64| {
            let g: Gauge = Gauge::default();
            g.set(i64::try_from(value).unwrap_or(i64::MAX));
            g
        };
        registry.register("documents", "Live documents", gauge(view.documents));
        registry.register(
            "oplog_entries",
            "Entries in the oplog",
            gauge(view.oplog_entries),
        );
        registry.register(
            "feed_entries",
            "Deletes the change feed keeps for its consumers after compaction collected them",
            gauge(view.feed_entries),
        );
        let consumer_lag = Family::<Labels, Gauge>::default();
        for consumer in &view.consumers {
            consumer_lag
                .get_or_create(&vec![("consumer".into(), consumer.name.clone())])
                .set(i64::try_from(consumer.lag).unwrap_or(i64::MAX));
        }
        registry.register(
            "feed_consumer_lag",
            "Change-feed positions after the one a named consumer acknowledged",
            consumer_lag,
        );
        let alive = view.peers.iter().filter(|p| p.alive).count() as u64;
        registry.register("peers_alive", "Peers alive now", gauge(alive));
        let lag = Family::<Labels, Gauge>::default();
        for peer in &view.peers {
            if let Some(behind) = peer.lag {
                lag.get_or_create(&vec![("peer".into(), peer.node_id.clone())])
                    .set(i64::try_from(behind).unwrap_or(i64::MAX));
            }
        }
        registry.register(
            "replication_lag_entries",
            "Entries this node holds that the peer did not report holding at its last exchange",
            lag,
        );
        registry.register(
            "is_leader",
            "1 while this node is the elected gateway leader",
            gauge(u64::from(view.is_leader)),
        );
        registry.register(
            "configuration_id",
            "The running cluster configuration (0: none)",
            gauge(u64::from(view.configuration_id.unwrap_or(0))),
        );
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)?;
        Ok(out)
    }
}

impl cbddc_sync::SyncMetrics for NodeMetrics {
    fn sync_round(&self) {
        self.sync_rounds.inc();
    }

    fn sync_failed(&self) {
        self.sync_failures.inc();
    }
}
