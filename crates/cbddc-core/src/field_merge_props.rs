//! The properties of field-level merge, on five replicas that write concurrently and
//! exchange their writes with reordering, duplication, partitions and restarts (a
//! receiver applies each origin's writes in order, as a store does, and drops what it
//! holds). Each property is a function, checked by proptest and shown to fail on a
//! deliberately broken merge ([`Breakage`]).
//!
//! `CBDDC_MERGE_CASES` sets the cases of each property (10,000 by default; `cargo xtask
//! sim` runs more).

use crate::field_merge::{BROKEN, Breakage, FieldState, FieldWrite, Observed, parse_path};
use crate::{Hlc, ReplicaId};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Value, json};

const NAMES: [&str; 5] = ["r0", "r1", "r2", "r3", "r4"];
/// The fields writes name: two of them inside `d`.
const FIELDS: [&str; 5] = ["a", "b", "c", "d.x", "d.y"];

fn cases() -> u32 {
    std::env::var("CBDDC_MERGE_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

fn field(i: u8) -> &'static str {
    FIELDS[usize::from(i) % FIELDS.len()]
}

fn nested(path: &str, value: Value) -> Value {
    path.rsplit('.')
        .fold(value, |inner, name| json!({ name: inner }))
}

/// What one step of a run does.
#[derive(Debug, Clone)]
enum Step {
    Put(u8, u8),
    Patch(u8, u8, Option<u8>),
    Remove(u8),
    Delete,
    Increment(u8, i8),
    /// Some messages delivered (any already sent, duplicates included).
    Deliver(u8),
    /// Replicas split in two groups by the bits of the mask.
    Partition(u8),
    Heal,
    /// The replica restarts: its state read back from what it stored, its buffer of
    /// early arrivals lost.
    Restart,
}

fn step() -> impl Strategy<Value = (usize, Step)> {
    let step = prop_oneof![
        1 => (any::<u8>(), any::<u8>()).prop_map(|(f, v)| Step::Put(f, v)),
        5 => (any::<u8>(), any::<u8>(), proptest::option::of(any::<u8>()))
            .prop_map(|(f, v, w)| Step::Patch(f, v, w)),
        2 => any::<u8>().prop_map(Step::Remove),
        1 => Just(Step::Delete),
        2 => (any::<u8>(), any::<i8>()).prop_map(|(f, n)| Step::Increment(f, n)),
        4 => any::<u8>().prop_map(Step::Deliver),
        1 => any::<u8>().prop_map(Step::Partition),
        1 => Just(Step::Heal),
        1 => Just(Step::Restart),
    ];
    (0..5usize, step)
}

/// One write as it travels, with what its writer had applied of each origin.
#[derive(Debug, Clone)]
struct Sent {
    origin: usize,
    seq: u64,
    stamp: Hlc,
    write: FieldWrite,
    seen: [u64; 5],
}

#[derive(Debug, Clone, Default)]
struct Replica {
    state: FieldState,
    applied: [u64; 5],
    /// Writes that arrived before their origin's earlier ones.
    early: Vec<usize>,
    clock: u64,
    group: bool,
}

/// A run of five replicas.
struct Run {
    replicas: Vec<Replica>,
    log: Vec<Sent>,
    rng: u64,
}

impl Run {
    fn new(seed: u64, skew: &[u8; 5]) -> Self {
        let mut replicas = vec![Replica::default(); 5];
        for (r, s) in replicas.iter_mut().zip(skew) {
            r.clock = u64::from(*s);
        }
        Self {
            replicas,
            log: Vec::new(),
            rng: seed | 1,
        }
    }

    fn next(&mut self, n: usize) -> usize {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng % n.max(1) as u64) as usize
    }

    /// `who` writes `write` on what it holds: stamped past everything it has seen (its
    /// clock runs ahead by its skew), checked and completed as its store would.
    fn write(&mut self, who: usize, write: FieldWrite) {
        let replica = &mut self.replicas[who];
        let Ok(prepared) = replica.state.prepare(write) else {
            return;
        };
        replica.clock += 1 + (self.rng % 7);
        let stamp = Hlc {
            wall_ms: replica.clock,
            counter: 0,
            replica: ReplicaId::new(NAMES[who]).unwrap(),
        };
        replica.state.apply(&stamp, &stamp.replica, &prepared);
        let seen = replica.applied;
        replica.applied[who] += 1;
        self.log.push(Sent {
            origin: who,
            seq: replica.applied[who],
            stamp,
            write: prepared,
            seen,
        });
    }

    /// Write `j` reaches replica `r`: applied in its origin's order, dropped if held,
    /// kept aside if it came early.
    fn receive(&mut self, r: usize, j: usize) {
        let sent = &self.log[j];
        let replica = &mut self.replicas[r];
        if sent.origin == r || sent.seq <= replica.applied[sent.origin] {
            return;
        }
        if sent.seq > replica.applied[sent.origin] + 1 {
            if !replica.early.contains(&j) {
                replica.early.push(j);
            }
            return;
        }
        replica
            .state
            .apply(&sent.stamp, &sent.stamp.replica, &sent.write);
        replica.applied[sent.origin] = sent.seq;
        replica.clock = replica.clock.max(sent.stamp.wall_ms);
        // Early arrivals that are next now.
        while let Some(pos) = replica.early.iter().position(|k| {
            let s = &self.log[*k];
            s.seq == replica.applied[s.origin] + 1
        }) {
            let k = replica.early.remove(pos);
            let s = &self.log[k];
            replica.state.apply(&s.stamp, &s.stamp.replica, &s.write);
            replica.applied[s.origin] = s.seq;
            replica.clock = replica.clock.max(s.stamp.wall_ms);
        }
        replica
            .early
            .retain(|k| self.log[*k].seq > replica.applied[self.log[*k].origin]);
    }

    fn step(&mut self, who: usize, step: &Step) {
        match step {
            Step::Put(f, v) => self.write(
                who,
                FieldWrite::Put {
                    value: nested(field(*f), json!(v)),
                    observed: Observed::new(),
                },
            ),
            Step::Patch(f, v, w) => {
                let mut patch = nested(field(*f), json!(v));
                if let Some(w) = w
                    && let (Value::Object(p), Value::Object(q)) = (
                        &mut patch,
                        nested(field(w.wrapping_add(1)), json!(format!("s{w}"))),
                    )
                {
                    for (k, v) in q {
                        p.entry(k).or_insert(v);
                    }
                }
                self.write(
                    who,
                    FieldWrite::Patch {
                        patch,
                        observed: Observed::new(),
                    },
                )
            }
            Step::Remove(f) => self.write(
                who,
                FieldWrite::Patch {
                    patch: nested(field(*f), Value::Null),
                    observed: Observed::new(),
                },
            ),
            Step::Delete => self.write(
                who,
                FieldWrite::Delete {
                    observed: Observed::new(),
                },
            ),
            Step::Increment(f, n) => self.write(
                who,
                FieldWrite::Increment {
                    path: parse_path(field(*f)).unwrap(),
                    by: i64::from(*n),
                },
            ),
            Step::Deliver(count) => {
                for _ in 0..=(count % 8) {
                    let r = self.next(5);
                    let j = self.next(self.log.len());
                    if j < self.log.len()
                        && self.replicas[r].group == self.replicas[self.log[j].origin].group
                    {
                        self.receive(r, j);
                    }
                }
            }
            Step::Partition(mask) => {
                for (r, replica) in self.replicas.iter_mut().enumerate() {
                    replica.group = mask & (1 << r) != 0;
                }
            }
            Step::Heal => {
                for replica in &mut self.replicas {
                    replica.group = false;
                }
            }
            Step::Restart => {
                let replica = &mut self.replicas[who];
                // As the store keeps it: the document's text, and the state beside it.
                let text = replica.state.value().map(|v| v.to_string());
                let document: Option<Value> = text.map(|t| serde_json::from_str(&t).unwrap());
                let kept = replica.state.to_json_beside(document.as_ref());
                replica.state = FieldState::from_json_beside(&kept, document.as_ref()).unwrap();
                replica.early.clear();
            }
        }
    }

    /// Heals and delivers everything everywhere, in random orders.
    fn settle(&mut self) {
        self.step(0, &Step::Heal);
        for _ in 0..50 {
            let mut order: Vec<usize> = (0..self.log.len()).collect();
            for r in 0..5 {
                for i in (1..order.len()).rev() {
                    let k = self.next(i + 1);
                    order.swap(i, k);
                }
                for &j in &order {
                    self.receive(r, j);
                }
            }
            let counts: Vec<u64> = (0..5)
                .map(|o| self.log.iter().filter(|s| s.origin == o).count() as u64)
                .collect();
            if self
                .replicas
                .iter()
                .all(|r| r.applied.iter().zip(&counts).all(|(a, c)| a == c))
            {
                return;
            }
        }
        panic!("delivery did not complete in 50 rounds");
    }
}

