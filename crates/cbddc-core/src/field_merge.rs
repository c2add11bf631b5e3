//! Field-level merge of one document: the state every replica keeps for a document, the
//! writes that change it, and the merged document it stands for. A pure engine: the
//! store keeps a state per document a field write reached (`cbddc-store`'s
//! `field_apply`), the wire carries the writes (`Operation::Merge`), and its rules are
//! checked on their own by `field_merge_props`. docs/data-model.md gives the rules with
//! their reasons, docs/protocol.md ("Field entries") the exact merge.
//!
//! **Rules.** Every write carries an HLC stamp; a later stamp wins, path by path.
//! - `put(v)` replaces the document as of its stamp: each field of `v` is set at that
//!   stamp, and every field written before it that `v` does not name is gone. A field
//!   written later (a concurrent patch with a later stamp) stays.
//! - `patch(p)` (JSON Merge Patch, RFC 7386): a field set to an object merges into the
//!   field (an object field stays an object, its other fields untouched); `null` removes
//!   the field; any other value replaces the field. Concurrent patches of different paths
//!   both survive; the same path resolves by stamp.
//! - `delete` removes every field written before it. A write with a later stamp makes
//!   the document exist again holding only what was written after the delete: nothing a
//!   writer saw deleted comes back. A delete and a concurrent patch resolve by stamp like
//!   any two writes of the same path (the document's root).
//! - `increment(path, n)`: every increment counts exactly once on every replica (each
//!   replica's increments are tallied apart). A write that sets or removes a counter's
//!   path — a put or patch of a number, a `null`, a put without the field — sets it *as
//!   its writer saw it*: the increments its writer had applied are folded into what it
//!   wrote, and increments it had not seen (made concurrently elsewhere) still count on
//!   top (a removed field reappears holding their sum). A delete of the document, or a
//!   scalar written over an object that holds counters, drops the increments its writer
//!   had seen with the rest of what it hides; increments stamped after it count from 0.
//! - An increment stamped after a delete makes the document exist again, like any write.
//! - Arrays are single values: a write replaces an array whole.

mod stored;

use crate::{Hlc, ReplicaId};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// The name of the format of field-level entries, as peers say it in handshakes: a node
/// writes them only once every peer reads it.
pub const FEATURE: &str = "field-merge";

/// What a local write does to its document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    /// Replace the document with this JSON text.
    Put(String),
    /// Delete the document.
    Delete,
    /// Merge this JSON Merge Patch (RFC 7386: an object; `null` removes a field) into the
    /// document (an absent document is `{}`).
    Patch(String),
    /// Add `by` to the integer at the dotted `path` (a missing field counts from 0;
    /// missing objects on the way are created).
    Increment {
        /// The field, dotted (`stock.count`).
        path: String,
        /// The signed amount.
        by: i64,
    },
}

/// The deepest path a write may name (fields of fields of …).
pub const MAX_DEPTH: usize = 32;

/// A write refused before anything is stored; the message names the path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MergeError {
    /// A patch must be a JSON object (RFC 7386 on a document).
    #[error("a patch must be a JSON object of the fields to change, not {found}")]
    PatchNotAnObject {
        /// What it was, in words.
        found: &'static str,
    },
    /// A path deeper than [`MAX_DEPTH`].
    #[error("the path {path} is deeper than {MAX_DEPTH} fields")]
    TooDeep {
        /// The path, dotted.
        path: String,
    },
    /// An increment of a field that holds something else than a number.
    #[error("cannot increment {path}: it holds {found}, not a number")]
    NotANumber {
        /// The path, dotted.
        path: String,
        /// What it holds, in words.
        found: &'static str,
    },
    /// An increment through a field that is not an object.
    #[error("cannot increment {path}: {parent} holds {found}, not an object")]
    ThroughNonObject {
        /// The path, dotted.
        path: String,
        /// The field in the way, dotted.
        parent: String,
        /// What it holds, in words.
        found: &'static str,
    },
    /// An increment past what a 64-bit integer holds.
    #[error("incrementing {path} by {by} overflows a 64-bit integer")]
    Overflow {
        /// The path, dotted.
        path: String,
        /// The amount.
        by: i64,
    },
    /// An empty path, or a path with an empty field name.
    #[error("the path {path:?} names no field (use a.b.c, with no empty part)")]
    BadPath {
        /// The path as given.
        path: String,
    },
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A replica's increments of one counter as some replica had applied them: how many, and
/// their sum (a replica's increments are applied in its order, so the count names a
/// prefix and the sum is that prefix's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// Increments applied.
    pub count: u64,
    /// Their sum.
    pub sum: i64,
}

/// What a write observed of the counters under the paths it sets: per counter path
/// (dotted), each replica's increments as its writer had applied them.
pub type Observed = BTreeMap<String, BTreeMap<ReplicaId, Tally>>;

