use crate::membership::{
    Action, Configuration, ControlEntry, ControlFrame, Membership, MembershipError,
};
use cbddc_core::NodeId;
use cbddc_store::SqliteLogStorage;
use std::collections::{BTreeMap, BTreeSet};

type Node = Membership<SqliteLogStorage<ControlEntry>>;

fn id(name: &str) -> NodeId {
    NodeId::new(name).unwrap()
}

fn members(names: &[&str]) -> Vec<(NodeId, String)> {
    names
        .iter()
        .map(|n| (id(n), format!("{n}.test:1")))
        .collect()
}

fn node(dir: &std::path::Path, name: &str) -> Node {
    let path = dir.join(format!("{name}.db"));
    Membership::new(id(name), move |configuration| {
        SqliteLogStorage::open(&path, configuration).map_err(|e| e.to_string())
    })
}

/// A small deterministic generator, so a failing seed can be replayed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Everything the simulation saw, checked as it goes.
#[derive(Default)]
struct Observed {
    /// (configuration, index) -> entry id, as the first node to decide it saw it.
    decided: BTreeMap<(u32, usize), (String, u64)>,
    /// node -> configurations it saw sealed, with the next configuration.
    sealed: BTreeMap<String, BTreeMap<u32, Configuration>>,
    /// configuration -> the next one, as the first node saw it.
    seals: BTreeMap<u32, Configuration>,
    /// node -> entry ids it saw decided.
    decided_at: BTreeMap<String, BTreeSet<(String, u64)>>,
    dropped: BTreeSet<(String, u64)>,
}

struct Sim {
    seed: u64,
    drop_one_in: u64,
    rng: Rng,
    nodes: BTreeMap<String, Node>,
    in_flight: Vec<(u64, String, String, ControlFrame)>,
    link_clock: BTreeMap<(String, String), u64>,
    joins: Vec<(u64, String, Configuration)>,
    step: u64,
    seen: Observed,
}

impl Sim {
    fn node(&mut self, name: &str) -> &mut Node {
        self.nodes.get_mut(name).unwrap()
    }

    fn collect(&mut self) {
        let names: Vec<String> = self.nodes.keys().cloned().collect();
        for name in names {
            let actions = self.node(&name).take_actions();
            for action in actions {
                match action {
                    Action::Send { to, frame, .. } => {
                        if self.drop_one_in > 0 && self.rng.below(self.drop_one_in) == 0 {
                            continue; // dropped
                        }
                        // Delayed, but never overtaking an earlier frame on the same link:
                        // the transport is one TCP connection per direction (FIFO).
                        let link = (name.clone(), to.to_string());
                        let earliest = self.link_clock.get(&link).copied().unwrap_or(0);
                        let at = (self.step + self.rng.below(7)).max(earliest);
                        self.link_clock.insert(link, at);
                        self.in_flight
                            .push((at, name.clone(), to.to_string(), frame));
                    }
                    Action::OfferJoin {
                        to, configuration, ..
                    } => {
                        if self.rng.below(10) != 0 {
                            let at = self.step + self.rng.below(7);
                            self.joins.push((at, to.to_string(), configuration));
                        }
                    }
                    Action::Decided {
                        configuration_id,
                        index,
                        entry,
                    } => {
                        let sealed_here = self
                            .seen
                            .sealed
                            .get(&name)
                            .is_some_and(|s| s.contains_key(&configuration_id));
                        assert!(
                            !sealed_here,
                            "{name} decided {index} in configuration {configuration_id} after its seal"
                        );
                        let first = self
                            .seen
                            .decided
                            .entry((configuration_id, index))
                            .or_insert(entry.id.clone());
                        assert_eq!(
                            *first, entry.id,
                            "nodes disagree on ({configuration_id}, {index})"
                        );
                        if std::env::var("SIM_TRACE").is_ok() {
                            eprintln!(
                                "step {} {name} decided {:?} at ({configuration_id}, {index})",
                                self.step, entry.id
                            );
                        }
                        let fresh = self
                            .seen
                            .decided_at
                            .entry(name.clone())
                            .or_default()
                            .insert(entry.id.clone());
                        assert!(fresh, "{name} saw {:?} decided twice", entry.id);
                    }
                    Action::Sealed {
                        configuration_id,
                        next,
                        ..
                    } => {
                        if std::env::var("SIM_TRACE").is_ok() {
                            eprintln!("step {} {name} sealed {configuration_id}", self.step);
                        }
                        let first = self
                            .seen
                            .seals
                            .entry(configuration_id)
                            .or_insert(next.clone());
                        assert_eq!(
                            *first, next,
                            "two different StopSigns for configuration {configuration_id}"
                        );
                        let again = self
                            .seen
                            .sealed
                            .entry(name.clone())
                            .or_default()
                            .insert(configuration_id, next);
                        assert!(again.is_none(), "{name} sealed {configuration_id} twice");
                    }
                    Action::Dropped { entry } => {
                        if std::env::var("SIM_TRACE").is_ok() {
                            eprintln!("step {} {name} dropped {:?}", self.step, entry.id);
                        }
                        self.seen.dropped.insert(entry.id);
                    }
                    Action::Started { .. } | Action::Retired { .. } => {}
                }
            }
        }
    }