fn run(steps: &[(usize, Step)], seed: u64, skew: &[u8; 5]) -> Run {
    let mut run = Run::new(seed, skew);
    for (who, step) in steps {
        run.step(*who, step);
    }
    run.settle();
    run
}

/// The leaves a write sets, dotted, with their values (`Null`: removed).
fn leaves(value: &Value, path: &mut Vec<String>, out: &mut Vec<(String, Value)>) {
    match value {
        Value::Object(fields) if !fields.is_empty() || path.is_empty() => {
            for (name, v) in fields {
                path.push(name.clone());
                leaves(v, path, out);
                path.pop();
            }
        }
        other => out.push((path.join("."), other.clone())),
    }
}

fn related(p: &str, q: &str) -> bool {
    let under = |a: &str, b: &str| a == b || a.starts_with(&format!("{b}."));
    under(p, q) || under(q, p)
}

fn at<'v>(document: Option<&'v Value>, path: &str) -> Option<&'v Value> {
    path.split('.')
        .try_fold(document?, |here, name| here.as_object()?.get(name))
}

/// Every replica holds the same document, byte for byte.
fn converges(run: &Run) -> Result<(), TestCaseError> {
    let canonical = |r: &Replica| r.state.value().map(|v| v.to_string());
    let first = canonical(&run.replicas[0]);
    for (r, replica) in run.replicas.iter().enumerate().skip(1) {
        prop_assert_eq!(canonical(replica), first.clone(), "replica {} differs", r);
    }
    Ok(())
}