/// A write of one document, as it travels (with its stamp beside it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FieldWrite {
    /// Replaces the document.
    Put {
        /// The new document.
        value: Value,
        /// The counters its writer had applied, under every path.
        observed: Observed,
    },
    /// Merges a JSON Merge Patch into the document.
    Patch {
        /// The patch (an object).
        patch: Value,
        /// The counters its writer had applied under the paths the patch sets.
        observed: Observed,
    },
    /// Adds `by` to the integer at `path` (dotted).
    Increment {
        /// The field, as path parts.
        path: Vec<String>,
        /// The signed amount.
        by: i64,
    },
    /// Removes the document.
    Delete {
        /// The counters its writer had applied, under every path.
        observed: Observed,
    },
}

/// How a path was last set as a whole.
#[derive(Debug, Clone, PartialEq)]
enum Set {
    /// A scalar or an array.
    Value(Value),
    /// An object, replacing what was there (a put).
    Object,
    /// Removed (`null` in a patch, a delete).
    Removed,
}

/// The increments of one counter path, per replica, and the most any write that set or
/// removed the path had seen of them (those are folded into what it wrote).
#[derive(Debug, Clone, Default, PartialEq)]
struct Counter {
    tallies: BTreeMap<ReplicaId, Tally>,
    observed: BTreeMap<ReplicaId, Tally>,
}

impl Counter {
    /// Takes a write's observation: per replica, the longest prefix any write saw.
    fn observe(&mut self, seen: &BTreeMap<ReplicaId, Tally>) {
        for (replica, tally) in seen {
            let held = self.observed.entry(replica.clone()).or_default();
            if tally.count > held.count {
                *held = *tally;
            }
        }
    }

    /// The increments no write that set the path had seen, summed (saturating, in
    /// replica order: every replica computes the same figure); `None` when there are none.
    fn unseen(&self) -> Option<i64> {
        let mut total = 0i64;
        let mut any = false;
        for (replica, tally) in &self.tallies {
            let seen = self.observed.get(replica).copied().unwrap_or_default();
            if tally.count > seen.count {
                any = true;
                total = total.saturating_add(tally.sum.saturating_sub(seen.sum));
            }
        }
        any.then_some(total)
    }
}

/// One path of the document: how it was last set, when it was last merged into as an
/// object, its fields, and its counter.
#[derive(Debug, Clone, Default, PartialEq)]
struct Node {
    set: Option<(Hlc, Set)>,
    merged: Option<Hlc>,
    fields: BTreeMap<String, Node>,
    counter: Option<Counter>,
}

fn later(a: &Option<Hlc>, b: &Hlc) -> bool {
    a.as_ref().is_none_or(|a| b > a)
}

/// A deliberately broken merge, for showing that each property test can fail (test
/// builds only; see `field_merge_props`).
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Breakage {
    /// A set replaces whatever is held, whatever its stamp: the last applied wins.
    LastAppliedWins,
    /// A patch replaces the whole document (whole-document last writer wins).
    WholeDocument,
    /// A delete hides nothing from a later write (EntglDb's recursive merge).
    DeleteHidesNothing,
    /// An increment overwrites its replica's tally instead of adding to it.
    IncrementOverwrites,
    /// A join keeps what the left side holds, whatever the stamps.
    JoinPrefersLeft,
}

#[cfg(test)]
thread_local! {
    pub(crate) static BROKEN: std::cell::Cell<Option<Breakage>> = const { std::cell::Cell::new(None) };
}

#[cfg(test)]
fn broken(breakage: Breakage) -> bool {
    BROKEN.with(|b| b.get() == Some(breakage))
}

impl Node {
    /// Sets this path as a whole at `stamp`, if no later set is held.
    fn set(&mut self, stamp: &Hlc, set: Set) {
        #[cfg(test)]
        if broken(Breakage::LastAppliedWins) {
            self.set = Some((stamp.clone(), set));
            return;
        }
        if self.set.as_ref().is_none_or(|(held, _)| stamp > held) {
            self.set = Some((stamp.clone(), set));
        }
    }

    fn merged_at(&mut self, stamp: &Hlc) {
        if later(&self.merged, stamp) {
            self.merged = Some(stamp.clone());
        }
    }

    /// Writes `value` here as a put does: the path replaced as of `stamp`.
    fn put(&mut self, stamp: &Hlc, value: &Value) {
        match value {
            Value::Object(fields) => {
                self.set(stamp, Set::Object);
                for (name, value) in fields {
                    self.fields
                        .entry(name.clone())
                        .or_default()
                        .put(stamp, value);
                }
            }
            Value::Null => self.set(stamp, Set::Removed),
            other => self.set(stamp, Set::Value(other.clone())),
        }
    }

    /// Merges `patch` here at `stamp` (RFC 7386, field by field).
    fn patch(&mut self, stamp: &Hlc, patch: &Map<String, Value>) {
        self.merged_at(stamp);
        for (name, value) in patch {
            let field = self.fields.entry(name.clone()).or_default();
            match value {
                Value::Object(inner) => field.patch(stamp, inner),
                Value::Null => field.set(stamp, Set::Removed),
                other => field.set(stamp, Set::Value(other.clone())),
            }
        }
    }