    fn round(&mut self) {
        self.step += 1;
        let names: Vec<String> = self.nodes.keys().cloned().collect();
        for name in &names {
            self.node(name).tick();
        }
        self.collect();
        // Deliver what is due: links interleaved at random, each link in its own order.
        let mut due: BTreeMap<(String, String), std::collections::VecDeque<ControlFrame>> =
            BTreeMap::new();
        let mut later = Vec::new();
        for item in self.in_flight.drain(..) {
            if item.0 <= self.step {
                due.entry((item.1, item.2)).or_default().push_back(item.3);
            } else {
                later.push(item);
            }
        }
        self.in_flight = later;
        let mut links: Vec<_> = due.into_iter().collect();
        while !links.is_empty() {
            let pick = self.rng.below(links.len() as u64) as usize;
            let ((from, to), queue) = &mut links[pick];
            if let Some(frame) = queue.pop_front() {
                // Refusals (fencing) are expected for frames of configurations not running
                // there; a superseded configuration is answered with its seal, which the
                // sender learns (unless that answer is lost too).
                let (from, to) = (from.clone(), to.clone());
                if std::env::var("SIM_TRACE").is_ok() {
                    let kind = match &frame.message {
                        omnipaxos::messages::Message::SequencePaxos(p) => {
                            format!("{:?}", p.msg).chars().take(160).collect::<String>()
                        }
                        omnipaxos::messages::Message::BLE(_) => "BLE".into(),
                    };
                    if !kind.starts_with("BLE") {
                        eprintln!(
                            "step {} deliver {from}->{to} c{} {kind}",
                            self.step, frame.configuration_id
                        );
                    }
                }
                if let Err(MembershipError::Superseded {
                    configuration_id,
                    next,
                    decided,
                }) = self.node(&to).handle(&id(&from), frame)
                    && self.rng.below(10) != 0
                {
                    self.node(&from)
                        .learn_seal(configuration_id, *next, decided)
                        .unwrap();
                }
            }
            if links[pick].1.is_empty() {
                links.swap_remove(pick);
            }
        }
        let joins: Vec<_> = std::mem::take(&mut self.joins);
        for (at, to, configuration) in joins {
            if at <= self.step {
                self.node(&to).join(configuration).unwrap();
            } else {
                self.joins.push((at, to, configuration));
            }
        }
        self.collect();
    }

    fn run_until(&mut self, what: &str, mut done: impl FnMut(&Sim) -> bool) {
        for _ in 0..5_000 {
            if done(self) {
                return;
            }
            self.round();
        }
        let state: Vec<String> = self
            .nodes
            .iter()
            .map(|(n, m)| {
                format!(
                    "{n}: at {:?}, retired after {:?}, leader {:?}",
                    self.at(n),
                    m.retired_after(),
                    m.leader()
                )
            })
            .collect();
        panic!(
            "seed {}: not done after 5000 rounds: {what}; {state:?}",
            self.seed
        );
    }

    fn at(&self, name: &str) -> Option<u32> {
        self.nodes[name].configuration().map(|c| c.configuration_id)
    }
}

