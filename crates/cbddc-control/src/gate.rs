//! Whether this node may take writes: only while it is a member of its cluster's running
//! configuration. A retired node's writes could reach nobody, and a node that waits to be
//! invited has no cluster to give them to, so both refuse them (reads still work).
//!
//! The gate closes under a write lock: once [`WriteGate::set`] returns, no write admitted
//! before it is still in flight, so the set of writes a retiring node hands over is final.

use tokio::sync::{RwLock, RwLockReadGuard};

/// What the gate lets through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateState {
    /// A member of the running configuration: writes are taken.
    Open,
    /// Waiting to be invited into a cluster.
    NotAdmitted,
    /// Retired: `after` is the last configuration this node was a member of.
    Retired {
        /// The last configuration this node was a member of.
        after: u32,
    },
}

/// Why the gate refused a write (the node turns it into its own error with what to do).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteRefused {
    /// Removed from the cluster in `configuration_id`; it was a member of `last_member_of`.
    Retired {
        /// The configuration that removed it.
        configuration_id: u32,
        /// The last configuration it was a member of.
        last_member_of: u32,
    },
    /// Waiting to be invited into a cluster.
    NotAdmitted,
}

/// Admits writes while this node is a member of its running configuration.
#[derive(Debug)]
pub struct WriteGate {
    state: RwLock<GateState>,
}

/// Held for the whole of an admitted write.
pub type WritePermit<'a> = RwLockReadGuard<'a, GateState>;

impl WriteGate {
    /// A gate in `initial`.
    pub fn new(initial: GateState) -> Self {
        Self {
            state: RwLock::new(initial),
        }
    }

    /// Admits one write, or says why not. Keep the permit until the write committed.
    pub async fn enter(&self) -> Result<WritePermit<'_>, WriteRefused> {
        let state = self.state.read().await;
        match *state {
            GateState::Open => Ok(state),
            GateState::NotAdmitted => Err(WriteRefused::NotAdmitted),
            GateState::Retired { after } => Err(WriteRefused::Retired {
                configuration_id: after + 1,
                last_member_of: after,
            }),
        }
    }

    /// Moves the gate to `state` once every admitted write has finished.
    pub async fn set(&self, state: GateState) {
        *self.state.write().await = state;
    }

    /// What the gate lets through now.
    pub async fn state(&self) -> GateState {
        *self.state.read().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn the_gate_refuses_with_the_reason_and_closes_only_after_writes_in_flight() {
        let gate = Arc::new(WriteGate::new(GateState::Open));
        let permit = gate.enter().await.unwrap();
        let closing = tokio::spawn({
            let gate = gate.clone();
            async move { gate.set(GateState::Retired { after: 3 }).await }
        });
        // The write in flight holds the gate open.
        tokio::task::yield_now().await;
        assert!(!closing.is_finished());
        drop(permit);
        tokio::time::timeout(Duration::from_secs(10), closing)
            .await
            .unwrap()
            .unwrap();
        match gate.enter().await {
            Err(WriteRefused::Retired {
                configuration_id: 4,
                last_member_of: 3,
            }) => {}
            other => panic!("{other:?}"),
        }
        gate.set(GateState::NotAdmitted).await;
        assert!(matches!(gate.enter().await, Err(WriteRefused::NotAdmitted)));
        gate.set(GateState::Open).await;
        assert!(gate.enter().await.is_ok());
    }
}