    /// The stamp below which this path's fields are gone: its last whole set.
    fn floor(&self, inherited: Option<&Hlc>) -> Option<Hlc> {
        #[cfg(test)]
        if broken(Breakage::DeleteHidesNothing) && matches!(self.set, Some((_, Set::Removed))) {
            return inherited.cloned();
        }
        let own = self.set.as_ref().map(|(stamp, _)| stamp);
        match (inherited, own) {
            (Some(a), Some(b)) => Some(a.max(b).clone()),
            (a, b) => a.or(b).cloned(),
        }
    }

    /// What this path holds, with everything stamped before `floor` gone.
    fn value(&self, floor: Option<&Hlc>) -> Option<Value> {
        let visible = |stamp: &Hlc| floor.is_none_or(|f| stamp >= f);
        let set = self.set.as_ref().filter(|(stamp, _)| visible(stamp));
        let merged = self.merged.as_ref().filter(|stamp| visible(stamp));
        // An object merge after the last whole set makes this an object again.
        let as_object = match (set, merged) {
            (Some((_, Set::Object)), _) => true,
            (Some((set_at, _)), Some(merged_at)) => merged_at > set_at,
            (None, Some(_)) => true,
            (Some(_), None) => false,
            (None, None) => {
                // Nothing here is visible: the fields, and the counter's unseen
                // increments, may still be (written after the floor by a patch that
                // reached only them cannot happen: a patch merges every ancestor).
                return self
                    .counter
                    .as_ref()
                    .and_then(Counter::unseen)
                    .map(Value::from);
            }
        };
        if as_object {
            let floor = self.floor(floor);
            let fields: Map<String, Value> = self
                .fields
                .iter()
                .filter_map(|(name, node)| Some((name.clone(), node.value(floor.as_ref())?)))
                .collect();
            return Some(Value::Object(fields));
        }
        let unseen = self.counter.as_ref().and_then(Counter::unseen);
        match (set.map(|(_, s)| s), unseen) {
            (Some(Set::Value(Value::Number(n))), Some(extra)) => Some(match n.as_i64() {
                Some(base) => Value::from(base.saturating_add(extra)),
                None => Value::from(n.as_f64().unwrap_or(0.0) + extra as f64),
            }),
            (_, Some(extra)) => Some(Value::from(extra)),
            (Some(Set::Value(value)), None) => Some(value.clone()),
            _ => None,
        }
    }

    /// The counters this node and its fields hold, by dotted path.
    fn counters(&self, path: &mut Vec<String>, out: &mut Observed) {
        if let Some(counter) = &self.counter {
            out.insert(path.join("."), counter.tallies.clone());
        }
        for (name, node) in &self.fields {
            path.push(name.clone());
            node.counters(path, out);
            path.pop();
        }
    }
}

/// What a replica keeps of one document to merge it field by field.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldState {
    root: Node,
}

fn depth_of(value: &Value) -> usize {
    match value {
        Value::Object(fields) => 1 + fields.values().map(depth_of).max().unwrap_or(0),
        Value::Array(items) => 1 + items.iter().map(depth_of).max().unwrap_or(0),
        _ => 0,
    }
}

/// Splits a dotted path (`addr.zip`) into its fields.
pub fn parse_path(path: &str) -> Result<Vec<String>, MergeError> {
    let parts: Vec<String> = path.split('.').map(str::to_string).collect();
    if path.is_empty() || parts.iter().any(String::is_empty) {
        return Err(MergeError::BadPath {
            path: path.to_string(),
        });
    }
    if parts.len() > MAX_DEPTH {
        return Err(MergeError::TooDeep {
            path: path.to_string(),
        });
    }
    Ok(parts)
}

impl FieldState {
    /// The document these writes make: `None` when it does not exist.
    pub fn value(&self) -> Option<Value> {
        self.root.value(None)
    }

    /// Applies a write stamped `stamp` by `replica` (its origin). Writes commute: every
    /// replica that applied the same writes, in any order (each origin's in its order),
    /// holds the same state.
    pub fn apply(&mut self, stamp: &Hlc, replica: &ReplicaId, write: &FieldWrite) {
        let observed = match write {
            FieldWrite::Put { value, observed } => {
                self.root.put(stamp, value);
                observed
            }
            FieldWrite::Patch { patch, observed } => {
                #[cfg(test)]
                if broken(Breakage::WholeDocument) {
                    self.root.put(stamp, patch);
                    return;
                }
                if let Value::Object(fields) = patch {
                    self.root.patch(stamp, fields);
                }
                observed
            }
            FieldWrite::Delete { observed } => {
                self.root.set(stamp, Set::Removed);
                observed
            }
            FieldWrite::Increment { path, by } => {
                let node = self.node(path, Some(stamp));
                let tally = node
                    .counter
                    .get_or_insert_with(Counter::default)
                    .tallies
                    .entry(replica.clone())
                    .or_default();
                tally.count += 1;
                tally.sum = tally.sum.saturating_add(*by);
                #[cfg(test)]
                if broken(Breakage::IncrementOverwrites) {
                    tally.sum = *by;
                }
                return;
            }
        };
        for (dotted, seen) in observed {
            let path: Vec<String> = dotted.split('.').map(str::to_string).collect();
            self.node(&path, None)
                .counter
                .get_or_insert_with(Counter::default)
                .observe(seen);
        }
    }

