//! What the node's benchmarks share.

#[path = "../../../../tests/support/ports.rs"]
mod ports;
pub use ports::free_port;
