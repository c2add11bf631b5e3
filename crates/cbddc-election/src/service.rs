use crate::bully::{Bully, ElectionSettings, Leadership, LeadershipChanged};
use cbddc_core::{NodeId, PeerDirectory};
use std::sync::Arc;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How much later than its interval the election may wake before it counts as paused.
const PAUSE_SLACK: std::time::Duration = std::time::Duration::from_millis(250);

/// The election of one node, running: re-evaluates on every change of the peer view and
/// every interval, keeps the current [`Leadership`] readable, and broadcasts each change.
#[derive(Debug)]
pub struct ElectionService {
    current: watch::Receiver<Leadership>,
    events: broadcast::Sender<LeadershipChanged>,
    token: CancellationToken,
}

impl ElectionService {
    /// Starts electing for `local` over `directory` until `token` is cancelled (or the
    /// service is dropped), as a task of `tasks` (so its owner can wait for it to end).
    ///
    /// `eligible` is the one input saying whether this node may lead (it overrides
    /// `settings.eligible`): the node folds its configuration and its cluster membership
    /// into it, and the bully re-evaluates whenever it changes.
    pub fn start(
        local: NodeId,
        settings: ElectionSettings,
        directory: Arc<dyn PeerDirectory>,
        mut eligible: watch::Receiver<bool>,
        tasks: &TaskTracker,
        token: CancellationToken,
    ) -> Self {
        let (current_tx, current) = watch::channel(Leadership::default());
        let events = broadcast::channel(64).0;
        let task_events = events.clone();
        let task_token = token.clone();
        tasks.spawn(async move {
            // tokio's clock, so that tests with paused time drive the election too.
            let now = || tokio::time::Instant::now().into_std();
            let mut bully = Bully::new(local.clone(), settings, now());
            bully.set_eligible(*eligible.borrow_and_update());
            let mut changes = directory.changes();
            let mut ticker = tokio::time::interval(settings.interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // A closed input is not polled again: its last value stays.
            let (mut directory_open, mut eligible_open) = (true, true);
            // The loop wakes at least every interval: a longer gap means this process
            // was paused (SIGSTOP, a VM freeze) or starved.
            let paused_after = settings.interval + PAUSE_SLACK;
            let mut last_turn = now();
            loop {
                tokio::select! {
                    _ = task_token.cancelled() => return,
                    _ = ticker.tick() => {}
                    changed = changes.changed(), if directory_open => if changed.is_err() {
                        // The directory is gone: keep evaluating on the interval only.
                        directory_open = false;
                    },
                    changed = eligible.changed(), if eligible_open => match changed {
                        Ok(()) => bully.set_eligible(*eligible.borrow_and_update()),
                        Err(_) => eligible_open = false,
                    },
                }
                let gap = now().saturating_duration_since(last_turn);
                if gap > paused_after {
                    tracing::warn!(node = %local, gap = ?gap, "this node was paused or starved; it stops leading until it has fresh news of its peers");
                    bully.resumed(now());
                }
                last_turn = now();
                if let Some(change) = bully.evaluate(now(), &directory.peers()) {
                    // The node logs the leadership it acts on; this is the bully's view.
                    tracing::debug!(
                        node = %local,
                        leader = ?change.leader.as_ref().map(NodeId::as_str),
                        previous = ?change.previous.as_ref().map(NodeId::as_str),
                        is_leader = change.is_leader,
                        "leadership changed"
                    );
                    current_tx.send_replace(bully.leadership());
                    let _ = task_events.send(change);
                }
            }
        });
        Self {
            current,
            events,
            token,
        }
    }

    /// Who leads now.
    pub fn leadership(&self) -> Leadership {
        self.current.borrow().clone()
    }

    /// Leadership as a watch (for tasks that follow the latest value).
    pub fn watch(&self) -> watch::Receiver<Leadership> {
        self.current.clone()
    }

    /// Changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<LeadershipChanged> {
        self.events.subscribe()
    }
}

impl Drop for ElectionService {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cbddc_core::{MockPeerDirectory, PeerState, PeerType};
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    fn id(name: &str) -> NodeId {
        NodeId::new(name).unwrap()
    }

    fn alive(name: &str) -> PeerState {
        PeerState {
            node_id: id(name),
            peer_type: PeerType::LanDiscovered,
            address: "127.0.0.1:1".into(),
            eligible: true,
            alive_since: Some(Instant::now() - Duration::from_secs(60)),
        }
    }

