use cbddc_core::{NodeId, StorageError};
use std::path::PathBuf;

/// Opening or operating a SQLite store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data directory could not be created or read.
    #[error("cannot use data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The database file belongs to another node id.
    #[error(
        "database {path} belongs to node {found}, not {expected}; \
         point the node at its own data directory or use node id {found}"
    )]
    WrongNode {
        /// The database file.
        path: PathBuf,
        /// The node id recorded in the file.
        found: String,
        /// The node id it was opened for.
        expected: NodeId,
    },
    /// The file was written by a newer CBDDC.
    #[error(
        "database {path} was moved on by cbddc {written_by} (schema version {found}); this is \
         cbddc {this_release}, which reads schema versions up to {supported} and never opens a \
         newer one: run cbddc {written_by} or later on this data dir (or start this release on \
         an empty data dir and let it sync)"
    )]
    SchemaTooNew {
        /// The database file.
        path: PathBuf,
        /// Its schema version.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
        /// The release recorded in the file ("a newer release" when none is).
        written_by: String,
        /// This build's release.
        this_release: &'static str,
    },
    /// SQLite reported an error.
    #[error("SQLite failed while {operation}: {source}")]
    Sqlite {
        /// What the store was doing.
        operation: &'static str,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// Stored data could not be read back (the file was altered outside CBDDC).
    #[error("stored data is corrupt while {operation}: {detail}")]
    Corrupt {
        /// What the store was doing.
        operation: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// A store thread could not be started.
    #[error("cannot start the store's {thread} thread: {source}")]
    Thread {
        /// Which thread.
        thread: &'static str,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The node was configured to replicate collections its database never took: the
    /// entries of those collections it stepped over are gone for it.
    #[error(
        "database {path} replicates only {stored}; it cannot start replicating {wanted}, because it stepped over their entries: use a new data dir (or node id) for the wider set, or keep `collections` as it was"
    )]
    InterestWidened {
        /// The database file.
        path: PathBuf,
        /// What it replicated.
        stored: String,
        /// What the configuration asks for.
        wanted: String,
    },
}

impl From<StoreError> for StorageError {
    fn from(err: StoreError) -> Self {
        let operation = match &err {
            StoreError::Sqlite { operation, .. } | StoreError::Corrupt { operation, .. } => {
                operation
            }
            StoreError::DataDir { .. } => "using the data directory",
            StoreError::WrongNode { .. }
            | StoreError::SchemaTooNew { .. }
            | StoreError::InterestWidened { .. } => "opening the database",
            StoreError::Thread { .. } => "starting a thread",
        };
        StorageError::Backend {
            operation,
            message: err.to_string(),
        }
    }
}

/// Attaches the operation to a rusqlite error.
pub(crate) trait SqlContext<T> {
    fn during(self, operation: &'static str) -> Result<T, StoreError>;
}

impl<T> SqlContext<T> for Result<T, rusqlite::Error> {
    fn during(self, operation: &'static str) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::Sqlite { operation, source })
    }
}
