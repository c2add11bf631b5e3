//! The node keys this node pinned: a peer's node id is bound to the key it presented at
//! first contact (kept in the database), and a different key for a pinned id is refused
//! until an operator re-pins it (`cbddc peers repin`).

use async_trait::async_trait;
use cbddc_core::{NodeId, PeerStore, StorageError};
use cbddc_election::membership::Configuration;
use cbddc_net::{PeerVerifier, PublicKey};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::Mutex;

/// The node key pinned per peer node id, persisted in the peer store (see the module docs).
#[derive(Debug)]
pub struct KeyPins {
    store: Arc<dyn PeerStore>,
    /// Loaded from the store at start; a pin is stored before it is used.
    pinned: Mutex<BTreeMap<NodeId, PublicKey>>,
}

impl KeyPins {
    /// The pins `store` holds.
    pub async fn load(store: Arc<dyn PeerStore>) -> Result<Self, StorageError> {
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
    pub async fn get(&self, node: &NodeId) -> Option<PublicKey> {
        self.pinned.lock().await.get(node).copied()
    }

    /// Pins the keys a configuration agreed by the cluster carries for its members: they
    /// replace a first-contact pin (the cluster's word is stronger than first contact).
    pub async fn pin_members(&self, local: &NodeId, configuration: &Configuration) {
        let mut pinned = self.pinned.lock().await;
        for member in &configuration.members {
            let Some(text) = &member.key else { continue };
            if &member.node_id == local {
                continue;
            }
            let Ok(key) = PublicKey::from_hex(text) else {
                tracing::warn!(node = %member.node_id, "a configuration carries an unreadable key; ignored");
                continue;
            };
            if pinned.get(&member.node_id) == Some(&key) {
                continue;
            }
            match self
                .store
                .pin_key(member.node_id.clone(), key.to_hex())
                .await
            {
                Ok(()) => {
                    tracing::info!(node = %member.node_id, fingerprint = %key.fingerprint(), configuration = configuration.configuration_id, "pinned a member's key from the cluster configuration");
                    pinned.insert(member.node_id.clone(), key);
                }
                Err(e) => {
                    tracing::error!(node = %member.node_id, error = %e, "cannot pin a member's key")
                }
            }
        }
    }

    /// Forgets `node`'s pin, so its next session pins the key it presents.
    pub async fn repin(&self, node: &NodeId) -> Result<bool, StorageError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use cbddc_net::NodeKey;
    use cbddc_store::{SqliteStore, StoreOptions};

    fn id(name: &str) -> NodeId {
        NodeId::new(name).unwrap()
    }

    #[tokio::test]
    async fn first_contact_pins_a_configuration_overrides_and_pins_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(
            SqliteStore::open(dir.path(), id("a"), StoreOptions::default())
                .await
                .unwrap(),
        );
        let pins = KeyPins::load(store.clone()).await.unwrap();
        let (first, agreed, stranger) = (
            NodeKey::generate().unwrap().public(),
            NodeKey::generate().unwrap().public(),
            NodeKey::generate().unwrap().public(),
        );
        pins.verify(&id("b"), &first).await.unwrap();
        let refused = pins.verify(&id("b"), &stranger).await.unwrap_err();
        assert!(
            refused.contains(&first.fingerprint()) && refused.contains(&stranger.fingerprint()),
            "{refused}"
        );
        // The cluster agreed on another key for b (b got a new disk and was re-admitted).
        let configuration =
            Configuration::new(2, vec![(id("a"), "h:1".into()), (id("b"), "h:2".into())])
                .unwrap()
                .with_keys(&[(id("b"), agreed.to_hex())].into_iter().collect());
        pins.pin_members(&id("a"), &configuration).await;
        assert!(pins.verify(&id("b"), &first).await.is_err());
        pins.verify(&id("b"), &agreed).await.unwrap();

        let reopened = KeyPins::load(store.clone()).await.unwrap();
        assert_eq!(reopened.get(&id("b")).await, Some(agreed));
        assert!(reopened.repin(&id("b")).await.unwrap());
        reopened.verify(&id("b"), &stranger).await.unwrap();
        store.close().await;
    }
}
