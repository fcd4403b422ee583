//! The model cache, in the Hugging Face hub layout:
//!
//! ```text
//! <cache>/models--Qwen--Qwen3-0.6B/
//!     blobs/<sha256>                 file contents, named by their sha256
//!     snapshots/<commit>/<path>      relative symlinks into blobs/
//!     refs/<revision>                the commit a branch or tag pointed at
//! <cache>/datasets--org--name/...    datasets, the same way
//! <cache>/.locks/<folder>.lock       one pull per repository at a time
//! ```
//!
//! A file appears under `snapshots/` only after its blob was verified, so
//! HF tools reading the cache never see a partial file.

use std::path::{Path, PathBuf};

use serde::Serialize;
use utoipa::ToSchema;

use super::download::sha256_file;
use super::records::{self, FileRecord};
use super::{HubError, RepoId, RepoKind};
use crate::paths;
use crate::store::Store;

/// The branch Hugging Face tools (transformers, huggingface_hub, vLLM) look
/// up in `refs/` when they are given no revision.
pub const HF_DEFAULT_BRANCH: &str = "main";

/// ModelScope's default branch.
pub const MODELSCOPE_DEFAULT_BRANCH: &str = "master";

/// Whether `revision` is a full commit id (40 hex digits) rather than a
/// branch or tag name.
fn is_commit_id(revision: &str) -> bool {
    revision.len() == 40 && revision.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The cache root.
#[derive(Debug, Clone)]
pub struct Cache {
    pub root: PathBuf,
}

/// One repository in the cache, as `cache list` shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CachedRepo {
    /// `org/name`.
    pub name: String,
    pub kind: RepoKind,
    /// The source plugin it came from (`unknown` when another tool put it there).
    pub source: String,
    /// A branch or tag in `refs/` that points at `commit` (the revision
    /// pulled, else `main`, else the first by name); `None` when no ref
    /// does.
    pub revision: Option<String>,
    /// The newest snapshot's commit (the one tuner uses for the name).
    pub commit: Option<String>,
    /// Files in that snapshot.
    pub files: usize,
    /// Bytes of all blobs of the repository.
    pub size_bytes: u64,
    /// Read from the folder: a ref points at the snapshot (tuner writes
    /// refs only after a whole pull; huggingface_hub when it resolves the
    /// revision), it has files and no broken links, and every file of the
    /// listing a pull recorded is there. For a cache made by another tool
    /// (no recorded listing): no `.incomplete` download in `blobs/` either.
    pub complete: bool,
    /// Every file of the snapshot had its content checked against its
    /// sha256 (the hub's, when a pull or an online import recorded it, or
    /// by `tuner cache verify`) at `verified_at`, and its blob still has the
    /// size and modification time it had then. Offline imports are not
    /// verified (not checked against the hub).
    pub verified: bool,
    /// When the snapshot was verified (its oldest check; UTC,
    /// `YYYY-MM-DDTHH:MM:SSZ`); `None` unless `verified`.
    pub verified_at: Option<String>,
    /// The snapshot folder, usable as a local model path.
    #[schema(value_type = Option<String>)]
    pub path: Option<PathBuf>,
}

/// A file of a hub listing, for `import` to check against: path, size, sha256.
pub type ExpectedFile = (String, Option<u64>, Option<String>);

/// Imported files, and the paths left out with the reason.
pub type ImportOutcome = (Vec<FileRecord>, Vec<(String, String)>);

/// The result of re-hashing a repository's files.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VerifyReport {
    pub name: String,
    pub checked: usize,
    /// Paths whose content does not match the recorded sha256.
    pub corrupt: Vec<String>,
    /// Paths of the recorded listing that are missing.
    pub missing: Vec<String>,
}

impl Cache {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn repo_dir(&self, repo: &RepoId) -> PathBuf {
        self.root.join(repo.folder())
    }

    pub fn blobs(&self, repo: &RepoId) -> PathBuf {
        self.repo_dir(repo).join("blobs")
    }

    pub fn snapshot_dir(&self, repo: &RepoId, commit: &str) -> PathBuf {
        self.repo_dir(repo).join("snapshots").join(commit)
    }

    /// The lock file serialising pulls of `repo` across processes.
    pub fn lock_path(&self, repo: &RepoId) -> PathBuf {
        self.root
            .join(".locks")
            .join(format!("{}.lock", repo.folder()))
    }

