//! A small HTTP/1.1 server for operators: `GET /metrics` (Prometheus text), `GET /` (the
//! live cluster page) and `GET /api/state` (the page's data, JSON).
//!
//! It answers one request per connection and closes it. Whatever a client sends is
//! bounded: the request head in size and time, the connections in number.

use crate::StateSource;
use crate::metrics::NodeMetrics;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A request head larger than this is refused.
const MAX_HEAD: usize = 8 * 1024;
/// A client must send its request head within this time.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more wait for the kernel's backlog.
const MAX_CONNECTIONS: usize = 64;
/// After answering, at most this much of what a client still sends is read and dropped…
const LINGER_BYTES: usize = 1024 * 1024;
/// …for at most this long.
const LINGER_TIME: Duration = Duration::from_secs(1);

const PAGE: &str = include_str!("page.html");

/// The observation server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    /// Its address could not be bound.
    #[error("cannot serve the metrics on {address}: {source}; is another process using this port?")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// The operating system's error.
        source: std::io::Error,
    },
}

/// A running observation server; stopped by [`ObserveServer::stop`].
#[derive(Debug)]
pub struct ObserveServer {
    address: SocketAddr,
    token: CancellationToken,
    tracker: TaskTracker,
}

impl ObserveServer {
    /// Binds `address` and serves `source`'s state and `metrics` until `token` is
    /// cancelled or [`ObserveServer::stop`].
    pub async fn start(
        address: SocketAddr,
        current: Arc<dyn StateSource>,
        metrics: Arc<NodeMetrics>,
        token: CancellationToken,
    ) -> Result<Self, ObserveError> {
        let listener = TcpListener::bind(address)
            .await
            .map_err(|source| ObserveError::Bind { address, source })?;
        let bound = listener
            .local_addr()
            .map_err(|source| ObserveError::Bind { address, source })?;
        let tracker = TaskTracker::new();
        tracker.spawn(accept(listener, current, metrics, token.clone()));
        tracing::info!(address = %bound, "serving /metrics and the cluster page");
        Ok(Self {
            address: bound,
            token,
            tracker,
        })
    }

    /// Where it listens (the real port when 0 was asked for).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Stops accepting and waits for the requests in flight.
    pub async fn stop(self) {
        self.token.cancel();
        self.tracker.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.tracker.wait()).await;
    }
}

async fn accept(
    listener: TcpListener,
    current: Arc<dyn StateSource>,
    metrics: Arc<NodeMetrics>,
    token: CancellationToken,
) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let tracker = TaskTracker::new();
    loop {
        let permit = tokio::select! {
            _ = token.cancelled() => break,
            permit = limit.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (socket, peer) = tokio::select! {
            _ = token.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics server: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (current, metrics) = (current.clone(), metrics.clone());
        tracker.spawn(async move {
            let _permit = permit;
            if let Err(e) = serve(socket, &current, &metrics).await {
                tracing::debug!(%peer, error = %e, "metrics server: connection ended");
            }
        });
    }
    tracker.close();
    tracker.wait().await;
}

/// A request's method and path, or why it cannot be served.
#[derive(Debug, PartialEq, Eq)]
enum Head {
    Get(String),
    Refused(u16, &'static str),
}

fn parse_head(head: &[u8]) -> Head {
    let Ok(text) = std::str::from_utf8(head) else {
        return Head::Refused(400, "the request is not text");
    };
    let mut parts = text.lines().next().unwrap_or_default().split(' ');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("GET"), Some(target), Some(version)) if version.starts_with("HTTP/1.") => {
            let path = target.split('?').next().unwrap_or(target);
            Head::Get(path.to_string())
        }
        (Some(_), Some(_), Some(version)) if version.starts_with("HTTP/1.") => {
            Head::Refused(405, "only GET is served")
        }
        _ => Head::Refused(400, "not an HTTP/1.x request line"),
    }
}

async fn read_head(socket: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    loop {
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            return Ok(Some(head));
        }
        if head.len() > MAX_HEAD {
            return Ok(None);
        }
        let n = socket.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&buf[..n]);
    }
}

async fn serve(
    mut socket: TcpStream,
    current: &Arc<dyn StateSource>,
    metrics: &NodeMetrics,
) -> std::io::Result<()> {
    let head = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut socket)).await {
        Ok(head) => head?,
        Err(_) => return Ok(()),
    };
    let (status, content_type, body) = match head.map(|h| parse_head(&h)) {
        None => (
            431,
            "text/plain",
            "the request head is too large".to_string(),
        ),
        Some(Head::Refused(status, why)) => (status, "text/plain", why.to_string()),
        Some(Head::Get(path)) => answer(&path, current, metrics).await,
    };
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n",
        body.len()
    );
    socket.write_all(response.as_bytes()).await?;
    socket.write_all(body.as_bytes()).await?;
    socket.shutdown().await?;
    // A lingering close: what the client still sends is read and dropped (bounded), so
    // closing never resets the connection before the client has read the answer.
    let mut sink = [0u8; 4096];
    let drain = async {
        let mut left = LINGER_BYTES;
        while left > 0 {
            match socket.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIME, drain).await;
    Ok(())
}

async fn answer(
    path: &str,
    current: &Arc<dyn StateSource>,
    metrics: &NodeMetrics,
) -> (u16, &'static str, String) {
    let view = || current.view();
    match path {
        "/" | "/index.html" => (200, "text/html; charset=utf-8", PAGE.to_string()),
        "/metrics" => match view().await {
            Ok(view) => match metrics.render(&view) {
                Ok(text) => (200, "text/plain; version=0.0.4; charset=utf-8", text),
                Err(_) => (503, "text/plain", "the metrics cannot be encoded".into()),
            },
            Err(why) => (503, "text/plain", why),
        },
        "/api/state" => match view().await {
            Ok(view) => match serde_json::to_string(&view) {
                Ok(json) => (200, "application/json", json),
                Err(_) => (503, "text/plain", "the state cannot be encoded".into()),
            },
            Err(why) => (503, "text/plain", why),
        },
        _ => (404, "text/plain", "not found: try / or /metrics".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::{Head, parse_head};

    #[test]
    fn request_lines_are_read_strictly() {
        assert_eq!(
            parse_head(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"),
            Head::Get("/metrics".into())
        );
        assert_eq!(
            parse_head(b"POST / HTTP/1.1\r\n\r\n"),
            Head::Refused(405, "only GET is served")
        );
        for bad in [&b"\xff\xfe\r\n\r\n"[..], b"GET /\r\n\r\n", b"hello\r\n\r\n"] {
            assert!(matches!(parse_head(bad), Head::Refused(400, _)), "{bad:?}");
        }
    }
}
