//! What the node announces to its embedder: events, and the latest leadership and cluster
//! membership as `watch` values. Owned by the node, not by a runtime, so subscribers keep
//! hearing across a node id change (which replaces the runtime).

use crate::NodeEvent;
use cbddc_control::ControlPlane;
use cbddc_core::NodeId;
use cbddc_election::Leadership;
use cbddc_observe::NodeMetrics;
use std::sync::Arc;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

/// The cluster membership as this node sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterMembership {
    /// The running configuration (`None` before joining a cluster, or after retiring).
    pub configuration_id: Option<u32>,
    /// Its members.
    pub members: Vec<NodeId>,
    /// This node was removed from the cluster.
    pub retired: bool,
}

/// Sets `tx` to `now` if it holds something else; true if it changed (and its receivers
/// were told).
pub(crate) fn set_if_changed<T: PartialEq>(tx: &watch::Sender<T>, now: T) -> bool {
    tx.send_if_modified(|held| {
        if *held == now {
            return false;
        }
        *held = now;
        true
    })
}

#[derive(Debug)]
pub(crate) struct Signals {
    pub(crate) events: broadcast::Sender<NodeEvent>,
    pub(crate) leadership: watch::Sender<Leadership>,
    /// `None` for a node without a `[cluster]` section.
    pub(crate) membership: watch::Sender<Option<ClusterMembership>>,
    pub(crate) metrics: Arc<NodeMetrics>,
}

impl Signals {
    pub(crate) fn new() -> Self {
        Self {
            events: broadcast::channel(256).0,
            leadership: watch::channel(Leadership::default()).0,
            membership: watch::channel(None).0,
            metrics: Arc::new(NodeMetrics::default()),
        }
    }

    pub(crate) fn leadership(&self) -> Leadership {
        self.leadership.borrow().clone()
    }

    /// Records who leads; announces it when it changed.
    pub(crate) fn set_leadership(&self, now: Leadership) {
        if set_if_changed(&self.leadership, now.clone()) {
            tracing::info!(leader = ?now.leader.as_ref().map(|l| l.as_str()), is_leader = now.is_leader, "leadership changed");
            let _ = self.events.send(NodeEvent::LeadershipChanged {
                leader: now.leader,
                is_leader: now.is_leader,
            });
        }
    }

    /// Records the membership; announces it when it changed.
    pub(crate) fn set_membership(&self, now: Option<ClusterMembership>) {
        if set_if_changed(&self.membership, now.clone())
            && let Some(now) = now
        {
            let _ = self.events.send(NodeEvent::ClusterChanged {
                configuration_id: now.configuration_id,
                members: now.members,
                retired: now.retired,
            });
        }
    }

    /// Follows the control plane's view until `token` is cancelled.
    pub(crate) fn follow_cluster(
        self: &Arc<Self>,
        cluster: &ControlPlane,
        token: CancellationToken,
    ) {
        let signals = self.clone();
        let mut view = cluster.watch();
        cluster.spawn(async move {
            loop {
                let membership = {
                    let view = view.borrow_and_update();
                    view.ready.then(|| ClusterMembership {
                        configuration_id: view.status.configuration_id,
                        members: view
                            .status
                            .members
                            .iter()
                            .filter_map(|m| NodeId::new(m.as_str()).ok())
                            .collect(),
                        retired: view.status.retired,
                    })
                };
                if let Some(membership) = membership {
                    signals.set_membership(Some(membership));
                }
                tokio::select! {
                    _ = token.cancelled() => return,
                    changed = view.changed() => if changed.is_err() { return },
                }
            }
        });
    }
}