    /// Creates the repository's folders.
    pub fn prepare(&self, repo: &RepoId) -> Result<(), HubError> {
        for d in [
            self.blobs(repo),
            self.repo_dir(repo).join("snapshots"),
            self.repo_dir(repo).join("refs"),
            self.root.join(".locks"),
        ] {
            std::fs::create_dir_all(&d).map_err(|e| HubError::io(d.display(), e))?;
        }
        Ok(())
    }

    /// The commit `revision` pointed at when last pulled. `None` as well
    /// for a revision that is not a valid git ref name, or a ref file whose
    /// content is not a valid commit id.
    pub fn read_ref(&self, repo: &RepoId, revision: &str) -> Option<String> {
        paths::check_git_ref("revision", revision).ok()?;
        let p = self.repo_dir(repo).join("refs").join(revision);
        std::fs::read_to_string(p)
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .filter(|s| paths::check_commit("commit", s).is_ok())
    }

    /// Records that `revision` points at `commit` (atomic write). The
    /// revision must be a valid git ref name and the commit a valid commit
    /// id; the file is written by [`paths::write_file_in`], inside the cache.
    pub fn write_ref(&self, repo: &RepoId, revision: &str, commit: &str) -> Result<(), HubError> {
        paths::check_git_ref("revision", revision)?;
        paths::check_commit("commit", commit)?;
        if revision == commit {
            return Ok(());
        }
        let rel = format!("{}/refs/{revision}", repo.folder());
        paths::write_file_in(&self.root, "revision", &rel, commit.as_bytes())?;
        Ok(())
    }

    /// Records the commit a pull (or an import) fetched: `refs/<revision>`,
    /// and `refs/main` too when the revision is the source's default branch
    /// under another name (ModelScope's `master`; `requested` is `None` when
    /// the pull named no revision, so `revision` is the source's default).
    /// transformers and huggingface_hub read `refs/main` when they are given
    /// no revision, and without it fail offline on a cache they would
    /// otherwise use as it is.
    pub fn write_pulled_refs(
        &self,
        repo: &RepoId,
        requested: Option<&str>,
        revision: &str,
        commit: &str,
    ) -> Result<(), HubError> {
        self.write_ref(repo, revision, commit)?;
        let default_branch = requested.is_none() || revision == MODELSCOPE_DEFAULT_BRANCH;
        if default_branch && revision != HF_DEFAULT_BRANCH && !is_commit_id(revision) {
            self.write_ref(repo, HF_DEFAULT_BRANCH, commit)?;
        }
        Ok(())
    }

    /// Links `snapshots/<commit>/<path>` to `blobs/<sha256>`.
    pub fn link(
        &self,
        repo: &RepoId,
        commit: &str,
        path: &str,
        sha256: &str,
    ) -> Result<(), HubError> {
        paths::check_relative("file path", path)?;
        paths::check_commit("commit", commit)?;
        paths::check_sha256("sha256", sha256)?;
        // The link is created inside the cache root (checked at the moment
        // of writing); its target is computed here, not taken from anyone.
        let rel = format!("{}/snapshots/{commit}/{path}", repo.folder());
        let depth = path.matches('/').count() + 2;
        let target = Path::new(&"../".repeat(depth)).join("blobs").join(sha256);
        paths::symlink_in(
            &self.root,
            "file path",
            &rel,
            &target,
            &self.blobs(repo).join(sha256),
        )?;
        Ok(())
    }

    /// The blob a snapshot file points at, if it is a link into `blobs/`.
    pub fn linked_blob(&self, repo: &RepoId, commit: &str, path: &str) -> Option<String> {
        let dest = self.snapshot_dir(repo, commit).join(path);
        let target = std::fs::read_link(&dest).ok()?;
        dest.exists().then_some(())?;
        target.file_name().map(|n| n.to_string_lossy().into_owned())
    }

