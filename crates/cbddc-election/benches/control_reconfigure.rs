//! Reconfiguration of the control plane, from `reconfigure` to the next configuration
//! deciding its first entry, beside bare OmniPaxos doing the same change.
//!
//! Both run three members and a newcomer on an instant in-memory network, with the same
//! timers, ticking as fast as they go:
//! - ours: `Membership` on `SqliteLogStorage` (durable: each node's work in a step is one
//!   transaction, committed before its messages leave, as the node's driver does), the
//!   seal as a decided entry, the newcomer invited with the sealed log;
//! - bare: `OmniPaxos` on the crate's `MemoryStorage`, its StopSign, and the next
//!   configuration's instances started by hand, the newcomer empty.
//!
//! Ours also runs on `MemoryStorage`, to separate the protocol from the storage's cost.
//!
//! Prints the medians and writes them to `target/cbddc-bench/control.json`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use cbddc_core::NodeId;
use cbddc_election::membership::{Action, Configuration, ControlBody, ControlEntry, Membership};
use cbddc_store::{ControlDatabase, SqliteLogStorage};
use omnipaxos::storage::Storage;
use omnipaxos::{ClusterConfig, OmniPaxos, ServerConfig};
use omnipaxos_storage::memory_storage::MemoryStorage;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const ROUNDS: usize = 15;
const MAX_STEPS: usize = 100_000;

type Ours<S> = Membership<S>;

fn id(name: &str) -> NodeId {
    NodeId::new(name).unwrap()
}

fn members(names: &[&str]) -> Vec<(NodeId, String)> {
    names.iter().map(|n| (id(n), format!("{n}:1"))).collect()
}

/// The shared connections of the SQLite variant (empty in memory): a node's work in one
/// step is one batch, committed before its messages leave, as the node's driver does.
type Batches = BTreeMap<NodeId, ControlDatabase>;

fn batch<R>(batches: &Batches, node: &NodeId, work: impl FnOnce() -> R) -> R {
    if let Some(db) = batches.get(node) {
        db.begin().unwrap();
    }
    let result = work();
    if let Some(db) = batches.get(node) {
        db.commit().unwrap();
    }
    result
}

/// One step of the network: every node ticks, then each node takes every message sent to
/// it in one batch, until no message is left.
fn step<S: Storage<ControlEntry>>(
    nodes: &mut BTreeMap<NodeId, Ours<S>>,
    batches: &Batches,
    events: &mut Vec<(NodeId, Action)>,
) {
    let mut actions = Vec::new();
    for (name, node) in nodes.iter_mut() {
        let taken = batch(batches, name, || {
            node.tick();
            node.take_actions()
        });
        actions.extend(taken.into_iter().map(|a| (name.clone(), a)));
    }
    for _ in 0..1_000 {
        if actions.is_empty() {
            return;
        }
        let mut inbox: BTreeMap<NodeId, Vec<(NodeId, Action)>> = BTreeMap::new();
        for (from, action) in actions.drain(..) {
            match &action {
                Action::Send { to, .. } | Action::OfferJoin { to, .. } => {
                    inbox.entry(to.clone()).or_default().push((from, action))
                }
                _ => events.push((from, action)),
            }
        }
        for (to, messages) in inbox {
            let offered: Vec<_> = messages
                .iter()
                .filter_map(|(from, a)| match a {
                    Action::OfferJoin { configuration, .. } => Some((
                        configuration.clone(),
                        nodes[from]
                            .sealed_log(configuration.configuration_id - 1)
                            .unwrap(),
                    )),
                    _ => None,
                })
                .collect();
            let Some(node) = nodes.get_mut(&to) else {
                continue;
            };
            let taken = batch(batches, &to, || {
                for (from, action) in messages {
                    if let Action::Send { frame, .. } = action {
                        let _ = node.handle(&from, frame);
                    }
                }
                for (configuration, log) in offered {
                    node.join_with_log(configuration, log).unwrap();
                }
                node.take_actions()
            });
            actions.extend(taken.into_iter().map(|a| (to.clone(), a)));
        }
    }
}

type OnSqlite = (
    BTreeMap<NodeId, Ours<SqliteLogStorage<ControlEntry>>>,
    Batches,
);

fn on_sqlite(dir: &std::path::Path) -> OnSqlite {
    let mut nodes = BTreeMap::new();
    let mut batches = BTreeMap::new();
    for name in ["a", "b", "c", "d"] {
        let db = ControlDatabase::open(&dir.join(format!("{name}.db"))).unwrap();
        let logs = db.clone();
        nodes.insert(
            id(name),
            Membership::new(id(name), move |c| logs.log(c).map_err(|e| e.to_string())),
        );
        batches.insert(id(name), db);
    }
    (nodes, batches)
}

fn in_memory() -> (BTreeMap<NodeId, Ours<MemoryStorage<ControlEntry>>>, Batches) {
    let nodes = ["a", "b", "c", "d"]
        .into_iter()
        .map(|name| {
            let node = Membership::new(id(name), |_| Ok(MemoryStorage::default()));
            (id(name), node)
        })
        .collect();
    (nodes, Batches::new())
}

