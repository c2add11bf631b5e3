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

/// A small deterministic generator, so a failing seed can be replayed (the simulations
/// share it).
pub(crate) struct Rng(pub(crate) u64);
impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// True once in `one_in` draws.
    pub(crate) fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
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
                    decided,
                    ..
                }) = self.node(&to).handle(&id(&from), frame)
                    && self.rng.below(10) != 0
                {
                    self.node(&from)
                        .learn_seal(configuration_id, decided)
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

/// Frames are dropped (one in SIM_DROP_ONE_IN, default 10; 0 for none), delayed (0-6
/// rounds) and reordered across links; each link keeps its order, as the TCP transport
/// does. Set SIM_SEED to replay one seed and SIM_TRACE to print every delivery, decision
/// and seal. Checked at every step: all members agree on every decided position, one
/// seal per configuration, nothing decided in a configuration after its seal, every
/// entry decided once or reported dropped by a proposer that retired.
///
/// Measured when the seal became an entry: 0 failures over 320 runs (seeds 1000..1200
/// dropping one in 10, 1000..1060 dropping one in 4 and dropping none).
#[test]
fn reconfiguration_under_drops_delays_and_reorders_keeps_one_seal_and_loses_nothing() {
    let seeds: Vec<u64> = match std::env::var("SIM_SEED") {
        Ok(seed) => vec![seed.parse().unwrap()],
        Err(_) => vec![
            0x9e37_79b9_7f4a_7c15,
            1,
            2,
            3,
            42,
            102,
            105,
            119,
            120,
            121,
            137,
            1234,
        ],
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
        if a.read_decided(0).iter().any(|e| e.id == entry) {
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

/// The same delays with bare OmniPaxos instances and no code of ours but the storage:
/// after the StopSign is decided, every node must read the whole decided log, the same
/// everywhere. Tells a defect of the crate from one of `Membership`.
fn bare_crate_run(seed: u64) -> Result<(), String> {
    use omnipaxos::util::LogEntry;
    use omnipaxos::{ClusterConfig, OmniPaxos, ServerConfig};
    type Bare = OmniPaxos<ControlEntry, SqliteLogStorage<ControlEntry>>;
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(seed);
    let config = ClusterConfig {
        configuration_id: 1,
        nodes: vec![1, 2, 3],
        ..Default::default()
    };
    let mut nodes: Vec<Bare> = (1..=3u64)
        .map(|pid| {
            let storage = SqliteLogStorage::open(&dir.path().join(format!("{pid}.db")), 1).unwrap();
            let server = ServerConfig {
                pid,
                election_tick_timeout: 5,
                resend_message_tick_timeout: 20,
                buffer_size: 1024,
                ..Default::default()
            };
            config.clone().build_for_server(server, storage).unwrap()
        })
        .collect();
    let mut in_flight: Vec<(
        u64,
        usize,
        usize,
        omnipaxos::messages::Message<ControlEntry>,
    )> = Vec::new();
    let mut link_clock: BTreeMap<(usize, usize), u64> = BTreeMap::new();
    let mut outgoing = Vec::new();
    let mut proposed = 0u64;
    for step in 0..3_000u64 {
        if step % 7 == 0 && proposed < 12 {
            let _ = nodes[(proposed % 3) as usize].append(ControlEntry {
                id: ("bare".into(), proposed),
                body: crate::membership::ControlBody::Data(vec![]),
            });
            proposed += 1;
        }
        if step == 40 && std::env::var("BARE_NO_RECONFIG").is_err() {
            let next = ClusterConfig {
                configuration_id: 2,
                nodes: vec![1, 2, 4],
                ..Default::default()
            };
            let _ = nodes[1].reconfigure(next, None);
        }
        for (i, node) in nodes.iter_mut().enumerate() {
            node.tick();
            node.take_outgoing_messages(&mut outgoing);
            for m in outgoing.drain(..) {
                let to = m.get_receiver() as usize - 1;
                if to >= 3 {
                    continue;
                }
                let earliest = link_clock.get(&(i, to)).copied().unwrap_or(0);
                let at = (step + rng.below(7)).max(earliest);
                link_clock.insert((i, to), at);
                in_flight.push((at, i, to, m));
            }
        }
        let mut due: BTreeMap<(usize, usize), Vec<omnipaxos::messages::Message<ControlEntry>>> =
            BTreeMap::new();
        let mut later = Vec::new();
        for item in in_flight.drain(..) {
            if item.0 <= step {
                due.entry((item.1, item.2)).or_default().push(item.3)
            } else {
                later.push(item)
            }
        }
        in_flight = later;
        let mut links: Vec<_> = due
            .into_iter()
            .map(|(k, v)| (k, std::collections::VecDeque::from(v)))
            .collect();
        while !links.is_empty() {
            let pick = rng.below(links.len() as u64) as usize;
            if let Some(m) = links[pick].1.pop_front() {
                let to = (links[pick].0).1;
                nodes[to].handle_incoming(m);
            }
            if links[pick].1.is_empty() {
                links.swap_remove(pick);
            }
        }
        if nodes.iter().all(|n| n.is_reconfigured().is_some()) {
            break;
        }
        if std::env::var("BARE_NO_RECONFIG").is_ok() && proposed >= 12 && step > 600 {
            break;
        }
    }
    let logs: Vec<Vec<(String, u64)>> = nodes
        .iter()
        .map(|n| {
            n.read_decided_suffix(0)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|e| match e {
                    LogEntry::Decided(c) => Some(c.id),
                    _ => None,
                })
                .collect()
        })
        .collect();
    for (i, n) in nodes.iter().enumerate() {
        if n.is_reconfigured().is_some() && logs[i].len() + 1 != n.get_decided_idx() {
            return Err(format!(
                "seed {seed}: node {} decided {} slots but reads {} entries before the StopSign",
                i + 1,
                n.get_decided_idx(),
                logs[i].len()
            ));
        }
    }
    for i in 1..3 {
        let common = logs[0].len().min(logs[i].len());
        if logs[0][..common] != logs[i][..common] {
            return Err(format!(
                "seed {seed}: nodes 1 and {} decided different logs",
                i + 1
            ));
        }
    }
    Ok(())
}

/// See [`bare_crate_run`]. Findings (seeds 100..140, FIFO links delayed 0-6 rounds, no
/// loss): 12 of 40 seeds fail — the crate's own assertion "log sync from N would
/// overwrite decided entries up to M", or a node that decided the StopSign reading fewer
/// entries than it decided — identically with the crate's `MemoryStorage` in place of
/// SQLite. With `BARE_NO_RECONFIG=1` (same runs, no StopSign) all 40 pass: the defect is
/// in omnipaxos 0.2.4's StopSign path under delayed messages. Ignored while it documents it.
#[test]
#[ignore = "probe of omnipaxos 0.2.4 under delayed messages; see issue 5's note"]
fn bare_omnipaxos_keeps_a_whole_log_before_its_stopsign() {
    let mut failures = Vec::new();
    for seed in 100..140 {
        if let Err(e) = std::panic::catch_unwind(|| bare_crate_run(seed)).unwrap_or_else(|p| {
            Err(format!(
                "seed {seed}: panicked: {}",
                p.downcast_ref::<String>().cloned().unwrap_or_default()
            ))
        }) {
            failures.push(e);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 40 seeds failed: {failures:#?}",
        failures.len()
    );
}

#[test]
fn pacing_keeps_the_timers_durations_whatever_the_tick() {
    use crate::membership::Pacing;
    use std::time::Duration;
    assert_eq!(
        Pacing::for_tick(Duration::from_millis(10), 5),
        Pacing::default()
    );
    let slow = Pacing::for_tick(Duration::from_millis(50), 10);
    assert_eq!(
        (
            slow.election_ticks,
            slow.retry_ticks,
            slow.offer_ticks,
            slow.seal_grace_ticks
        ),
        (10, 8, 10, 40)
    );
    // A tick longer than a timer still fires it, every tick; elections need two.
    let coarse = Pacing::for_tick(Duration::from_secs(10), 0);
    assert_eq!((coarse.election_ticks, coarse.retry_ticks), (2, 1));
}
