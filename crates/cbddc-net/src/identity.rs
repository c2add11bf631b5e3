//! Who speaks: a node's static key pair, the public key a peer pins, and the check a
//! session runs on the other side's node id and key.
//!
//! The handshake (`secure`) proves that each side holds the private key of the
//! public key it presents; a [`PeerVerifier`] then decides whether that key may speak
//! for the node id it claims (pinned on first contact, or by the cluster configuration).

use crate::NetError;
use async_trait::async_trait;
use blake2::{Blake2s256, Digest};
use cbddc_core::NodeId;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

const KEY_LEN: usize = 32;

/// A node's public key (X25519), as a peer pins it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublicKey([u8; KEY_LEN]);

impl PublicKey {
    /// From the raw 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, NetError> {
        let raw: [u8; KEY_LEN] = bytes.try_into().map_err(|_| NetError::Malformed {
            detail: format!("a public key has {} bytes, not {KEY_LEN}", bytes.len()),
        })?;
        Ok(Self(raw))
    }

    /// From 64 hex digits (how it is stored and shown in full).
    pub fn from_hex(text: &str) -> Result<Self, NetError> {
        let bytes = decode_hex(text).ok_or_else(|| NetError::Malformed {
            detail: format!("{text:?} is not a public key (64 hex digits)"),
        })?;
        Self::from_bytes(&bytes)
    }

    /// 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        encode_hex(&self.0)
    }

    /// A short form to compare by eye: the first 16 hex digits of BLAKE2s of the key, in
    /// groups of four (`1a2b:3c4d:5e6f:7a8b`).
    pub fn fingerprint(&self) -> String {
        let digest = Blake2s256::new()
            .chain_update(b"cbddc node key fingerprint\0")
            .chain_update(self.0)
            .finalize();
        encode_hex(&digest[..8])
            .as_bytes()
            .chunks(4)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join(":")
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.fingerprint())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.fingerprint())
    }
}

/// A node's static key pair. The private half never leaves the process (nor its file).
#[derive(Clone)]
pub struct NodeKey {
    private: [u8; KEY_LEN],
    public: PublicKey,
}

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeKey({})", self.public.fingerprint())
    }
}

impl NodeKey {
    /// A new key pair from the operating system's random source.
    pub fn generate() -> Result<Self, NetError> {
        let keypair =
            crate::noise::builder()?
                .generate_keypair()
                .map_err(|e| NetError::Handshake {
                    detail: format!("cannot generate a node key: {e}"),
                })?;
        let private: [u8; KEY_LEN] =
            keypair
                .private
                .as_slice()
                .try_into()
                .map_err(|_| NetError::Handshake {
                    detail: "the generated private key has the wrong length".into(),
                })?;
        Ok(Self {
            private,
            public: PublicKey::from_bytes(&keypair.public)?,
        })
    }

    /// Reads the key pair kept at `path`, or creates one there (readable by its owner
    /// only) if there is none. A file that exists but is not a key is an error: the node
    /// must not silently take a new identity.
    pub fn load_or_create(path: &Path) -> Result<Self, NetError> {
        let unusable = |detail: String| NetError::KeyFile {
            path: path.to_path_buf(),
            detail,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let mut lines = text.lines();
                let (Some(private), Some(public)) = (lines.next(), lines.next()) else {
                    return Err(unusable(
                        "it does not hold a private and a public key".into(),
                    ));
                };
                let private: [u8; KEY_LEN] = decode_hex(private.trim())
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| unusable("the private key is not 64 hex digits".into()))?;
                let public = PublicKey::from_hex(public.trim())
                    .map_err(|_| unusable("the public key is not 64 hex digits".into()))?;
                Ok(Self { private, public })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::generate()?;
                key.save(path).map_err(|e| unusable(e.to_string()))?;
                tracing::info!(path = %path.display(), fingerprint = %key.public.fingerprint(), "created the node key");
                Ok(key)
            }
            Err(e) => Err(unusable(e.to_string())),
        }
    }

    fn save(&self, path: &Path) -> std::io::Result<()> {
        use std::io::Write;
        let staged = path.with_extension("key.tmp");
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&staged)?;
        writeln!(file, "{}", encode_hex(&self.private))?;
        writeln!(file, "{}", self.public.to_hex())?;
        file.sync_all()?;
        std::fs::rename(&staged, path)
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        self.public
    }

    pub(crate) fn private(&self) -> &[u8; KEY_LEN] {
        &self.private
    }
}

/// Decides whether a key may speak for a node id. Implementations pin keys (on first
/// contact, or from a cluster configuration) and refuse a different key for a pinned id.
#[async_trait]
pub trait PeerVerifier: Send + Sync + fmt::Debug {
    /// `Ok` if `key` may speak for `node`; otherwise why not, naming both fingerprints and
    /// what to do. May persist a first-contact pin before answering.
    async fn verify(&self, node: &NodeId, key: &PublicKey) -> Result<(), String>;
}

/// Who this end of a session is.
#[derive(Debug, Clone)]
pub struct LocalIdentity {
    /// Our node id (`None` for tools such as the CLI).
    pub node_id: Option<NodeId>,
    /// Our static key.
    pub key: NodeKey,
    /// Checks the other side's node id and key (`None`: accept any).
    pub verifier: Option<Arc<dyn PeerVerifier>>,
    /// The replica we write as (told to peers, which detect two live processes under one
    /// node id); `None` for tools.
    pub replica: Option<cbddc_core::ReplicaId>,
    /// Where this node's sessions count the bytes they carry and the handshakes they
    /// refuse (`None`: not counted).
    pub meter: Option<Arc<crate::NetMeter>>,
    /// The collections we replicate, told to peers so they send us only those.
    pub interest: cbddc_core::Interest,
    /// The protocols, release and formats we say we have, and the gate peers pass.
    pub versions: crate::version::Versions,
}

impl LocalIdentity {
    pub(crate) fn refused(&self, reason: crate::proto::RejectReason) {
        if let Some(meter) = &self.meter {
            meter.refuse(reason);
        }
    }

    /// A node with its key and its pins.
    pub fn node(node_id: NodeId, key: NodeKey, verifier: Option<Arc<dyn PeerVerifier>>) -> Self {
        Self {
            node_id: Some(node_id),
            key,
            verifier,
            replica: None,
            meter: None,
            interest: cbddc_core::Interest::all(),
            versions: crate::version::Versions::default(),
        }
    }

    /// A tool: no node id, a key of its own for this run, no pins.
    pub fn tool() -> Result<Self, NetError> {
        Ok(Self {
            node_id: None,
            key: NodeKey::generate()?,
            verifier: None,
            replica: None,
            meter: None,
            interest: cbddc_core::Interest::all(),
            versions: crate::version::Versions::default(),
        })
    }
}

fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_file_is_created_once_private_to_its_owner_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        let first = NodeKey::load_or_create(&path).unwrap();
        let again = NodeKey::load_or_create(&path).unwrap();
        assert_eq!(first.public(), again.public());
        assert_eq!(first.private(), again.private());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(first.public().fingerprint().len(), 19);
        assert_eq!(
            PublicKey::from_hex(&first.public().to_hex()).unwrap(),
            first.public()
        );
        std::fs::write(&path, "not a key").unwrap();
        assert!(matches!(
            NodeKey::load_or_create(&path),
            Err(NetError::KeyFile { .. })
        ));
    }
}
