//! Serving a snapshot: the next chunk is read while the last one travels. A puller asks
//! for the chunk after the last document it received, so the responder knows that
//! position as soon as it answered, and reading it from SQLite overlaps with encrypting,
//! sending, decoding and writing the chunk before.

use cbddc_core::{DocumentStore, Interest, PageLimits, SnapshotChunk, StorageError};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::task::AbortOnDropHandle;

/// Pullers served with a chunk read ahead at once; more drop the oldest guess.
const MAX_PULLERS: usize = 8;
/// A chunk read ahead that nobody asked for within this long is dropped.
const KEPT: Duration = Duration::from_secs(30);

/// A chunk being read for a puller before it asked.
#[derive(Debug)]
struct Ahead {
    puller: SocketAddr,
    after: (String, String),
    limits: PageLimits,
    wanted: Interest,
    since: Instant,
    chunk: AbortOnDropHandle<Result<SnapshotChunk, StorageError>>,
}

/// The chunks read ahead, one per puller (a session's address), bounded in number and
/// age; a guess that does not match the next request is dropped, never served.
#[derive(Debug, Default)]
pub struct SnapshotReadAhead {
    ahead: Mutex<Vec<Ahead>>,
}

impl SnapshotReadAhead {
    /// The chunk of `store`'s snapshot after `after` for `puller` (see
    /// [`DocumentStore::snapshot_chunk`]): the one read ahead if it matches, else read
    /// now; then starts reading the chunk after it.
    pub async fn chunk(
        &self,
        store: &Arc<dyn DocumentStore>,
        puller: SocketAddr,
        after: Option<(String, String)>,
        limits: PageLimits,
        wanted: Interest,
    ) -> Result<SnapshotChunk, StorageError> {
        let ready = {
            let mut ahead = self.ahead.lock().unwrap_or_else(|p| p.into_inner());
            ahead.retain(|a| a.since.elapsed() < KEPT);
            // A chunk read within smaller limits is still an answer (any chunk may hold
            // fewer documents than asked): a puller whose chunks grow gets the one read
            // ahead at once, and the next is read ahead within its new limits.
            let found = ahead.iter().position(|a| {
                a.puller == puller
                    && Some(&a.after) == after.as_ref()
                    && a.limits.max_entries <= limits.max_entries
                    && a.limits.max_bytes <= limits.max_bytes
                    && a.wanted == wanted
            });
            found.map(|i| ahead.swap_remove(i))
        };
        let chunk = match ready {
            Some(ahead) => ahead.chunk.await.map_err(|e| StorageError::Backend {
                operation: "reading a snapshot",
                message: format!("reading the chunk ahead stopped: {e}"),
            })??,
            None => store.snapshot_chunk(after, limits, wanted.clone()).await?,
        };
        if chunk.more
            && let Some(last) = chunk.documents.last()
        {
            let next = (last.collection.clone(), last.key.clone());
            let read = tokio::spawn({
                let (store, next, wanted) = (store.clone(), next.clone(), wanted.clone());
                async move { store.snapshot_chunk(Some(next), limits, wanted).await }
            });
            let mut ahead = self.ahead.lock().unwrap_or_else(|p| p.into_inner());
            ahead.retain(|a| a.puller != puller);
            if ahead.len() >= MAX_PULLERS {
                ahead.remove(0);
            }
            ahead.push(Ahead {
                puller,
                after: next,
                limits,
                wanted,
                since: Instant::now(),
                chunk: AbortOnDropHandle::new(read),
            });
        }
        Ok(chunk)
    }
}
