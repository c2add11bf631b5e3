//! Two live processes under one node id (a cloned VM, a second container started from
//! the same volume) are harmless to the data — each writes as its own replica — but an
//! operator must hear of them: they fight over the name in the election and in status.
//!
//! A node watches the replicas its peers' sessions announce. A restarted peer moves to a
//! new replica and never comes back to the old one, so a session of an *older* replica
//! arriving after a newer one was seen recently means two processes are alive. The
//! watching node logs an error naming both addresses and replicas, lists it in `status`,
//! and tells the processes concerned in its pull answers; a node told so logs it and
//! lists it in its own `status`.

use cbddc_core::{NodeId, ReplicaId};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A newer replica seen within this window makes an older one's session a duplicate.
const LIVE_WINDOW: Duration = Duration::from_secs(60);
/// Replicas remembered per node id.
const MAX_REPLICAS: usize = 8;

#[derive(Debug)]
struct Sighting {
    replica: ReplicaId,
    address: String,
    last_seen: Instant,
}

#[derive(Debug, Default)]
struct Inner {
    /// Per node id, its replicas in the order they were first seen.
    seen: BTreeMap<NodeId, Vec<Sighting>>,
    /// Duplicates seen here, described.
    found: BTreeMap<NodeId, String>,
    /// What peers told us about our own node id.
    told: BTreeMap<NodeId, String>,
}

/// Notices of this node's id running as two live processes (see the module docs).
#[derive(Debug, Default)]
pub struct DuplicateWatch {
    inner: Mutex<Inner>,
}

impl DuplicateWatch {
    /// Records a session of `node` as `replica` from `address`; returns the notice for
    /// that session if `node` runs as two live processes.
    pub fn observe(&self, node: &NodeId, replica: &ReplicaId, address: &str) -> Option<String> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let sightings = inner.seen.entry(node.clone()).or_default();
        let position = sightings.iter().position(|s| &s.replica == replica);
        let clash = match position {
            Some(index) => {
                let clash = sightings[index + 1..]
                    .iter()
                    .find(|newer| now.duration_since(newer.last_seen) < LIVE_WINDOW)
                    .map(|newer| (newer.replica.clone(), newer.address.clone()));
                let sighting = &mut sightings[index];
                sighting.last_seen = now;
                sighting.address = address.to_string();
                clash
            }
            None => {
                sightings.push(Sighting {
                    replica: replica.clone(),
                    address: address.to_string(),
                    last_seen: now,
                });
                if sightings.len() > MAX_REPLICAS {
                    sightings.remove(0);
                }
                None
            }
        };
        if let Some((other, other_address)) = clash {
            let text = format!(
                "two live processes run as node {node}: replica {} at {address} and replica {} at {other_address}; stop one, or give it another node id and a data dir of its own",
                replica.short(),
                other.short()
            );
            if inner.found.get(node) != Some(&text) {
                tracing::error!(%node, first = %address, second = %other_address, "{text}");
            }
            inner.found.insert(node.clone(), text.clone());
        }
        inner.found.get(node).cloned()
    }

    /// A peer says another live process runs under our node id.
    pub fn told(&self, by: &NodeId, notice: &str) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.told.get(by).map(String::as_str) != Some(notice) {
            tracing::error!(peer = %by, "{notice} (as {by} sees it)");
            inner.told.insert(by.clone(), notice.to_string());
        }
    }

    /// Everything known about duplicates, for `status`.
    pub fn report(&self) -> Vec<String> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner
            .found
            .values()
            .cloned()
            .chain(
                inner
                    .told
                    .iter()
                    .map(|(by, notice)| format!("{notice} (as {by} sees it)")),
            )
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restart_is_not_a_duplicate_but_two_replicas_taking_turns_are() {
        let watch = DuplicateWatch::default();
        let node = NodeId::new("node-a").unwrap();
        let [first, second] = ["aaaaaaaa11", "bbbbbbbb22"].map(|r| ReplicaId::new(r).unwrap());
        assert_eq!(watch.observe(&node, &first, "10.0.0.1:4000"), None);
        assert_eq!(watch.observe(&node, &first, "10.0.0.1:4001"), None);
        // Restarted: a new replica, the old one never again.
        assert_eq!(watch.observe(&node, &second, "10.0.0.1:4002"), None);
        assert_eq!(watch.observe(&node, &second, "10.0.0.1:4003"), None);
        assert!(watch.report().is_empty());
        // The old replica is alive after all: two processes.
        let notice = watch.observe(&node, &first, "10.0.0.9:5000").unwrap();
        assert!(
            notice.contains("10.0.0.9:5000") && notice.contains("10.0.0.1:4003"),
            "{notice}"
        );
        assert!(watch.observe(&node, &second, "10.0.0.1:4004").is_some());
        assert_eq!(watch.report().len(), 1);
        watch.told(
            &NodeId::new("node-b").unwrap(),
            "two live processes run as node x",
        );
        assert_eq!(watch.report().len(), 2);
    }
}
