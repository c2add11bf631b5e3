//! Applies each new configuration to the running node, one at a time and in order,
//! touching only what changed.
//!
//! | change | action |
//! | --- | --- |
//! | `node_id`, `data_dir` | identity change: open the new database first, then stop every service, close the old database (left on disk untouched) and start every service again under the new id, on the same listening socket |
//! | `tcp_port`, `bind_address` | bind the new address first; on success the new server takes over and the old one finishes its sessions in flight; on failure the old listener stays, the error is reported, `status` shows the address wanted, and binding is tried again with backoff until it works or the configuration changes |
//! | `cluster_key` | new sessions, inbound and outbound, use the new key |
//! | `sync_interval_ms` | the sync tasks restart with it |
//! | `oplog_retention_ms`, `feed_retention_ms` | the next compaction round uses it |
//! | `known_peers` | the configured peers in the store are replaced and the sync tasks follow |
//! | `[[indexes]]` | an added index is created and built in the background (progress in status; queries use it once built), a removed one dropped |
//! | `[discovery]`, `[election]` (and any port or key change) | discovery and election restart with the new settings; a change of `eligible` is also told to peers in every new session, both ways, and sessions opened before it close so their peers reconnect and hear it |
//! | `durability`, `max_clock_drift_ms`, `node_key_file`, `min_protocol_version` | not applied live: logged, and in force from the next start |
//! | `[cluster]` | not applied live: members change by reconfiguration (`cbddc cluster reconfigure`) |

use crate::runtime::{GRACE, Runtime, bind, open_store, server_settings};
use crate::{NodeError, NodeEvent, Shared};
use cbddc_config::{ConfigEvent, PeerNodeConfiguration};
use cbddc_core::PeerStore;
use cbddc_net::{ClusterKey, TcpSyncServer};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Default)]
struct Outcome {
    applied: Vec<String>,
    not_applied: Vec<String>,
}

/// First wait before binding a wanted address again after it was busy.
const FIRST_BIND_RETRY: Duration = Duration::from_millis(250);
/// Longest wait between two attempts to bind a wanted address.
const MAX_BIND_RETRY: Duration = Duration::from_secs(10);

/// Follows the provider until `token` is cancelled. A new address that could not be
/// bound (the port was busy) is tried again with backoff until it binds or the
/// configuration changes again.
pub(crate) async fn run(shared: Arc<Shared>, token: CancellationToken) {
    let mut events = shared.provider.subscribe();
    // A change made between the node's start and this subscription is not lost.
    apply(&shared, shared.provider.current()).await;
    let mut bind_retry = FIRST_BIND_RETRY;
    loop {
        let waiting_for_address = wanted_address(&shared).await.is_some();
        let event = tokio::select! {
            _ = token.cancelled() => return,
            event = events.recv() => Some(event),
            _ = tokio::time::sleep(bind_retry), if waiting_for_address => None,
        };
        let Some(event) = event else {
            let wanted = wanted_address(&shared).await;
            tracing::info!(?wanted, "trying the configured address again");
            apply(&shared, shared.provider.current()).await;
            bind_retry = (bind_retry * 2).min(MAX_BIND_RETRY);
            continue;
        };
        bind_retry = FIRST_BIND_RETRY;
        match event {
            Ok(ConfigEvent::Changed(config)) => apply(&shared, config).await,
            Ok(ConfigEvent::Rejected { source, message }) => {
                let _ = shared
                    .signals
                    .events
                    .send(NodeEvent::ConfigRefused { source, message });
            }
            Err(RecvError::Lagged(_)) => apply(&shared, shared.provider.current()).await,
            Err(RecvError::Closed) => return,
        }
    }
}

/// The address the configuration asks for, if the node does not listen there (it could
/// not be bound); the handler shows it in `status`.
async fn wanted_address(shared: &Shared) -> Option<std::net::SocketAddr> {
    let runtime = shared.runtime.lock().await;
    let wanted = shared.provider.current().listen_address();
    let pending = (runtime.config.listen_address() != wanted).then_some(wanted);
    *runtime
        .service
        .wanted_listen
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = pending;
    pending
}

