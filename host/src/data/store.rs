//! Stored datasets: normalised samples as JSON Lines in the data dir
//! (`<data_dir>/<name>.jsonl`) and a row in the `datasets` table.
//!
//! Adding is all or nothing: samples are written to a temporary file, which
//! is renamed into place inside the database transaction that records it.
//! A failed or strict-rejected load leaves the data dir and database as
//! they were.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use rusqlite::OptionalExtension;
use serde::Serialize;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::load::{self, LoadError, LoadOptions, LoadReport};
use crate::plugins::PluginHost;
use crate::sample::Sample;
use crate::store::Store;

/// A stored dataset, as `tuner data list --json` and `GET /api/data` show it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DatasetRecord {
    pub name: String,
    /// The file it was loaded from (as given).
    pub source: String,
    /// SHA-256 of the source file's bytes.
    pub sha256: String,
    pub size_bytes: u64,
    /// Format plugin used.
    pub format: String,
    /// The most common record layout.
    pub layout: String,
    /// The encoding the file was decoded from, spelled as in a load report
    /// (`utf-8`, `utf-8-bom`, `utf-16le`, `utf-16be`, `gb18030`).
    pub encoding: String,
    pub samples: u64,
    /// Samples by kind.
    pub kinds: BTreeMap<String, u64>,
    /// Samples by layout.
    pub layouts: BTreeMap<String, u64>,
    /// Records skipped when it was added.
    pub rejected: u64,
    /// UTC, `YYYY-MM-DDTHH:MM:SSZ`.
    pub created: String,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "invalid dataset name `{0}`: use 1-64 letters, digits, `.`, `_` or `-`, not starting with `.` or `-`"
    )]
    InvalidName(String),
    #[error("a dataset named `{0}` already exists; remove it first (`tuner data rm {0}`)")]
    Exists(String),
    #[error("no dataset named `{0}`; see `tuner data list`")]
    NotFound(String),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> StoreError {
    let context = context.into();
    move |source| StoreError::Io { context, source }
}

/// Checks a dataset name: it becomes a file name, so no separators, no
/// `..`, nothing hidden.
pub fn validate_name(name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        // Implied by the rules above; kept so an edit of them cannot let a
        // name out of the data dir.
        && crate::paths::single_component("dataset name", name).is_ok();
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidName(name.to_string()))
    }
}

/// The datasets of one data dir and database.
pub struct Datasets<'a> {
    dir: PathBuf,
    store: &'a Store,
}

const COLUMNS: &str = "name, source, sha256, size_bytes, format, layout, encoding, samples, \
                       kinds, layouts, rejected, created";

impl<'a> Datasets<'a> {
    pub fn new(dir: &Path, store: &'a Store) -> Self {
        Self {
            dir: dir.to_path_buf(),
            store,
        }
    }

