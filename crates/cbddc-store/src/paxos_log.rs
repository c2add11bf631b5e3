//! OmniPaxos' [`Storage`] on the node's SQLite database: one log per configuration.
//!
//! Indexes are absolute ("as if never compacted"): the log of a configuration holds the
//! entries `trimmed_idx .. trimmed_idx + len`, each row keyed by its index, and never has
//! a hole. The semantics follow the crate's reference `MemoryStorage` exactly, which the
//! crate relies on: `trim` moves the first index (apart from `compacted_idx`), and
//! `append_on_prefix(from, …)` past the end of the log appends at the end. Every
//! call is durable on its own (OmniPaxos also writes outside `write_atomically`), and
//! `write_atomically` is one transaction. The storage owns its own connection and does
//! blocking I/O: OmniPaxos calls it from `tick`, `append` and `handle_incoming`, so run the
//! instance on a thread of its own, never on an async worker.

use crate::error::{SqlContext, StoreError};
use crate::write_connection::{Held, WriteConnection};
use omnipaxos::ballot_leader_election::Ballot;
use omnipaxos::storage::{Entry, StopSign, Storage, StorageOp, StorageResult};
use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::marker::PhantomData;
use std::path::Path;
use std::sync::Arc;

/// One connection to a node's database shared by the logs of every configuration, so a
/// driver can make all the control-plane writes of one step a single transaction (one
/// fsync): [`ControlDatabase::begin`] before the step, [`ControlDatabase::commit`] before
/// sending what the step produced. Outside a batch every call is durable on its own.
///
/// Where a [`crate::SqliteStore`] has the database open, take it from
/// [`crate::SqliteStore::control_database`]: it then shares the store's write connection,
/// and the file has one writer. Commits are `synchronous=FULL` either way.
#[derive(Clone)]
pub struct ControlDatabase {
    conn: Arc<WriteConnection>,
    /// A batch was asked for: the first write opens its transaction. A step that writes
    /// nothing (an idle tick) so takes no lock and commits nothing.
    batch: Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for ControlDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlDatabase").finish_non_exhaustive()
    }
}

impl ControlDatabase {
    /// Opens (and migrates) the node's database at `path` (see [`crate::database_path`])
    /// on a connection of its own: for a database no store has open.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let mut conn = crate::schema::open_writer(path, cbddc_core::Durability::Full)?;
        // No store's checkpointer runs here: let SQLite checkpoint as usual.
        conn.execute_batch("PRAGMA wal_autocheckpoint = 1000;")
            .during("configuring the control-plane connection")?;
        crate::schema::migrate(&mut conn, path)?;
        Ok(Self::on(Arc::new(WriteConnection::new(
            conn,
            cbddc_core::Durability::Full,
        ))))
    }

    pub(crate) fn on(conn: Arc<WriteConnection>) -> Self {
        Self {
            conn,
            batch: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        }
    }

    /// Rolls back a batch or transaction left open (by a step that panicked), so the
    /// store's writer is not kept waiting for it. Call it from the thread that ran the step.
    pub fn abandon(&self) {
        self.batch.store(false, std::sync::atomic::Ordering::SeqCst);
        let conn = self.lock();
        if !conn.is_autocommit()
            && let Err(e) = conn.execute_batch("ROLLBACK")
        {
            tracing::error!(error = %e, "cannot roll back an abandoned control-plane batch");
        }
    }

    /// The connection, for reads.
    pub(crate) fn lock(&self) -> Held<'_> {
        self.conn.hold()
    }

    /// The connection, for a write: inside a batch, the batch's transaction is opened by
    /// the first write.
    pub(crate) fn write(&self) -> Result<Held<'_>, StoreError> {
        let conn = self.conn.hold_durable();
        if self.batch.load(std::sync::atomic::Ordering::SeqCst) && conn.is_autocommit() {
            conn.execute_batch("BEGIN IMMEDIATE")
                .during("starting a control-plane batch")?;
        }
        Ok(conn)
    }

    /// Threads waiting for this database's open control-plane transaction to end.
    #[cfg(test)]
    pub(crate) fn waiting(&self) -> usize {
        self.conn.waiting()
    }

    /// True while a batch is asked for.
    fn in_batch(&self) -> bool {
        self.batch.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The log of `configuration_id`, creating its state row if it has none.
    pub fn log<T>(&self, configuration_id: u32) -> Result<SqliteLogStorage<T>, StoreError>
    where
        T: Entry + Serialize + DeserializeOwned,
        T::Snapshot: Serialize + DeserializeOwned,
    {
        self.write()?
            .execute(
                "INSERT INTO cluster_state (configuration_id) VALUES (?1) ON CONFLICT DO NOTHING",
                [i64::from(configuration_id)],
            )
            .during("creating the control-plane state")?;
        Ok(SqliteLogStorage {
            db: self.clone(),
            configuration_id: i64::from(configuration_id),
            _entries: PhantomData,
        })
    }

    /// Starts a batch: the writes until [`ControlDatabase::commit`] are one transaction.
    /// Holds the database's write lock until then, so keep batches short. A batch left
    /// open when the connection is dropped (a crash) is rolled back.
    pub fn begin(&self) -> Result<(), StoreError> {
        self.batch.store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    /// Commits the batch started by [`ControlDatabase::begin`], if one is open.
    pub fn commit(&self) -> Result<(), StoreError> {
        let conn = self.lock();
        self.batch.store(false, std::sync::atomic::Ordering::SeqCst);
        if !conn.is_autocommit()
            && let Err(e) = conn.execute_batch("COMMIT")
        {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(StoreError::Sqlite {
                operation: "committing a control-plane batch",
                source: e,
            });
        }
        Ok(())
    }
}

/// The log of one OmniPaxos configuration in a node's database.
pub struct SqliteLogStorage<T> {
    db: ControlDatabase,
    configuration_id: i64,
    _entries: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for SqliteLogStorage<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteLogStorage")
            .field("configuration_id", &self.configuration_id)
            .finish()
    }
}