async fn apply(shared: &Arc<Shared>, new: Arc<PeerNodeConfiguration>) {
    let mut runtime = shared.runtime.lock().await;
    if *runtime.config == *new {
        return;
    }
    let old_metrics = runtime.config.metrics_address;
    let mut result = apply_to(&mut runtime, &new, &shared.root).await;
    if let Ok(outcome) = &mut result {
        match shared.observe_at(new.metrics_address).await {
            Ok(true) => outcome.applied.push("metrics_address".into()),
            Ok(false) => {}
            Err(e) => {
                tracing::error!(error = %e, "cannot serve the metrics at the new address; keeping the old one");
                let mut kept = (*runtime.config).clone();
                kept.metrics_address = old_metrics;
                runtime.config = Arc::new(kept);
                outcome.not_applied.push(format!("metrics_address: {e}"));
            }
        }
    }
    match result {
        Ok(outcome) => {
            shared.publish(&runtime);
            for what in &outcome.not_applied {
                tracing::warn!(%what, "configuration change not applied");
            }
            tracing::info!(node = %runtime.config.node_id, address = %runtime.listen(), applied = ?outcome.applied, "reconfigured");
            let _ = shared.signals.events.send(NodeEvent::Reconfigured {
                node_id: runtime.config.node_id.clone(),
                listen: runtime.listen(),
                applied: outcome.applied,
                not_applied: outcome.not_applied,
            });
        }
        Err(e) => {
            shared.publish(&runtime);
            tracing::error!(error = %e, "reconfiguration failed; the node keeps running as it was");
            let _ = shared
                .signals
                .events
                .send(NodeEvent::ReconfigurationFailed {
                    reason: e.to_string(),
                });
        }
    }
}

