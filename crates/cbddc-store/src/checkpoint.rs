//! Background WAL checkpoints, so that no commit ever pays for one.
//!
//! A checkpoint copies pages the writer is still changing, and on a small machine it
//! takes the disk and a core from the writer. So it waits for a pause: it runs once the
//! writer has committed nothing for one interval, and during a long burst at least every
//! [`BUSY_CHECKPOINT_EVERY`] intervals, which bounds the WAL by what the writer commits in
//! that time.

use rusqlite::Connection;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

/// While the writer keeps committing, a checkpoint still runs every this many intervals.
const BUSY_CHECKPOINT_EVERY: u32 = 8;

/// Runs passive checkpoints (see the module docs) until `stop` is dropped or signalled.
pub(crate) fn run(conn: Connection, interval: Duration, stop: Receiver<()>) {
    let mut seen = data_version(&conn);
    // Commits since the last checkpoint, and intervals of them.
    let mut dirty = false;
    let mut busy_intervals = 0;
    loop {
        match stop.recv_timeout(interval) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        let now = data_version(&conn);
        let committed = now != seen;
        seen = now;
        if committed {
            dirty = true;
            busy_intervals += 1;
            if busy_intervals < BUSY_CHECKPOINT_EVERY {
                continue;
            }
        } else if !dirty {
            continue;
        }
        // PASSIVE never waits for readers or the writer: at worst it copies less.
        let copied = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        });
        match copied {
            Ok((frames, checkpointed)) => {
                // A reader still on older frames leaves some for the next round.
                dirty = checkpointed < frames;
                busy_intervals = 0;
            }
            Err(e) => tracing::warn!(error = %e, "background checkpoint failed; will retry"),
        }
    }
}

/// Changes whenever another connection commits to the database.
fn data_version(conn: &Connection) -> Option<i64> {
    conn.query_row("PRAGMA data_version", [], |r| r.get(0)).ok()
}