/// A leaf a write set (or removed) holds what it set, unless a write stamped later
/// wrote that path, one containing it or one inside it. Paths a counter touches are the
/// counter property's.
fn no_write_lost(run: &Run) -> Result<(), TestCaseError> {
    let document = run.replicas[0].state.value();
    let touched: Vec<(&Sent, Vec<(String, Value)>)> = run
        .log
        .iter()
        .map(|s| {
            let mut out = Vec::new();
            match &s.write {
                FieldWrite::Put { value, .. } | FieldWrite::Patch { patch: value, .. } => {
                    leaves(value, &mut Vec::new(), &mut out)
                }
                FieldWrite::Increment { path, .. } => out.push((path.join("."), Value::Null)),
                FieldWrite::Delete { .. } => {}
            }
            (s, out)
        })
        .collect();
    let counted: Vec<&str> = touched
        .iter()
        .filter(|(s, _)| matches!(s.write, FieldWrite::Increment { .. }))
        .flat_map(|(_, l)| l.iter().map(|(p, _)| p.as_str()))
        .collect();
    for (sent, set) in &touched {
        if matches!(sent.write, FieldWrite::Increment { .. }) {
            continue;
        }
        for (path, value) in set {
            if counted.iter().any(|c| related(c, path)) {
                continue;
            }
            let superseded = touched.iter().any(|(later, theirs)| {
                later.stamp > sent.stamp
                    && (matches!(
                        later.write,
                        FieldWrite::Put { .. } | FieldWrite::Delete { .. }
                    ) || theirs.iter().any(|(q, _)| related(q, path)))
            });
            if superseded {
                continue;
            }
            let held = at(document.as_ref(), path);
            let expected = (!value.is_null()).then_some(value);
            prop_assert_eq!(
                held,
                expected,
                "{} by {} at {} is lost",
                path,
                NAMES[sent.origin],
                sent.stamp.wall_ms
            );
        }
    }
    Ok(())
}

