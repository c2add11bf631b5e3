//! The text a field state is kept (and sent in snapshots) as. Stamps name their replica
//! by its place in a table at the top, and a path set by the same write as the path
//! holding it (every field of a put) leaves its stamp out. Kept beside its document, a
//! state leaves out the values the document holds (`"d"`): they are read back from it,
//! so a state costs its stamps, not a second copy of the document. See
//! docs/protocol.md, "Field entries".

use super::{Counter, FieldState, Node, Set, Tally};
use crate::{Hlc, ReplicaId};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// A stamp: wall clock, counter, replica (its place in the table).
type Stamp = (u64, u32, u32);

#[derive(Deserialize)]
struct Stored {
    /// The replicas the stamps and tallies name.
    r: Vec<String>,
    /// The document's root.
    n: StoredNode,
}

#[derive(Deserialize, Default)]
struct StoredNode {
    /// The latest set: its stamp (absent: the enclosing path's set stamp) and what it set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    s: Option<(Option<Stamp>, StoredSet)>,
    /// The latest merge into it as an object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    m: Option<Stamp>,
    /// Its fields.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    f: BTreeMap<String, StoredNode>,
    /// Its counter: per replica (count, sum) applied, and observed by sets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    c: Option<StoredCounter>,
}

#[derive(Deserialize)]
enum StoredSet {
    #[serde(rename = "v")]
    Value(Value),
    #[serde(rename = "o")]
    Object,
    #[serde(rename = "x")]
    Removed,
    /// The value the document holds at this path.
    #[serde(rename = "d")]
    InDocument,
}

#[derive(Serialize, Deserialize)]
struct StoredCounter {
    t: Vec<(u32, u64, i64)>,
    o: Vec<(u32, u64, i64)>,
}

/// Only where a stored state keeps counters (see [`FieldState::stored_has_counters`]).
#[derive(Deserialize)]
struct Shape {
    n: ShapeNode,
}

#[derive(Deserialize)]
struct ShapeNode {
    #[serde(default)]
    f: BTreeMap<String, ShapeNode>,
    #[serde(default)]
    c: Option<serde::de::IgnoredAny>,
}

impl ShapeNode {
    fn has_counters(&self) -> bool {
        self.c.is_some() || self.f.values().any(ShapeNode::has_counters)
    }
}

/// What [`FieldState::to_json`] writes: the same form as [`Stored`], borrowing the
/// state's names and values rather than copying them.
#[derive(Serialize)]
struct Out<'a> {
    r: Vec<&'a str>,
    n: OutNode<'a>,
}

#[derive(Serialize)]
struct OutNode<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    s: Option<(Option<Stamp>, OutSet<'a>)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    m: Option<Stamp>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    f: BTreeMap<&'a str, OutNode<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    c: Option<StoredCounter>,
}

#[derive(Serialize)]
enum OutSet<'a> {
    #[serde(rename = "v")]
    Value(&'a Value),
    #[serde(rename = "o")]
    Object,
    #[serde(rename = "x")]
    Removed,
    #[serde(rename = "d")]
    InDocument,
}

/// The replicas a state names, in the order first met (a state names a few).
struct Table<'a> {
    names: Vec<&'a str>,
}

impl<'a> Table<'a> {
    fn place(&mut self, replica: &'a ReplicaId) -> u32 {
        let name = replica.as_str();
        let place = match self.names.iter().position(|n| *n == name) {
            Some(place) => place,
            None => {
                self.names.push(name);
                self.names.len() - 1
            }
        };
        u32::try_from(place).unwrap_or(u32::MAX)
    }

    fn stamp(&mut self, hlc: &'a Hlc) -> Stamp {
        (hlc.wall_ms, hlc.counter, self.place(&hlc.replica))
    }

    fn tallies(&mut self, tallies: &'a BTreeMap<ReplicaId, Tally>) -> Vec<(u32, u64, i64)> {
        tallies
            .iter()
            .map(|(replica, t)| (self.place(replica), t.count, t.sum))
            .collect()
    }
}

/// The field `name` of `document`, if it is an object holding one.
fn field<'v>(document: Option<&'v Value>, name: &str) -> Option<&'v Value> {
    document?.as_object()?.get(name)
}

