//! Connection settings and the versioned schema.

use crate::error::{SqlContext, StoreError};
use cbddc_core::Durability;
use rusqlite::Connection;
use std::path::Path;

/// Ordered migrations; migration `i` brings `user_version` from `i` to `i + 1`.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: documents, oplog, version vector, known peers, node metadata.
    "CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE documents (
        collection  TEXT NOT NULL,
        key         TEXT NOT NULL,
        value       TEXT,            -- NULL: deleted (a tombstone that keeps its HLC)
        hlc_wall    INTEGER NOT NULL,
        hlc_counter INTEGER NOT NULL,
        hlc_node    TEXT NOT NULL,
        PRIMARY KEY (collection, key)
    ) WITHOUT ROWID;
    CREATE TABLE oplog (
        origin      TEXT NOT NULL,
        seq         INTEGER NOT NULL,
        collection  TEXT NOT NULL,
        key         TEXT NOT NULL,
        value       TEXT,            -- NULL: delete
        hlc_wall    INTEGER NOT NULL,
        hlc_counter INTEGER NOT NULL,
        PRIMARY KEY (origin, seq)
    ) WITHOUT ROWID;
    CREATE TABLE origins (
        origin  TEXT PRIMARY KEY,
        max_seq INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE known_peers (
        node_id   TEXT PRIMARY KEY,
        address   TEXT NOT NULL,
        peer_type TEXT NOT NULL,
        enabled   INTEGER NOT NULL
    ) WITHOUT ROWID;",
    // 2: where a known peer came from, so a configuration reload replaces only its own.
    "ALTER TABLE known_peers ADD COLUMN source TEXT NOT NULL DEFAULT 'runtime';",
    // 3: the control plane's replicated log, one OmniPaxos instance per configuration.
    "CREATE TABLE cluster_log (
        configuration_id INTEGER NOT NULL,
        idx              INTEGER NOT NULL,   -- absolute: as if never compacted
        entry            TEXT NOT NULL,      -- JSON
        PRIMARY KEY (configuration_id, idx)
    ) WITHOUT ROWID;
    CREATE TABLE cluster_state (
        configuration_id INTEGER PRIMARY KEY,
        promise          TEXT,               -- JSON ballots, stopsign and snapshot
        accepted_round   TEXT,
        decided_idx      INTEGER NOT NULL DEFAULT 0,
        compacted_idx    INTEGER NOT NULL DEFAULT 0,
        trimmed_idx      INTEGER NOT NULL DEFAULT 0, -- the log's first index
        stopsign         TEXT,
        snapshot         TEXT
    );",
    // 4: the configurations this node ran, so a restart resumes its control plane.
    "CREATE TABLE cluster_configurations (
        configuration_id INTEGER PRIMARY KEY,
        configuration    TEXT NOT NULL       -- JSON: members, pids, addresses
    );",
    // 5: members that left a configuration this node knows: they may still hand over the
    // writes they took as members.
    "CREATE TABLE cluster_departed (
        node_id          TEXT PRIMARY KEY,
        configuration_id INTEGER NOT NULL    -- the last configuration it was a member of
    ) WITHOUT ROWID;",
    // 6: replica identity. Each opening of the database is a fresh replica (the origin of
    // the writes it takes); `node` names the node that wrote an entry ('' in entries
    // written before: their origin is the writer's node id). The history written before
    // is this database's own, under its node id.
    "ALTER TABLE oplog ADD COLUMN node TEXT NOT NULL DEFAULT '';
    CREATE TABLE local_replicas (
        replica   TEXT PRIMARY KEY,
        opened_ms INTEGER NOT NULL
    ) WITHOUT ROWID;
    INSERT INTO local_replicas (replica, opened_ms)
        SELECT value, 0 FROM meta WHERE key = 'node_id';",
    // 7: the node key pinned for each peer's node id (on first contact).
    "CREATE TABLE pinned_keys (
        node_id    TEXT PRIMARY KEY,
        public_key TEXT NOT NULL,            -- 64 hex digits
        pinned_ms  INTEGER NOT NULL
    ) WITHOUT ROWID;",
    // 8: floors: replicas held up to a sequence number every peer reported holding, left
    // out of the version vectors exchanged with peers of the same floors.
    "CREATE TABLE replica_floors (
        replica TEXT PRIMARY KEY,
        floor   INTEGER NOT NULL
    ) WITHOUT ROWID;",
    // 9: the change feed: every change to the documents, in apply order, naming its oplog
    // entry. A database from before starts its feed with the documents' current state.
    "CREATE TABLE changes (
        position INTEGER PRIMARY KEY,
        origin   TEXT NOT NULL,
        seq      INTEGER NOT NULL
    );
    INSERT INTO changes (origin, seq)
        SELECT o.origin, o.seq FROM oplog o JOIN documents d
            ON d.collection = o.collection AND d.key = o.key AND d.hlc_node = o.origin
           AND d.hlc_wall = o.hlc_wall AND d.hlc_counter = o.hlc_counter
        ORDER BY o.hlc_wall, o.hlc_counter, o.origin;",
    // 10: compaction and snapshots. A document row names the entry that wrote it (`seq`
    // of its stamp's replica) and its change position. Triggers queue every entry that
    // stops being a document's winner in `collectable` (the writer queues winning deletes
    // itself: a trigger on every insert would cost every write; migration 11 drops the
    // update trigger for the same reason), so compaction reads its
    // work instead of scanning the oplog. `oplog_collected` bounds
    // what was removed per origin; `peer_acks` persists what each peer reported holding;
    // `snapshot_documents` stages a snapshot being received.
    "ALTER TABLE documents ADD COLUMN seq INTEGER;
    ALTER TABLE documents ADD COLUMN position INTEGER;
    UPDATE documents SET seq = o.seq FROM oplog o
        WHERE o.origin = documents.hlc_node AND o.hlc_wall = documents.hlc_wall
          AND o.hlc_counter = documents.hlc_counter AND o.collection = documents.collection
          AND o.key = documents.key;
    UPDATE documents SET position = c.position FROM changes c
        WHERE c.origin = documents.hlc_node AND c.seq = documents.seq;
    CREATE TABLE collectable (
        origin    TEXT NOT NULL,
        seq       INTEGER NOT NULL,
        position  INTEGER,               -- its change, if it changed a document
        tombstone INTEGER NOT NULL,      -- 1: still its document's winning delete
        PRIMARY KEY (origin, seq)
    ) WITHOUT ROWID;
    INSERT INTO collectable (origin, seq, position, tombstone)
        SELECT o.origin, o.seq, NULL, 0 FROM oplog o WHERE NOT EXISTS (
            SELECT 1 FROM documents d WHERE d.collection = o.collection AND d.key = o.key
               AND d.hlc_node = o.origin AND d.seq = o.seq);
    INSERT OR REPLACE INTO collectable (origin, seq, position, tombstone)
        SELECT hlc_node, seq, position, 1 FROM documents WHERE value IS NULL AND seq IS NOT NULL;
    UPDATE collectable SET position = c.position FROM changes c
        WHERE c.origin = collectable.origin AND c.seq = collectable.seq;
    -- (Inside triggers, a conflict clause gives way to the firing statement's: hence
    -- a delete and an insert instead of INSERT OR REPLACE.)
    CREATE TRIGGER superseded AFTER UPDATE OF hlc_wall, hlc_counter, hlc_node ON documents
        WHEN old.seq IS NOT NULL
        BEGIN
            DELETE FROM collectable WHERE origin = old.hlc_node AND seq = old.seq;
            INSERT INTO collectable (origin, seq, position, tombstone)
                VALUES (old.hlc_node, old.seq, old.position, 0);
        END;
    CREATE TRIGGER removed AFTER DELETE ON documents WHEN old.seq IS NOT NULL
        BEGIN
            DELETE FROM collectable WHERE origin = old.hlc_node AND seq = old.seq;
            INSERT INTO collectable (origin, seq, position, tombstone)
                VALUES (old.hlc_node, old.seq, old.position, 0);
        END;
    CREATE TABLE oplog_collected (
        origin TEXT PRIMARY KEY,
        upto   INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE peer_acks (
        node_id  TEXT PRIMARY KEY,
        holds    TEXT NOT NULL,          -- JSON version vector
        acked_ms INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE snapshot_documents (
        collection  TEXT NOT NULL,
        key         TEXT NOT NULL,
        value       TEXT,
        hlc_wall    INTEGER NOT NULL,
        hlc_counter INTEGER NOT NULL,
        hlc_node    TEXT NOT NULL,
        seq         INTEGER NOT NULL,
        PRIMARY KEY (collection, key)
    ) WITHOUT ROWID;",
    // 11: the writer queues the entry an overwrite displaces itself (see
    // `document_write`): the update trigger gave every upsert a statement journal.
    "DROP TRIGGER superseded;",
    // 12: the change feed outlives compaction (see `feed`). A delete whose tombstone is
    // collected stays in `feed_deletes` for the feed retention; `feed_consumers` keeps
    // named consumers' positions. meta `feed_oldest` is the oldest position the feed can
    // resume after; meta `feed_last` the last position handed out, once compaction removed
    // its row. A database that compacted or took a snapshot before this could have lost
    // deletes from its feed already: it resumes only after its last position.
    "CREATE TABLE feed_deletes (
        position    INTEGER PRIMARY KEY,
        collection  TEXT NOT NULL,
        key         TEXT NOT NULL,
        hlc_wall    INTEGER NOT NULL,
        hlc_counter INTEGER NOT NULL,
        origin      TEXT NOT NULL,
        seq         INTEGER NOT NULL,
        node        TEXT NOT NULL,
        kept_ms     INTEGER NOT NULL     -- when compaction handed it to the feed
    );
    CREATE INDEX feed_deletes_by_age ON feed_deletes (kept_ms);
    CREATE TABLE feed_consumers (
        name     TEXT PRIMARY KEY,
        position INTEGER NOT NULL,
        acked_ms INTEGER NOT NULL
    ) WITHOUT ROWID;
    INSERT INTO meta (key, value)
        SELECT 'feed_oldest', COALESCE((SELECT MAX(position) FROM changes), 0)
        WHERE EXISTS (SELECT 1 FROM oplog_collected);",
    // 13: snapshots are applied chunk by chunk as they arrive, no longer staged whole
    // first (see `snapshot`): a snapshot staged by an older release is dropped, and
    // starts again from its first chunk.
    "DROP TABLE snapshot_documents;
    DELETE FROM meta WHERE key = 'snapshot';",
    // 14: indexes a node keeps on its own documents (see `indexes`): one row each, and a
    // table `index_<id>` of its entries. `built_after` is the last key built while
    // `building`; `done` of `total` documents is the build's progress.
    "CREATE TABLE indexes (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        collection  TEXT NOT NULL,
        fields      TEXT NOT NULL,   -- a JSON array of dotted paths
        building    INTEGER NOT NULL,
        built_after TEXT,
        done        INTEGER NOT NULL,
        total       INTEGER NOT NULL,
        UNIQUE (collection, fields)
    );",
    // 15: index entries moved by writes and not yet folded into the indexes (see
    // `indexes`): a row per document write, its moves encoded by `indexes::Move`; and
    // indexes whose entries keep a copy of their document, built in two passes: entries
    // into `index_<id>_stage` in key order, then copied with their documents in entry
    // order (`copying`, `copied` of them, the last one copied `copied_entry`/`copied_key`).
    "CREATE TABLE index_pending (
        collection TEXT NOT NULL,
        id         INTEGER NOT NULL,  -- in the order written
        key        TEXT NOT NULL,
        moved      BLOB NOT NULL,
        PRIMARY KEY (collection, id)
    ) WITHOUT ROWID;
    ALTER TABLE indexes ADD COLUMN covering INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE indexes ADD COLUMN copying INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE indexes ADD COLUMN copied INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE indexes ADD COLUMN copied_entry BLOB;
    ALTER TABLE indexes ADD COLUMN copied_key TEXT;",
    // 16: field-level merge (see `field_apply`): an entry's field-level write (JSON of a
    // `FieldWrite`; `value` is then NULL), the state each document merged field by field
    // keeps, and what a merged change left (JSON: the document and the paths it changed).
    "ALTER TABLE oplog ADD COLUMN field TEXT;
    CREATE TABLE field_states (
        collection TEXT NOT NULL,
        key        TEXT NOT NULL,
        state      TEXT NOT NULL,
        PRIMARY KEY (collection, key)
    ) WITHOUT ROWID;
    ALTER TABLE changes ADD COLUMN merged TEXT;",
];

