//! What this node knows about its peers at run time: liveness (for the election), when
//! data was last exchanged and the last error (for `status`).

use cbddc_core::{KnownPeer, NodeId, PeerDirectory, PeerState, PeerType, unix_millis};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Failed exchanges in a row after which a peer counts as dead before its timeout.
const FAILURES_BEFORE_DEAD: u32 = 2;

/// Run-time facts about one peer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerActivity {
    /// Where the peer was last reached or seen from.
    pub address: Option<String>,
    /// Unix milliseconds of the last successful exchange of sync messages.
    pub last_exchange_ms: Option<u64>,
    /// The last error, cleared by the next success.
    pub last_error: Option<String>,
    /// Whether the peer says it may lead.
    pub eligible: Option<bool>,
    last_heard: Option<Instant>,
    alive_since: Option<Instant>,
    failures: u32,
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
    /// The fingerprint of the key pinned for its node id, if one is (filled in by the
    /// node's status; the peer book does not know pins).
    pub key_fingerprint: Option<String>,
    /// Entries this node holds that the peer has not reported holding, once it reported
    /// (filled in by the node's status).
    pub lag_entries: Option<u64>,
    /// The protocol of its last session with this node, its release and the formats it
    /// reads, as it said them (filled in by the node's status; `None`: not heard from
    /// since this node started).
    pub build: Option<cbddc_net::PeerBuild>,
}

#[derive(Debug, Default)]
struct Inner {
    activity: BTreeMap<NodeId, PeerActivity>,
    known: Vec<KnownPeer>,
    discovered: BTreeMap<NodeId, SocketAddr>,
    /// With a control plane: the members of the running configuration and their addresses.
    members: Option<BTreeMap<NodeId, String>>,
}

/// Every peer this node talked to, inbound or outbound, or heard beacons from; and the
/// [`PeerDirectory`] the election reads: enabled known peers and discovered ones.
#[derive(Debug)]
pub struct PeerBook {
    inner: Mutex<Inner>,
    changes: watch::Sender<u64>,
    timeout_ms: AtomicU64,
}