/// `node` as stored; `document` is what the document holds at its path (`None`: nothing,
/// or the state is stored alone), and a value equal to it is left out.
fn store<'a>(
    node: &'a Node,
    enclosing: Option<&Hlc>,
    document: Option<&Value>,
    table: &mut Table<'a>,
) -> OutNode<'a> {
    let own = node.set.as_ref().map(|(stamp, _)| stamp);
    OutNode {
        s: node.set.as_ref().map(|(stamp, set)| {
            let stamp = (Some(stamp) != enclosing).then(|| table.stamp(stamp));
            let set = match set {
                // A value hidden by a later write, or a counter's base, differs from
                // what the document shows: it is kept whole.
                Set::Value(value) if document == Some(value) => OutSet::InDocument,
                Set::Value(value) => OutSet::Value(value),
                Set::Object => OutSet::Object,
                Set::Removed => OutSet::Removed,
            };
            (stamp, set)
        }),
        m: node.merged.as_ref().map(|stamp| table.stamp(stamp)),
        f: node
            .fields
            .iter()
            .map(|(name, node)| {
                (
                    name.as_str(),
                    store(node, own, field(document, name), table),
                )
            })
            .collect(),
        c: node.counter.as_ref().map(|counter| StoredCounter {
            t: table.tallies(&counter.tallies),
            o: table.tallies(&counter.observed),
        }),
    }
}

fn load(
    stored: StoredNode,
    enclosing: Option<&Hlc>,
    document: Option<&Value>,
    replicas: &[ReplicaId],
) -> Option<Node> {
    let stamp = |(wall_ms, counter, place): Stamp| -> Option<Hlc> {
        Some(Hlc {
            wall_ms,
            counter,
            replica: replicas.get(usize::try_from(place).ok()?)?.clone(),
        })
    };
    let tallies = |list: Vec<(u32, u64, i64)>| -> Option<BTreeMap<ReplicaId, Tally>> {
        list.into_iter()
            .map(|(place, count, sum)| {
                Some((
                    replicas.get(usize::try_from(place).ok()?)?.clone(),
                    Tally { count, sum },
                ))
            })
            .collect()
    };
    let set = match stored.s {
        None => None,
        Some((at, set)) => {
            let at = match at {
                Some(at) => stamp(at)?,
                None => enclosing?.clone(),
            };
            let set = match set {
                StoredSet::Value(value) => Set::Value(value),
                StoredSet::Object => Set::Object,
                StoredSet::Removed => Set::Removed,
                StoredSet::InDocument => Set::Value(document?.clone()),
            };
            Some((at, set))
        }
    };
    let own = set.as_ref().map(|(at, _)| at.clone());
    let mut fields = BTreeMap::new();
    for (name, field) in stored.f {
        let node = load(field, own.as_ref(), self::field(document, &name), replicas)?;
        fields.insert(name, node);
    }
    Some(Node {
        set,
        merged: match stored.m {
            Some(m) => Some(stamp(m)?),
            None => None,
        },
        fields,
        counter: match stored.c {
            Some(c) => Some(Counter {
                tallies: tallies(c.t)?,
                observed: tallies(c.o)?,
            }),
            None => None,
        },
    })
}

impl FieldState {
    /// The state as text on its own, every value in it.
    pub fn to_json(&self) -> String {
        self.to_json_beside(None)
    }

    /// The state as kept beside `document` (the document it makes: [`FieldState::value`])
    /// and sent with it in snapshots: the values `document` holds are left out.
    pub fn to_json_beside(&self, document: Option<&Value>) -> String {
        let mut table = Table { names: Vec::new() };
        let n = store(&self.root, None, document, &mut table);
        serde_json::to_string(&Out { r: table.names, n }).unwrap_or_default()
    }

    /// Whether a stored state (in either form) keeps a counter, read without its
    /// document; `None` when the text is not a state.
    pub fn stored_has_counters(text: &str) -> Option<bool> {
        let shape: Shape = serde_json::from_str(text).ok()?;
        Some(shape.n.has_counters())
    }

    /// A state stored on its own; `None` when the text is not one.
    pub fn from_json(text: &str) -> Option<Self> {
        Self::from_json_beside(text, None)
    }

    /// A state kept or received beside `document`, which holds the values it leaves out;
    /// `None` when the text is not one, or leaves out a value `document` lacks.
    pub fn from_json_beside(text: &str, document: Option<&Value>) -> Option<Self> {
        let stored: Stored = serde_json::from_str(text).ok()?;
        let replicas: Vec<ReplicaId> = stored
            .r
            .iter()
            .map(|name| ReplicaId::new(name).ok())
            .collect::<Option<_>>()?;
        Some(FieldState {
            root: load(stored.n, None, document, &replicas)?,
        })
    }
}
