//! The control plane of a CBDDC cluster — not built yet.
//!
//! This crate will own:
//! - **bully leader election**: among the eligible active peers and the node itself, the
//!   smallest `NodeId` leads and is the only node that syncs with cloud remotes;
//! - **cluster membership** with the `omnipaxos` crate: one instance per configuration,
//!   sealed by a StopSign, with our SQLite storage and transport.
//!
//! It deliberately exports nothing yet, so that no caller can depend on behaviour that
//! does not exist.
#![warn(missing_docs)]
