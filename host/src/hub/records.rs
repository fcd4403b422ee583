//! What was downloaded, from where: the `hub_snapshots` and `hub_files`
//! tables (migration 2 of [`crate::store`]); and which blobs had their
//! content checked when, with the size and modification time they had then:
//! the `hub_blob_checks` table (migration 5).
//!
//! The state `tuner cache list` shows comes from the cache folder; these
//! records add what the folder cannot say (the source, the listing a pull
//! expected, and "verified at time T").

use std::collections::HashMap;
use std::path::Path;

use rusqlite::{OptionalExtension, params};

use super::{HubError, RepoId};
use crate::store::Store;

/// One file of a recorded snapshot.
#[derive(Debug, Clone)]
pub struct FileRecord {
    pub path: String,
    pub size: u64,
    pub sha256: String,
    /// Checked against the hub's listing (false for offline imports).
    pub verified: bool,
}

/// What the database knows about one snapshot.
#[derive(Debug, Clone)]
pub struct SnapshotRecord {
    pub source: String,
    pub revision: String,
    pub commit: String,
    pub files: usize,
    pub complete: bool,
    pub verified: bool,
}

fn db(e: rusqlite::Error) -> HubError {
    HubError::Other(format!("database: {e}"))
}

/// Records a snapshot and its files (replacing an earlier record).
pub fn record_snapshot(
    store: &Store,
    repo: &RepoId,
    snap: &SnapshotRecord,
    files: &[FileRecord],
) -> Result<(), HubError> {
    store.with(|conn| {
        let tx = conn.transaction().map_err(db)?;
        let kind = repo.kind.folder_prefix();
        tx.execute(
            "INSERT OR REPLACE INTO hub_snapshots
             (kind, repo, commit_id, source, revision, file_count, complete, verified, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, datetime('now'))",
            params![
                kind,
                repo.id,
                snap.commit,
                snap.source,
                snap.revision,
                snap.files as i64,
                snap.complete,
                snap.verified
            ],
        )
        .map_err(db)?;
        for f in files {
            tx.execute(
                "INSERT OR REPLACE INTO hub_files (kind, repo, commit_id, path, size, sha256, verified)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![kind, repo.id, snap.commit, f.path, f.size as i64, f.sha256, f.verified],
            )
            .map_err(db)?;
        }
        tx.commit().map_err(db)
    })
}

/// The newest record for `repo` at `commit`.
pub fn snapshot(
    store: &Store,
    repo: &RepoId,
    commit: &str,
) -> Result<Option<SnapshotRecord>, HubError> {
    store.with(|conn| {
        conn.query_row(
            "SELECT source, revision, commit_id, file_count, complete, verified FROM hub_snapshots
             WHERE kind = ?1 AND repo = ?2 AND commit_id = ?3",
            params![repo.kind.folder_prefix(), repo.id, commit],
            |r| {
                Ok(SnapshotRecord {
                    source: r.get(0)?,
                    revision: r.get(1)?,
                    commit: r.get(2)?,
                    files: r.get::<_, i64>(3)? as usize,
                    complete: r.get(4)?,
                    verified: r.get(5)?,
                })
            },
        )
        .optional()
        .map_err(db)
    })
}

/// The recorded files of a snapshot.
pub fn files(store: &Store, repo: &RepoId, commit: &str) -> Result<Vec<FileRecord>, HubError> {
    store.with(|conn| {
        let mut st = conn
            .prepare(
                "SELECT path, size, sha256, verified FROM hub_files
                 WHERE kind = ?1 AND repo = ?2 AND commit_id = ?3 ORDER BY path",
            )
            .map_err(db)?;
        let rows = st
            .query_map(params![repo.kind.folder_prefix(), repo.id, commit], |r| {
                Ok(FileRecord {
                    path: r.get(0)?,
                    size: r.get::<_, i64>(1)? as u64,
                    sha256: r.get(2)?,
                    verified: r.get(3)?,
                })
            })
            .map_err(db)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(db)
    })
}

/// A blob whose content was found to match its hash, and the size and
/// modification time it had then. While the blob keeps both it counts as
/// verified; a rewrite (another size, or the same size later) does not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobCheck {
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// When it was checked: UTC, `YYYY-MM-DDTHH:MM:SSZ`.
    pub verified_at: String,
}

