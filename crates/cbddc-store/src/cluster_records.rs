//! The configurations a node's control plane ran, kept in its database so a restart
//! resumes where it stopped. The records are opaque text (the control plane's JSON).

use crate::ControlDatabase;
use crate::error::{SqlContext, StoreError};
use rusqlite::params;
use std::path::Path;

/// The configurations this node ran, in its database (on the control plane's connection,
/// see [`ControlDatabase::records`]).
#[derive(Debug, Clone)]
pub struct ClusterRecords {
    db: ControlDatabase,
}

impl ClusterRecords {
    /// Opens (and migrates) the node's database at `path` (see [`crate::database_path`]).
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Ok(ControlDatabase::open(path)?.records())
    }

    pub(crate) fn on(db: ControlDatabase) -> Self {
        Self { db }
    }

    /// Records configuration `configuration_id` (replacing an earlier record of it).
    pub fn save(&self, configuration_id: u32, configuration: &str) -> Result<(), StoreError> {
        self.db
            .lock()
            .execute(
                "INSERT INTO cluster_configurations (configuration_id, configuration) VALUES (?1, ?2)
                 ON CONFLICT (configuration_id) DO UPDATE SET configuration = excluded.configuration",
                params![i64::from(configuration_id), configuration],
            )
            .during("recording a cluster configuration")?;
        Ok(())
    }

    /// Every recorded configuration, oldest first.
    pub fn list(&self) -> Result<Vec<(u32, String)>, StoreError> {
        let conn = self.db.lock();
        let mut stmt = conn
            .prepare_cached(
                "SELECT configuration_id, configuration FROM cluster_configurations ORDER BY configuration_id",
            )
            .during("listing cluster configurations")?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, u32>(0)?, r.get::<_, String>(1)?)))
            .during("listing cluster configurations")?;
        rows.collect::<Result<_, _>>()
            .during("listing cluster configurations")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_a_reopen_and_a_record_is_replaced_not_doubled() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node-a.db");
        {
            let records = ClusterRecords::open(&path).unwrap();
            records.save(2, "two").unwrap();
            records.save(1, "one").unwrap();
            records.save(2, "two, again").unwrap();
        }
        let records = ClusterRecords::open(&path).unwrap();
        assert_eq!(
            records.list().unwrap(),
            vec![(1, "one".to_string()), (2, "two, again".to_string())]
        );
    }
}
