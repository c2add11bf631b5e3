//! SQLite persistence for a CBDDC node: documents, the oplog, the version vector and
//! known peers, in one database file per node id.
//!
//! - **Durable acknowledgements.** A local write puts the document row and its oplog
//!   entry in one transaction, in WAL mode with `synchronous=FULL` by default.
//! - **One writer, group commit.** A dedicated thread owns the write connection and the
//!   node's [`cbddc_core::HybridClock`]; writes queued while it commits are committed
//!   together in the next transaction, each in its own savepoint so one bad write never
//!   fails its neighbours.
//! - **Readers apart.** Reads run on a small pool of read-only connections on tokio's
//!   blocking pool; no SQLite call ever runs on an async worker.
//! - **The control plane's log.** [`SqliteLogStorage`] implements OmniPaxos' `Storage`
//!   trait on the same database file, one log per cluster configuration.
//! - **Checkpoints in the background.** Automatic checkpoints are off on the write
//!   connection; a checkpointer thread runs passive checkpoints, so no caller's commit
//!   pays for one.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use cbddc_core::{DocumentStore, LocalWrite, NodeId};
//! use cbddc_store::{SqliteStore, StoreOptions};
//!
//! let store = SqliteStore::open("./data", NodeId::new("node-a")?, StoreOptions::default()).await?;
//! store.write(vec![LocalWrite::put("users", "alice", r#"{"age":30}"#)]).await?;
//! let alice = store.get("users", "alice").await?;
//! assert!(alice.is_some());
//! store.close().await;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod batch_apply;
mod batch_merge;
mod checkpoint;
mod cluster_records;
mod compaction;
mod document_write;
mod error;
mod features;
mod feed;
mod field_apply;
mod indexes;
mod paxos_log;
mod reader;
mod rows;
mod schema;
mod snapshot;
mod store;
mod write_connection;
mod writer;

pub use cluster_records::ClusterRecords;
pub use error::StoreError;
pub use paxos_log::{ControlDatabase, SqliteLogStorage};
pub use store::{Durability, SqliteStore, StoreOptions, database_path};

#[cfg(test)]
mod compaction_props;
#[cfg(test)]
mod edit_tests;
#[cfg(test)]
mod feed_props;
#[cfg(test)]
mod feed_tests;
#[cfg(test)]
mod index_tests;
#[cfg(test)]
mod merge_tests;
#[cfg(test)]
mod replica_props;
#[cfg(test)]
mod tests;
