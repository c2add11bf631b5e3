//! How a client dials and waits: shared by the client and the connectors under it.

use std::time::Duration;

/// The default [`ClientSettings::unacknowledged_timeout`].
pub const UNACKNOWLEDGED_TIMEOUT: Duration = Duration::from_millis(1_500);

/// The default [`ClientSettings::liveness`].
pub const LIVENESS: Duration = Duration::from_secs(1);

/// Timeouts of a [`crate::PeerClient`].
#[derive(Debug, Clone, Copy)]
pub struct ClientSettings {
    /// TCP connect plus handshake.
    pub connect_timeout: Duration,
    /// One request and its answer.
    pub request_timeout: Duration,
    /// Whether we may be elected leader (told to the peer; false for tools).
    pub eligible: bool,
    /// Data sent and not acknowledged by the peer's host for this long closes the
    /// session (TCP_USER_TIMEOUT, on Linux): a black-holed peer is noticed in seconds
    /// even in the middle of a request, not after `request_timeout`. `None`: the
    /// system's default (many minutes).
    pub unacknowledged_timeout: Option<Duration>,
    /// Once a request is sent, the peer must be heard from (its answer, or a progress
    /// notice, which a responder sends every [`crate::liveness::PROGRESS_EVERY`] while it
    /// works) within this, or the call fails as timed out: a paused or cut-off peer is
    /// given up in about a second, a busy one never. `None`: only `request_timeout`.
    pub liveness: Option<Duration>,
}

impl Default for ClientSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            eligible: false,
            unacknowledged_timeout: Some(UNACKNOWLEDGED_TIMEOUT),
            liveness: Some(LIVENESS),
        }
    }
}
