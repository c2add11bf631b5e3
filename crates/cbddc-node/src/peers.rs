//! What this node knows about its peers at run time: when data was last exchanged and
//! the last error, for `status`.

use cbddc_core::{KnownPeer, NodeId, PeerType, unix_millis};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// Run-time facts about one peer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerActivity {
    /// Where the peer was last reached or seen from.
    pub address: Option<String>,
    /// Unix milliseconds of the last successful exchange of sync messages.
    pub last_exchange_ms: Option<u64>,
    /// The last error, cleared by the next success.
    pub last_error: Option<String>,
}

/// A peer as `status` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerReport {
    /// The peer's node id.
    pub node_id: NodeId,
    /// Its address, if known.
    pub address: Option<String>,
    /// How this node knows it; `None` for peers seen only in inbound sessions.
    pub peer_type: Option<PeerType>,
    /// False for a disabled known peer.
    pub enabled: bool,
    /// Unix milliseconds of the last exchange, if any.
    pub last_exchange_ms: Option<u64>,
    /// The last error, if the last attempt failed.
    pub last_error: Option<String>,
}

/// Activity of every peer this node talked to, inbound or outbound.
#[derive(Debug, Default)]
pub struct PeerBook {
    activity: Mutex<BTreeMap<NodeId, PeerActivity>>,
}

impl PeerBook {
    fn with(&self, peer: &NodeId, change: impl FnOnce(&mut PeerActivity)) {
        let mut map = self.activity.lock().unwrap_or_else(|p| p.into_inner());
        change(map.entry(peer.clone()).or_default());
    }

    /// Records a successful exchange with `peer` at `address`.
    pub fn exchanged(&self, peer: &NodeId, address: &str) {
        self.with(peer, |a| {
            a.address = Some(address.to_string());
            a.last_exchange_ms = Some(unix_millis());
            a.last_error = None;
        });
    }

    /// Records a failed attempt.
    pub fn failed(&self, peer: &NodeId, error: &str) {
        self.with(peer, |a| a.last_error = Some(error.to_string()));
    }

    /// Known peers with their activity, then peers seen only inbound; ordered by node id.
    pub fn report(&self, known: &[KnownPeer]) -> Vec<PeerReport> {
        let activity = self
            .activity
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut out: BTreeMap<NodeId, PeerReport> = BTreeMap::new();
        for peer in known {
            let a = activity.get(&peer.node_id).cloned().unwrap_or_default();
            out.insert(
                peer.node_id.clone(),
                PeerReport {
                    node_id: peer.node_id.clone(),
                    address: Some(peer.address.clone()),
                    peer_type: Some(peer.peer_type),
                    enabled: peer.enabled,
                    last_exchange_ms: a.last_exchange_ms,
                    last_error: a.last_error,
                },
            );
        }
        for (id, a) in activity {
            out.entry(id.clone()).or_insert(PeerReport {
                node_id: id,
                address: a.address,
                peer_type: None,
                enabled: true,
                last_exchange_ms: a.last_exchange_ms,
                last_error: a.last_error,
            });
        }
        out.into_values().collect()
    }
}
