//! Background WAL checkpoints, so that no commit ever pays for one.

use rusqlite::Connection;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

/// Runs passive checkpoints every `interval` until `stop` is dropped or signalled.
pub(crate) fn run(conn: Connection, interval: Duration, stop: Receiver<()>) {
    loop {
        match stop.recv_timeout(interval) {
            Err(RecvTimeoutError::Timeout) => {
                // PASSIVE never waits for readers or the writer: at worst it copies less.
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::warn!(error = %e, "background checkpoint failed; will retry");
                }
            }
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}
