//! Who may hold a connection, so strangers cannot lock anyone out.
//!
//! - Sessions (handshake done) hold one of `max_connections` slots.
//! - Connections still in their handshake have a small budget of their own and hold no
//!   session slot. When that budget is full, the oldest pending handshake is dropped to
//!   make room: an idle connection that never finishes its handshake is always the
//!   first to go, and a real client finishes within milliseconds, long before it is the
//!   oldest. One address holding more than its share loses its own oldest first.
//! - Refusals are counted and logged as one summary line per interval, not a line each.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// A handshake this young is never evicted: a real client proves the cluster key within
/// a millisecond or two of connecting, so this protects it from a flood that arrives
/// right behind it. (The budget may be exceeded meanwhile by what arrives in this time.)
const PROTECTED_FOR: Duration = Duration::from_millis(50);

/// How often refusals are summed up in the log.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug)]
struct Pending {
    id: u64,
    address: IpAddr,
    evicted: CancellationToken,
    /// The initiator proved the cluster key: a key holder, never evicted.
    proved: Arc<std::sync::atomic::AtomicBool>,
    since: Instant,
}

#[derive(Debug, Default)]
struct Refusals {
    since: Option<Instant>,
    busy: u64,
    evicted: u64,
    failed: u64,
}

/// The handshake budget and the refusal log of one server.
#[derive(Debug)]
pub(crate) struct Admission {
    max_pending: usize,
    per_address: usize,
    pending: Mutex<(u64, VecDeque<Pending>)>,
    refusals: Mutex<Refusals>,
}

/// A handshake in progress: [`HandshakeTicket::evicted`] fires when a newer connection
/// needs its place. Dropping the ticket gives the place back.
#[derive(Debug)]
pub(crate) struct HandshakeTicket {
    admission: Arc<Admission>,
    id: u64,
    evicted: CancellationToken,
    proved: Arc<std::sync::atomic::AtomicBool>,
}

impl HandshakeTicket {
    /// Cancelled when the handshake must give way.
    pub(crate) fn evicted(&self) -> &CancellationToken {
        &self.evicted
    }

    /// The initiator proved the cluster key: from now on only its timeout ends it.
    pub(crate) fn proved(&self) {
        self.proved.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for HandshakeTicket {
    fn drop(&mut self) {
        let mut pending = self
            .admission
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        pending.1.retain(|p| p.id != self.id);
    }
}

/// Why a connection was turned away, for the summary.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Refusal {
    /// Every session slot is taken.
    Busy,
    /// Its handshake made way for a newer connection.
    Evicted,
    /// Its handshake failed or timed out.
    Failed,
}

impl Admission {
    pub(crate) fn new(max_pending: usize, per_address: usize) -> Arc<Self> {
        Arc::new(Self {
            max_pending: max_pending.max(1),
            per_address: per_address.clamp(1, max_pending.max(1)),
            pending: Mutex::new((0, VecDeque::new())),
            refusals: Mutex::new(Refusals::default()),
        })
    }

    /// Admits a new connection from `address` to its handshake, evicting the oldest
    /// pending one of the same address past its share, or else the oldest of all when
    /// the budget is full.
    pub(crate) fn begin_handshake(self: &Arc<Self>, address: IpAddr) -> HandshakeTicket {
        let evicted = CancellationToken::new();
        let proved = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut pushed_out = 0;
        let id = {
            let mut guard = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            let (next, queue) = &mut *guard;
            let now = Instant::now();
            let unproved = |p: &Pending| !p.proved.load(std::sync::atomic::Ordering::SeqCst);
            let evictable =
                |p: &Pending| unproved(p) && now.duration_since(p.since) >= PROTECTED_FOR;
            let same = queue
                .iter()
                .filter(|p| p.address == address && unproved(p))
                .count();
            if same >= self.per_address
                && let Some(index) = queue
                    .iter()
                    .position(|p| p.address == address && evictable(p))
                && let Some(old) = queue.remove(index)
            {
                old.evicted.cancel();
                pushed_out += 1;
            }
            while queue.iter().filter(|p| unproved(p)).count() >= self.max_pending {
                let Some(index) = queue.iter().position(evictable) else {
                    break;
                };
                if let Some(old) = queue.remove(index) {
                    old.evicted.cancel();
                    pushed_out += 1;
                }
            }
            *next += 1;
            queue.push_back(Pending {
                id: *next,
                address,
                evicted: evicted.clone(),
                proved: proved.clone(),
                since: now,
            });
            *next
        };
        for _ in 0..pushed_out {
            self.refused(Refusal::Evicted);
        }
        HandshakeTicket {
            admission: self.clone(),
            id,
            evicted,
            proved,
        }
    }