    /// The node at `path`, created if missing; with `merging`, every node on the way is
    /// merged into as an object at that stamp.
    fn node(&mut self, path: &[String], merging: Option<&Hlc>) -> &mut Node {
        let mut node = &mut self.root;
        for name in path {
            if let Some(stamp) = merging {
                node.merged_at(stamp);
            }
            node = node.fields.entry(name.clone()).or_default();
        }
        node
    }

    /// Checks a write made here (at its origin) and fills in what its writer observed;
    /// refused writes change nothing.
    pub fn prepare(&self, write: FieldWrite) -> Result<FieldWrite, MergeError> {
        let mut counters = Observed::new();
        self.root.counters(&mut Vec::new(), &mut counters);
        Ok(match write {
            FieldWrite::Put { value, .. } => {
                if depth_of(&value) > MAX_DEPTH {
                    return Err(MergeError::TooDeep {
                        path: "the document".into(),
                    });
                }
                FieldWrite::Put {
                    value,
                    observed: counters,
                }
            }
            FieldWrite::Patch { patch, .. } => {
                if !patch.is_object() {
                    return Err(MergeError::PatchNotAnObject {
                        found: kind(&patch),
                    });
                }
                if depth_of(&patch) > MAX_DEPTH {
                    return Err(MergeError::TooDeep {
                        path: "the patch".into(),
                    });
                }
                let observed = counters
                    .into_iter()
                    .filter(|(path, _)| patch_sets(&patch, path))
                    .collect();
                FieldWrite::Patch { patch, observed }
            }
            FieldWrite::Increment { path, by } => {
                let dotted = path.join(".");
                if path.is_empty() || path.iter().any(String::is_empty) {
                    return Err(MergeError::BadPath { path: dotted });
                }
                if path.len() > MAX_DEPTH {
                    return Err(MergeError::TooDeep { path: dotted });
                }
                let document = self.value().unwrap_or_else(|| Value::Object(Map::new()));
                let mut here = &document;
                for (depth, name) in path.iter().enumerate() {
                    let Value::Object(fields) = here else {
                        return Err(MergeError::ThroughNonObject {
                            path: dotted,
                            parent: path[..depth].join("."),
                            found: kind(here),
                        });
                    };
                    match fields.get(name) {
                        Some(next) => here = next,
                        None => {
                            here = &Value::Null;
                            break;
                        }
                    }
                }
                match here {
                    Value::Null => {}
                    Value::Number(n) => match n.as_i64() {
                        Some(current) if current.checked_add(by).is_none() => {
                            return Err(MergeError::Overflow { path: dotted, by });
                        }
                        _ => {}
                    },
                    other => {
                        return Err(MergeError::NotANumber {
                            path: dotted,
                            found: kind(other),
                        });
                    }
                }
                FieldWrite::Increment { path, by }
            }
            FieldWrite::Delete { .. } => FieldWrite::Delete { observed: counters },
        })
    }
}

impl FieldWrite {
    /// Checks a write that came from outside the process (a peer's entry): a patch is an
    /// object, no value or path is deeper than [`MAX_DEPTH`], no path has an empty part.
    pub fn check(&self) -> Result<(), MergeError> {
        let observed = match self {
            FieldWrite::Put { value, observed } => {
                if depth_of(value) > MAX_DEPTH {
                    return Err(MergeError::TooDeep {
                        path: "the document".into(),
                    });
                }
                observed
            }
            FieldWrite::Patch { patch, observed } => {
                check_patch(patch)?;
                observed
            }
            FieldWrite::Increment { path, .. } => {
                check_parts(path)?;
                return Ok(());
            }
            FieldWrite::Delete { observed } => observed,
        };
        for dotted in observed.keys() {
            parse_path(dotted)?;
        }
        Ok(())
    }

    /// The write's kind, in one word.
    pub fn kind(&self) -> &'static str {
        match self {
            FieldWrite::Put { .. } => "put",
            FieldWrite::Patch { .. } => "patch",
            FieldWrite::Increment { .. } => "increment",
            FieldWrite::Delete { .. } => "delete",
        }
    }
}

fn check_parts(path: &[String]) -> Result<(), MergeError> {
    let dotted = path.join(".");
    if path.is_empty() || path.iter().any(|p| p.is_empty() || p.contains('.')) {
        return Err(MergeError::BadPath { path: dotted });
    }
    if path.len() > MAX_DEPTH {
        return Err(MergeError::TooDeep { path: dotted });
    }
    Ok(())
}