fn simulate(seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let mut sim = Sim {
        seed,
        drop_one_in: std::env::var("SIM_DROP_ONE_IN")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(10),
        rng: Rng(seed),
        nodes: ["a", "b", "c", "d"]
            .iter()
            .map(|n| (n.to_string(), node(dir.path(), n)))
            .collect(),
        in_flight: Vec::new(),
        link_clock: BTreeMap::new(),
        joins: Vec::new(),
        step: 0,
        seen: Observed::default(),
    };
    let first = Configuration::new(1, members(&["a", "b", "c"])).unwrap();
    for n in ["a", "b", "c"] {
        sim.node(n).bootstrap(first.clone()).unwrap();
    }
    sim.run_until("a leader in configuration 1", |s| {
        ["a", "b", "c"]
            .iter()
            .all(|n| s.nodes[*n].leader().is_some())
    });

    let mut proposed = Vec::new();
    for i in 0..10u8 {
        let n = ["a", "b", "c"][usize::from(i % 3)];
        proposed.push(sim.node(n).append(vec![i]).unwrap());
    }
    for _ in 0..5 {
        sim.round();
    }
    // Replace c with d, while entries race the StopSign.
    sim.node("b")
        .reconfigure(members(&["a", "b", "d"]), Some(b"why".to_vec()))
        .unwrap();
    for i in 10..16u8 {
        let n = ["a", "c"][usize::from(i % 2)];
        proposed.push(sim.node(n).append(vec![i]).unwrap());
    }
    sim.run_until("a, b, d in configuration 2 and c retired", |s| {
        ["a", "b", "d"].iter().all(|n| s.at(n) == Some(2))
            && s.nodes["c"].retired_after() == Some(1)
    });
    for i in 16..20u8 {
        proposed.push(sim.node("d").append(vec![i]).unwrap());
    }
    // Everything a, b and d proposed, in configuration 1 or 2, is decided: entries that
    // raced the first StopSign were proposed again in configuration 2.
    sim.run_until("the entries of the continuing members to be decided", |s| {
        proposed
            .iter()
            .filter(|id| id.0 != "c")
            .all(|id| s.seen.decided.values().any(|d| d == id))
    });
    sim.run_until("a leader in configuration 2", |s| {
        ["a", "b", "d"]
            .iter()
            .all(|n| s.nodes[*n].leader().is_some())
    });
    sim.node("a")
        .reconfigure(members(&["a", "d"]), None)
        .unwrap();
    for i in 20..24u8 {
        let n = ["a", "b"][usize::from(i % 2)];
        proposed.push(sim.node(n).append(vec![i]).unwrap());
    }
    sim.run_until("a, d in configuration 3 and b retired", |s| {
        ["a", "d"].iter().all(|n| s.at(n) == Some(3)) && s.nodes["b"].retired_after() == Some(2)
    });
    sim.run_until("every entry decided or reported dropped", |s| {
        proposed
            .iter()
            .all(|id| s.seen.decided.values().any(|d| d == id) || s.seen.dropped.contains(id))
    });

    assert_eq!(
        sim.seen.seals.len(),
        2,
        "one StopSign for configuration 1 and one for 2"
    );
    assert_eq!(
        sim.seen.seals[&1]
            .members
            .iter()
            .map(|m| m.node_id.as_str())
            .collect::<Vec<_>>(),
        ["a", "b", "d"]
    );
    for id in &proposed {
        let decided = sim.seen.decided.values().any(|d| d == id);
        let dropped = sim.seen.dropped.contains(id);
        assert!(
            !(decided && dropped),
            "seed {seed}: {id:?} both decided and dropped"
        );
        if dropped {
            assert!(
                id.0 == "b" || id.0 == "c",
                "seed {seed}: {id:?} dropped, but its proposer never retired"
            );
        }
    }
}

/// Frames are dropped (one in SIM_DROP_ONE_IN, default 10), delayed (0-6 rounds) and
/// reordered across links; each link keeps its order, as the TCP transport does. Set
/// SIM_SEED to replay one seed and SIM_TRACE to print what every node decided and sealed.
///
/// KNOWN FAILURES (issue 5 is open): over seeds 100..=139 about one in five fails, with
/// drops and also without them (SIM_DROP_ONE_IN=0), in two ways:
/// - the crate's debug assertion "log sync from N would overwrite decided entries up to
///   N + 1" in `handle_acceptsync` of a running instance (e.g. seeds 102, 105, 119);
/// - an entry decided on some members while another member seals the same configuration
///   without it (it then reports the entry dropped, or decides it again after
///   re-proposal: seeds 120, 121, 137).
///
/// What is known: the failures are identical with the crate's own `MemoryStorage` in
/// place of SQLite, with retries off and with `reconnected` off. In the failing runs a
/// follower's crate state says the StopSign sits at `accepted_idx - 1` while its log
/// holds fewer entries than that (`read_decided_suffix` then skips entries): the
/// StopSign was accepted by a follower whose log was behind, during a leader change
/// with delayed (not lost) messages. Next step: reproduce with bare `OmniPaxos`
/// instances to confirm a crate defect (0.2.4), then work around it (e.g. accept a
/// StopSign only after a full log sync) or change the control-plane engine.
///
/// Run it with `cargo test -p cbddc-election -- --ignored`.
#[test]
#[ignore = "known failures under delayed messages; see the doc comment and issue 5's note"]
fn reconfiguration_under_drops_delays_and_reorders_keeps_one_seal_and_loses_nothing() {
    let seeds: Vec<u64> = match std::env::var("SIM_SEED") {
        Ok(seed) => vec![seed.parse().unwrap()],
        Err(_) => vec![0x9e37_79b9_7f4a_7c15, 1, 2, 3, 42, 1234],
    };
    for seed in seeds {
        eprintln!("seed {seed}");
        simulate(seed);
    }
}

