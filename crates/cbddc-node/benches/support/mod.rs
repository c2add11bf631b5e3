//! What the node's benchmarks share.

/// A loopback port free right now (the benchmark's nodes bind it next).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