    /// Every repository folder in the cache.
    pub fn repos(&self) -> Vec<RepoId> {
        let Ok(rd) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        let mut out: Vec<RepoId> = rd
            .flatten()
            .filter(|e| e.path().is_dir())
            .filter_map(|e| RepoId::from_folder(&e.file_name().to_string_lossy()))
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// The snapshot to use for `revision` (default: the newest one).
    pub fn current_commit(&self, repo: &RepoId, revision: Option<&str>) -> Option<String> {
        if let Some(rev) = revision {
            if let Some(c) = self.read_ref(repo, rev) {
                return Some(c);
            }
            paths::check_commit("commit", rev).ok()?;
            return self
                .snapshot_dir(repo, rev)
                .is_dir()
                .then(|| rev.to_string());
        }
        let rd = std::fs::read_dir(self.repo_dir(repo).join("snapshots")).ok()?;
        rd.flatten()
            .filter(|e| e.path().is_dir())
            .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
    }

    /// The refs of `repo` (`refs/main`, `refs/pr/1`, ...) with the commit
    /// each names, sorted by name; refs that do not name a commit are left
    /// out.
    pub fn refs(&self, repo: &RepoId) -> Vec<(String, String)> {
        let dir = self.repo_dir(repo).join("refs");
        let mut out: Vec<(String, String)> = walk_files(&dir)
            .into_iter()
            .filter_map(|name| self.read_ref(repo, &name).map(|c| (name, c)))
            .collect();
        out.sort();
        out
    }

    /// Describes one repository. The state comes from the folder (refs,
    /// snapshot, blobs); the database adds the source, the listing a pull
    /// recorded, and when blobs were verified.
    pub fn describe(&self, repo: &RepoId, store: Option<&Store>) -> CachedRepo {
        let commit = self.current_commit(repo, None);
        let record = match (store, &commit) {
            (Some(s), Some(c)) => records::snapshot(s, repo, c).ok().flatten(),
            _ => None,
        };
        let refs = self.refs(repo);
        let revision = commit.as_ref().and_then(|c| {
            let names: Vec<&str> = refs
                .iter()
                .filter(|(_, to)| to == c)
                .map(|(name, _)| name.as_str())
                .collect();
            record
                .as_ref()
                .map(|r| r.revision.as_str())
                .filter(|r| names.contains(r))
                .or_else(|| names.iter().copied().find(|n| *n == HF_DEFAULT_BRANCH))
                .or_else(|| names.first().copied())
                .map(String::from)
        });
        let snapshot_files = commit
            .as_ref()
            .map(|c| walk_files(&self.snapshot_dir(repo, c)))
            .unwrap_or_default();
        let listing = match (store, &record, &commit) {
            (Some(s), Some(_), Some(c)) => records::files(s, repo, c).ok(),
            _ => None,
        };
        let complete = commit.as_ref().is_some_and(|c| {
            let snap = self.snapshot_dir(repo, c);
            !snapshot_files.is_empty()
                && revision.is_some()
                && !has_broken_links(&snap)
                && match (&listing, &record) {
                    // What a pull or import recorded: every file it listed
                    // (an import that left files out recorded fewer) is
                    // there.
                    (Some(files), Some(r)) if !files.is_empty() => {
                        files.len() >= r.files && files.iter().all(|f| snap.join(&f.path).is_file())
                    }
                    _ => !self.has_partial_download(repo),
                }
        });
        let (verified, verified_at) = match (&commit, store) {
            (Some(c), Some(s)) => {
                let checks = records::blob_checks(s, repo).unwrap_or_default();
                let mut oldest: Option<&str> = None;
                let all_checked = !snapshot_files.is_empty()
                    && snapshot_files.iter().all(|path| {
                        let Some(blob) = self.linked_blob(repo, c, path) else {
                            return false;
                        };
                        let Some(check) = checks.get(&blob) else {
                            return false;
                        };
                        if !check.still_holds(&self.blobs(repo).join(&blob)) {
                            return false;
                        }
                        let at = check.verified_at.as_str();
                        oldest = Some(oldest.map_or(at, |o| o.min(at)));
                        true
                    });
                // Files recorded unverified (an offline import) were never
                // checked against the hub.
                let hub_checked = record.as_ref().is_none_or(|r| r.verified);
                let verified = all_checked && hub_checked;
                (verified, oldest.filter(|_| verified).map(String::from))
            }
            _ => (false, None),
        };
        let size_bytes = std::fs::read_dir(self.blobs(repo))
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| e.metadata().ok())
                    .filter(|m| m.is_file())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0);
        CachedRepo {
            name: repo.id.clone(),
            kind: repo.kind,
            source: record
                .as_ref()
                .map(|r| r.source.clone())
                .unwrap_or_else(|| "unknown".into()),
            revision,
            path: commit.as_ref().map(|c| self.snapshot_dir(repo, c)),
            commit,
            files: snapshot_files.len(),
            size_bytes,
            complete,
            verified,
            verified_at,
        }
    }

    /// Whether `blobs/` holds a download in progress or cut off
    /// (`*.incomplete`, as tuner and huggingface_hub name them).
    fn has_partial_download(&self, repo: &RepoId) -> bool {
        std::fs::read_dir(self.blobs(repo)).is_ok_and(|rd| {
            rd.flatten()
                .any(|e| e.file_name().to_string_lossy().ends_with(".incomplete"))
        })
    }

    /// Records that the blobs named `blobs` (sha256 names) hold the content
    /// their name says, as checked just now, with their size and
    /// modification time: `verified` in [`CachedRepo`] holds while they keep
    /// both.
    pub fn note_verified<'a>(
        &self,
        store: Option<&Store>,
        repo: &RepoId,
        blobs: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), HubError> {
        let Some(store) = store else { return Ok(()) };
        let checked: Vec<(String, u64, i64)> = blobs
            .into_iter()
            .filter_map(|b| {
                let (size, mtime) = records::stamp(&self.blobs(repo).join(b))?;
                Some((b.to_string(), size, mtime))
            })
            .collect();
        records::record_blob_checks(store, repo, &checked)
    }

    /// Every repository, described.
    pub fn list(&self, store: Option<&Store>) -> Vec<CachedRepo> {
        self.repos()
            .iter()
            .map(|r| self.describe(r, store))
            .collect()
    }

    /// Finds a cached repository by `org/name`, or the original tool's
    /// `org_name` spelling.
    pub fn find(&self, kind: RepoKind, name: &str) -> Result<RepoId, HubError> {
        let repo = RepoId::parse(kind, name)?;
        if self.repo_dir(&repo).is_dir() {
            return Ok(repo);
        }
        if let Some(alias) = repo.underscore_alias()
            && self.repo_dir(&alias).is_dir()
        {
            return Ok(alias);
        }
        Err(HubError::NotCached(name.to_string()))
    }

    /// Removes one repository (its folder and records).
    pub fn remove(&self, repo: &RepoId, store: Option<&Store>) -> Result<u64, HubError> {
        let size = self.describe(repo, None).size_bytes;
        let dir = self.repo_dir(repo);
        std::fs::remove_dir_all(&dir).map_err(|e| HubError::io(dir.display(), e))?;
        if let Some(s) = store {
            records::forget(s, repo)?;
        }
        Ok(size)
    }

    /// Removes every repository. Returns the names removed.
    pub fn clear(&self, store: Option<&Store>) -> Result<Vec<String>, HubError> {
        let mut removed = Vec::new();
        for repo in self.repos() {
            self.remove(&repo, None)?;
            removed.push(repo.id);
        }
        if let Some(s) = store {
            records::forget_all(s)?;
        }
        Ok(removed)
    }

    /// Re-hashes the current snapshot's files against their blob names and
    /// the recorded listing. Blobs that match are recorded as verified now
    /// (with their size and mtime); corrupt ones lose their record.
    pub fn verify(&self, repo: &RepoId, store: Option<&Store>) -> Result<VerifyReport, HubError> {
        let commit = self
            .current_commit(repo, None)
            .ok_or_else(|| HubError::NotCached(repo.id.clone()))?;
        let snap = self.snapshot_dir(repo, &commit);
        let recorded = match store {
            Some(s) => records::files(s, repo, &commit)?,
            None => Vec::new(),
        };
        let mut report = VerifyReport {
            name: repo.id.clone(),
            checked: 0,
            corrupt: Vec::new(),
            missing: Vec::new(),
        };
        let mut paths: Vec<String> = walk_files(&snap);
        for f in &recorded {
            if !snap.join(&f.path).exists() {
                report.missing.push(f.path.clone());
            }
        }
        paths.sort();
        let (mut good, mut bad) = (Vec::new(), Vec::new());
        for path in paths {
            let full = snap.join(&path);
            let blob = self.linked_blob(repo, &commit, &path);
            // Size and mtime before hashing: a change while hashing shows.
            let before = blob
                .as_ref()
                .and_then(|b| records::stamp(&self.blobs(repo).join(b)));
            let actual = sha256_file(&full).map_err(|e| HubError::io(full.display(), e))?;
            let expected = recorded
                .iter()
                .find(|f| f.path == path)
                .map(|f| f.sha256.clone())
                .or_else(|| {
                    blob.clone()
                        .filter(|b| b.len() == 64 && b.bytes().all(|c| c.is_ascii_hexdigit()))
                });
            report.checked += 1;
            match (expected, blob) {
                (Some(e), blob) if e != actual => {
                    report.corrupt.push(path);
                    bad.extend(blob);
                }
                (Some(_), Some(blob)) => {
                    if let Some((size, mtime)) = before {
                        good.push((blob, size, mtime));
                    }
                }
                _ => {}
            }
        }
        if let Some(store) = store {
            records::forget_blob_checks(store, repo, &bad)?;
            good.retain(|(b, _, _)| !bad.contains(b));
            records::record_blob_checks(store, repo, &good)?;
        }
        Ok(report)
    }

    /// Adopts a folder downloaded by other means: every file is hashed and
    /// stored as a blob; when `expected` (the hub's listing: path, size,
    /// sha256) is given, files that disagree with it are skipped and
    /// reported. Returns (imported records, rejected paths with reasons).
    pub fn import(
        &self,
        repo: &RepoId,
        folder: &Path,
        commit: &str,
        expected: Option<&[ExpectedFile]>,
    ) -> Result<ImportOutcome, HubError> {
        if !folder.is_dir() {
            return Err(HubError::Io(format!(
                "{} is not a folder",
                folder.display()
            )));
        }
        paths::check_commit("commit", commit)?;
        self.prepare(repo)?;
        let mut imported = Vec::new();
        let mut rejected = Vec::new();
        for path in walk_files(folder) {
            if path.starts_with(".git/") || path.starts_with(".cache/") {
                continue;
            }
            if let Err(e) = paths::check_relative("file path", &path) {
                rejected.push((path, e.to_string()));
                continue;
            }
            let src = folder.join(&path);
            let size = std::fs::metadata(&src)
                .map(|m| m.len())
                .map_err(|e| HubError::io(src.display(), e))?;
            let sha = sha256_file(&src).map_err(|e| HubError::io(src.display(), e))?;
            let mut verified = false;
            if let Some(list) = expected {
                match list.iter().find(|(p, _, _)| *p == path) {
                    None => {
                        rejected.push((path, "not in the hub's listing".into()));
                        continue;
                    }
                    Some((_, want_size, want_sha)) => {
                        if want_size.is_some_and(|s| s != size) {
                            rejected.push((
                                path,
                                format!("size {size}, the hub says {}", want_size.unwrap()),
                            ));
                            continue;
                        }
                        if let Some(w) = want_sha
                            && *w != sha
                        {
                            rejected.push((path, format!("sha256 {sha}, the hub says {w}")));
                            continue;
                        }
                        verified = true;
                    }
                }
            }
            let blob = self.blobs(repo).join(&sha);
            // A blob already there is checked too (it may have been
            // damaged): every imported file's blob is then known to hold
            // its content.
            let intact = blob.is_file() && sha256_file(&blob).is_ok_and(|existing| existing == sha);
            if !intact {
                let tmp = self.blobs(repo).join(format!("{sha}.importing"));
                std::fs::copy(&src, &tmp).map_err(|e| HubError::io(src.display(), e))?;
                std::fs::rename(&tmp, &blob).map_err(|e| HubError::io(blob.display(), e))?;
            }
            self.link(repo, commit, &path, &sha)?;
            imported.push(FileRecord {
                path,
                size,
                sha256: sha,
                verified,
            });
        }
        Ok((imported, rejected))
    }

    /// Copies a snapshot into a plain folder (no symlinks). Returns files copied.
    pub fn export(
        &self,
        repo: &RepoId,
        revision: Option<&str>,
        dest: &Path,
    ) -> Result<usize, HubError> {
        let commit = self
            .current_commit(repo, revision)
            .ok_or_else(|| HubError::NotCached(repo.id.clone()))?;
        let snap = self.snapshot_dir(repo, &commit);
        let files = walk_files(&snap);
        for path in &files {
            let to = paths::contained_as("file path", dest, path)?;
            if let Some((parent, _)) = path.rsplit_once('/') {
                paths::create_dir_in(dest, Path::new(parent))?;
            } else {
                std::fs::create_dir_all(dest).map_err(|e| HubError::io(dest.display(), e))?;
            }
            // A link planted at the destination is replaced, not written through.
            if std::fs::symlink_metadata(&to).is_ok_and(|m| m.file_type().is_symlink()) {
                std::fs::remove_file(&to).map_err(|e| HubError::io(to.display(), e))?;
            }
            std::fs::copy(snap.join(path), &to).map_err(|e| HubError::io(to.display(), e))?;
        }
        Ok(files.len())
    }
}

