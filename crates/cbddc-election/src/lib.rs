//! The control plane of a CBDDC cluster: the **bully election** of the gateway to the
//! cloud, and **cluster membership** agreed with OmniPaxos ([`membership`]; its network
//! driver is not built yet).
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