/// The schema version this build writes.
pub(crate) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// This build's release, recorded in the databases it migrates so that an older release
/// refusing one can name the release that moved it on.
pub(crate) const RELEASE: &str = env!("CARGO_PKG_VERSION");

/// The most page cache the write connection keeps (SQLite's default is 2 MiB): an index
/// being built or a large collection written in random key order touches pages all over
/// the file, and each one read back from the file system costs a system call.
const WRITER_CACHE_KIB: u32 = 32 * 1024;

/// The most page cache each read connection keeps (a pool holds up to 8 of them).
const READER_CACHE_KIB: u32 = 8 * 1024;

/// Opens the write connection: WAL, the chosen durability, no automatic checkpoints.
pub(crate) fn open_writer(path: &Path, durability: Durability) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).during("opening the database")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .during("setting the busy timeout")?;
    let sync = match durability {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
    };
    // Incremental vacuum first: it can be chosen only before the file has its first
    // page, and switching to WAL writes that page. On a file that exists it changes
    // nothing.
    conn.execute_batch(&format!(
        "PRAGMA auto_vacuum = INCREMENTAL;
         PRAGMA journal_mode = WAL;
         PRAGMA synchronous = {sync};
         PRAGMA wal_autocheckpoint = 0;
         PRAGMA foreign_keys = ON;
         PRAGMA temp_store = MEMORY;
         PRAGMA cache_size = -{WRITER_CACHE_KIB};"
    ))
    .during("configuring the write connection")?;
    conn.set_prepared_statement_cache_capacity(128);
    Ok(conn)
}