impl PeerBook {
    /// A book whose peers die after `timeout` without news.
    pub fn new(timeout: Duration) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            changes: watch::Sender::new(0),
            timeout_ms: AtomicU64::new(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX)),
        }
    }

    /// Changes how long a peer stays alive without news.
    pub fn set_timeout(&self, timeout: Duration) {
        self.timeout_ms.store(
            u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn with<T>(&self, change: impl FnOnce(&mut Inner) -> (T, bool)) -> T {
        let (result, changed) = {
            let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            change(&mut inner)
        };
        if changed {
            self.changes.send_modify(|n| *n = n.wrapping_add(1));
        }
        result
    }

    fn heard(activity: &mut PeerActivity, now: Instant, eligible: Option<bool>) -> bool {
        let became_alive = activity.alive_since.is_none();
        activity.last_heard = Some(now);
        activity.failures = 0;
        activity.alive_since.get_or_insert(now);
        let eligibility_changed = eligible.is_some() && activity.eligible != eligible;
        if eligible.is_some() {
            activity.eligible = eligible;
        }
        became_alive || eligibility_changed
    }

    /// Records a successful exchange with `peer` at `address`.
    pub fn exchanged(&self, peer: &NodeId, address: &str, eligible: Option<bool>) {
        self.with(|inner| {
            let a = inner.activity.entry(peer.clone()).or_default();
            a.address = Some(address.to_string());
            a.last_exchange_ms = Some(unix_millis());
            a.last_error = None;
            ((), Self::heard(a, Instant::now(), eligible))
        });
    }

    /// Records a successful exchange in a session `peer` opened to us from `from`: its
    /// source port is an ephemeral one, not where the peer listens, so only the host is
    /// kept, and only while nothing better (a beacon, a dialled address) is known.
    pub fn exchanged_inbound(&self, peer: &NodeId, from: SocketAddr, eligible: Option<bool>) {
        self.with(|inner| {
            let listening = inner.discovered.get(peer).map(|a| a.to_string());
            let a = inner.activity.entry(peer.clone()).or_default();
            let host = from.ip().to_string();
            let known_better = a
                .address
                .as_ref()
                .is_some_and(|address| address.parse::<SocketAddr>().is_ok());
            if let Some(listening) = listening {
                a.address = Some(listening);
            } else if !known_better {
                a.address = Some(host);
            }
            a.last_exchange_ms = Some(unix_millis());
            a.last_error = None;
            ((), Self::heard(a, Instant::now(), eligible))
        });
    }

    /// Records a failed attempt; the second failure in a row counts the peer as dead.
    pub fn failed(&self, peer: &NodeId, error: &str) {
        self.with(|inner| {
            let a = inner.activity.entry(peer.clone()).or_default();
            a.last_error = Some(error.to_string());
            a.failures += 1;
            let died = a.failures >= FAILURES_BEFORE_DEAD && a.alive_since.is_some();
            if died {
                a.alive_since = None;
            }
            ((), died)
        });
    }

    /// Records that `peer` did not answer in time on a session that was up: it is dead at
    /// once (a single missed keepalive is no noise: the answer touches nothing), until a
    /// later exchange succeeds.
    pub fn unreachable(&self, peer: &NodeId, error: &str) {
        self.with(|inner| {
            let a = inner.activity.entry(peer.clone()).or_default();
            a.last_error = Some(error.to_string());
            a.failures = a.failures.max(FAILURES_BEFORE_DEAD);
            let died = a.alive_since.take().is_some();
            ((), died)
        });
    }

    /// Records a beacon of a LAN peer.
    pub fn beacon(&self, peer: &NodeId, address: SocketAddr, eligible: bool) {
        self.with(|inner| {
            let moved = inner.discovered.insert(peer.clone(), address) != Some(address);
            let a = inner.activity.entry(peer.clone()).or_default();
            // Where it listens beats a host seen in an inbound session.
            if a.address
                .as_ref()
                .is_none_or(|known| known.parse::<SocketAddr>().is_err())
            {
                a.address = Some(address.to_string());
            }
            ((), Self::heard(a, Instant::now(), Some(eligible)) || moved)
        });
    }

    /// The enabled and disabled known peers, from the peer store.
    pub fn set_known(&self, peers: Vec<KnownPeer>) {
        self.with(|inner| {
            let changed = inner.known != peers;
            inner.known = peers;
            ((), changed)
        });
    }

    /// With a control plane, only these nodes may lead (`None`: no control plane, every
    /// eligible peer may); members that are not known peers take part too.
    pub fn set_members(&self, members: Option<BTreeMap<NodeId, String>>) {
        self.with(|inner| {
            let changed = inner.members != members;
            inner.members = members;
            ((), changed)
        });
    }

    /// Whether `peer` is a known cloud remote.
    pub fn is_cloud_remote(&self, peer: &NodeId) -> bool {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner
            .known
            .iter()
            .any(|p| &p.node_id == peer && p.peer_type == PeerType::CloudRemote)
    }

    /// Discovered peers that are alive now and not known otherwise, as peers to sync with.
    pub fn discovered_alive(&self) -> Vec<KnownPeer> {
        self.peers()
            .into_iter()
            .filter(|p| p.peer_type == PeerType::LanDiscovered && p.is_alive())
            .filter_map(|p| {
                let mut peer =
                    KnownPeer::new(p.node_id, p.address, PeerType::LanDiscovered).ok()?;
                peer.enabled = true;
                Some(peer)
            })
            .collect()
    }

    fn alive_since(&self, a: &PeerActivity, now: Instant) -> Option<Instant> {
        let timeout = Duration::from_millis(self.timeout_ms.load(Ordering::Relaxed));
        let fresh = a
            .last_heard
            .is_some_and(|t| now.saturating_duration_since(t) < timeout);
        if fresh { a.alive_since } else { None }
    }

    /// Known peers with their activity, then peers seen only inbound; ordered by node id.
    pub fn report(&self, known: &[KnownPeer]) -> Vec<PeerReport> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: BTreeMap<NodeId, PeerReport> = BTreeMap::new();
        for peer in known {
            let a = inner
                .activity
                .get(&peer.node_id)
                .cloned()
                .unwrap_or_default();
            out.insert(
                peer.node_id.clone(),
                PeerReport {
                    node_id: peer.node_id.clone(),
                    address: Some(peer.address.clone()),
                    peer_type: Some(peer.peer_type),
                    enabled: peer.enabled,
                    last_exchange_ms: a.last_exchange_ms,
                    last_error: a.last_error,
                    key_fingerprint: None,
                    lag_entries: None,
                    build: None,
                },
            );
        }
        for (id, a) in &inner.activity {
            let peer_type = inner
                .discovered
                .contains_key(id)
                .then_some(PeerType::LanDiscovered);
            out.entry(id.clone()).or_insert(PeerReport {
                node_id: id.clone(),
                address: a.address.clone(),
                peer_type,
                enabled: true,
                last_exchange_ms: a.last_exchange_ms,
                last_error: a.last_error.clone(),
                key_fingerprint: None,
                lag_entries: None,
                build: None,
            });
        }
        out.into_values().collect()
    }
}