fn to_json<V: Serialize>(value: &V) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt {
        operation: "encoding a control-plane record",
        detail: e.to_string(),
    })
}

fn from_json<V: DeserializeOwned>(text: &str) -> Result<V, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt {
        operation: "decoding a control-plane record",
        detail: e.to_string(),
    })
}

fn index(value: usize) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::Corrupt {
        operation: "indexing the control-plane log",
        detail: format!("index {value} is out of range"),
    })
}

impl<T> SqliteLogStorage<T>
where
    T: Entry + Serialize + DeserializeOwned,
    T::Snapshot: Serialize + DeserializeOwned,
{
    /// Opens the log of `configuration_id` in the database at `path` (a node's database,
    /// see [`crate::database_path`]), creating its state row if it has none.
    pub fn open(path: &Path, configuration_id: u32) -> Result<Self, StoreError> {
        ControlDatabase::open(path)?.log(configuration_id)
    }

    /// Configurations that have a log in the database at `path`, in order.
    pub fn configurations(path: &Path) -> Result<Vec<u32>, StoreError> {
        let conn = crate::schema::open_reader(path)?;
        let mut stmt = conn
            .prepare("SELECT configuration_id FROM cluster_state ORDER BY configuration_id")
            .during("listing configurations")?;
        let rows = stmt
            .query_map([], |r| r.get::<_, u32>(0))
            .during("listing configurations")?;
        rows.collect::<Result<_, _>>()
            .during("listing configurations")
    }

    fn state_field<V: DeserializeOwned>(
        &self,
        column: &'static str,
    ) -> Result<Option<V>, StoreError> {
        let text: Option<String> = self
            .db
            .lock()
            .query_row(
                &format!("SELECT {column} FROM cluster_state WHERE configuration_id = ?1"),
                [self.configuration_id],
                |r| r.get(0),
            )
            .optional()
            .during("reading the control-plane state")?
            .flatten();
        text.map(|t| from_json(&t)).transpose()
    }

    fn set_state_field(
        &self,
        column: &'static str,
        value: Option<String>,
    ) -> Result<(), StoreError> {
        self.db
            .write()?
            .execute(
                &format!("UPDATE cluster_state SET {column} = ?2 WHERE configuration_id = ?1"),
                params![self.configuration_id, value],
            )
            .during("writing the control-plane state")?;
        Ok(())
    }

    fn state_index(&self, column: &'static str) -> Result<usize, StoreError> {
        let value: i64 = self
            .db
            .lock()
            .query_row(
                &format!("SELECT {column} FROM cluster_state WHERE configuration_id = ?1"),
                [self.configuration_id],
                |r| r.get(0),
            )
            .during("reading the control-plane state")?;
        usize::try_from(value).map_err(|_| StoreError::Corrupt {
            operation: "reading the control-plane state",
            detail: format!("{column} is {value}"),
        })
    }

    fn set_state_index(&self, column: &'static str, value: usize) -> Result<(), StoreError> {
        self.db
            .write()?
            .execute(
                &format!("UPDATE cluster_state SET {column} = ?2 WHERE configuration_id = ?1"),
                params![self.configuration_id, index(value)?],
            )
            .during("writing the control-plane state")?;
        Ok(())
    }

    /// The index the next appended entry takes.
    fn end(&self) -> Result<usize, StoreError> {
        let last: Option<i64> = self
            .db
            .lock()
            .query_row(
                "SELECT MAX(idx) FROM cluster_log WHERE configuration_id = ?1",
                [self.configuration_id],
                |r| r.get(0),
            )
            .during("reading the control-plane log")?;
        match last {
            Some(last) => Ok(usize::try_from(last + 1).unwrap_or(0)),
            None => self.state_index("trimmed_idx"),
        }
    }

    fn append_at(&self, from: usize, entries: &[T]) -> Result<(), StoreError> {
        let conn = self.db.write()?;
        let mut stmt = conn
            .prepare_cached(
                "INSERT INTO cluster_log (configuration_id, idx, entry) VALUES (?1, ?2, ?3)",
            )
            .during("appending to the control-plane log")?;
        for (offset, entry) in entries.iter().enumerate() {
            stmt.execute(params![
                self.configuration_id,
                index(from + offset)?,
                to_json(entry)?
            ])
            .during("appending to the control-plane log")?;
        }
        Ok(())
    }

    fn truncate_from(&self, from: usize) -> Result<(), StoreError> {
        self.db
            .write()?
            .execute(
                "DELETE FROM cluster_log WHERE configuration_id = ?1 AND idx >= ?2",
                params![self.configuration_id, index(from)?],
            )
            .during("truncating the control-plane log")?;
        Ok(())
    }

    fn apply(&self, op: StorageOp<T>) -> Result<(), StoreError> {
        match op {
            StorageOp::AppendEntry(entry) => self.append_at(self.end()?, &[entry]),
            StorageOp::AppendEntries(entries) => self.append_at(self.end()?, &entries),
            StorageOp::AppendOnPrefix(from, entries) => {
                // Cut at `from` if the log reaches it, then append at the end (which is
                // `from`, or earlier when `from` lies past the end).
                self.truncate_from(from)?;
                self.append_at(self.end()?, &entries)
            }
            StorageOp::SetPromise(ballot) => {
                self.set_state_field("promise", Some(to_json(&ballot)?))
            }
            StorageOp::SetDecidedIndex(idx) => self.set_state_index("decided_idx", idx),
            StorageOp::SetAcceptedRound(ballot) => {
                self.set_state_field("accepted_round", Some(to_json(&ballot)?))
            }
            StorageOp::SetCompactedIdx(idx) => self.set_state_index("compacted_idx", idx),
            StorageOp::Trim(idx) => {
                self.db
                    .write()?
                    .execute(
                        "DELETE FROM cluster_log WHERE configuration_id = ?1 AND idx < ?2",
                        params![self.configuration_id, index(idx)?],
                    )
                    .during("trimming the control-plane log")?;
                self.set_state_index("trimmed_idx", idx)
            }
            StorageOp::SetStopsign(stopsign) => {
                self.set_state_field("stopsign", stopsign.as_ref().map(to_json).transpose()?)
            }
            StorageOp::SetSnapshot(snapshot) => {
                self.set_state_field("snapshot", snapshot.as_ref().map(to_json).transpose()?)
            }
        }
    }

    /// Runs `ops` in one transaction (a savepoint inside a batch).
    fn atomically(&mut self, ops: Vec<StorageOp<T>>) -> Result<(), StoreError> {
        let in_batch = self.db.in_batch();
        let (start, done, undo) = if in_batch {
            (
                "SAVEPOINT control_atomic",
                "RELEASE control_atomic",
                "ROLLBACK TO control_atomic; RELEASE control_atomic",
            )
        } else {
            ("BEGIN IMMEDIATE", "COMMIT", "ROLLBACK")
        };
        self.db
            .write()?
            .execute_batch(start)
            .during("starting a control-plane transaction")?;
        for op in ops {
            if let Err(e) = self.apply(op) {
                let _ = self.db.lock().execute_batch(undo);
                return Err(e);
            }
        }
        let conn = self.db.lock();
        if let Err(e) = conn.execute_batch(done) {
            let _ = conn.execute_batch(undo);
            return Err(StoreError::Sqlite {
                operation: "committing a control-plane transaction",
                source: e,
            });
        }
        Ok(())
    }

    fn entries(&self, from: usize, to: usize) -> Result<Vec<T>, StoreError> {
        if to <= from {
            return Ok(Vec::new());
        }
        let conn = self.db.lock();
        let mut stmt = conn
            .prepare_cached(
                "SELECT entry FROM cluster_log WHERE configuration_id = ?1 AND idx >= ?2 AND idx < ?3 ORDER BY idx",
            )
            .during("reading the control-plane log")?;
        let rows = stmt
            .query_map(
                params![self.configuration_id, index(from)?, index(to)?],
                |r| r.get::<_, String>(0),
            )
            .during("reading the control-plane log")?;
        let mut out = Vec::with_capacity(to - from);
        for row in rows {
            out.push(from_json(&row.during("reading the control-plane log")?)?);
        }
        // The contract: an empty result unless the whole range is present.
        if out.len() != to - from {
            return Ok(Vec::new());
        }
        Ok(out)
    }
}

