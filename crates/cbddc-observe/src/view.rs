//! The node's state as one value: what the live page shows and the gauges report.

use cbddc_core::VersionVector;
use serde::Serialize;

/// One peer as the page shows it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PeerView {
    /// Its node id.
    pub node_id: String,
    /// Where it is reached, if known.
    pub address: Option<String>,
    /// Heard from within its timeout.
    pub alive: bool,
    /// When data was last exchanged (Unix ms).
    pub last_exchange_ms: Option<u64>,
    /// The last error with it.
    pub last_error: Option<String>,
    /// Entries this node holds that the peer did not hold at its last report; `None`
    /// before the first exchange.
    pub lag: Option<u64>,
}

/// A named consumer of the change feed as the page shows it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ConsumerView {
    /// Its name.
    pub name: String,
    /// Positions of the feed after the one it acknowledged.
    pub lag: u64,
}

/// This node, its peers, the leader and the cluster configuration.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NodeView {
    /// Its node id.
    pub node_id: String,
    /// The replica it writes as now.
    pub replica: String,
    /// Where it listens.
    pub listen: String,
    /// Live documents.
    pub documents: u64,
    /// Entries in the oplog.
    pub oplog_entries: u64,
    /// Deletes the change feed keeps for its consumers.
    pub feed_entries: u64,
    /// Named consumers of the change feed.
    pub consumers: Vec<ConsumerView>,
    /// The gateway leader it sees.
    pub leader: Option<String>,
    /// It is the leader.
    pub is_leader: bool,
    /// The running cluster configuration.
    pub configuration_id: Option<u32>,
    /// Its members.
    pub members: Vec<String>,
    /// This node retired from its cluster.
    pub retired: bool,
    /// Its peers.
    pub peers: Vec<PeerView>,
    /// Writes taken from clients since start.
    pub local_writes: u64,
    /// Peers' entries applied since start.
    pub entries_applied: u64,
    /// When the view was read (Unix ms).
    pub now_ms: u64,
}

/// Entries of `ours` beyond `theirs`.
pub fn entries_behind(ours: &VersionVector, theirs: &VersionVector) -> u64 {
    ours.iter()
        .map(|(origin, seq)| seq.saturating_sub(theirs.get(origin)))
        .sum()
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
