//! The configurations a node's control plane ran, kept in its database so a restart
//! resumes where it stopped, and the members that departed the configurations it knows.
//! The configuration records are opaque text (the control plane's JSON).

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
        Ok(Self::on(ControlDatabase::open(path)?))
    }

    /// The records in `db` (a store's [`ControlDatabase`], sharing its connection).
    pub fn on(db: ControlDatabase) -> Self {
        Self { db }
    }

    /// Records configuration `configuration_id` (replacing an earlier record of it).
    pub fn save(&self, configuration_id: u32, configuration: &str) -> Result<(), StoreError> {
        self.db
            .write()?
            .execute(
                "INSERT INTO cluster_configurations (configuration_id, configuration) VALUES (?1, ?2)
                 ON CONFLICT (configuration_id) DO UPDATE SET configuration = excluded.configuration",
                params![i64::from(configuration_id), configuration],
            )
            .during("recording a cluster configuration")?;
        Ok(())
    }

    /// Records that `node_id` left the cluster after configuration `configuration_id`
    /// (a later departure of the same node replaces an earlier one).
    pub fn save_departed(&self, node_id: &str, configuration_id: u32) -> Result<(), StoreError> {
        self.db
            .write()?
            .execute(
                "INSERT INTO cluster_departed (node_id, configuration_id) VALUES (?1, ?2)
                 ON CONFLICT (node_id) DO UPDATE SET configuration_id = excluded.configuration_id
                 WHERE excluded.configuration_id > cluster_departed.configuration_id",
                params![node_id, i64::from(configuration_id)],
            )
            .during("recording a departed member")?;
        Ok(())
    }

    /// Every departed member, with the last configuration it was a member of.
    pub fn departed(&self) -> Result<Vec<(String, u32)>, StoreError> {
        let conn = self.db.lock();
        let mut stmt = conn
            .prepare_cached(
                "SELECT node_id, configuration_id FROM cluster_departed ORDER BY node_id",
            )
            .during("listing departed members")?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u32>(1)?)))
            .during("listing departed members")?;
        rows.collect::<Result<_, _>>()
            .during("listing departed members")
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

    #[test]
    fn a_departed_member_keeps_its_latest_departure() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node-a.db");
        {
            let records = ClusterRecords::open(&path).unwrap();
            records.save_departed("c", 3).unwrap();
            records.save_departed("c", 1).unwrap();
            records.save_departed("b", 2).unwrap();
        }
        let records = ClusterRecords::open(&path).unwrap();
        assert_eq!(
            records.departed().unwrap(),
            vec![("b".to_string(), 2), ("c".to_string(), 3)]
        );
    }
}
