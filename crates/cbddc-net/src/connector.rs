//! How a client reaches a node: the transport under a session. Nodes and the CLI dial TCP
//! ([`TcpConnector`]); a test or a simulation can hand sessions any ordered, reliable
//! byte stream instead (an in-process pipe, a switch that cuts or freezes links).

use crate::client_settings::ClientSettings;
use async_trait::async_trait;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// A byte stream a session can run over.
pub trait Transport: AsyncRead + AsyncWrite + Send + Unpin + std::fmt::Debug + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + std::fmt::Debug + 'static> Transport for T {}

/// Opens the byte stream under a session with the node at an address.
///
/// Contract: each call opens a fresh stream that delivers bytes in order and whole, or
/// fails with the reason (the client reports it as a failure to connect). It has no time
/// bound of its own: the client bounds connecting and the handshake together
/// ([`ClientSettings::connect_timeout`]) and drops the future at the deadline, so it
/// must be cancel-safe. It may not block the async worker.
#[async_trait]
pub trait Connector: Send + Sync + std::fmt::Debug {
    /// A stream to `address`, set up as `settings` ask where the transport can.
    async fn connect(
        &self,
        address: &str,
        settings: &ClientSettings,
    ) -> std::io::Result<Box<dyn Transport>>;
}

/// TCP, as nodes and the CLI dial: no delay, and sent data left unacknowledged for
/// [`ClientSettings::unacknowledged_timeout`] drops the connection (Linux).
#[derive(Debug, Default, Clone, Copy)]
pub struct TcpConnector;

#[async_trait]
impl Connector for TcpConnector {
    async fn connect(
        &self,
        address: &str,
        settings: &ClientSettings,
    ) -> std::io::Result<Box<dyn Transport>> {
        let socket = TcpStream::connect(address).await?;
        let _ = socket.set_nodelay(true);
        if let Some(timeout) = settings.unacknowledged_timeout {
            set_unacknowledged_timeout(&socket, timeout);
        }
        Ok(Box::new(socket))
    }
}

#[cfg(target_os = "linux")]
fn set_unacknowledged_timeout(socket: &TcpStream, timeout: Duration) {
    if let Err(e) = socket2::SockRef::from(socket).set_tcp_user_timeout(Some(timeout)) {
        tracing::debug!(error = %e, "cannot bound unacknowledged data on a session");
    }
}

#[cfg(not(target_os = "linux"))]
fn set_unacknowledged_timeout(_socket: &TcpStream, _timeout: Duration) {}