    /// Where a dataset's samples live.
    pub fn samples_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.jsonl"))
    }

    /// Loads `path` and stores its samples as `name`. `display_name` is how
    /// the file is named in messages and recorded as the source.
    pub fn add(
        &self,
        host: &PluginHost,
        path: &Path,
        display_name: &str,
        name: &str,
        options: &LoadOptions,
    ) -> Result<(DatasetRecord, LoadReport), StoreError> {
        validate_name(name)?;
        if self.get(name).is_ok() {
            return Err(StoreError::Exists(name.to_string()));
        }
        std::fs::create_dir_all(&self.dir)
            .map_err(io(format!("creating {}", self.dir.display())))?;
        let tmp = self.dir.join(crate::paths::unique_temp_name(&format!(
            ".{name}.jsonl.tmp"
        )));
        let result = self.add_via(host, path, display_name, name, options, &tmp);
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    fn add_via(
        &self,
        host: &PluginHost,
        path: &Path,
        display_name: &str,
        name: &str,
        options: &LoadOptions,
        tmp: &Path,
    ) -> Result<(DatasetRecord, LoadReport), StoreError> {
        // A new file, never a link planted under the temporary name.
        let file = crate::paths::create_new_nofollow(tmp)
            .map_err(io(format!("creating {}", tmp.display())))?;
        let mut out = BufWriter::new(file);
        let report = load::load(host, path, display_name, options, |sample| {
            serde_json::to_writer(&mut out, &sample)?;
            out.write_all(b"\n")
        })?;
        let file = out.into_inner().map_err(|e| StoreError::Io {
            context: format!("writing {}", tmp.display()),
            source: e.into_error(),
        })?;
        file.sync_all()
            .map_err(io(format!("writing {}", tmp.display())))?;
        let (sha256, size_bytes) = hash_file(path)?;
        let dest = self.samples_path(name);
        self.store.with(|conn| -> Result<(), StoreError> {
            let tx = conn.transaction()?;
            let inserted = tx.execute(
                "INSERT OR IGNORE INTO datasets (name, source, sha256, size_bytes, format, layout,
                    encoding, samples, kinds, layouts, rejected, created)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11,
                    strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))",
                rusqlite::params![
                    name,
                    display_name,
                    sha256,
                    size_bytes as i64,
                    report.format,
                    report.main_layout(),
                    report.encoding.name(),
                    report.samples as i64,
                    serde_json::to_string(&report.kinds).unwrap_or_default(),
                    serde_json::to_string(&report.layouts).unwrap_or_default(),
                    report.rejected as i64,
                ],
            )?;
            if inserted == 0 {
                return Err(StoreError::Exists(name.to_string()));
            }
            // Renamed only once the row is in; the commit follows, and a
            // failed commit removes the file again.
            std::fs::rename(tmp, &dest).map_err(io(format!("storing {}", dest.display())))?;
            if let Err(e) = tx.commit() {
                let _ = std::fs::remove_file(&dest);
                return Err(e.into());
            }
            Ok(())
        })?;
        Ok((self.get(name)?, report))
    }

    /// Every stored dataset, by name.
    pub fn list(&self) -> Result<Vec<DatasetRecord>, StoreError> {
        self.store.with(|conn| {
            let mut stmt =
                conn.prepare(&format!("SELECT {COLUMNS} FROM datasets ORDER BY name"))?;
            let rows = stmt.query_map([], row_to_record)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// One dataset's record.
    pub fn get(&self, name: &str) -> Result<DatasetRecord, StoreError> {
        validate_name(name)?;
        self.store
            .with(|conn| {
                conn.query_row(
                    &format!("SELECT {COLUMNS} FROM datasets WHERE name = ?1"),
                    [name],
                    row_to_record,
                )
                .optional()
            })?
            .ok_or_else(|| StoreError::NotFound(name.to_string()))
    }

    /// Removes a dataset's record and samples.
    pub fn remove(&self, name: &str) -> Result<DatasetRecord, StoreError> {
        let record = self.get(name)?;
        self.store
            .with(|conn| conn.execute("DELETE FROM datasets WHERE name = ?1", [name]))?;
        match std::fs::remove_file(self.samples_path(name)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(io(format!(
                    "removing {}",
                    self.samples_path(name).display()
                ))(e));
            }
        }
        Ok(record)
    }

    /// The first `limit` samples of a stored dataset (all when `None`).
    pub fn samples(&self, name: &str, limit: Option<usize>) -> Result<Vec<Sample>, StoreError> {
        self.get(name)?;
        let path = self.samples_path(name);
        let file = std::fs::File::open(&path).map_err(io(format!("opening {}", path.display())))?;
        let mut out = Vec::new();
        for (i, line) in BufReader::new(file).lines().enumerate() {
            if limit.is_some_and(|n| out.len() >= n) {
                break;
            }
            let line = line.map_err(io(format!("reading {}", path.display())))?;
            let sample = serde_json::from_str(&line).map_err(|e| StoreError::Io {
                context: format!("{}:{}: corrupt stored sample", path.display(), i + 1),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            })?;
            out.push(sample);
        }
        Ok(out)
    }
}

fn row_to_record(row: &rusqlite::Row<'_>) -> rusqlite::Result<DatasetRecord> {
    let json_map = |s: String| serde_json::from_str(&s).unwrap_or_default();
    Ok(DatasetRecord {
        name: row.get(0)?,
        source: row.get(1)?,
        sha256: row.get(2)?,
        size_bytes: row.get::<_, i64>(3)? as u64,
        format: row.get(4)?,
        layout: row.get(5)?,
        encoding: row.get(6)?,
        samples: row.get::<_, i64>(7)? as u64,
        kinds: json_map(row.get(8)?),
        layouts: json_map(row.get(9)?),
        rejected: row.get::<_, i64>(10)? as u64,
        created: row.get(11)?,
    })
}

/// SHA-256 and size of a file, streamed.
pub fn hash_file(path: &Path) -> Result<(String, u64), StoreError> {
    let mut file = std::fs::File::open(path).map_err(io(format!("opening {}", path.display())))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .map_err(io(format!("reading {}", path.display())))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((hex::encode(hasher.finalize()), size))
}

#[cfg(test)]
mod tests {
    use super::validate_name;

    #[test]
    fn names_that_could_escape_the_data_dir_are_refused() {
        for bad in [
            "",
            "..",
            "../x",
            "a/b",
            "a\\b",
            ".hidden",
            "-x",
            "名字",
            &"x".repeat(65),
        ] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
        for good in ["alpaca_zh", "v1.2", "a-b"] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
    }
}