    /// A mocked directory whose view the test sets, announcing each change.
    fn directory(
        view: Arc<Mutex<Vec<PeerState>>>,
        changes: watch::Receiver<u64>,
    ) -> Arc<dyn PeerDirectory> {
        let mut mock = MockPeerDirectory::new();
        mock.expect_peers()
            .returning(move || view.lock().unwrap().clone());
        mock.expect_changes().return_once(move || changes);
        Arc::new(mock)
    }

    /// The election of `name` over `directory`, and its events from the start.
    fn elect(
        name: &str,
        settings: ElectionSettings,
        directory: Arc<dyn PeerDirectory>,
        eligible: watch::Receiver<bool>,
    ) -> (ElectionService, broadcast::Receiver<LeadershipChanged>) {
        let service = ElectionService::start(
            id(name),
            settings,
            directory,
            eligible,
            &TaskTracker::new(),
            CancellationToken::new(),
        );
        let events = service.subscribe();
        (service, events)
    }

    async fn next(events: &mut broadcast::Receiver<LeadershipChanged>) -> LeadershipChanged {
        tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .unwrap()
            .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn follows_the_directory_and_announces_every_change() {
        let view = Arc::new(Mutex::new(vec![alive("b")]));
        let (bump, changes) = watch::channel(0u64);
        let settings = ElectionSettings {
            startup_grace: Duration::ZERO,
            ..ElectionSettings::new(true, Duration::from_millis(500), Duration::from_secs(2))
        };
        let (service, mut events) = elect(
            "c",
            settings,
            directory(view.clone(), changes),
            watch::channel(true).1,
        );
        assert_eq!(next(&mut events).await.leader, Some(id("b")));
        assert!(!service.leadership().is_leader);

        view.lock().unwrap().push(alive("a"));
        bump.send_replace(1);
        let change = next(&mut events).await;
        assert_eq!(
            (change.leader, change.previous),
            (Some(id("a")), Some(id("b")))
        );

        view.lock().unwrap().clear();
        bump.send_replace(2);
        let change = next(&mut events).await;
        assert!(change.is_leader);
        assert_eq!(
            service.leadership(),
            Leadership {
                leader: Some(id("c")),
                is_leader: true
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_interval_alone_ends_the_startup_grace() {
        let view = Arc::new(Mutex::new(Vec::new()));
        let (_bump, changes) = watch::channel(0u64);
        let settings =
            ElectionSettings::new(true, Duration::from_millis(100), Duration::from_millis(300));
        let (_service, mut events) = elect(
            "solo",
            settings,
            directory(view, changes),
            watch::channel(true).1,
        );
        let change = next(&mut events).await;
        assert!(
            change.is_leader,
            "with nobody else alive, the node leads after its startup grace"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_node_resumed_after_a_pause_stops_leading_until_its_grace_has_passed_again() {
        let view = Arc::new(Mutex::new(Vec::new()));
        let (_bump, changes) = watch::channel(0u64);
        let settings =
            ElectionSettings::new(true, Duration::from_millis(100), Duration::from_millis(300));
        let (_service, mut events) = elect(
            "solo",
            settings,
            directory(view, changes),
            watch::channel(true).1,
        );
        assert!(next(&mut events).await.is_leader);
        // The whole process stops for five seconds: the election's clock jumps.
        tokio::time::advance(Duration::from_secs(5)).await;
        let change = next(&mut events).await;
        assert!(
            !change.is_leader && change.previous == Some(id("solo")),
            "a resumed node claimed leadership before hearing from anyone: {change:?}"
        );
        let change = next(&mut events).await;
        assert!(
            change.is_leader,
            "it leads again after its grace: {change:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_eligibility_input_alone_decides_whether_this_node_may_lead() {
        let view = Arc::new(Mutex::new(vec![alive("z")]));
        let (_bump, changes) = watch::channel(0u64);
        let settings = ElectionSettings {
            startup_grace: Duration::ZERO,
            ..ElectionSettings::new(true, Duration::from_millis(100), Duration::from_millis(300))
        };
        let (eligible, input) = watch::channel(false);
        let (_service, mut events) = elect("a", settings, directory(view, changes), input);
        // Configured eligible, but the input says no (say, not a member): z leads.
        assert_eq!(next(&mut events).await.leader, Some(id("z")));
        eligible.send_replace(true);
        let change = next(&mut events).await;
        assert!(change.is_leader, "{change:?}");
        eligible.send_replace(false);
        let change = next(&mut events).await;
        assert_eq!((change.leader, change.is_leader), (Some(id("z")), false));
    }
}