impl PeerDirectory for PeerBook {
    fn peers(&self) -> Vec<PeerState> {
        let now = Instant::now();
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let state = |node_id: &NodeId, peer_type: PeerType, address: String| {
            let a = inner.activity.get(node_id).cloned().unwrap_or_default();
            PeerState {
                node_id: node_id.clone(),
                peer_type,
                address,
                eligible: a.eligible.unwrap_or(false),
                alive_since: self.alive_since(&a, now),
            }
        };
        let mut view: BTreeMap<NodeId, PeerState> = BTreeMap::new();
        for (id, address) in &inner.discovered {
            view.insert(
                id.clone(),
                state(id, PeerType::LanDiscovered, address.to_string()),
            );
        }
        for peer in inner.known.iter().filter(|p| p.enabled) {
            view.insert(
                peer.node_id.clone(),
                state(&peer.node_id, peer.peer_type, peer.address.clone()),
            );
        }
        if let Some(members) = &inner.members {
            for (id, address) in members {
                view.entry(id.clone())
                    .or_insert_with(|| state(id, PeerType::StaticRemote, address.clone()));
            }
            for state in view.values_mut() {
                state.eligible &= members.contains_key(&state.node_id);
            }
        }
        view.into_values().collect()
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_inbound_session_never_passes_its_source_port_off_as_the_peer_address() {
        let book = PeerBook::new(Duration::from_secs(3));
        let peer = NodeId::new("in").unwrap();
        book.exchanged_inbound(&peer, "10.0.0.3:53211".parse().unwrap(), Some(true));
        let report = book.report(&[]);
        assert_eq!(report[0].address.as_deref(), Some("10.0.0.3"));
        // A beacon says where it listens, and that stays.
        book.beacon(&peer, "10.0.0.3:25000".parse().unwrap(), true);
        book.exchanged_inbound(&peer, "10.0.0.3:53999".parse().unwrap(), Some(true));
        assert_eq!(
            book.report(&[])[0].address.as_deref(),
            Some("10.0.0.3:25000")
        );
    }

    use super::*;

    fn id(name: &str) -> NodeId {
        NodeId::new(name).unwrap()
    }

    #[test]
    fn a_peer_is_alive_after_news_and_dead_after_two_failures_or_the_timeout() {
        let book = PeerBook::new(Duration::from_millis(200));
        let peer = KnownPeer::new(id("b"), "127.0.0.1:1", PeerType::StaticRemote).unwrap();
        book.set_known(vec![peer]);
        assert!(!book.peers()[0].is_alive());
        book.exchanged(&id("b"), "127.0.0.1:1", Some(true));
        let state = &book.peers()[0];
        assert!(state.is_alive() && state.eligible);
        book.failed(&id("b"), "refused");
        assert!(book.peers()[0].is_alive(), "one failure is not death");
        book.failed(&id("b"), "refused");
        assert!(!book.peers()[0].is_alive());

        book.exchanged(&id("b"), "127.0.0.1:1", Some(true));
        let deadline = Instant::now() + Duration::from_secs(5);
        while book.peers()[0].is_alive() {
            assert!(Instant::now() < deadline, "the timeout must end liveness");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn beacons_add_lan_peers_and_every_change_is_announced() {
        let book = PeerBook::new(Duration::from_secs(5));
        let changes = book.changes();
        book.beacon(&id("lan"), "10.0.0.9:25000".parse().unwrap(), true);
        assert!(changes.has_changed().unwrap());
        let view = book.peers();
        assert_eq!(
            (view[0].peer_type, view[0].address.as_str()),
            (PeerType::LanDiscovered, "10.0.0.9:25000")
        );
        assert_eq!(book.discovered_alive().len(), 1);
    }
}
