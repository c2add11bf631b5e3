use crate::{CoreError, NodeId};
use serde::{Deserialize, Serialize};
use std::fmt;

/// How a node came to know a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerType {
    /// Found on the local network by discovery beacons.
    LanDiscovered,
    /// Named by an operator or the configuration: a member of the same cluster.
    StaticRemote,
    /// A cloud gateway: only the elected leader exchanges data with it.
    CloudRemote,
}

impl PeerType {
    /// The short name used in configuration files and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            PeerType::LanDiscovered => "lan",
            PeerType::StaticRemote => "static",
            PeerType::CloudRemote => "cloud",
        }
    }

    /// Parses the short name (`lan`, `static`, `cloud`).
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "lan" => Some(PeerType::LanDiscovered),
            "static" => Some(PeerType::StaticRemote),
            "cloud" => Some(PeerType::CloudRemote),
            _ => None,
        }
    }
}

impl fmt::Display for PeerType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A peer this node knows by configuration or by an operator's command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownPeer {
    /// The peer's node id.
    pub node_id: NodeId,
    /// Where it listens, as `host:port`.
    pub address: String,
    /// How this node knows it.
    pub peer_type: PeerType,
    /// A disabled peer is kept but never contacted.
    pub enabled: bool,
}

impl KnownPeer {
    /// An enabled peer after checking its address.
    pub fn new(
        node_id: NodeId,
        address: impl Into<String>,
        peer_type: PeerType,
    ) -> Result<Self, CoreError> {
        let address = address.into();
        validate_peer_address(&address)?;
        Ok(Self {
            node_id,
            address,
            peer_type,
            enabled: true,
        })
    }
}

/// Checks that `address` is `host:port` with a non-empty host and a port from 1 to 65535.
/// IPv6 hosts are written in brackets: `[::1]:25000`.
pub fn validate_peer_address(address: &str) -> Result<(), CoreError> {
    let fail = |reason| CoreError::InvalidAddress {
        value: address.to_string(),
        reason,
    };
    let (host, port) = address.rsplit_once(':').ok_or(fail("there is no port"))?;
    if host.is_empty() || host == "[]" {
        return Err(fail("the host is empty"));
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err(fail("an IPv6 host must be written in brackets"));
    }
    if host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(fail("the host contains white space"));
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err(fail("the port is not a number from 1 to 65535")),
        Ok(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        for ok in ["127.0.0.1:25000", "example.org:1", "[::1]:9"] {
            assert!(validate_peer_address(ok).is_ok(), "{ok}");
        }
        for bad in [
            "127.0.0.1",
            ":80",
            "h:0",
            "h:65536",
            "::1:80",
            "h o:1",
            "h:x",
        ] {
            assert!(validate_peer_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn type_names_round_trip() {
        for t in [
            PeerType::LanDiscovered,
            PeerType::StaticRemote,
            PeerType::CloudRemote,
        ] {
            assert_eq!(PeerType::parse(t.as_str()), Some(t));
        }
        assert_eq!(PeerType::parse("other"), None);
    }
}