/// After the latest delete, the document holds only what was written after it, and the
/// increments its writer had not seen.
fn nothing_seen_deleted_comes_back(run: &Run) -> Result<(), TestCaseError> {
    let Some(delete) = run
        .log
        .iter()
        .filter(|s| matches!(s.write, FieldWrite::Delete { .. }))
        .max_by(|a, b| a.stamp.cmp(&b.stamp))
    else {
        return Ok(());
    };
    let Some(document) = run.replicas[0].state.value() else {
        return Ok(());
    };
    let mut present = Vec::new();
    leaves(&document, &mut Vec::new(), &mut present);
    for (path, value) in present {
        // An empty object stays where a later write merged into it and removed the rest.
        let merged_into = |q: &str| value == json!({}) && q.starts_with(&format!("{path}."));
        let written_after = run.log.iter().any(|s| {
            s.stamp > delete.stamp && {
                let mut set = Vec::new();
                match &s.write {
                    FieldWrite::Put { value, .. } | FieldWrite::Patch { patch: value, .. } => {
                        leaves(value, &mut Vec::new(), &mut set)
                    }
                    FieldWrite::Increment { path, .. } => set.push((path.join("."), json!(0))),
                    FieldWrite::Delete { .. } => {}
                }
                set.iter()
                    .any(|(p, v)| (p == &path && !v.is_null()) || merged_into(p))
            }
        });
        let unseen_increment = run.log.iter().any(|s| {
            matches!(&s.write, FieldWrite::Increment { path: p, .. } if p.join(".") == path)
                && s.seq > delete.seen[s.origin]
        });
        prop_assert!(
            written_after || unseen_increment,
            "{} is back after the delete at {}",
            path,
            delete.stamp.wall_ms
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn five_replicas_converge_lose_no_write_and_bring_back_nothing_deleted(
        steps in proptest::collection::vec(step(), 1..80),
        seed in any::<u64>(),
        skew in any::<[u8; 5]>(),
    ) {
        let run = run(&steps, seed, &skew);
        converges(&run)?;
        no_write_lost(&run)?;
        nothing_seen_deleted_comes_back(&run)?;
    }

    #[test]
    fn every_counter_is_its_base_plus_every_increment_once(
        base in any::<i32>(),
        steps in proptest::collection::vec(counter_step(), 1..80),
        seed in any::<u64>(),
        skew in any::<[u8; 5]>(),
    ) {
        counters_add_up(base, &steps, seed, &skew)?;
    }

    #[test]
    fn joining_states_commutes_associates_and_is_idempotent(
        steps in proptest::collection::vec(step(), 1..60),
        seed in any::<u64>(),
        cuts in any::<[[u8; 5]; 3]>(),
    ) {
        join_laws(&steps, seed, &cuts)?;
    }
}

/// Increments of `n` and patches of other fields, with the network's faults.
fn counter_step() -> impl Strategy<Value = (usize, Step)> {
    step().prop_map(|(who, step)| {
        let step = match step {
            Step::Put(f, v) | Step::Patch(f, v, None) => Step::Patch(f, v, None),
            Step::Patch(f, v, Some(_)) => Step::Patch(f.wrapping_add(1), v, None),
            Step::Remove(f) => Step::Patch(f, f, None),
            Step::Delete => Step::Deliver(3),
            other => other,
        };
        (who, step)
    })
}

fn counters_add_up(
    base: i32,
    steps: &[(usize, Step)],
    seed: u64,
    skew: &[u8; 5],
) -> Result<(), TestCaseError> {
    let mut run = Run::new(seed, skew);
    run.write(
        0,
        FieldWrite::Put {
            value: json!({"n": base}),
            observed: Observed::new(),
        },
    );
    for r in 1..5 {
        run.receive(r, 0);
    }
    let mut sum = i64::from(base);
    for (who, step) in steps {
        let step = match step {
            // Counters here are `n`; patches write the other fields.
            Step::Increment(_, by) => {
                let before = run.log.len();
                run.write(
                    *who,
                    FieldWrite::Increment {
                        path: vec!["n".into()],
                        by: i64::from(*by),
                    },
                );
                if run.log.len() > before {
                    sum += i64::from(*by);
                }
                continue;
            }
            Step::Patch(f, v, _) => Step::Patch(f % 4, *v, None),
            other => other.clone(),
        };
        run.step(*who, &step);
    }
    run.settle();
    for (r, replica) in run.replicas.iter().enumerate() {
        let n = replica.state.value().and_then(|d| d.get("n").cloned());
        prop_assert_eq!(n, Some(json!(sum)), "replica {}", r);
    }
    Ok(())
}

/// States of the same writes (each a prefix of every origin's) joined in any grouping
/// give the state of all of them.
fn join_laws(steps: &[(usize, Step)], seed: u64, cuts: &[[u8; 5]; 3]) -> Result<(), TestCaseError> {
    let run = run(steps, seed, &[0; 5]);
    let counts: Vec<usize> = (0..5)
        .map(|o| run.log.iter().filter(|s| s.origin == o).count())
        .collect();
    let state_of = |cut: &[u8; 5]| {
        let mut state = FieldState::default();
        for s in &run.log {
            if (s.seq as usize) <= usize::from(cut[s.origin]) % (counts[s.origin] + 1) {
                state.apply(&s.stamp, &s.stamp.replica, &s.write);
            }
        }
        state
    };
    let [a, b, c] = [state_of(&cuts[0]), state_of(&cuts[1]), state_of(&cuts[2])];
    let join = |x: &FieldState, y: &FieldState| {
        let mut out = x.clone();
        out.join(y);
        out
    };
    let same = |x: &FieldState, y: &FieldState| x.to_json() == y.to_json();
    prop_assert!(same(&join(&a, &b), &join(&b, &a)), "join does not commute");
    prop_assert!(
        same(&join(&join(&a, &b), &c), &join(&a, &join(&b, &c))),
        "join does not associate"
    );
    prop_assert!(same(&join(&a, &a), &a), "join is not idempotent");
    // Joining is applying the writes either side had.
    let mut union = [0u8; 5];
    for o in 0..5 {
        let prefix = |cut: &[u8; 5]| usize::from(cut[o]) % (counts[o] + 1);
        union[o] = prefix(&cuts[0]).max(prefix(&cuts[1])) as u8;
    }
    let both = state_of(&union);
    prop_assert_eq!(
        join(&a, &b).value(),
        both.value(),
        "a join differs from applying both sides' writes"
    );
    Ok(())
}

/// Runs `property` under `breakage` until it fails; whether it did within `cases`.
fn fails_when_broken(
    breakage: Breakage,
    strategy: impl Strategy<Value = (Vec<(usize, Step)>, u64, [u8; 5])>,
    property: impl Fn(&[(usize, Step)], u64, &[u8; 5]) -> Result<(), TestCaseError>,
) -> bool {
    BROKEN.with(|b| b.set(Some(breakage)));
    let mut runner = TestRunner::new(Config {
        cases: 2_000,
        failure_persistence: None,
        ..Config::default()
    });
    let failed = runner
        .run(&strategy, |(steps, seed, skew)| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                property(&steps, seed, &skew)
            }))
            .unwrap_or_else(|_| Err(TestCaseError::fail("panicked")))
        })
        .is_err();
    BROKEN.with(|b| b.set(None));
    failed
}

