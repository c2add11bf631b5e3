use cbddc_core::{NodeId, PeerState, PeerType};
use std::time::{Duration, Instant};

/// How the election behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElectionSettings {
    /// Whether this node may lead.
    pub eligible: bool,
    /// How often the rule is evaluated even if the view did not change.
    pub interval: Duration,
    /// How long a peer must be alive before it counts.
    pub join_grace: Duration,
    /// How long after start this node does not claim leadership for itself.
    pub startup_grace: Duration,
}

impl ElectionSettings {
    /// `interval` as the join grace and `peer_timeout` as the startup grace.
    pub fn new(eligible: bool, interval: Duration, peer_timeout: Duration) -> Self {
        Self {
            eligible,
            interval,
            join_grace: interval,
            startup_grace: peer_timeout,
        }
    }
}

/// Who leads, as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Leadership {
    /// The leader, if any node may lead.
    pub leader: Option<NodeId>,
    /// Whether this node is the leader.
    pub is_leader: bool,
}

/// The outcome changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeadershipChanged {
    /// The new leader (`None` when no eligible node is alive).
    pub leader: Option<NodeId>,
    /// Whether this node is the new leader.
    pub is_leader: bool,
    /// The leader before.
    pub previous: Option<NodeId>,
}

/// The bully rule as a plain value: a view and a time in, a change (or none) out.
#[derive(Debug, Clone)]
pub struct Bully {
    local: NodeId,
    settings: ElectionSettings,
    started: Instant,
    current: Option<NodeId>,
}

impl Bully {
    /// The election of node `local`, started at `now`.
    pub fn new(local: NodeId, settings: ElectionSettings, now: Instant) -> Self {
        Self {
            local,
            settings,
            started: now,
            current: None,
        }
    }

    /// The outcome of the last evaluation.
    /// Whether this node may lead from now on (its configuration and, with a control
    /// plane, its membership say so); the next evaluation applies it.
    pub fn set_eligible(&mut self, eligible: bool) {
        self.settings.eligible = eligible;
    }

    /// This node was paused (or starved) until `now`: what it knew of its peers is stale,
    /// and the others may have elected another meanwhile. It stops leading and does not
    /// claim again before its startup grace has passed anew, so that it hears from its
    /// peers first (and they from it) instead of leading beside their leader.
    pub fn resumed(&mut self, now: Instant) {
        self.started = now;
    }

    /// The outcome as it stands.
    pub fn leadership(&self) -> Leadership {
        Leadership {
            leader: self.current.clone(),
            is_leader: self.current.as_ref() == Some(&self.local),
        }
    }

