//! The node keys this node pinned: a peer's node id is bound to the key it presented at
//! first contact (kept in the database), and a different key for a pinned id is refused
//! until an operator re-pins it (`cbddc peers repin`).

use async_trait::async_trait;
use cbddc_core::{NodeId, PeerStore, StorageError};
use cbddc_net::{PeerVerifier, PublicKey};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::Mutex;

#[derive(Debug)]
pub(crate) struct KeyPins {
    store: Arc<dyn PeerStore>,
    /// Loaded from the store at start; a pin is stored before it is used.
    pinned: Mutex<BTreeMap<NodeId, PublicKey>>,
}

impl KeyPins {
    pub(crate) async fn load(store: Arc<dyn PeerStore>) -> Result<Self, StorageError> {
        let mut pinned = BTreeMap::new();
        for (node, key) in store.pinned_keys().await? {
            match PublicKey::from_hex(&key) {
                Ok(key) => {
                    pinned.insert(node, key);
                }
                Err(e) => {
                    tracing::warn!(%node, error = %e, "an unreadable pinned key is ignored; the next contact pins again")
                }
            }
        }
        Ok(Self {
            store,
            pinned: Mutex::new(pinned),
        })
    }

    /// The key pinned for `node`, if any.
    pub(crate) async fn get(&self, node: &NodeId) -> Option<PublicKey> {
        self.pinned.lock().await.get(node).copied()
    }

    /// Forgets `node`'s pin, so its next session pins the key it presents.
    pub(crate) async fn repin(&self, node: &NodeId) -> Result<bool, StorageError> {
        let mut pinned = self.pinned.lock().await;
        let removed = self.store.unpin_key(node.clone()).await?;
        Ok(pinned.remove(node).is_some() || removed)
    }
}

#[async_trait]
impl PeerVerifier for KeyPins {
    async fn verify(&self, node: &NodeId, key: &PublicKey) -> Result<(), String> {
        let mut pinned = self.pinned.lock().await;
        match pinned.get(node) {
            Some(known) if known == key => Ok(()),
            Some(known) => {
                let message = format!(
                    "node {node} presented key {} but key {} is pinned for it here; if {node} really has a new key (a new disk, a rebuilt machine), re-pin it with `cbddc peers repin {node}` on this node, otherwise another process is using its name",
                    key.fingerprint(),
                    known.fingerprint()
                );
                tracing::error!(%node, presented = %key.fingerprint(), pinned = %known.fingerprint(), "refused a node key that is not the pinned one");
                Err(message)
            }
            None => {
                self.store
                    .pin_key(node.clone(), key.to_hex())
                    .await
                    .map_err(|e| format!("cannot pin the key of {node}: {e}"))?;
                tracing::info!(%node, fingerprint = %key.fingerprint(), "pinned a node key on first contact");
                pinned.insert(node.clone(), *key);
                Ok(())
            }
        }
    }
}
