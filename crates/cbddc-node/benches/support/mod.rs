//! What the node's benchmarks share (each uses some of it).
#![allow(dead_code, unused_imports)]

#[path = "../../../../tests/support/ports.rs"]
mod ports;
pub use ports::free_port;

mod features;
mod memory;
mod report;
mod runtime;
pub use features::field_merge_in_force;
pub use memory::{memory_mib, reset_peak_rss};
pub use report::write_report;
pub use runtime::runtime;