async fn apply_to(
    runtime: &mut Runtime,
    new: &PeerNodeConfiguration,
    root: &CancellationToken,
) -> Result<Outcome, NodeError> {
    let old = runtime.config.clone();
    let mut effective = new.clone();
    let mut outcome = Outcome::default();
    if new.durability != old.durability {
        effective.durability = old.durability;
        outcome
            .not_applied
            .push("durability: takes effect at the next start".into());
    }
    if new.collections != old.collections {
        effective.collections = old.collections.clone();
        outcome.not_applied.push(
            "collections: takes effect at the next start (a database never widens what it replicates)"
                .into(),
        );
    }
    if new.min_protocol_version != old.min_protocol_version {
        effective.min_protocol_version = old.min_protocol_version;
        outcome.not_applied.push(
            "min_protocol_version: read at start only; restart the node to refuse (or admit again) older peers"
                .into(),
        );
    }
    if new.node_key_file != old.node_key_file {
        effective.node_key_file = old.node_key_file.clone();
        outcome.not_applied.push(
            "node_key_file: the node key is read at start only; restart to use another (peers that pinned the old key refuse a new one until `cbddc peers repin`)"
                .into(),
        );
    }
    if new.max_clock_drift_ms != old.max_clock_drift_ms {
        effective.max_clock_drift_ms = old.max_clock_drift_ms;
        outcome
            .not_applied
            .push("max_clock_drift_ms: takes effect at the next start".into());
    }
    if new.cluster != old.cluster {
        effective.cluster = old.cluster.clone();
        outcome.not_applied.push(
            "cluster: membership changes through `cbddc cluster reconfigure`; the section is read at the next start"
                .into(),
        );
    }
    let address_changed = new.listen_address() != old.listen_address();

    if new.node_id != old.node_id || new.data_dir != old.data_dir {
        // Everything that can fail is prepared before the running services are touched.
        let fresh_listener = if address_changed {
            match bind(new.listen_address()).await {
                Ok(listener) => Some(listener),
                Err(e) => {
                    keep_address(&mut effective, &old, &mut outcome, &e);
                    None
                }
            }
        } else {
            None
        };
        let store = open_store(&effective).await?;
        tracing::info!(from = %old.node_id, to = %effective.node_id, "changing node identity");
        let old_listen = runtime.listen();
        let old_listener = runtime.stop().await;
        let listener = match (fresh_listener, old_listener) {
            (Some(listener), _) | (None, Some(listener)) => listener,
            (None, None) => bind(effective.listen_address()).await?,
        };
        let started = Runtime::start(
            Arc::new(effective),
            store,
            listener,
            runtime.signals.clone(),
            runtime.readable.clone(),
            root.child_token(),
        )
        .await;
        match started {
            Ok(started) => *runtime = started,
            Err(e) => {
                // The node must not sit stopped while it reports that it runs: back to
                // the identity in force before, its database and its address.
                tracing::error!(error = %e, node = %old.node_id, "the new node id could not start; resuming the previous one");
                let store = open_store(&old).await?;
                let listener = bind(old_listen).await?;
                *runtime = Runtime::start(
                    old,
                    store,
                    listener,
                    runtime.signals.clone(),
                    runtime.readable.clone(),
                    root.child_token(),
                )
                .await?;
                return Err(e);
            }
        }
        outcome.applied.push("node_id".into());
        if address_changed && runtime.config.listen_address() == new.listen_address() {
            outcome.applied.push("listen address".into());
        }
        return Ok(outcome);
    }

    if address_changed {
        match bind(new.listen_address()).await {
            Ok(listener) => {
                let listen = listener.local_addr().map_err(|source| NodeError::Bind {
                    address: new.listen_address(),
                    source,
                })?;
                let server = TcpSyncServer::start(
                    listener,
                    server_settings(&effective, &runtime.identity),
                    Arc::new(crate::handler::NodeHandler::new(runtime.service.clone())),
                    runtime.token.child_token(),
                )?;
                let previous = std::mem::replace(&mut runtime.server, server);
                *runtime
                    .service
                    .listen
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = listen;
                // Sessions in flight on the old address finish their request.
                previous.stop(GRACE).await;
                outcome.applied.push("listen address".into());
            }
            Err(e) => keep_address(&mut effective, &old, &mut outcome, &e),
        }
    }
    if new.cluster_key != old.cluster_key || new.sync_interval_ms != old.sync_interval_ms {
        let key = ClusterKey::derive(&new.cluster_key);
        runtime.server.set_cluster_key(key.clone());
        if let Some(cluster) = &runtime.cluster {
            cluster.set_cluster_key(key.clone());
        }
        runtime
            .sync
            .update(key, Duration::from_millis(new.sync_interval_ms));
        outcome
            .applied
            .push("cluster_key / sync_interval_ms".into());
    }
    if new.oplog_retention_ms != old.oplog_retention_ms {
        runtime
            .sync
            .compactor()
            .set_retention(new.oplog_retention_ms);
        outcome.applied.push("oplog_retention_ms".into());
    }
    if new.feed_retention_ms != old.feed_retention_ms {
        runtime
            .sync
            .compactor()
            .set_feed_retention(new.feed_retention_ms);
        outcome.applied.push("feed_retention_ms".into());
    }
    if new.known_peers != old.known_peers {
        runtime
            .store
            .replace_configured_peers(new.known_peers.clone())
            .await?;
        runtime.service.follow_peer_store().await?;
        outcome.applied.push("known_peers".into());
    }
    if new.indexes != old.indexes {
        runtime.service.indexes.declare(new.indexes.clone()).await?;
        outcome
            .applied
            .push("indexes (new ones build in the background)".into());
    }
    if new.election.eligible != old.election.eligible {
        // Peers hear of a role change in their next sessions, both ways.
        runtime.server.set_eligible(new.election.eligible);
        runtime.sync.set_eligible(new.election.eligible);
        outcome.applied.push("election.eligible".into());
    }
    if new.advertise_address != old.advertise_address {
        *runtime
            .service
            .advertise
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = new.advertise_address.clone();
        outcome
            .applied
            .push("advertise_address (for the next reconfiguration naming this node)".into());
    }
    let control_changed = runtime.config.listen_address() != effective.listen_address()
        || old.cluster_key != effective.cluster_key
        || old.discovery != effective.discovery
        || old.election != effective.election;
    runtime.config = Arc::new(effective);
    if control_changed {
        runtime.restart_control().await?;
        outcome.applied.push("discovery / election".into());
    }
    Ok(outcome)
}

fn keep_address(
    effective: &mut PeerNodeConfiguration,
    old: &PeerNodeConfiguration,
    outcome: &mut Outcome,
    error: &NodeError,
) {
    tracing::error!(%error, kept = %old.listen_address(), "cannot move to the new address; keeping the old listener");
    effective.tcp_port = old.tcp_port;
    effective.bind_address = old.bind_address;
    outcome.not_applied.push(format!(
        "listen address: {error}; still listening on {}",
        old.listen_address()
    ));
}
