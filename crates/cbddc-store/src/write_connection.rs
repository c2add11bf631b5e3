//! The one write connection of a database, shared by the store's writer thread and the
//! control plane's thread, so the file has a single SQLite writer: no second connection
//! competing for the write lock through a busy timeout.
//!
//! Whoever holds the mutex uses the connection. A transaction may span several holds only
//! for the control plane (its step batches writes across OmniPaxos' storage calls): while
//! the connection is left inside a transaction, the thread that left it so owns it, and
//! every other thread waits until that transaction ends. The store's writer always ends
//! its group's transaction before it lets go.

use cbddc_core::Durability;
use rusqlite::Connection;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::thread::ThreadId;

pub(crate) struct WriteConnection {
    slot: Mutex<Slot>,
    /// Signalled whenever a spanning transaction ends.
    released: Condvar,
    /// The store's durability; the control plane commits with `synchronous=FULL` whatever
    /// it is (a Paxos promise forgotten on power loss breaks the protocol).
    durability: Durability,
    /// Threads waiting in [`WriteConnection::hold`] for another's transaction.
    waiting: AtomicUsize,
}

struct Slot {
    conn: Connection,
    /// The thread whose transaction is open across holds.
    owner: Option<ThreadId>,
    /// `synchronous` was raised to FULL for the control plane and is to be restored.
    raised: bool,
}

impl std::fmt::Debug for WriteConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteConnection").finish_non_exhaustive()
    }
}

impl WriteConnection {
    pub(crate) fn new(conn: Connection, durability: Durability) -> Self {
        Self {
            slot: Mutex::new(Slot {
                conn,
                owner: None,
                raised: false,
            }),
            released: Condvar::new(),
            durability,
            waiting: AtomicUsize::new(0),
        }
    }

    /// The store's durability setting.
    pub(crate) fn durability(&self) -> Durability {
        self.durability
    }

    /// The connection for this thread, once no other thread's transaction is open on it.
    pub(crate) fn hold(&self) -> Held<'_> {
        let me = std::thread::current().id();
        let busy = |s: &mut Slot| s.owner.is_some_and(|owner| owner != me);
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        if busy(&mut slot) {
            self.waiting.fetch_add(1, Ordering::SeqCst);
            slot = self
                .released
                .wait_while(slot, busy)
                .unwrap_or_else(|p| p.into_inner());
            self.waiting.fetch_sub(1, Ordering::SeqCst);
        }
        Held { owner: self, slot }
    }

    /// How many threads wait for another's transaction to end.
    #[cfg(test)]
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Like [`WriteConnection::hold`], committing with `synchronous=FULL` whatever the
    /// store's durability: for the control plane.
    pub(crate) fn hold_durable(&self) -> Held<'_> {
        let mut held = self.hold();
        if self.durability != Durability::Full && !held.slot.raised {
            match held.slot.conn.execute_batch("PRAGMA synchronous = FULL") {
                Ok(()) => held.slot.raised = true,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot raise synchronous for the control plane")
                }
            }
        }
        held
    }
}

/// The connection, held by one thread (see the module docs).
pub(crate) struct Held<'a> {
    owner: &'a WriteConnection,
    slot: MutexGuard<'a, Slot>,
}

impl Deref for Held<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        &self.slot.conn
    }
}

impl DerefMut for Held<'_> {
    fn deref_mut(&mut self) -> &mut Connection {
        &mut self.slot.conn
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if !self.slot.conn.is_autocommit() {
            self.slot.owner = Some(std::thread::current().id());
            return;
        }
        if self.slot.raised {
            match self.slot.conn.execute_batch("PRAGMA synchronous = NORMAL") {
                Ok(()) => self.slot.raised = false,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot restore synchronous after a control-plane commit")
                }
            }
        }
        if self.slot.owner.take().is_some() {
            self.owner.released.notify_all();
        }
    }
}
