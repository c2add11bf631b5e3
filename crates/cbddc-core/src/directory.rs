use crate::{NodeId, PeerType};
use std::time::Instant;
use tokio::sync::watch;

/// One peer as the node sees it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerState {
    /// The peer's node id.
    pub node_id: NodeId,
    /// How the node knows it.
    pub peer_type: PeerType,
    /// Where it listens (`host:port`).
    pub address: String,
    /// Whether the peer says it may lead (from its beacons or its handshake).
    pub eligible: bool,
    /// Since when the peer has been alive without interruption; `None` while it is not.
    pub alive_since: Option<Instant>,
}

impl PeerState {
    /// True while the peer is alive.
    pub fn is_alive(&self) -> bool {
        self.alive_since.is_some()
    }
}

/// The peers that matter to a node — LAN-discovered ones and enabled known peers — and
/// whether each is alive.
///
/// Contract: a peer is alive once it was heard from (a beacon or a successful exchange)
/// and stays alive until it has not been heard from for the directory's timeout, or
/// until exchanges with it failed twice in a row. Every change of the view bumps the
/// value of [`PeerDirectory::changes`].
#[cfg_attr(feature = "mocks", mockall::automock)]
pub trait PeerDirectory: Send + Sync + std::fmt::Debug {
    /// The current view, ordered by node id.
    fn peers(&self) -> Vec<PeerState>;
    /// A counter that moves whenever the view changes.
    fn changes(&self) -> watch::Receiver<u64>;
}
