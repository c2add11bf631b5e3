//! Telling a silent peer from a busy one. A responder sends a progress notice on a
//! session every [`PROGRESS_EVERY`] while it works on a request, so bytes keep arriving
//! from a live peer however long the request takes; a [`Watched`] stream remembers when
//! bytes last arrived, and a caller that has heard nothing for its liveness bound gives
//! the peer up (it is down, paused or cut off) instead of waiting out the whole request
//! timeout.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How often a responder busy with a request says it still is.
pub const PROGRESS_EVERY: Duration = Duration::from_millis(300);

/// A stream that records when it last read bytes.
#[derive(Debug)]
pub(crate) struct Watched<S> {
    inner: S,
    heard: Arc<LastHeard>,
}

/// When a [`Watched`] stream last read bytes, shared with whoever waits on it.
#[derive(Debug)]
pub(crate) struct LastHeard {
    start: Instant,
    /// Milliseconds since `start`.
    at_ms: AtomicU64,
}

impl LastHeard {
    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.at_ms.store(ms, Ordering::Relaxed);
    }

    /// Marks now as heard: a new wait starts from here.
    pub(crate) fn reset(&self) {
        self.touch();
    }

    /// How long ago bytes last arrived (or [`LastHeard::reset`] was called).
    pub(crate) fn silent_for(&self) -> Duration {
        let now = self.start.elapsed();
        now.saturating_sub(Duration::from_millis(self.at_ms.load(Ordering::Relaxed)))
    }
}

impl<S> Watched<S> {
    pub(crate) fn new(inner: S) -> Self {
        Self {
            inner,
            heard: Arc::new(LastHeard {
                start: Instant::now(),
                at_ms: AtomicU64::new(0),
            }),
        }
    }

    pub(crate) fn heard(&self) -> Arc<LastHeard> {
        self.heard.clone()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.heard.touch();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Resolves once `heard` has been silent for `bound`.
pub(crate) async fn silence(heard: &LastHeard, bound: Duration) {
    loop {
        let silent = heard.silent_for();
        if silent >= bound {
            return;
        }
        tokio::time::sleep(bound - silent).await;
    }
}