    /// Counts a refusal; logs the first after a quiet interval at once and the rest as
    /// one summary per interval.
    pub(crate) fn refused(&self, why: Refusal) {
        let mut r = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let quiet = r
            .since
            .is_none_or(|since| now.duration_since(since) >= REFUSAL_LOG_INTERVAL);
        if quiet && (r.busy + r.evicted + r.failed) > 0 {
            tracing::warn!(
                busy = r.busy,
                evicted = r.evicted,
                failed_handshakes = r.failed,
                interval_s = REFUSAL_LOG_INTERVAL.as_secs(),
                "connections refused in the last interval: busy = every session slot taken; evicted = a handshake left unfinished made way for a newer connection"
            );
            *r = Refusals::default();
        }
        if r.since.is_none() {
            r.since = Some(now);
            match why {
                Refusal::Busy => tracing::warn!(
                    "refusing connections: every session slot is taken (further refusals are summed up every {} s)",
                    REFUSAL_LOG_INTERVAL.as_secs()
                ),
                Refusal::Evicted => tracing::warn!(
                    "dropping unfinished handshakes to make room for new connections (summed up every {} s)",
                    REFUSAL_LOG_INTERVAL.as_secs()
                ),
                Refusal::Failed => {}
            }
        }
        match why {
            Refusal::Busy => r.busy += 1,
            Refusal::Evicted => r.evicted += 1,
            Refusal::Failed => r.failed += 1,
        }
    }

    #[cfg(test)]
    fn pending(&self) -> usize {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    /// Past the protection of a young handshake.
    fn age() {
        std::thread::sleep(PROTECTED_FOR + Duration::from_millis(5));
    }

    #[test]
    fn a_young_handshake_is_not_evicted_and_the_budget_stretches_meanwhile() {
        let admission = Admission::new(2, 2);
        let a = admission.begin_handshake(ip(1));
        let b = admission.begin_handshake(ip(2));
        let c = admission.begin_handshake(ip(3));
        assert!(!a.evicted().is_cancelled() && !b.evicted().is_cancelled());
        assert_eq!(admission.pending(), 3);
        age();
        let _d = admission.begin_handshake(ip(4));
        assert!(a.evicted().is_cancelled() && b.evicted().is_cancelled());
        assert!(!c.evicted().is_cancelled());
    }

    #[test]
    fn a_full_budget_evicts_the_oldest_handshake_and_an_address_past_its_share_its_own() {
        let admission = Admission::new(3, 2);
        let a1 = admission.begin_handshake(ip(1));
        let b1 = admission.begin_handshake(ip(2));
        let a2 = admission.begin_handshake(ip(1));
        assert_eq!(admission.pending(), 3);
        age();
        // ip 1 is at its share: its own oldest goes, not ip 2's.
        let a3 = admission.begin_handshake(ip(1));
        assert!(a1.evicted().is_cancelled());
        assert!(!b1.evicted().is_cancelled() && !a2.evicted().is_cancelled());
        age();
        // The budget is full: the oldest of all goes.
        let c1 = admission.begin_handshake(ip(3));
        assert!(b1.evicted().is_cancelled());
        assert!(!a3.evicted().is_cancelled() && !c1.evicted().is_cancelled());
        // A key holder's handshake is never evicted.
        // A key holder's handshake no longer counts against the budget, and is never
        // evicted: the strangers go.
        c1.proved();
        age();
        let d1 = admission.begin_handshake(ip(4));
        assert!(!a2.evicted().is_cancelled());
        let e1 = admission.begin_handshake(ip(5));
        assert!(a2.evicted().is_cancelled(), "the oldest stranger goes");
        assert!(!c1.evicted().is_cancelled());
        drop((d1, e1));
        // A finished handshake gives its place back.
        drop(a1);
        drop(b1);
        drop(a2);
        assert_eq!(admission.pending(), 2);
        let c2 = admission.begin_handshake(ip(3));
        assert!(!c2.evicted().is_cancelled() && !a3.evicted().is_cancelled());
    }
}
