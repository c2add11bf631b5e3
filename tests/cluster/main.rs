//! Scenarios with whole nodes in one process, driven through the public API.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod t10_convergence;
mod t20_restart;
mod t30_authentication;
mod t40_hostile_input;
mod t50_reconfiguration;
mod t60_election;
mod t70_membership;
mod t80_handover;
mod t90_change_feed;
mod t92_queries;
mod t95_observe;
mod t96_collections;
mod t97_liveness;
mod t98_compaction;
mod t99_upgrade;
