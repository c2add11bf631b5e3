use crate::{ClockError, ReplicaId};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// A hybrid logical clock stamp: wall-clock milliseconds, a counter for stamps issued
/// within one millisecond (or while the wall clock lags), and the issuing replica.
///
/// Stamps are totally ordered by `(wall_ms, counter, replica)`; the greater stamp wins a
/// conflict.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Hlc {
    /// Milliseconds since the Unix epoch (as far as the issuing node knew).
    pub wall_ms: u64,
    /// Orders stamps that share `wall_ms`.
    pub counter: u32,
    /// The replica that issued the stamp; breaks ties between writers.
    pub replica: ReplicaId,
}

impl fmt::Display for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}@{}", self.wall_ms, self.counter, self.replica)
    }
}

impl fmt::Debug for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hlc({self})")
    }
}

/// Where a clock reads physical time. Tests substitute a controllable source.
pub trait TimeSource: Send + Sync + fmt::Debug {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The operating system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemTimeSource;

impl TimeSource for SystemTimeSource {
    fn now_ms(&self) -> u64 {
        crate::unix_millis()
    }
}

/// Issues strictly increasing [`Hlc`] stamps for one replica.
///
/// The clock is a plain value: its owner (the store's writer thread) serialises access.
/// [`HybridClock::observe`] merges a remote stamp so that every later local stamp is
/// greater than it, and refuses stamps further ahead than `max_drift_ms` instead of
/// dragging the local clock into the future. [`HybridClock::restore`] continues after the
/// highest stamp a previous run issued or saw.
#[derive(Debug, Clone)]
pub struct HybridClock {
    replica: ReplicaId,
    wall_ms: u64,
    counter: u32,
    max_drift_ms: u64,
    time: Arc<dyn TimeSource>,
}

impl HybridClock {
    /// A clock for `replica` that refuses remote stamps more than `max_drift_ms` ahead.
    pub fn new(replica: ReplicaId, max_drift_ms: u64, time: Arc<dyn TimeSource>) -> Self {
        Self {
            replica,
            wall_ms: 0,
            counter: 0,
            max_drift_ms,
            time,
        }
    }

    /// The replica this clock stamps for.
    pub fn replica(&self) -> &ReplicaId {
        &self.replica
    }

    /// The highest `(wall_ms, counter)` issued or observed so far.
    pub fn last(&self) -> (u64, u32) {
        (self.wall_ms, self.counter)
    }

    /// Continues after `(wall_ms, counter)`, e.g. the highest stamp a previous run stored.
    pub fn restore(&mut self, wall_ms: u64, counter: u32) {
        if (wall_ms, counter) > (self.wall_ms, self.counter) {
            self.wall_ms = wall_ms;
            self.counter = counter;
        }
    }

    /// Issues the next stamp: greater than every stamp issued or observed before.
    pub fn tick(&mut self) -> Hlc {
        let now = self.time.now_ms();
        if now > self.wall_ms {
            self.wall_ms = now;
            self.counter = 0;
        } else if self.counter == u32::MAX {
            // The counter is exhausted: borrow one millisecond from the future.
            self.wall_ms += 1;
            self.counter = 0;
        } else {
            self.counter += 1;
        }
        Hlc {
            wall_ms: self.wall_ms,
            counter: self.counter,
            replica: self.replica.clone(),
        }
    }

    /// Checks that `remote` is within the allowed drift, without changing the clock.
    pub fn check(&self, remote: &Hlc) -> Result<(), ClockError> {
        self.check_all(std::iter::once(remote))
    }

    /// Checks every stamp of `remotes` (a page, a chunk) against one reading of the time.
    pub fn check_all<'a>(
        &self,
        remotes: impl IntoIterator<Item = &'a Hlc>,
    ) -> Result<(), ClockError> {
        let now = self.time.now_ms();
        let limit = now.saturating_add(self.max_drift_ms);
        for remote in remotes {
            self.check_one(remote, now, limit)?;
        }
        Ok(())
    }

    fn check_one(&self, remote: &Hlc, now: u64, limit: u64) -> Result<(), ClockError> {
        if remote.wall_ms > limit {
            return Err(ClockError::TooFarAhead {
                origin: remote.replica.clone(),
                ahead_ms: remote.wall_ms - now,
                max_drift_ms: self.max_drift_ms,
            });
        }
        Ok(())
    }