impl FieldState {
    /// The state of a document only whole-document writes made: `document` (`None`: a
    /// delete) written at `stamp`.
    pub fn from_whole(document: Option<&Value>, stamp: &Hlc) -> Self {
        let mut state = Self::default();
        match document {
            Some(value) => state.root.put(stamp, value),
            None => state.root.set(stamp, Set::Removed),
        }
        state
    }

    /// Whether some path holds a counter (increments, tallied per replica).
    pub fn has_counters(&self) -> bool {
        fn walk(node: &Node) -> bool {
            node.counter.is_some() || node.fields.values().any(walk)
        }
        walk(&self.root)
    }

    /// The latest stamp anything in the state carries.
    pub fn latest(&self) -> Option<Hlc> {
        fn walk(node: &Node, best: &mut Option<Hlc>) {
            for stamp in node.set.iter().map(|(s, _)| s).chain(node.merged.iter()) {
                if best.as_ref().is_none_or(|b| stamp > b) {
                    *best = Some(stamp.clone());
                }
            }
            for field in node.fields.values() {
                walk(field, best);
            }
        }
        let mut best = None;
        walk(&self.root, &mut best);
        best
    }
}

impl Counter {
    fn join(&mut self, other: &Counter) {
        for (mine, theirs) in [
            (&mut self.tallies, &other.tallies),
            (&mut self.observed, &other.observed),
        ] {
            for (replica, tally) in theirs {
                let held = mine.entry(replica.clone()).or_default();
                if tally.count > held.count {
                    *held = *tally;
                }
            }
        }
    }
}

impl Node {
    fn join(&mut self, other: &Node) {
        if let Some((stamp, set)) = &other.set {
            self.set(stamp, set.clone());
        }
        if let Some(stamp) = &other.merged {
            self.merged_at(stamp);
        }
        for (name, field) in &other.fields {
            self.fields.entry(name.clone()).or_default().join(field);
        }
        if let Some(counter) = &other.counter {
            self.counter
                .get_or_insert_with(Counter::default)
                .join(counter);
        }
    }
}

impl FieldState {
    /// Takes in everything `other` holds: the state of a replica that applied the writes
    /// either of them applied (how a snapshot's state meets the receiver's). Every part
    /// of a state only grows (a later stamp, a longer tally), so joining commutes and
    /// joining twice changes nothing.
    pub fn join(&mut self, other: &FieldState) {
        #[cfg(test)]
        if broken(Breakage::JoinPrefersLeft) {
            for (name, field) in &other.root.fields {
                self.root
                    .fields
                    .entry(name.clone())
                    .or_insert_with(|| field.clone());
            }
            return;
        }
        self.root.join(&other.root);
    }
}

/// The dotted paths whose values differ between two versions of a document (`None`:
/// absent); the root is named `""`. A field that is an object on both sides is compared
/// field by field, anything else as one value.
pub fn changed_paths(before: Option<&Value>, after: Option<&Value>) -> Vec<String> {
    fn walk<'a>(
        before: Option<&'a Value>,
        after: Option<&'a Value>,
        path: &mut Vec<&'a str>,
        out: &mut Vec<String>,
    ) {
        if before == after {
            return;
        }
        let (Some(Value::Object(a)), Some(Value::Object(b))) = (before, after) else {
            out.push(path.join("."));
            return;
        };
        // Both sides' names in order, each once.
        let mut names: Vec<&str> = a.keys().chain(b.keys()).map(String::as_str).collect();
        names.sort_unstable();
        names.dedup();
        for name in names {
            path.push(name);
            walk(a.get(name), b.get(name), path, out);
            path.pop();
        }
    }
    let mut out = Vec::new();
    walk(before, after, &mut Vec::new(), &mut out);
    out
}

/// Parses a patch's JSON text: it must be an object no deeper than [`MAX_DEPTH`].
pub fn parse_patch(text: &str) -> Result<Value, MergeError> {
    let patch: Value = serde_json::from_str(text).map_err(|_| MergeError::PatchNotAnObject {
        found: "text that is not JSON",
    })?;
    check_patch(&patch)?;
    Ok(patch)
}

/// A patch is an object no deeper than [`MAX_DEPTH`].
fn check_patch(patch: &Value) -> Result<(), MergeError> {
    if !patch.is_object() {
        return Err(MergeError::PatchNotAnObject { found: kind(patch) });
    }
    if depth_of(patch) > MAX_DEPTH {
        return Err(MergeError::TooDeep {
            path: "the patch".into(),
        });
    }
    Ok(())
}