fn boxed<V>(result: Result<V, StoreError>) -> StorageResult<V> {
    result.map_err(|e| Box::new(e) as Box<dyn std::error::Error>)
}

impl<T> Storage<T> for SqliteLogStorage<T>
where
    T: Entry + Serialize + DeserializeOwned,
    T::Snapshot: Serialize + DeserializeOwned,
{
    fn write_atomically(&mut self, ops: Vec<StorageOp<T>>) -> StorageResult<()> {
        boxed(self.atomically(ops))
    }

    fn append_entry(&mut self, entry: T) -> StorageResult<()> {
        boxed(self.apply(StorageOp::AppendEntry(entry)))
    }

    fn append_entries(&mut self, entries: Vec<T>) -> StorageResult<()> {
        boxed(self.atomically(vec![StorageOp::AppendEntries(entries)]))
    }

    fn append_on_prefix(&mut self, from_idx: usize, entries: Vec<T>) -> StorageResult<()> {
        boxed(self.atomically(vec![StorageOp::AppendOnPrefix(from_idx, entries)]))
    }

    fn set_promise(&mut self, n_prom: Ballot) -> StorageResult<()> {
        boxed(self.apply(StorageOp::SetPromise(n_prom)))
    }

    fn set_decided_idx(&mut self, ld: usize) -> StorageResult<()> {
        boxed(self.apply(StorageOp::SetDecidedIndex(ld)))
    }

    fn get_decided_idx(&self) -> StorageResult<usize> {
        boxed(self.state_index("decided_idx"))
    }

    fn set_accepted_round(&mut self, na: Ballot) -> StorageResult<()> {
        boxed(self.apply(StorageOp::SetAcceptedRound(na)))
    }

    fn get_accepted_round(&self) -> StorageResult<Option<Ballot>> {
        boxed(self.state_field("accepted_round"))
    }

    fn get_entries(&self, from: usize, to: usize) -> StorageResult<Vec<T>> {
        boxed(self.entries(from, to))
    }

    fn get_log_len(&self) -> StorageResult<usize> {
        boxed((|| {
            let end = self.end()?;
            let start = self.state_index("trimmed_idx")?;
            Ok(end.saturating_sub(start))
        })())
    }

    fn get_suffix(&self, from: usize) -> StorageResult<Vec<T>> {
        boxed((|| {
            let end = self.end()?;
            self.entries(from, end)
        })())
    }

    fn get_promise(&self) -> StorageResult<Option<Ballot>> {
        boxed(self.state_field("promise"))
    }

    fn set_stopsign(&mut self, s: Option<StopSign>) -> StorageResult<()> {
        boxed(self.apply(StorageOp::SetStopsign(s)))
    }

    fn get_stopsign(&self) -> StorageResult<Option<StopSign>> {
        boxed(self.state_field("stopsign"))
    }

    fn trim(&mut self, idx: usize) -> StorageResult<()> {
        boxed(self.apply(StorageOp::Trim(idx)))
    }

    fn set_compacted_idx(&mut self, idx: usize) -> StorageResult<()> {
        boxed(self.apply(StorageOp::SetCompactedIdx(idx)))
    }

    fn get_compacted_idx(&self) -> StorageResult<usize> {
        boxed(self.state_index("compacted_idx"))
    }

    fn set_snapshot(&mut self, snapshot: Option<T::Snapshot>) -> StorageResult<()> {
        boxed(self.apply(StorageOp::SetSnapshot(snapshot)))
    }

    fn get_snapshot(&self) -> StorageResult<Option<T::Snapshot>> {
        boxed(self.state_field("snapshot"))
    }
}