/// The size and modification time (ns since the epoch) of the file at
/// `path` now, following links; `None` when it cannot be read.
pub fn stamp(path: &Path) -> Option<(u64, i64)> {
    let meta = std::fs::metadata(path).ok()?;
    let modified = meta.modified().ok()?;
    let ns = match modified.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).ok()?,
        Err(e) => -i64::try_from(e.duration().as_nanos()).ok()?,
    };
    meta.is_file().then_some((meta.len(), ns))
}

impl BlobCheck {
    /// Whether the blob at `path` still has the size and modification time
    /// it had when it was checked.
    pub fn still_holds(&self, path: &Path) -> bool {
        stamp(path) == Some((self.size, self.mtime_ns))
    }
}

/// Records that the blobs `checked` (name, size, mtime) were found to hold
/// the content their hash names, now.
pub fn record_blob_checks(
    store: &Store,
    repo: &RepoId,
    checked: &[(String, u64, i64)],
) -> Result<(), HubError> {
    if checked.is_empty() {
        return Ok(());
    }
    store.with(|conn| {
        let tx = conn.transaction().map_err(db)?;
        let kind = repo.kind.folder_prefix();
        for (blob, size, mtime_ns) in checked {
            tx.execute(
                "INSERT OR REPLACE INTO hub_blob_checks
                 (kind, repo, blob, size, mtime_ns, verified_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))",
                params![kind, repo.id, blob, *size as i64, mtime_ns],
            )
            .map_err(db)?;
        }
        tx.commit().map_err(db)
    })
}

/// Forgets the checks of `blobs` (found corrupt).
pub fn forget_blob_checks(store: &Store, repo: &RepoId, blobs: &[String]) -> Result<(), HubError> {
    store.with(|conn| {
        let kind = repo.kind.folder_prefix();
        for blob in blobs {
            conn.execute(
                "DELETE FROM hub_blob_checks WHERE kind = ?1 AND repo = ?2 AND blob = ?3",
                params![kind, repo.id, blob],
            )
            .map_err(db)?;
        }
        Ok(())
    })
}

/// The recorded checks of `repo`'s blobs, by blob name.
pub fn blob_checks(store: &Store, repo: &RepoId) -> Result<HashMap<String, BlobCheck>, HubError> {
    store.with(|conn| {
        let mut st = conn
            .prepare(
                "SELECT blob, size, mtime_ns, verified_at FROM hub_blob_checks
                 WHERE kind = ?1 AND repo = ?2",
            )
            .map_err(db)?;
        let rows = st
            .query_map(params![repo.kind.folder_prefix(), repo.id], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    BlobCheck {
                        size: r.get::<_, i64>(1)? as u64,
                        mtime_ns: r.get(2)?,
                        verified_at: r.get(3)?,
                    },
                ))
            })
            .map_err(db)?;
        rows.collect::<Result<HashMap<_, _>, _>>().map_err(db)
    })
}

/// Forgets every record of `repo` (after its folder was removed).
pub fn forget(store: &Store, repo: &RepoId) -> Result<(), HubError> {
    store.with(|conn| {
        let kind = repo.kind.folder_prefix();
        conn.execute(
            "DELETE FROM hub_blob_checks WHERE kind = ?1 AND repo = ?2",
            params![kind, repo.id],
        )
        .map_err(db)?;
        conn.execute(
            "DELETE FROM hub_files WHERE kind = ?1 AND repo = ?2",
            params![kind, repo.id],
        )
        .map_err(db)?;
        conn.execute(
            "DELETE FROM hub_snapshots WHERE kind = ?1 AND repo = ?2",
            params![kind, repo.id],
        )
        .map_err(db)?;
        Ok(())
    })
}

/// Forgets everything (after the cache was cleared).
pub fn forget_all(store: &Store) -> Result<(), HubError> {
    store.with(|conn| {
        conn.execute_batch(
            "DELETE FROM hub_files; DELETE FROM hub_snapshots; DELETE FROM hub_blob_checks;",
        )
        .map_err(db)
    })
}