/// RFC 7386: merges `patch` into `target`.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(fields) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(held) = target {
        for (name, value) in fields {
            if value.is_null() {
                held.remove(name);
            } else {
                merge_patch(held.entry(name.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

/// Resolves a patch or an increment made on this node into the whole document it makes
/// of `current` (the document as stored, `None` when absent: `{}`), as JSON text. How
/// edits travel until field-level merge is in force: the result is written as a put.
/// A put or delete resolves to itself.
pub fn resolve_whole(current: Option<&str>, edit: &Edit) -> Result<Option<String>, MergeError> {
    let current = || -> Value {
        current
            .and_then(|text| serde_json::from_str(text).ok())
            .unwrap_or_else(|| Value::Object(Map::new()))
    };
    let document = match edit {
        Edit::Put(value) => return Ok(Some(value.clone())),
        Edit::Delete => return Ok(None),
        Edit::Patch(text) => {
            let patch = parse_patch(text)?;
            let mut document = current();
            merge_patch(&mut document, &patch);
            document
        }
        Edit::Increment { path, by } => {
            let parts = parse_path(path)?;
            let mut document = current();
            increment_in(&mut document, &parts, *by)?;
            document
        }
    };
    Ok(Some(document.to_string()))
}

/// Adds `by` to the integer at `path` in `document`, creating missing objects on the way.
fn increment_in(document: &mut Value, path: &[String], by: i64) -> Result<(), MergeError> {
    let dotted = path.join(".");
    let mut here = document;
    for (depth, name) in path.iter().enumerate() {
        let found = kind(here);
        let Value::Object(fields) = here else {
            return Err(MergeError::ThroughNonObject {
                path: dotted,
                parent: if depth == 0 {
                    "the document".into()
                } else {
                    path[..depth].join(".")
                },
                found,
            });
        };
        let last = depth + 1 == path.len();
        here = fields.entry(name.clone()).or_insert_with(|| {
            if last {
                Value::from(0)
            } else {
                Value::Object(Map::new())
            }
        });
    }
    let current = match here {
        Value::Number(n) => n.as_i64().ok_or_else(|| MergeError::NotANumber {
            path: dotted.clone(),
            found: "a number that is not a 64-bit integer",
        })?,
        Value::Null => 0,
        other => {
            return Err(MergeError::NotANumber {
                path: dotted,
                found: kind(other),
            });
        }
    };
    let sum = current
        .checked_add(by)
        .ok_or(MergeError::Overflow { path: dotted, by })?;
    *here = Value::from(sum);
    Ok(())
}

/// Whether `patch` sets the field at dotted `path` (or one of its ancestors) as a whole.
fn patch_sets(patch: &Value, path: &str) -> bool {
    let mut here = patch;
    for name in path.split('.') {
        match here {
            Value::Object(fields) => match fields.get(name) {
                Some(next) => here = next,
                None => return false,
            },
            _ => return true,
        }
    }
    !here.is_object()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn replica(name: &str) -> ReplicaId {
        ReplicaId::new(name).unwrap()
    }

    fn stamp(wall_ms: u64, name: &str) -> Hlc {
        Hlc {
            wall_ms,
            counter: 0,
            replica: replica(name),
        }
    }

    /// A replica applying writes as their origin does: prepare, then apply.
    fn write(state: &mut FieldState, at: u64, name: &str, write: FieldWrite) -> FieldWrite {
        let prepared = state.prepare(write).unwrap();
        state.apply(&stamp(at, name), &replica(name), &prepared);
        prepared
    }

    fn put(value: Value) -> FieldWrite {
        FieldWrite::Put {
            value,
            observed: Observed::new(),
        }
    }

    fn patch(patch: Value) -> FieldWrite {
        FieldWrite::Patch {
            patch,
            observed: Observed::new(),
        }
    }

    fn delete() -> FieldWrite {
        FieldWrite::Delete {
            observed: Observed::new(),
        }
    }

    fn increment(path: &str, by: i64) -> FieldWrite {
        FieldWrite::Increment {
            path: parse_path(path).unwrap(),
            by,
        }
    }

    #[test]
    fn the_state_travels_in_the_form_docs_protocol_md_gives() {
        let mut state = FieldState::default();
        state.apply(
            &stamp(1, "a"),
            &replica("a"),
            &put(json!({"x": 1, "y": {"z": 2}})),
        );
        state.apply(&stamp(2, "b"), &replica("b"), &increment("n", 3));
        state.apply(&stamp(3, "a"), &replica("a"), &patch(json!({"x": null})));
        assert_eq!(
            serde_json::from_str::<Value>(&state.to_json()).unwrap(),
            json!({
                "r": ["a", "b"],
                "n": {
                    "s": [[1, 0, 0], "o"],
                    "m": [3, 0, 0],
                    "f": {
                        "x": {"s": [[3, 0, 0], "x"]},
                        "y": {"s": [null, "o"], "f": {"z": {"s": [null, {"v": 2}]}}},
                        "n": {"c": {"t": [[1, 1, 3]], "o": []}}
                    }
                }
            })
        );
        assert_eq!(FieldState::from_json(&state.to_json()), Some(state.clone()));
        // Beside its document, the state leaves out the values the document holds (the
        // counter's base would stay, as would a value a later write hid).
        let document = state.value();
        assert_eq!(document, Some(json!({"y": {"z": 2}, "n": 3})));
        let kept = state.to_json_beside(document.as_ref());
        assert_eq!(
            serde_json::from_str::<Value>(&kept).unwrap()["n"]["f"]["y"]["f"]["z"],
            json!({"s": [null, "d"]})
        );
        assert_eq!(
            FieldState::from_json_beside(&kept, document.as_ref()),
            Some(state.clone())
        );
        // Compaction reads whether a state keeps counters without its document.
        assert_eq!(FieldState::stored_has_counters(&kept), Some(true));
        let plain = FieldState::from_whole(Some(&json!({"x": [{"c": 1}]})), &stamp(1, "a"));
        assert_eq!(
            FieldState::stored_has_counters(&plain.to_json()),
            Some(false)
        );
        assert_eq!(FieldState::stored_has_counters("[]"), None);
        // A value left out that the document lacks.
        assert_eq!(FieldState::from_json_beside(&kept, Some(&json!({}))), None);
        assert_eq!(FieldState::from_json(&kept), None);
        // A stamp naming no replica of the table, or an elided stamp with none to take.
        assert_eq!(
            FieldState::from_json(r#"{"r":[],"n":{"s":[[1,0,0],"o"]}}"#),
            None
        );
        assert_eq!(
            FieldState::from_json(r#"{"r":[],"n":{"s":[null,"o"]}}"#),
            None
        );
    }

    #[test]
    fn concurrent_edits_of_different_fields_both_survive() {
        let mut a = FieldState::default();
        let base = write(
            &mut a,
            1,
            "a",
            put(json!({"status": "new", "addr": {"city": "P", "zip": "1"}})),
        );
        let mut b = FieldState::default();
        b.apply(&stamp(1, "a"), &replica("a"), &base);
        let on_a = write(&mut a, 2, "a", patch(json!({"status": "open"})));
        let on_b = write(
            &mut b,
            3,
            "b",
            patch(json!({"addr": {"zip": "2"}, "assignee": "bob"})),
        );
        a.apply(&stamp(3, "b"), &replica("b"), &on_b);
        b.apply(&stamp(2, "a"), &replica("a"), &on_a);
        let expected =
            json!({"status": "open", "addr": {"city": "P", "zip": "2"}, "assignee": "bob"});
        assert_eq!(a.value(), Some(expected.clone()));
        assert_eq!(b.value(), Some(expected));
    }

    #[test]
    fn a_put_removes_the_fields_it_does_not_name_unless_written_later() {
        let mut s = FieldState::default();
        write(&mut s, 1, "a", put(json!({"x": 1, "y": 2})));
        // A patch stamped after the put (concurrent, later clock) keeps its field.
        let late = write(&mut FieldState::default(), 5, "b", patch(json!({"z": 3})));
        write(&mut s, 4, "a", put(json!({"x": 9})));
        s.apply(&stamp(5, "b"), &replica("b"), &late);
        assert_eq!(s.value(), Some(json!({"x": 9, "z": 3})));
        // A patch stamped before the put is gone with the put.
        let early = write(&mut FieldState::default(), 3, "c", patch(json!({"w": 1})));
        s.apply(&stamp(3, "c"), &replica("c"), &early);
        assert_eq!(s.value(), Some(json!({"x": 9, "z": 3})));
    }

    #[test]
    fn a_delete_hides_what_came_before_and_a_later_write_recreates_only_itself() {
        let mut s = FieldState::default();
        write(&mut s, 1, "a", put(json!({"x": 1, "y": 2})));
        write(&mut s, 2, "a", delete());
        assert_eq!(s.value(), None);
        write(&mut s, 3, "a", patch(json!({"y": 5})));
        assert_eq!(s.value(), Some(json!({"y": 5})), "x stays deleted");
        // A concurrent patch stamped before the delete does not bring anything back.
        let early = write(&mut FieldState::default(), 1, "b", patch(json!({"x": 7})));
        s.apply(&stamp(1, "b"), &replica("b"), &early);
        assert_eq!(s.value(), Some(json!({"y": 5})));
    }

    #[test]
    fn null_removes_a_field_and_a_scalar_replaces_an_object() {
        let mut s = FieldState::default();
        write(&mut s, 1, "a", put(json!({"addr": {"city": "P"}, "n": 1})));
        write(&mut s, 2, "a", patch(json!({"n": null, "addr": "none"})));
        assert_eq!(s.value(), Some(json!({"addr": "none"})));
        write(&mut s, 3, "a", patch(json!({"addr": {"zip": "2"}})));
        assert_eq!(
            s.value(),
            Some(json!({"addr": {"zip": "2"}})),
            "city was replaced"
        );
    }

    #[test]
    fn concurrent_increments_all_count_and_a_set_keeps_what_it_had_not_seen() {
        let (mut a, mut b) = (FieldState::default(), FieldState::default());
        let base = write(&mut a, 1, "a", put(json!({"n": 10})));
        b.apply(&stamp(1, "a"), &replica("a"), &base);
        let ia = write(&mut a, 2, "a", increment("n", 5));
        let ib = write(&mut b, 2, "b", increment("n", 7));
        // a sets n to 100 having seen its own +5 but not b's +7.
        let set = write(&mut a, 3, "a", patch(json!({"n": 100})));
        b.apply(&stamp(2, "a"), &replica("a"), &ia);
        b.apply(&stamp(3, "a"), &replica("a"), &set);
        a.apply(&stamp(2, "b"), &replica("b"), &ib);
        assert_eq!(a.value(), Some(json!({"n": 107})));
        assert_eq!(b.value(), Some(json!({"n": 107})));
    }

    #[test]
    fn a_removed_counter_keeps_what_its_remover_had_not_seen_and_a_delete_drops_it() {
        let (mut a, mut b) = (FieldState::default(), FieldState::default());
        let base = write(&mut a, 1, "a", put(json!({"n": 1, "m": 1})));
        b.apply(&stamp(1, "a"), &replica("a"), &base);
        let seen = write(&mut a, 2, "a", increment("n", 2));
        b.apply(&stamp(2, "a"), &replica("a"), &seen);
        let unseen = write(&mut b, 3, "b", increment("n", 4));
        // a removes n having seen its own +2 only: b's +4 makes n reappear.
        write(&mut a, 4, "a", patch(json!({"n": null})));
        a.apply(&stamp(3, "b"), &replica("b"), &unseen);
        assert_eq!(a.value(), Some(json!({"m": 1, "n": 4})));
        // A delete stamped later drops the counter with the document…
        write(&mut a, 5, "a", delete());
        assert_eq!(a.value(), None);
        // …and an increment stamped after it starts again from 0.
        write(&mut a, 6, "a", increment("n", 3));
        assert_eq!(a.value(), Some(json!({"n": 3})));
    }

    #[test]
    fn edits_resolve_into_the_whole_document_they_make() {
        let doc = r#"{"status":"new","addr":{"city":"P","zip":"1"},"n":1}"#;
        let patched = resolve_whole(
            Some(doc),
            &Edit::Patch(r#"{"addr":{"zip":"2"},"status":null,"tags":["a"]}"#.into()),
        )
        .unwrap()
        .unwrap();
        let patched: Value = serde_json::from_str(&patched).unwrap();
        assert_eq!(
            patched,
            json!({"addr": {"city": "P", "zip": "2"}, "n": 1, "tags": ["a"]})
        );
        let bumped = resolve_whole(
            Some(doc),
            &Edit::Increment {
                path: "stock.count".into(),
                by: -3,
            },
        )
        .unwrap()
        .unwrap();
        let bumped: Value = serde_json::from_str(&bumped).unwrap();
        assert_eq!(bumped["stock"]["count"], json!(-3));
        assert_eq!(
            resolve_whole(None, &Edit::Patch(r#"{"a":1}"#.into())).unwrap(),
            Some(r#"{"a":1}"#.into())
        );
        let refused = |current: &str, edit: Edit| {
            resolve_whole(Some(current), &edit).unwrap_err().to_string()
        };
        assert!(refused(doc, Edit::Patch("[1]".into())).contains("JSON object"));
        let through = refused(
            doc,
            Edit::Increment {
                path: "status.x".into(),
                by: 1,
            },
        );
        assert!(through.contains("status holds a string"), "{through}");
        let not_number = refused(
            doc,
            Edit::Increment {
                path: "addr".into(),
                by: 1,
            },
        );
        assert!(
            not_number.contains("addr: it holds an object"),
            "{not_number}"
        );
        let overflow = refused(
            r#"{"n":9223372036854775807}"#,
            Edit::Increment {
                path: "n".into(),
                by: 1,
            },
        );
        assert!(overflow.contains("overflows"), "{overflow}");
    }

    #[test]
    fn bad_writes_are_refused_naming_the_path() {
        let mut s = FieldState::default();
        write(
            &mut s,
            1,
            "a",
            put(json!({"addr": "x", "n": i64::MAX, "s": "t"})),
        );
        let refused = |w| s.prepare(w).unwrap_err().to_string();
        assert!(refused(patch(json!([1]))).contains("JSON object"));
        assert!(refused(increment("addr.city", 1)).contains("addr holds a string"));
        assert!(refused(increment("s", 1)).contains("s: it holds a string"));
        assert!(refused(increment("n", 1)).contains("overflows"));
        assert!(parse_path("a..b").is_err());
        let deep = (0..40)
            .map(|i| format!("f{i}"))
            .collect::<Vec<_>>()
            .join(".");
        assert!(matches!(parse_path(&deep), Err(MergeError::TooDeep { .. })));
    }
}