    /// Applies the rule to `peers` at `now`; returns the change, if the leader changed.
    pub fn evaluate(&mut self, now: Instant, peers: &[PeerState]) -> Option<LeadershipChanged> {
        let settled = |p: &&PeerState| {
            p.alive_since.is_some_and(|since| {
                now.saturating_duration_since(since) >= self.settings.join_grace
            })
        };
        let mut leader = peers
            .iter()
            .filter(|p| {
                p.peer_type != PeerType::CloudRemote && p.eligible && p.node_id != self.local
            })
            .filter(settled)
            .map(|p| &p.node_id)
            .min()
            .cloned();
        let past_startup =
            now.saturating_duration_since(self.started) >= self.settings.startup_grace;
        if self.settings.eligible && past_startup && leader.as_ref().is_none_or(|l| self.local < *l)
        {
            leader = Some(self.local.clone());
        }
        if leader == self.current {
            return None;
        }
        let previous = std::mem::replace(&mut self.current, leader.clone());
        Some(LeadershipChanged {
            is_leader: leader.as_ref() == Some(&self.local),
            leader,
            previous,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn id(name: &str) -> NodeId {
        NodeId::new(name).unwrap()
    }

    fn peer(
        name: &str,
        peer_type: PeerType,
        eligible: bool,
        alive_since: Option<Instant>,
    ) -> PeerState {
        PeerState {
            node_id: id(name),
            peer_type,
            address: "127.0.0.1:1".into(),
            eligible,
            alive_since,
        }
    }

    fn settings() -> ElectionSettings {
        ElectionSettings::new(true, SECOND, 3 * SECOND)
    }

    fn leader(change: Option<LeadershipChanged>) -> Option<String> {
        change.and_then(|c| c.leader).map(|l| l.to_string())
    }

    #[test]
    fn the_smallest_eligible_alive_node_leads() {
        let t0 = Instant::now();
        let mut b = Bully::new(id("b"), settings(), t0);
        let now = t0 + 5 * SECOND;
        let peers = [
            peer("c", PeerType::StaticRemote, true, Some(t0)),
            peer("a", PeerType::LanDiscovered, true, Some(t0)),
            peer("0-cloud", PeerType::CloudRemote, true, Some(t0)),
        ];
        let change = b.evaluate(now, &peers).unwrap();
        assert_eq!(change.leader, Some(id("a")));
        assert!(!change.is_leader);
        assert_eq!(b.evaluate(now, &peers), None, "no change, no event");
    }

    #[test]
    fn ineligible_nodes_never_lead_and_cloud_remotes_never_take_part() {
        let t0 = Instant::now();
        let mut local = Bully::new(
            id("a"),
            ElectionSettings {
                eligible: false,
                ..settings()
            },
            t0,
        );
        let peers = [
            peer("b", PeerType::StaticRemote, false, Some(t0)),
            peer("c", PeerType::StaticRemote, true, Some(t0)),
        ];
        assert_eq!(
            leader(local.evaluate(t0 + 5 * SECOND, &peers)),
            Some("c".into())
        );
        let mut lonely = Bully::new(
            id("a"),
            ElectionSettings {
                eligible: false,
                ..settings()
            },
            t0,
        );
        let only_cloud = [peer("0", PeerType::CloudRemote, true, Some(t0))];
        assert_eq!(lonely.evaluate(t0 + 5 * SECOND, &only_cloud), None);
        assert_eq!(
            lonely.leadership(),
            Leadership::default(),
            "nobody may lead"
        );
    }

    #[test]
    fn the_leader_is_lost_and_comes_back() {
        let t0 = Instant::now();
        let mut b = Bully::new(id("b"), settings(), t0);
        let alive = [peer("a", PeerType::StaticRemote, true, Some(t0))];
        assert_eq!(
            leader(b.evaluate(t0 + 4 * SECOND, &alive)),
            Some("a".into())
        );

        let dead = [peer("a", PeerType::StaticRemote, true, None)];
        let change = b.evaluate(t0 + 10 * SECOND, &dead).unwrap();
        assert_eq!(
            (change.leader, change.is_leader, change.previous),
            (Some(id("b")), true, Some(id("a")))
        );

        // Back, but it leads again only once it has been alive for the join grace.
        let back_at = t0 + 20 * SECOND;
        let returned = [peer("a", PeerType::StaticRemote, true, Some(back_at))];
        assert_eq!(b.evaluate(back_at + SECOND / 2, &returned), None);
        let change = b.evaluate(back_at + SECOND, &returned).unwrap();
        assert_eq!((change.leader, change.is_leader), (Some(id("a")), false));
    }

    #[test]
    fn a_flapping_peer_does_not_take_over() {
        let t0 = Instant::now();
        let mut b = Bully::new(id("b"), settings(), t0);
        assert_eq!(leader(b.evaluate(t0 + 4 * SECOND, &[])), Some("b".into()));
        for step in 0..20u32 {
            let now = t0 + 5 * SECOND + step * SECOND / 4;
            // Alive for a quarter of a second, then gone, again and again.
            let state = if step % 2 == 0 { Some(now) } else { None };
            assert_eq!(
                b.evaluate(now, &[peer("a", PeerType::LanDiscovered, true, state)]),
                None,
                "step {step}"
            );
        }
        assert!(b.leadership().is_leader);
    }

    #[test]
    fn a_starting_node_waits_before_claiming_leadership() {
        let t0 = Instant::now();
        let mut c = Bully::new(id("c"), settings(), t0);
        assert_eq!(
            c.evaluate(t0 + SECOND, &[]),
            None,
            "no claim during the startup grace"
        );
        let a = [peer("a", PeerType::StaticRemote, true, Some(t0))];
        assert_eq!(
            leader(c.evaluate(t0 + 2 * SECOND, &a)),
            Some("a".into()),
            "a smaller peer is followed at once"
        );
        let mut alone = Bully::new(id("c"), settings(), t0);
        assert_eq!(
            leader(alone.evaluate(t0 + 3 * SECOND, &[])),
            Some("c".into())
        );
    }

    #[test]
    fn the_leader_moving_between_other_nodes_is_announced() {
        let t0 = Instant::now();
        let mut c = Bully::new(id("c"), settings(), t0);
        let now = t0 + 5 * SECOND;
        c.evaluate(
            now,
            &[
                peer("a", PeerType::StaticRemote, true, Some(t0)),
                peer("b", PeerType::StaticRemote, true, Some(t0)),
            ],
        );
        let change = c
            .evaluate(
                now,
                &[
                    peer("a", PeerType::StaticRemote, true, None),
                    peer("b", PeerType::StaticRemote, true, Some(t0)),
                ],
            )
            .unwrap();
        assert_eq!(
            (change.leader, change.previous, change.is_leader),
            (Some(id("b")), Some(id("a")), false)
        );
    }

    #[test]
    fn a_node_id_change_is_a_new_election_under_the_new_id() {
        let t0 = Instant::now();
        let peers = [peer("m", PeerType::StaticRemote, true, Some(t0))];
        let mut before = Bully::new(id("z"), settings(), t0);
        assert_eq!(
            leader(before.evaluate(t0 + 5 * SECOND, &peers)),
            Some("m".into())
        );
        // The node renamed to "a" runs a fresh election and, once past its startup grace, leads.
        let renamed_at = t0 + 6 * SECOND;
        let mut after = Bully::new(id("a"), settings(), renamed_at);
        assert_eq!(leader(after.evaluate(renamed_at, &peers)), Some("m".into()));
        let change = after.evaluate(renamed_at + 3 * SECOND, &peers).unwrap();
        assert_eq!((change.leader, change.is_leader), (Some(id("a")), true));
    }
}