/// Opens a read-only connection.
pub(crate) fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .during("opening a read connection")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .during("setting the busy timeout")?;
    // Queries read index entries and then their documents all over the file: pages kept
    // here are not read again through a system call.
    conn.execute_batch(&format!("PRAGMA cache_size = -{READER_CACHE_KIB};"))
        .during("sizing the read cache")?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}

/// Brings the schema up to [`SCHEMA_VERSION`] in one transaction.
pub(crate) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .during("starting the migration")?;
    let current: i64 = tx
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .during("reading the schema version")?;
    if current > SCHEMA_VERSION {
        // Refused before anything is written: the transaction rolls back untouched.
        let written_by: Option<String> = tx
            .query_row("SELECT value FROM meta WHERE key = 'release'", [], |row| {
                row.get(0)
            })
            .ok();
        return Err(StoreError::SchemaTooNew {
            path: path.to_path_buf(),
            found: current,
            supported: SCHEMA_VERSION,
            written_by: written_by.unwrap_or_else(|| "a newer release".into()),
            this_release: RELEASE,
        });
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.execute_batch(sql).during("migrating the schema")?;
        tx.pragma_update(None, "user_version", index as i64 + 1)
            .during("recording the schema version")?;
    }
    // The last release that opened the file: what an older release refusing it names.
    tx.execute(
        "INSERT INTO meta (key, value) VALUES ('release', ?1)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value WHERE value <> excluded.value",
        [RELEASE],
    )
    .during("recording the release")?;
    tx.commit().during("committing the migration")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrating_twice_is_a_no_op_and_a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let mut conn = open_writer(&path, Durability::Full).unwrap();
        migrate(&mut conn, &path).unwrap();
        migrate(&mut conn, &path).unwrap();
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);

        let recorded: String = conn
            .query_row("SELECT value FROM meta WHERE key = 'release'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(recorded, RELEASE);
    }

    #[test]
    fn a_database_a_newer_release_moved_on_is_refused_naming_both_releases_and_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let mut conn = open_writer(&path, Durability::Full).unwrap();
        migrate(&mut conn, &path).unwrap();
        // What a future release leaves behind: a schema past ours, its name in meta.
        conn.execute_batch(&format!(
            "PRAGMA user_version = {};
             UPDATE meta SET value = '9.9.9' WHERE key = 'release';
             CREATE TABLE future_things (x);",
            SCHEMA_VERSION + 1
        ))
        .unwrap();
        let err = migrate(&mut conn, &path).unwrap_err();
        assert!(matches!(err, StoreError::SchemaTooNew { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains("cbddc 9.9.9"), "{text}");
        assert!(text.contains(&format!("cbddc {RELEASE}")), "{text}");
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION + 1);
        drop(conn);
        let conn = open_writer(&path, Durability::Full).unwrap();
        let tables: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE name = 'future_things'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(tables, 1, "nothing of the newer schema was touched");
    }
}
