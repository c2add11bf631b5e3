//! The control plane of a CBDDC cluster: the **bully election** of the gateway to the
//! cloud, and **cluster membership** agreed with OmniPaxos ([`membership`]; the node
//! crate drives it over the sync protocol's sessions).
//!
//! The bully is a plain value: a view and a time in, a change (or none) out.
//!
//! ```
//! use cbddc_core::{NodeId, PeerState, PeerType};
//! use cbddc_election::{Bully, ElectionSettings};
//! use std::time::{Duration, Instant};
//!
//! let start = Instant::now();
//! let settings = ElectionSettings::new(true, Duration::from_millis(100), Duration::from_millis(300));
//! let mut bully = Bully::new(NodeId::new("node-b").unwrap(), settings, start);
//! let node_a = PeerState {
//!     node_id: NodeId::new("node-a").unwrap(),
//!     peer_type: PeerType::StaticRemote,
//!     address: "127.0.0.1:25000".into(),
//!     eligible: true,
//!     alive_since: Some(start),
//! };
//! // Past the startup and join graces, the smaller live node leads.
//! let later = start + Duration::from_secs(1);
//! let change = bully.evaluate(later, &[node_a]).expect("a first outcome");
//! assert_eq!(change.leader.unwrap().as_str(), "node-a");
//! assert!(!change.is_leader);
//! ```
//!
//! # The rule
//!
//! Among the eligible, alive peers that are LAN-discovered or static — cloud remotes never
//! take part — and the node itself if it is eligible, the node with the lexicographically
//! smallest `NodeId` leads. Every node evaluates the rule on its own view
//! ([`cbddc_core::PeerDirectory`]) whenever the view changes and every interval, and
//! announces [`LeadershipChanged`] whenever the outcome changes — also when the leader
//! moves between two other nodes.
//!
//! # Stability
//!
//! - A peer is alive until it has not been heard from for the directory's timeout (several
//!   beacon or sync intervals), so one lost beacon changes nothing.
//! - A peer that becomes alive counts only after it has stayed alive for a *join grace*
//!   (one interval by default): a peer flapping faster than that never takes over.
//! - A starting node does not claim leadership for a *startup grace* (the peer timeout by
//!   default), so it first hears from the smaller nodes that may be alive.
//!
//! # Partitions
//!
//! The election exchanges no messages: each side of a partition elects the smallest node
//! it can see, so two sides elect two leaders, and both sync with the cloud (which, being
//! last-writer-wins by HLC like every peer, merges their writes safely). When the
//! partition heals, each node hears from the other side again; after the join grace the
//! smallest node of the whole cluster is the only leader left.
#![warn(missing_docs)]

mod bully;
#[cfg(test)]
mod handover_sim;
pub mod membership;
#[cfg(test)]
mod membership_tests;
mod service;

pub use bully::{Bully, ElectionSettings, Leadership, LeadershipChanged};
pub use service::ElectionService;