#[test]
fn a_single_member_cluster_decides_alone_and_grows_to_two() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = node(dir.path(), "a");
    let mut b = node(dir.path(), "b");
    a.bootstrap(Configuration::new(1, members(&["a"])).unwrap())
        .unwrap();
    a.append(b"x".to_vec()).unwrap();
    let next = a.reconfigure(members(&["a", "b"]), None).unwrap();
    let actions = a.take_actions();
    assert!(actions.iter().any(|x| matches!(
        x,
        Action::Decided {
            configuration_id: 1,
            index: 0,
            ..
        }
    )));
    assert!(actions.iter().any(|x| matches!(
        x,
        Action::Sealed {
            configuration_id: 1,
            ..
        }
    )));
    assert!(
        actions
            .iter()
            .any(|x| matches!(x, Action::OfferJoin { to, .. } if to.as_str() == "b"))
    );
    assert_eq!(a.configuration(), Some(&next));
    b.join(next).unwrap();
    let entry = b.append(b"from b".to_vec()).unwrap();
    for _ in 0..500 {
        for (me, other, other_id) in [(&mut a, "b", id("a")), (&mut b, "a", id("b"))] {
            let _ = (other, other_id, &me);
        }
        a.tick();
        b.tick();
        let (from_a, from_b) = (a.take_actions(), b.take_actions());
        for x in from_a {
            if let Action::Send { frame, .. } = x {
                b.handle(&id("a"), frame).unwrap();
            }
        }
        for x in from_b {
            if let Action::Send { frame, .. } = x {
                a.handle(&id("b"), frame).unwrap();
            }
        }
        if a.read_decided(0)
            .iter()
            .any(|e| matches!(e, omnipaxos::util::LogEntry::Decided(d) if d.id == entry))
        {
            return;
        }
    }
    panic!("the two-member configuration never decided b's entry");
}

#[test]
fn frames_are_fenced_and_bad_requests_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = node(dir.path(), "a");
    let mut b = node(dir.path(), "b");
    let config = Configuration::new(1, members(&["a", "b"])).unwrap();
    a.bootstrap(config.clone()).unwrap();
    b.bootstrap(config).unwrap();
    for _ in 0..20 {
        a.tick();
    }
    let frame = a
        .take_actions()
        .into_iter()
        .find_map(|x| match x {
            Action::Send { frame, .. } => Some(frame),
            _ => None,
        })
        .unwrap();
    let wrong_config = ControlFrame {
        configuration_id: 7,
        ..frame.clone()
    };
    assert!(matches!(
        b.handle(&id("a"), wrong_config),
        Err(MembershipError::Fenced(_))
    ));
    assert!(matches!(
        b.handle(&id("stranger"), frame.clone()),
        Err(MembershipError::Fenced(_))
    ));
    assert!(
        matches!(
            a.handle(&id("b"), frame.clone()),
            Err(MembershipError::Fenced(_))
        ),
        "a frame naming other pids"
    );
    assert!(b.handle(&id("a"), frame).is_ok());

    assert!(matches!(
        a.reconfigure(vec![], None),
        Err(MembershipError::InvalidMembers(_))
    ));
    assert!(matches!(
        a.reconfigure(members(&["a", "a"]), None),
        Err(MembershipError::InvalidMembers(_))
    ));
    assert!(matches!(
        a.reconfigure(vec![(id("z"), String::new())], None),
        Err(MembershipError::InvalidMembers(_))
    ));
    a.reconfigure(members(&["a", "b", "c"]), None).unwrap();
    assert!(matches!(
        a.reconfigure(members(&["a", "b"]), None),
        Err(MembershipError::ReconfigurationInFlight(1))
    ));
    let mut outsider = node(dir.path(), "c");
    assert!(matches!(
        outsider.reconfigure(members(&["c"]), None),
        Err(MembershipError::NotAMember)
    ));
    assert!(matches!(
        outsider.bootstrap(Configuration::new(1, members(&["a"])).unwrap()),
        Err(MembershipError::NotAMember)
    ));
}
