//! Ports for test nodes, picked below the kernel's ephemeral range: a port chosen there
//! stays free until the node binds it, because no outgoing connection (of this test or a
//! concurrent one) is ever given a port outside that range. Picked at random and checked
//! free, so concurrent tests rarely try the same one.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};

static DRAWS: AtomicU64 = AtomicU64::new(0);

/// The first port of the kernel's ephemeral range (Linux; 32768 where it cannot be read).
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// A loopback port free right now, below the ephemeral range.
pub fn free_port() -> u16 {
    let high = ephemeral_start().max(11_000);
    let low = 10_000u16;
    for _ in 0..1_000 {
        let draw = DRAWS.fetch_add(1, Ordering::Relaxed);
        let mut hasher =
            std::hash::BuildHasher::build_hasher(&std::collections::hash_map::RandomState::new());
        std::hash::Hasher::write_u64(&mut hasher, draw ^ u64::from(std::process::id()));
        let span = u64::from(high - low);
        let port = low + (std::hash::Hasher::finish(&hasher) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port below {high} after 1,000 tries")
}