    /// Merges a received stamp: later local stamps will be greater than `remote`.
    pub fn observe(&mut self, remote: &Hlc) -> Result<(), ClockError> {
        self.check(remote)?;
        self.restore(remote.wall_ms, remote.counter);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[derive(Debug, Default)]
    struct ManualTime(AtomicU64);
    impl TimeSource for ManualTime {
        fn now_ms(&self) -> u64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    fn clock_at(ms: u64, drift: u64) -> (HybridClock, Arc<ManualTime>) {
        let time = Arc::new(ManualTime(AtomicU64::new(ms)));
        let clock = HybridClock::new(ReplicaId::new("local").unwrap(), drift, time.clone());
        (clock, time)
    }

    fn stamp(wall_ms: u64, counter: u32, node: &str) -> Hlc {
        Hlc {
            wall_ms,
            counter,
            replica: ReplicaId::new(node).unwrap(),
        }
    }

    #[test]
    fn counter_orders_stamps_within_one_millisecond() {
        let (mut clock, _) = clock_at(1_000, 100);
        assert_eq!(clock.tick(), stamp(1_000, 0, "local"));
        assert_eq!(clock.tick(), stamp(1_000, 1, "local"));
    }

    #[test]
    fn a_wall_clock_going_backwards_does_not_go_back_in_stamps() {
        let (mut clock, time) = clock_at(5_000, 100);
        let before = clock.tick();
        time.0.store(1_000, Ordering::SeqCst);
        assert!(clock.tick() > before);
    }

    #[test]
    fn observing_a_remote_stamp_moves_later_stamps_past_it() {
        let (mut clock, _) = clock_at(1_000, 100);
        let remote = stamp(1_050, 7, "zzz");
        clock.observe(&remote).unwrap();
        let next = clock.tick();
        assert!(next > remote, "{next} must beat {remote}");
        assert_eq!((next.wall_ms, next.counter), (1_050, 8));
    }

    #[test]
    fn a_stamp_beyond_the_drift_is_refused_and_leaves_the_clock_alone() {
        let (mut clock, _) = clock_at(1_000, 100);
        let err = clock.observe(&stamp(1_101, 0, "fast")).unwrap_err();
        assert!(err.to_string().contains("101 ms ahead"), "{err}");
        assert_eq!(clock.last(), (0, 0));
        assert!(clock.observe(&stamp(1_100, 0, "fast")).is_ok());
    }

    #[test]
    fn restore_continues_after_a_previous_run() {
        let (mut clock, _) = clock_at(10, 100);
        clock.restore(500, 3);
        assert_eq!(clock.tick(), stamp(500, 4, "local"));
    }

    #[test]
    fn an_exhausted_counter_borrows_a_millisecond() {
        let (mut clock, _) = clock_at(10, 100);
        clock.restore(10, u32::MAX);
        assert_eq!(clock.tick(), stamp(11, 0, "local"));
    }

    #[derive(Debug, Clone)]
    enum Step {
        Tick,
        WallJump(i64),
        Observe { ahead_ms: i64, counter: u32 },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            Just(Step::Tick),
            (-2_000i64..2_000).prop_map(Step::WallJump),
            (-2_000i64..2_000, 0u32..5)
                .prop_map(|(ahead_ms, counter)| Step::Observe { ahead_ms, counter }),
        ]
    }

    proptest! {
        #[test]
        fn stamps_strictly_increase_under_any_interleaving(steps in proptest::collection::vec(step(), 1..200)) {
            let (mut clock, time) = clock_at(1_000_000, 500);
            let mut highest_seen: Option<Hlc> = None;
            for s in steps {
                match s {
                    Step::Tick => {
                        let next = clock.tick();
                        if let Some(h) = &highest_seen {
                            prop_assert!(&next > h, "{} !> {}", next, h);
                        }
                        highest_seen = Some(next);
                    }
                    Step::WallJump(delta) => {
                        let now = time.0.load(Ordering::SeqCst) as i64;
                        time.0.store((now + delta).max(0) as u64, Ordering::SeqCst);
                    }
                    Step::Observe { ahead_ms, counter } => {
                        let now = time.0.load(Ordering::SeqCst) as i64;
                        let remote = stamp((now + ahead_ms).max(0) as u64, counter, "remote");
                        if clock.observe(&remote).is_ok() {
                            if highest_seen.as_ref().is_none_or(|h| &remote > h) {
                                highest_seen = Some(remote);
                            }
                        } else {
                            prop_assert!(ahead_ms > 500);
                        }
                    }
                }
            }
        }

        #[test]
        fn order_is_total_and_consistent(a in (0u64..5, 0u32..5, "[ab]"), b in (0u64..5, 0u32..5, "[ab]")) {
            let x = stamp(a.0, a.1, &a.2);
            let y = stamp(b.0, b.1, &b.2);
            let exactly_one = [x < y, x == y, x > y].iter().filter(|v| **v).count();
            prop_assert_eq!(exactly_one, 1);
            prop_assert_eq!(x == y, a == b);
        }
    }
}
