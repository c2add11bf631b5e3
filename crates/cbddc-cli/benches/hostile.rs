//! A `cbddc` process under hostile load, each figure beside its baseline from the same run:
//! - legitimate `status` calls (connect, handshake, call) while strangers keep hundreds of
//!   TCP connections open that never finish a handshake, beside the same calls without
//!   them: success rate and p99 latency;
//! - peak RSS while 32 key holders (twice what the budget admits at once) each send a
//!   message of almost 16 MiB and stall before its last bytes, beside the node's RSS
//!   before, and the buffer budget (256 MiB).
//!
//! The strangers reopen a connection every 10 ms each (1,000 a second in all): faster,
//! and the benchmark's own connect loop takes the CPU the node needs on a small machine,
//! which measures the machine, not the node's admission.
//!
//! Prints the figures and writes them to `target/cbddc-bench/hostile.json`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../../cbddc-node/benches/support/mod.rs"]
mod support;
use support::free_port;

use cbddc_net::{ClientSettings, ClusterKey, LocalIdentity, PeerClient, proto};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const KEY: &str = "bench-hostile";
const CALLS: usize = 1_000;
const IDLE_STRANGERS: usize = 500;
const FLOODERS: usize = 10;
const HOLDERS: usize = 32;

fn start(dir: &std::path::Path, port: u16) -> Child {
    let config = dir.join("node.toml");
    std::fs::write(
        &config,
        format!(
            "node_id = \"target\"\ntcp_port = {port}\ndata_dir = {:?}\ncluster_key = \"{KEY}\"\n",
            dir.join("data").display().to_string()
        ),
    )
    .unwrap();
    Command::new(env!("CARGO_BIN_EXE_cbddc"))
        .args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

async fn call(address: &str) -> Result<Duration, String> {
    let start = Instant::now();
    let settings = ClientSettings {
        connect_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(5),
        ..ClientSettings::default()
    };
    let tool = LocalIdentity::tool().map_err(|e| e.to_string())?;
    let mut client = PeerClient::connect(address, &ClusterKey::derive(KEY), &tool, settings)
        .await
        .map_err(|e| e.to_string())?;
    client.status().await.map_err(|e| e.to_string())?;
    Ok(start.elapsed())
}

/// Success rate and p99 of [`CALLS`] legitimate calls, one after another.
async fn calls(address: &str) -> (f64, Duration) {
    let mut ok = Vec::new();
    for _ in 0..CALLS {
        if let Ok(took) = call(address).await {
            ok.push(took);
        }
    }
    let rate = ok.len() as f64 / CALLS as f64;
    ok.sort();
    if !ok.is_empty() {
        eprintln!(
            "  p50 {:?}, p90 {:?}, max {:?}",
            ok[ok.len() / 2],
            ok[ok.len() * 9 / 10],
            ok[ok.len() - 1]
        );
    }
    let p99 = ok
        .get(((ok.len().max(1) - 1) as f64 * 0.99).round() as usize)
        .copied()
        .unwrap_or(Duration::MAX);
    (rate, p99)
}

/// Strangers: hundreds of idle connections held, and more opened and dropped all along.
fn flood(
    address: String,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..FLOODERS)
        .map(|_| {
            let (address, stop) = (address.clone(), stop.clone());
            tokio::spawn(async move {
                let mut held = std::collections::VecDeque::new();
                while !stop.load(Ordering::SeqCst) {
                    if let Ok(socket) = tokio::net::TcpStream::connect(&address).await {
                        held.push_back(socket);
                    }
                    if held.len() > IDLE_STRANGERS / FLOODERS {
                        held.pop_front();
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        })
        .collect()
}

/// Writes everything until `remaining` bytes are left to write, then stalls: a key holder
/// that announced a large message and stopped just before its end.
struct StallBefore<S> {
    inner: S,
    remaining: Arc<AtomicUsize>,
}

impl<S: AsyncRead + Unpin> AsyncRead for StallBefore<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for StallBefore<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let allowed = self.remaining.load(Ordering::SeqCst).min(buf.len());
        if allowed == 0 {
            // Never woken: this writer has stalled for good.
            return Poll::Pending;
        }
        let polled = Pin::new(&mut self.inner).poll_write(cx, &buf[..allowed]);
        if let Poll::Ready(Ok(n)) = &polled {
            self.remaining.fetch_sub(*n, Ordering::SeqCst);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A push of almost 16 MiB (fifteen 1 MiB values and change).
fn large_push() -> proto::Request {
    let value = format!("\"{}\"", "x".repeat(1024 * 1024 - 16));
    let entries = (0..15)
        .map(|i| proto::OplogEntry {
            origin: "holder".into(),
            seq: i + 1,
            collection: "big".into(),
            key: format!("k{i}"),
            value: Some(value.clone()),
            hlc_wall_ms: 1,
            hlc_counter: 0,
            node: "holder".into(),
            field_write: None,
        })
        .collect();
    proto::Request {
        id: 1,
        body: Some(proto::request::Body::Push(proto::PushRequest {
            entries,
            ..Default::default()
        })),
    }
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap()
}

/// Peak RSS while [`HOLDERS`] key holders stall inside large messages.
async fn holders(address: &str, pid: u32) -> (u64, u64) {
    let before = rss_kib(pid, "VmRSS:");
    let message = large_push();
    let mut stalled = Vec::new();
    for _ in 0..HOLDERS {
        let socket = tokio::net::TcpStream::connect(address).await.unwrap();
        let remaining = Arc::new(AtomicUsize::new(usize::MAX));
        let io = StallBefore {
            inner: socket,
            remaining: remaining.clone(),
        };
        let tool = LocalIdentity::tool().unwrap();
        let (mut stream, _) =
            cbddc_net::secure::initiate(io, &ClusterKey::derive(KEY), &tool, false, address)
                .await
                .unwrap();
        // All but the last 4 KiB of the message go out; then the holder stalls.
        remaining.store(
            prost::Message::encoded_len(&message) - 4096,
            Ordering::SeqCst,
        );
        let message = message.clone();
        stalled.push(tokio::spawn(async move {
            let _ = stream.send(&message).await;
            stream
        }));
    }
    // The node has taken in what it will: its RSS stops growing.
    let start = Instant::now();
    let mut last = 0;
    let mut steady = 0;
    while steady < 10 && start.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = rss_kib(pid, "VmRSS:");
        steady = if now == last { steady + 1 } else { 0 };
        last = now;
    }
    let peak = rss_kib(pid, "VmHWM:");
    for task in stalled {
        task.abort();
    }
    (before, peak)
}

fn main() {
    // `cargo test --benches` runs bench binaries with --bench absent; skip the long work then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut node = start(dir.path(), port);
    let address = format!("127.0.0.1:{port}");
    let report = runtime.block_on(async {
        let start = Instant::now();
        while call(&address).await.is_err() {
            assert!(start.elapsed() < Duration::from_secs(30), "the node did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (quiet_rate, quiet_p99) = calls(&address).await;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flooders = flood(address.clone(), stop.clone());
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (flood_rate, flood_p99) = calls(&address).await;
        stop.store(true, Ordering::SeqCst);
        for f in flooders {
            let _ = f.await;
        }
        let (rss_before, rss_peak) = holders(&address, node.id()).await;
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        eprintln!(
            "status calls: {:.1}% ok, p99 {:.1} ms unloaded; {:.1}% ok, p99 {:.1} ms under the flood",
            quiet_rate * 100.0,
            ms(quiet_p99),
            flood_rate * 100.0,
            ms(flood_p99)
        );
        eprintln!(
            "RSS: {} MiB before, peak {} MiB with {HOLDERS} holders of ~16 MiB messages",
            rss_before / 1024,
            rss_peak / 1024
        );
        serde_json::json!({
            "settings": format!("{CALLS} status calls (connect, handshake, call) one after another; flood: {FLOODERS} tasks keeping {IDLE_STRANGERS} idle connections that never handshake and reopening one every 10 ms each; {HOLDERS} key holders each stalled 4 KiB before the end of a ~16 MiB push"),
            "quiet_success": quiet_rate,
            "quiet_p99_ms": ms(quiet_p99),
            "flood_success": flood_rate,
            "flood_p99_ms": ms(flood_p99),
            "rss_before_mib": rss_before as f64 / 1024.0,
            "rss_peak_mib": rss_peak as f64 / 1024.0,
            "buffer_budget_mib": 256.0,
        })
    });
    let _ = node.kill();
    let _ = node.wait();
    support::write_report("hostile.json", &report);
}
