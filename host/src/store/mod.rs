//! The SQLite database (`tuner.db` in the home folder).
//!
//! Opened once per process, in WAL mode so the API can read while a job
//! writes. The schema is versioned with `PRAGMA user_version`; each entry of
//! [`MIGRATIONS`] moves it one version forward inside a transaction, so an
//! interrupted upgrade leaves the previous version intact. Datasets, jobs,
//! events and downloads add their tables here as those features land.

use std::path::Path;
use std::sync::{Mutex, PoisonError};

use anyhow::{Context, Result};
use rusqlite::Connection;

/// Schema steps, in order. Never edit a released step; append a new one.
const MIGRATIONS: &[&str] = &[
    // 1: bookkeeping of the store itself.
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
     INSERT INTO meta (key, value) VALUES ('created_by', 'tuner ' || '0.1.0');",
    // 2: hub downloads: which snapshot came from which source, and its files.
    "CREATE TABLE hub_snapshots (
        kind TEXT NOT NULL, repo TEXT NOT NULL, commit_id TEXT NOT NULL,
        source TEXT NOT NULL, revision TEXT NOT NULL, file_count INTEGER NOT NULL,
        complete INTEGER NOT NULL, verified INTEGER NOT NULL, updated_at TEXT NOT NULL,
        PRIMARY KEY (kind, repo, commit_id));
     CREATE TABLE hub_files (
        kind TEXT NOT NULL, repo TEXT NOT NULL, commit_id TEXT NOT NULL, path TEXT NOT NULL,
        size INTEGER NOT NULL, sha256 TEXT NOT NULL, verified INTEGER NOT NULL,
        PRIMARY KEY (kind, repo, commit_id, path));",
    // 3: stored training datasets (samples in `<data_dir>/<name>.jsonl`).
    "CREATE TABLE datasets (
        name TEXT PRIMARY KEY, source TEXT NOT NULL, sha256 TEXT NOT NULL,
        size_bytes INTEGER NOT NULL, format TEXT NOT NULL, layout TEXT NOT NULL,
        encoding TEXT NOT NULL, samples INTEGER NOT NULL, kinds TEXT NOT NULL,
        layouts TEXT NOT NULL, rejected INTEGER NOT NULL, created TEXT NOT NULL);",
    // 4: training jobs and their per-step events (host/src/train/jobs.rs).
    "CREATE TABLE training_jobs (
        id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, status TEXT NOT NULL,
        config TEXT NOT NULL, output_dir TEXT NOT NULL, device TEXT NOT NULL,
        created_at TEXT NOT NULL, started_at TEXT, finished_at TEXT, error TEXT,
        last_checkpoint TEXT, last_checkpoint_step INTEGER,
        step INTEGER NOT NULL DEFAULT 0, total_steps INTEGER, loss REAL, owner_pid INTEGER);
     CREATE INDEX training_jobs_status ON training_jobs (status);
     CREATE TABLE training_events (
        job_id INTEGER NOT NULL REFERENCES training_jobs (id) ON DELETE CASCADE,
        seq INTEGER NOT NULL, step INTEGER NOT NULL, epoch REAL NOT NULL, loss REAL, lr REAL,
        grad_norm REAL, tokens_per_s REAL, memory_bytes INTEGER, metrics TEXT,
        at TEXT NOT NULL, PRIMARY KEY (job_id, seq));",
    // 5: blobs of the model cache whose content was checked against their
    // hash, with the size and modification time (ns since the epoch) they
    // had then: a blob that still has both is still verified
    // (host/src/hub/records.rs).
    "CREATE TABLE hub_blob_checks (
        kind TEXT NOT NULL, repo TEXT NOT NULL, blob TEXT NOT NULL,
        size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, verified_at TEXT NOT NULL,
        PRIMARY KEY (kind, repo, blob));",
];

/// An open database, shareable between threads (`Arc<Store>`); access is
/// serialised through one connection.
pub struct Store {
    conn: Mutex<Connection>,
}

impl Store {
    /// Opens (creating if needed) and migrates the database at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let mut conn =
            Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrate(&mut conn).with_context(|| format!("upgrading the database {}", path.display()))?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    /// Runs `f` with the connection (one caller at a time). Use a
    /// transaction inside `f` for multi-statement changes.
    pub fn with<R>(&self, f: impl FnOnce(&mut Connection) -> R) -> R {
        let mut conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut conn)
    }

    /// The schema version in the file.
    pub fn schema_version(&self) -> Result<usize> {
        self.with(|conn| schema_version(conn))
    }
}

fn schema_version(conn: &Connection) -> Result<usize> {
    let v: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    Ok(v as usize)
}

/// Applies the steps of [`MIGRATIONS`] the file has not seen yet.
fn migrate(conn: &mut Connection) -> Result<()> {
    let current = schema_version(conn)?;
    anyhow::ensure!(
        current <= MIGRATIONS.len(),
        "the database has schema version {current}, newer than this tuner knows \
         ({}); upgrade tuner",
        MIGRATIONS.len()
    );
    for (i, step) in MIGRATIONS.iter().enumerate().skip(current) {
        let tx = conn.transaction()?;
        tx.execute_batch(step)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opening_twice_keeps_the_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        assert_eq!(
            Store::open(&path).unwrap().schema_version().unwrap(),
            MIGRATIONS.len()
        );
        assert_eq!(
            Store::open(&path).unwrap().schema_version().unwrap(),
            MIGRATIONS.len()
        );
    }

    #[test]
    fn newer_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        let err = format!("{:#}", Store::open(&path).err().unwrap());
        assert!(err.contains("upgrade tuner"), "{err}");
    }
}