/// Whether some entry under `dir` is a link whose target is missing (a
/// snapshot file whose blob is gone).
fn has_broken_links(dir: &Path) -> bool {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
            } else if !path.exists() {
                return true;
            }
        }
    }
    false
}

/// Relative `/`-separated paths of the files under `dir` (following links).
pub fn walk_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(dir.join(&rel)) else {
            continue;
        };
        for e in rd.flatten() {
            let r = rel.join(e.file_name());
            let full = dir.join(&r);
            if full.is_dir() {
                stack.push(r);
            } else if full.is_file() {
                out.push(r.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

    fn refs_after(requested: Option<&str>, revision: &str) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        let repo = RepoId::parse(RepoKind::Model, "Qwen/Tiny").unwrap();
        cache.prepare(&repo).unwrap();
        cache
            .write_pulled_refs(&repo, requested, revision, COMMIT)
            .unwrap();
        let mut refs: Vec<String> = std::fs::read_dir(cache.repo_dir(&repo).join("refs"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        refs.sort();
        for r in &refs {
            assert_eq!(cache.read_ref(&repo, r).as_deref(), Some(COMMIT), "{r}");
        }
        refs
    }

    /// A repository laid out as huggingface_hub writes it: `refs/main`,
    /// `snapshots/<commit>/...` links into `blobs/` (LFS files named by
    /// sha256, others by their git hash).
    struct HfCache {
        _dir: tempfile::TempDir,
        cache: Cache,
        repo: RepoId,
        store: Store,
        weights_blob: String,
    }

    fn sha256(bytes: &[u8]) -> String {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(bytes))
    }

    fn hf_cache(with_git_blob: bool) -> HfCache {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path().join("hub"));
        let repo = RepoId::parse(RepoKind::Model, "Qwen/Tiny").unwrap();
        let root = cache.repo_dir(&repo);
        let snap = root.join("snapshots").join(COMMIT);
        std::fs::create_dir_all(snap.join("sub")).unwrap();
        std::fs::create_dir_all(root.join("blobs")).unwrap();
        std::fs::create_dir_all(root.join("refs")).unwrap();
        std::fs::write(root.join("refs/main"), COMMIT).unwrap();
        let weights = vec![7u8; 4096];
        let weights_blob = sha256(&weights);
        std::fs::write(root.join("blobs").join(&weights_blob), &weights).unwrap();
        std::os::unix::fs::symlink(
            format!("../../blobs/{weights_blob}"),
            snap.join("model.safetensors"),
        )
        .unwrap();
        if with_git_blob {
            let git = "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391";
            std::fs::write(root.join("blobs").join(git), b"{}").unwrap();
            std::os::unix::fs::symlink(
                format!("../../../blobs/{git}"),
                snap.join("sub/config.json"),
            )
            .unwrap();
        }
        let store = Store::open(&dir.path().join("tuner.db")).unwrap();
        HfCache {
            _dir: dir,
            cache,
            repo,
            store,
            weights_blob,
        }
    }

    /// The state of a cache another tool made comes from its folder: the
    /// revision `refs/main` names, complete when a ref points at a snapshot
    /// with every link intact and no download cut off; not verified until
    /// tuner has checked its contents.
    #[test]
    fn a_cache_made_by_huggingface_hub_is_listed_from_its_folder() {
        let hf = hf_cache(true);
        let listed = hf.cache.list(Some(&hf.store));
        assert_eq!(listed.len(), 1);
        let r = &listed[0];
        assert_eq!(
            (r.revision.as_deref(), r.commit.as_deref(), r.files),
            (Some("main"), Some(COMMIT), 2)
        );
        assert!(r.complete, "{r:?}");
        assert!(!r.verified && r.verified_at.is_none(), "{r:?}");
        assert_eq!(r.source, "unknown");
        // The same without a database.
        assert!(hf.cache.describe(&hf.repo, None).complete);

        let blobs = hf.cache.blobs(&hf.repo);
        // A download cut off (huggingface_hub's `.incomplete`): not complete.
        std::fs::write(blobs.join("abc.incomplete"), b"x").unwrap();
        assert!(!hf.cache.describe(&hf.repo, Some(&hf.store)).complete);
        std::fs::remove_file(blobs.join("abc.incomplete")).unwrap();
        // A snapshot link whose blob is gone: not complete.
        std::fs::rename(blobs.join(&hf.weights_blob), blobs.join("moved")).unwrap();
        assert!(!hf.cache.describe(&hf.repo, Some(&hf.store)).complete);
        std::fs::rename(blobs.join("moved"), blobs.join(&hf.weights_blob)).unwrap();
        // No ref names the snapshot: no revision, not complete.
        let refs = hf.cache.repo_dir(&hf.repo).join("refs");
        std::fs::remove_file(refs.join("main")).unwrap();
        let r = hf.cache.describe(&hf.repo, Some(&hf.store));
        assert_eq!((r.revision, r.complete), (None, false));
        std::fs::write(refs.join("master"), COMMIT).unwrap();
        let r = hf.cache.describe(&hf.repo, Some(&hf.store));
        assert_eq!((r.revision.as_deref(), r.complete), (Some("master"), true));
    }

    /// `verified` is a fact with a time: checked at T, and still true while
    /// every blob keeps the size and modification time it had at T.
    #[test]
    fn verified_holds_until_a_blob_changes() {
        let hf = hf_cache(false);
        let (cache, repo, store) = (&hf.cache, &hf.repo, Some(&hf.store));
        let report = cache.verify(repo, store).unwrap();
        assert_eq!((report.checked, report.corrupt.len()), (1, 0));
        let r = cache.describe(repo, store);
        assert!(r.verified, "{r:?}");
        let at = r.verified_at.expect("a time");
        assert!(at.ends_with('Z') && at.len() == 20, "{at}");

        // Rewritten with another size: no longer verified, without hashing.
        let blob = cache.blobs(repo).join(&hf.weights_blob);
        std::fs::write(&blob, vec![7u8; 100]).unwrap();
        let r = cache.describe(repo, store);
        assert!(!r.verified && r.verified_at.is_none(), "{r:?}");
        let report = cache.verify(repo, store).unwrap();
        assert_eq!(report.corrupt, ["model.safetensors"]);
        assert!(!cache.describe(repo, store).verified);

        // Restored and re-verified; then the same size written later (a
        // later modification time): no longer verified either.
        std::fs::write(&blob, vec![7u8; 4096]).unwrap();
        cache.verify(repo, store).unwrap();
        assert!(cache.describe(repo, store).verified);
        std::fs::write(&blob, vec![8u8; 4096]).unwrap();
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(&blob)
            .unwrap()
            .set_modified(later)
            .unwrap();
        assert!(!cache.describe(repo, store).verified);

        // A git-named blob (no sha256 to check it against) is never
        // verified, so neither is its snapshot.
        let hf = hf_cache(true);
        hf.cache.verify(&hf.repo, Some(&hf.store)).unwrap();
        assert!(!hf.cache.describe(&hf.repo, Some(&hf.store)).verified);
    }

    /// Hugging Face tools read `refs/main` when given no revision: a pull of
    /// ModelScope's default branch (`master`) writes it beside `refs/master`;
    /// a branch or tag the user named is recorded under its own name only.
    #[test]
    fn the_default_branch_is_also_recorded_as_main() {
        assert_eq!(refs_after(None, "master"), ["main", "master"]);
        assert_eq!(refs_after(Some("master"), "master"), ["main", "master"]);
        assert_eq!(refs_after(None, "main"), ["main"]);
        assert_eq!(refs_after(Some("main"), "main"), ["main"]);
        assert_eq!(refs_after(Some("v1.0"), "v1.0"), ["v1.0"]);
        assert!(refs_after(Some(COMMIT), COMMIT).is_empty());
    }
}
