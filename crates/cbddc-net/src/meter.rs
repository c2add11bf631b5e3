//! What a node's sessions carried and refused, counted as they go, for its metrics.

use crate::proto::RejectReason;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters shared by every session of one node (client and server side alike).
#[derive(Debug, Default)]
pub struct NetMeter {
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    /// Indexed by [`REFUSAL_REASONS`].
    refused: [AtomicU64; REFUSAL_REASONS.len()],
}

/// The reasons a responder refuses a handshake, as metric labels.
pub const REFUSAL_REASONS: [&str; 5] = [
    "version_mismatch",
    "auth_failed",
    "busy",
    "key_refused",
    "feature_missing",
];

impl NetMeter {
    /// Bytes read from sessions' sockets, handshakes included.
    pub fn bytes_in(&self) -> u64 {
        self.bytes_in.load(Ordering::Relaxed)
    }

    /// Bytes written to sessions' sockets, handshakes included.
    pub fn bytes_out(&self) -> u64 {
        self.bytes_out.load(Ordering::Relaxed)
    }

    /// Handshakes this node refused as a responder, by reason ([`REFUSAL_REASONS`]).
    pub fn refused(&self) -> Vec<(&'static str, u64)> {
        REFUSAL_REASONS
            .iter()
            .zip(&self.refused)
            .map(|(reason, count)| (*reason, count.load(Ordering::Relaxed)))
            .collect()
    }

    pub(crate) fn received(&self, bytes: usize) {
        self.bytes_in.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn sent(&self, bytes: usize) {
        self.bytes_out.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn refuse(&self, reason: RejectReason) {
        let index = match reason {
            RejectReason::VersionMismatch => 0,
            RejectReason::AuthFailed => 1,
            RejectReason::Busy => 2,
            RejectReason::KeyRefused => 3,
            RejectReason::FeatureMissing => 4,
            RejectReason::Unspecified | RejectReason::Malformed => return,
        };
        self.refused[index].fetch_add(1, Ordering::Relaxed);
    }
}
