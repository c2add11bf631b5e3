//! Black-box tests of the `cbddc` binary: real processes, real config files, loopback
//! ports, and hosts of a LAN as network namespaces (`lan`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod checker;
mod harness;
mod lan;
mod t10_two_nodes;
mod t20_errors;
mod t30_lifecycle;
mod t40_reconfiguration;
mod t50_election;
mod t60_cluster;
mod t70_removal_on_a_lan;
mod t80_replicas;
mod t85_compaction;
mod t90_data_tools;
mod t91_feed;
mod t92_edits;
mod t93_find;
mod t94_field_merge;
mod t95_cluster_page;
mod t97_upgrade;
mod t99_faults;