fn runs() -> impl Strategy<Value = (Vec<(usize, Step)>, u64, [u8; 5])> {
    (
        proptest::collection::vec(step(), 1..80),
        any::<u64>(),
        any::<[u8; 5]>(),
    )
}

#[test]
fn each_property_fails_on_a_merge_broken_its_way() {
    assert!(
        fails_when_broken(Breakage::LastAppliedWins, runs(), |s, seed, skew| {
            converges(&run(s, seed, skew))
        }),
        "convergence holds with the last applied write winning"
    );
    assert!(
        fails_when_broken(Breakage::WholeDocument, runs(), |s, seed, skew| {
            no_write_lost(&run(s, seed, skew))
        }),
        "no write is lost with whole-document last writer wins"
    );
    assert!(
        fails_when_broken(Breakage::DeleteHidesNothing, runs(), |s, seed, skew| {
            nothing_seen_deleted_comes_back(&run(s, seed, skew))
        }),
        "nothing comes back with a delete that hides nothing"
    );
    let counter_runs = (
        proptest::collection::vec(counter_step(), 1..80),
        any::<u64>(),
        any::<[u8; 5]>(),
    );
    assert!(
        fails_when_broken(
            Breakage::IncrementOverwrites,
            counter_runs,
            |s, seed, skew| counters_add_up(10, s, seed, skew)
        ),
        "counters add up with increments that overwrite"
    );
    assert!(
        fails_when_broken(Breakage::JoinPrefersLeft, runs(), |s, seed, skew| {
            join_laws(s, seed, &[*skew, [seed as u8; 5], [3; 5]])
        }),
        "the join laws hold with a join that prefers its left side"
    );
}