/// Returns the time and the steps (ticks) taken.
fn ours_round<S: Storage<ControlEntry>>(
    (mut nodes, batches): (BTreeMap<NodeId, Ours<S>>, Batches),
) -> (Duration, usize) {
    let first = Configuration::new(1, members(&["a", "b", "c"])).unwrap();
    for name in ["a", "b", "c"] {
        let node = nodes.get_mut(&id(name)).unwrap();
        batch(&batches, &id(name), || node.bootstrap(first.clone())).unwrap();
    }
    let mut events = Vec::new();
    for _ in 0..MAX_STEPS {
        step(&mut nodes, &batches, &mut events);
        if ["a", "b", "c"]
            .iter()
            .all(|n| nodes[&id(n)].leader().is_some())
        {
            break;
        }
    }
    events.clear();
    let started = Instant::now();
    let mut steps = 0;
    let a = nodes.get_mut(&id("a")).unwrap();
    batch(&batches, &id("a"), || {
        a.reconfigure(members(&["a", "b", "d"]), None)
    })
    .unwrap();
    let sealed = |events: &[(NodeId, Action)]| {
        events
            .iter()
            .any(|(n, e)| n.as_str() == "a" && matches!(e, Action::Sealed { .. }))
    };
    for _ in 0..MAX_STEPS {
        if sealed(&events) {
            break;
        }
        step(&mut nodes, &batches, &mut events);
        steps += 1;
    }
    assert!(sealed(&events), "the seal was not decided");
    let a = nodes.get_mut(&id("a")).unwrap();
    batch(&batches, &id("a"), || a.append(vec![1])).unwrap();
    let decided = |events: &[(NodeId, Action)]| {
        events.iter().any(|(n, e)| {
            n.as_str() == "a"
                && matches!(e, Action::Decided { configuration_id: 2, entry, .. } if entry.body == ControlBody::Data(vec![1]))
        })
    };
    for _ in 0..MAX_STEPS {
        if decided(&events) {
            return (started.elapsed(), steps);
        }
        step(&mut nodes, &batches, &mut events);
        steps += 1;
    }
    panic!("configuration 2 decided nothing");
}

type Bare = OmniPaxos<ControlEntry, MemoryStorage<ControlEntry>>;

fn bare_node(configuration_id: u32, nodes: Vec<u64>, pid: u64) -> Bare {
    let server = ServerConfig {
        pid,
        election_tick_timeout: 5,
        resend_message_tick_timeout: 20,
        buffer_size: 1024,
        ..Default::default()
    };
    ClusterConfig {
        configuration_id,
        nodes,
        ..Default::default()
    }
    .build_for_server(server, MemoryStorage::default())
    .unwrap()
}

fn bare_step(nodes: &mut BTreeMap<u64, Bare>) {
    let mut outgoing = Vec::new();
    for node in nodes.values_mut() {
        node.tick();
    }
    for _ in 0..1_000 {
        let mut messages = Vec::new();
        for node in nodes.values_mut() {
            node.take_outgoing_messages(&mut outgoing);
            messages.append(&mut outgoing);
        }
        if messages.is_empty() {
            return;
        }
        for message in messages {
            if let Some(node) = nodes.get_mut(&message.get_receiver()) {
                node.handle_incoming(message);
            }
        }
    }
}

fn bare_round() -> (Duration, usize) {
    let mut nodes: BTreeMap<u64, Bare> = (1..=3)
        .map(|pid| (pid, bare_node(1, vec![1, 2, 3], pid)))
        .collect();
    for _ in 0..MAX_STEPS {
        bare_step(&mut nodes);
        if nodes.values().all(|n| n.get_current_leader().is_some()) {
            break;
        }
    }
    let started = Instant::now();
    let mut steps = 0;
    let next = ClusterConfig {
        configuration_id: 2,
        nodes: vec![1, 2, 4],
        ..Default::default()
    };
    nodes.get_mut(&1).unwrap().reconfigure(next, None).unwrap();
    for _ in 0..MAX_STEPS {
        if nodes[&1].is_reconfigured().is_some() {
            break;
        }
        bare_step(&mut nodes);
        steps += 1;
    }
    assert!(nodes[&1].is_reconfigured().is_some(), "no StopSign decided");
    let mut nodes: BTreeMap<u64, Bare> = [1, 2, 4]
        .into_iter()
        .map(|pid| (pid, bare_node(2, vec![1, 2, 4], pid)))
        .collect();
    let entry = ControlEntry {
        id: ("bare".into(), 1),
        body: ControlBody::Data(vec![1]),
    };
    let mut appended = false;
    for _ in 0..MAX_STEPS {
        if !appended {
            appended = nodes.get_mut(&1).unwrap().append(entry.clone()).is_ok();
        }
        if nodes[&1].get_decided_idx() >= 1 {
            return (started.elapsed(), steps);
        }
        bare_step(&mut nodes);
        steps += 1;
    }
    panic!("bare configuration 2 decided nothing");
}

fn median(mut samples: Vec<(Duration, usize)>) -> (f64, usize) {
    samples.sort();
    let (time, steps) = samples[samples.len() / 2];
    (time.as_secs_f64() * 1e3, steps)
}

fn main() {
    // `cargo test --benches` runs this with --bench absent: keep that quick.
    let rounds = if std::env::args().any(|a| a == "--bench") {
        ROUNDS
    } else {
        1
    };
    let ours = median(
        (0..rounds)
            .map(|_| {
                let dir = tempfile::tempdir().unwrap();
                ours_round(on_sqlite(dir.path()))
            })
            .collect(),
    );
    let ours_memory = median((0..rounds).map(|_| ours_round(in_memory())).collect());
    let bare = median((0..rounds).map(|_| bare_round()).collect());
    let report = serde_json::json!({
        "rounds": rounds,
        "ours_median_ms": ours.0,
        "ours_ticks": ours.1,
        "ours_in_memory_median_ms": ours_memory.0,
        "ours_in_memory_ticks": ours_memory.1,
        "bare_median_ms": bare.0,
        "bare_ticks": bare.1,
        "settings": "3 members + 1 newcomer, instant in-memory network, election_tick_timeout 5, ticks as fast as they go; ours on SQLite (synchronous=FULL), bare on MemoryStorage",
    });
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/cbddc-bench");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(
        out.join("control.json"),
        serde_json::to_string_pretty(&report).unwrap(),
    )
    .unwrap();
}
