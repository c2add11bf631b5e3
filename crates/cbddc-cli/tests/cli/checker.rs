//! What a fault scenario promises, checked from outside: every write a node acknowledged
//! is recorded with its stamp; once the faults are over, every node holds the same
//! documents, nothing acknowledged is missing, and each key holds the value of its
//! latest acknowledged write (last writer wins by HLC); and the nodes agree on one
//! leader.

use crate::lan::HostNode;
use std::collections::BTreeMap;

pub const COLLECTION: &str = "ledger";

/// An HLC as the CLI prints it (`wall.counter@replica`), ordered as the store orders it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Stamp(u64, u32, String);

impl Stamp {
    /// A stamp just after `other` (for the checker's own test).
    pub fn later_than(other: &Stamp) -> Stamp {
        Stamp(other.0 + 1, 0, other.2.clone())
    }

    fn parse(text: &str) -> Option<Self> {
        let (clock, replica) = text.split_once('@')?;
        let (wall, counter) = clock.split_once('.')?;
        Some(Self(
            wall.parse().ok()?,
            counter.parse().ok()?,
            replica.to_string(),
        ))
    }
}

/// One acknowledged write.
#[derive(Debug, Clone)]
pub struct Ack {
    pub node: String,
    pub key: String,
    pub value: String,
    pub stamp: Stamp,
}

/// The acknowledged writes of a scenario.
#[derive(Debug, Default)]
pub struct Ledger {
    pub acknowledged: Vec<Ack>,
    /// Writes that were refused or failed (not promised, so not checked).
    pub refused: usize,
}

impl Ledger {
    /// Writes `key = value` on `node`; records it if the node acknowledged it.
    pub fn put(&mut self, node: &HostNode, key: &str, value: u64) -> bool {
        let value = format!("{{\"v\":{value}}}");
        let out = node.cli(&["put", COLLECTION, key, &value]);
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        let stamp = said
            .split_whitespace()
            .find_map(|word| word.strip_prefix("hlc="))
            .and_then(Stamp::parse);
        match (out.status.success(), stamp) {
            (true, Some(stamp)) => {
                self.acknowledged.push(Ack {
                    node: node.node_id.clone(),
                    key: key.to_string(),
                    value,
                    stamp,
                });
                true
            }
            (true, None) => panic!("an acknowledged put without its stamp: {said}"),
            (false, _) => {
                self.refused += 1;
                false
            }
        }
    }

    /// For each key, the value its latest acknowledged write set.
    fn winners(&self) -> BTreeMap<&str, &Ack> {
        let mut winners: BTreeMap<&str, &Ack> = BTreeMap::new();
        for ack in &self.acknowledged {
            let entry = winners.entry(ack.key.as_str()).or_insert(ack);
            if ack.stamp > entry.stamp {
                *entry = ack;
            }
        }
        winners
    }

    /// `Ok` once every node in `nodes` holds identical documents with every
    /// acknowledged write's winner; otherwise what is wrong, in words.
    pub fn check(&self, nodes: &[&HostNode]) -> Result<(), String> {
        let mut first: Option<(&str, BTreeMap<String, String>)> = None;
        for node in nodes {
            let held = documents(node)?;
            for (key, ack) in self.winners() {
                match held.get(key) {
                    None => {
                        return Err(format!(
                            "{} lacks {key}, acknowledged by {} ({:?})",
                            node.node_id, ack.node, ack.stamp
                        ));
                    }
                    Some(value) if value != &ack.value => {
                        return Err(format!(
                            "{} holds {key} = {value}, but the latest acknowledged write set {} (by {})",
                            node.node_id, ack.value, ack.node
                        ));
                    }
                    Some(_) => {}
                }
            }
            match &first {
                None => first = Some((&node.node_id, held)),
                Some((other, theirs)) if theirs != &held => {
                    return Err(format!(
                        "{} and {other} hold different documents ({} and {})",
                        node.node_id,
                        held.len(),
                        theirs.len()
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}

fn documents(node: &HostNode) -> Result<BTreeMap<String, String>, String> {
    let out = node.cli(&["list", COLLECTION, "--json"]);
    if !out.status.success() {
        return Err(format!("{} does not list its documents", node.node_id));
    }
    let list: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("{} listed unreadable JSON: {e}", node.node_id))?;
    Ok(list
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            (
                d["key"].as_str().unwrap_or_default().to_string(),
                d["value"].to_string(),
            )
        })
        .collect())
}

/// The leader every node names, if they all name the same one and exactly that node
/// says it leads.
pub fn agreed_leader(nodes: &[&HostNode]) -> Option<String> {
    let mut leaders = Vec::new();
    let mut claiming = 0;
    for node in nodes {
        let status = node.status()?;
        leaders.push(status["leader"].as_str()?.to_string());
        if status["is_leader"] == true {
            claiming += 1;
        }
    }
    let first = leaders.first()?.clone();
    (claiming == 1 && leaders.iter().all(|l| *l == first)).then_some(first)
}
