//! Waiting for a node to write a format.

use std::time::{Duration, Instant};

/// Waits (bounded) until `node` writes field-level entries: alone, or once every peer
/// reads them.
pub async fn field_merge_in_force(node: &cbddc_node::Node) {
    let started = Instant::now();
    while !node
        .status()
        .await
        .expect("the node's status")
        .features
        .in_force
        .contains(cbddc_core::field_merge::FEATURE)
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "field-level merge never went into force"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
