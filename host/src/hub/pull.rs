//! `pull`: sources in order, fallback with reasons, the cache check, the
//! transfers, the records.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::Serialize;
use utoipa::ToSchema;

use super::cache::Cache;
use super::download::{Downloader, FileTask, TransferOptions, free_space};
use super::progress::Progress;
use super::records::{self, FileRecord, SnapshotRecord};
use super::{HubError, RepoId, RepoKind, human_bytes};
use crate::config::Settings;
use crate::paths;
use crate::plugins::PluginHost;
use crate::plugins::source::{self as wit, ResolveRequest};
use crate::store::Store;

/// What the hub needs from the configuration.
#[derive(Debug, Clone)]
pub struct HubConfig {
    pub cache_dir: PathBuf,
    /// Sources tried in order.
    pub source_order: Vec<String>,
    /// User-chosen endpoints per source (granted to that plugin).
    pub endpoints: BTreeMap<String, String>,
    /// Tokens per source (`HF_TOKEN` → huggingface and mirror,
    /// `MODELSCOPE_API_TOKEN` → modelscope).
    pub tokens: BTreeMap<String, String>,
    pub transfer: TransferOptions,
}

impl HubConfig {
    /// From the effective settings plus the token variables (tokens are
    /// never stored in settings, which the API shows).
    pub fn from_settings(s: &Settings) -> Self {
        let mut tokens = BTreeMap::new();
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        if let Some(t) = env("HF_TOKEN").or_else(|| env("HUGGING_FACE_HUB_TOKEN")) {
            tokens.insert("huggingface".to_string(), t.clone());
            tokens.insert("mirror".to_string(), t);
        }
        if let Some(t) = env("MODELSCOPE_API_TOKEN") {
            tokens.insert("modelscope".to_string(), t);
        }
        Self {
            cache_dir: s.model_cache_dir.clone(),
            source_order: s.source_order.clone(),
            endpoints: s.endpoints.clone(),
            tokens,
            transfer: TransferOptions::default(),
        }
    }
}

/// What to pull.
#[derive(Debug, Clone, Default)]
pub struct PullRequest {
    pub repo: String,
    pub kind: Option<RepoKind>,
    pub revision: Option<String>,
    /// Force one source instead of the configured order.
    pub source: Option<String>,
    /// Only files matching one of these globs (all when empty).
    pub include: Vec<String>,
    /// Leave out files matching these globs.
    pub exclude: Vec<String>,
    /// Fetch again even files already in the cache.
    pub force: bool,
    /// Use only the cache.
    pub offline: bool,
}

/// One source tried, and why it failed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SourceAttempt {
    pub source: String,
    pub error: String,
}

/// The result of a pull (`tuner pull --json` prints it).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PullReport {
    pub name: String,
    pub kind: RepoKind,
    /// The source that served it (`cache` in offline mode).
    pub source: String,
    pub revision: String,
    pub commit: String,
    /// The snapshot folder: a local model path.
    #[schema(value_type = String)]
    pub path: PathBuf,
    /// Files in the snapshot after the include/exclude filter.
    pub files: usize,
    /// Files transferred now.
    pub downloaded_files: usize,
    /// Bytes transferred now (listing sizes of the files fetched).
    pub downloaded_bytes: u64,
    /// Files already in the cache.
    pub cached_files: usize,
    /// Sources that failed before this one.
    pub failed_sources: Vec<SourceAttempt>,
}

type Inflight = Arc<tokio::sync::Mutex<Option<Result<PullReport, HubError>>>>;

/// The model hub: plugins, cache, records and in-flight pulls.
pub struct Hub {
    host: Arc<PluginHost>,
    pub cache: Cache,
    store: Option<Arc<Store>>,
    config: HubConfig,
    /// Pulls under way in this process, by request key: a second identical
    /// pull waits for the first and shares its result.
    inflight: Mutex<HashMap<String, Inflight>>,
}

impl Hub {
    /// The sources tried in order (`sources.order` in the settings).
    pub fn source_order(&self) -> &[String] {
        &self.config.source_order
    }

    /// Whether ModelScope is the first source tried: then its copies (a
    /// registry entry's `ms_hub_url`, its SDK's cache) are preferred.
    pub fn modelscope_first(&self) -> bool {
        self.source_order()
            .first()
            .is_some_and(|s| s == "modelscope")
    }

    pub fn new(host: Arc<PluginHost>, store: Option<Arc<Store>>, config: HubConfig) -> Self {
        Self {
            host,
            cache: Cache::new(config.cache_dir.clone()),
            store,
            config,
            inflight: Mutex::new(HashMap::new()),
        }
    }

    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    pub fn store(&self) -> Option<&Store> {
        self.store.as_deref()
    }

    /// Pulls a repository. Two identical pulls at once in this process share
    /// one transfer; across processes a lock file makes the second wait and
    /// then find everything cached.
    pub async fn pull(
        &self,
        req: &PullRequest,
        progress: &Progress,
    ) -> Result<PullReport, HubError> {
        let key = format!(
            "{:?}|{}|{:?}|{:?}|{:?}|{:?}|{}|{}",
            req.kind,
            req.repo,
            req.revision,
            req.source,
            req.include,
            req.exclude,
            req.force,
            req.offline
        );
        let (slot, leader) = {
            let mut map = self.inflight.lock().unwrap();
            match map.get(&key) {
                Some(s) => (s.clone(), false),
                None => {
                    let s: Inflight = Arc::default();
                    map.insert(key.clone(), s.clone());
                    (s, true)
                }
            }
        };
        let mut guard = slot.lock().await;
        if !leader && let Some(result) = guard.as_ref() {
            progress.note("joined a pull of the same repository already under way");
            return result.clone();
        }
        let result = self.pull_now(req, progress).await;
        *guard = Some(result.clone());
        drop(guard);
        if leader {
            self.inflight.lock().unwrap().remove(&key);
        }
        result
    }

    async fn pull_now(
        &self,
        req: &PullRequest,
        progress: &Progress,
    ) -> Result<PullReport, HubError> {
        let kind = req.kind.unwrap_or(RepoKind::Model);
        let repo = RepoId::parse(kind, &req.repo)?;
        if let Some(rev) = &req.revision {
            paths::check_git_ref("revision", rev)?;
        }
        let filter = Filter::new(&req.include, &req.exclude)?;
        if req.offline {
            return self.pull_offline(&repo, req, &filter);
        }
        self.cache.prepare(&repo)?;
        let _lock = lock_file(&self.cache.lock_path(&repo)).await?;

        let order: Vec<String> = match &req.source {
            Some(s) => vec![s.clone()],
            None => self.config.source_order.clone(),
        };
        let mut attempts = Vec::new();
        for source in &order {
            progress.resolving(source);
            match self.pull_from(source, &repo, req, &filter, progress).await {
                Ok(mut report) => {
                    report.failed_sources = attempts;
                    return Ok(report);
                }
                Err(e) => {
                    // Local problems are not the source's fault: stop at once.
                    if matches!(
                        e,
                        HubError::DiskFull { .. }
                            | HubError::Io(_)
                            | HubError::InvalidName { .. }
                            | HubError::Path(_)
                    ) {
                        return Err(e);
                    }
                    let reason = match e {
                        HubError::Source { reason, .. } => reason,
                        other => other.to_string(),
                    };
                    progress.note(&format!("{source} failed: {reason}"));
                    tracing::debug!(source = %source, repo = %repo, "source failed: {reason}");
                    attempts.push(SourceAttempt {
                        source: source.clone(),
                        error: reason,
                    });
                }
            }
        }
        if attempts.len() == 1 {
            let a = attempts.remove(0);
            return Err(HubError::Source {
                plugin: a.source,
                reason: a.error,
            });
        }
        Err(HubError::AllSourcesFailed(attempts))
    }

    /// Resolves with one source plugin (blocking plugin call on a worker thread).
    pub async fn resolve(
        &self,
        source: &str,
        repo: &RepoId,
        revision: Option<&str>,
    ) -> Result<wit::Listing, HubError> {
        let plugin = self
            .host
            .source(source)
            .ok_or_else(|| HubError::UnknownSource(source.to_string()))?;
        let endpoint = self.config.endpoints.get(source).cloned();
        if let (Some(ep), Some(gate)) = (&endpoint, plugin.network()) {
            gate.grant_endpoint(ep).map_err(|reason| HubError::Source {
                plugin: source.to_string(),
                reason,
            })?;
        }
        let request = ResolveRequest {
            repo: repo.id.clone(),
            kind: repo.kind,
            revision: revision.map(String::from),
            endpoint,
            token: self.config.tokens.get(source).cloned(),
        };
        let p = plugin.clone();
        let result = tokio::task::spawn_blocking(move || p.resolve(&request))
            .await
            .map_err(|e| HubError::Other(e.to_string()))?;
        let fail = |reason: String| HubError::Source {
            plugin: source.to_string(),
            reason,
        };
        match result {
            Err(call) => Err(fail(call.to_string())),
            Ok(Err(e)) => Err(fail(e.to_string())),
            Ok(Ok(listing)) => Ok(listing),
        }
    }

    async fn pull_from(
        &self,
        source: &str,
        repo: &RepoId,
        req: &PullRequest,
        filter: &Filter,
        progress: &Progress,
    ) -> Result<PullReport, HubError> {
        let listing = self.resolve(source, repo, req.revision.as_deref()).await?;
        check_listing(source, &listing)?;
        let plugin = self
            .host
            .source(source)
            .ok_or_else(|| HubError::UnknownSource(source.into()))?;
        let gate = plugin
            .network()
            .ok_or_else(|| HubError::UnknownSource(source.into()))?;
        let files: Vec<wit::RemoteFile> = listing
            .files
            .into_iter()
            .filter(|f| filter.keeps(&f.path))
            .collect();
        if files.is_empty() {
            return Err(HubError::Source {
                plugin: source.into(),
                reason: "no files match (check --include/--exclude)".into(),
            });
        }
        let commit = listing.commit.clone();
        let blobs = self.cache.blobs(repo);
        let mut todo = Vec::new();
        let mut records = Vec::new();
        let mut cached = 0;
        for f in &files {
            if let Err(why) = gate.check(&f.url) {
                return Err(HubError::Refused {
                    url: f.url.clone(),
                    reason: why,
                });
            }
            let in_snapshot = self.cache.linked_blob(repo, &commit, &f.path);
            let present = !req.force
                && match (&f.sha256, &in_snapshot) {
                    (Some(sha), Some(blob)) => sha == blob,
                    (None, Some(_)) => {
                        let p = self.cache.snapshot_dir(repo, &commit).join(&f.path);
                        f.size
                            .is_none_or(|s| std::fs::metadata(&p).is_ok_and(|m| m.len() == s))
                    }
                    _ => false,
                };
            if present {
                cached += 1;
                let blob = in_snapshot.unwrap();
                records.push(FileRecord {
                    path: f.path.clone(),
                    size: f.size.unwrap_or(0),
                    sha256: f.sha256.clone().unwrap_or(blob),
                    verified: true,
                });
                continue;
            }
            // Same content already stored (another snapshot, an import): link it.
            if let Some(sha) = f.sha256.as_ref().filter(|_| !req.force)
                && blobs.join(sha).is_file()
            {
                {
                    self.cache.link(repo, &commit, &f.path, sha)?;
                    cached += 1;
                    records.push(FileRecord {
                        path: f.path.clone(),
                        size: f.size.unwrap_or(0),
                        sha256: sha.clone(),
                        verified: true,
                    });
                    continue;
                }
            }
            todo.push(FileTask {
                path: f.path.clone(),
                url: f.url.clone(),
                headers: f.headers.clone(),
                size: f.size,
                sha256: f.sha256.clone(),
            });
        }
        let needed: u64 = todo
            .iter()
            .map(|t| {
                let partial = t
                    .sha256
                    .as_ref()
                    .and_then(|s| std::fs::metadata(blobs.join(format!("{s}.incomplete"))).ok())
                    .map(|m| m.len())
                    .unwrap_or(0);
                // A pre-sized partial file already holds its space.
                t.size.unwrap_or(0).saturating_sub(partial)
            })
            .sum();
        let fetch_bytes: u64 = todo.iter().map(|t| t.size.unwrap_or(0)).sum();
        if needed > 0 {
            let free = free_space(&self.cache.root)
                .map_err(|e| HubError::io(self.cache.root.display(), e))?;
            // Keep a margin: hashing and the database need a little room too.
            let margin = 64 << 20;
            if free < needed + margin {
                return Err(HubError::DiskFull {
                    dir: self.cache.root.display().to_string(),
                    needed: human_bytes(needed + margin),
                    available: human_bytes(free),
                });
            }
        }
        progress.planned(files.len(), fetch_bytes);

        let client = gate
            .transfer_client()
            .user_agent(concat!("tuner/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(std::time::Duration::from_secs(20))
            .build()
            .map_err(|e| HubError::Other(format!("building the HTTP client: {e}")))?;
        let downloader = Arc::new(Downloader::new(client, self.config.transfer.clone()));
        let mut handles = Vec::new();
        for task in todo.clone() {
            let (d, blobs, progress) = (downloader.clone(), blobs.clone(), progress.clone());
            handles.push(tokio::spawn(async move {
                let r = d.fetch(&task, &blobs, &progress).await;
                (task, r)
            }));
        }
        let mut first_err = None;
        let mut downloaded_bytes = 0;
        for h in handles {
            let (task, r) = h.await.map_err(|e| HubError::Other(e.to_string()))?;
            match r {
                Ok((blob, sha)) => {
                    let size = std::fs::metadata(&blob).map(|m| m.len()).unwrap_or(0);
                    downloaded_bytes += size;
                    self.cache.link(repo, &commit, &task.path, &sha)?;
                    progress.file_done(&task.path);
                    records.push(FileRecord {
                        path: task.path.clone(),
                        size,
                        sha256: sha,
                        verified: task.sha256.is_some(),
                    });
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        // Downloaded blobs were hashed on the way in: verified now, with the
        // size and modification time they have now.
        let fetched: Vec<&str> = records
            .iter()
            .filter(|r| todo.iter().any(|t| t.path == r.path))
            .map(|r| r.sha256.as_str())
            .collect();
        self.cache
            .note_verified(self.store.as_deref(), repo, fetched)?;
        let complete = first_err.is_none();
        let revision = req
            .revision
            .clone()
            .unwrap_or_else(|| listing.revision.clone());
        if complete {
            self.cache
                .write_pulled_refs(repo, req.revision.as_deref(), &revision, &commit)?;
        }
        if let Some(store) = &self.store {
            records::record_snapshot(
                store,
                repo,
                &SnapshotRecord {
                    source: source.to_string(),
                    revision: revision.clone(),
                    commit: commit.clone(),
                    files: files.len(),
                    complete,
                    verified: true,
                },
                &records,
            )?;
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        Ok(PullReport {
            name: repo.id.clone(),
            kind: repo.kind,
            source: source.to_string(),
            revision,
            path: self.cache.snapshot_dir(repo, &commit),
            commit,
            files: files.len(),
            downloaded_files: todo.len(),
            downloaded_bytes,
            cached_files: cached,
            failed_sources: Vec::new(),
        })
    }

    fn pull_offline(
        &self,
        repo: &RepoId,
        req: &PullRequest,
        filter: &Filter,
    ) -> Result<PullReport, HubError> {
        let repo = match self.cache.find(repo.kind, &repo.id) {
            Ok(r) => r,
            Err(_) => return Err(HubError::NotCached(repo.id.clone())),
        };
        let commit = self
            .cache
            .current_commit(&repo, req.revision.as_deref())
            .ok_or_else(|| HubError::NotCached(repo.id.clone()))?;
        let path = self.cache.snapshot_dir(&repo, &commit);
        let files = super::cache::walk_files(&path)
            .into_iter()
            .filter(|p| filter.keeps(p))
            .count();
        if files == 0 {
            return Err(HubError::NotCached(repo.id.clone()));
        }
        Ok(PullReport {
            name: repo.id.clone(),
            kind: repo.kind,
            source: "cache".into(),
            revision: req.revision.clone().unwrap_or_else(|| commit.clone()),
            commit,
            path,
            files,
            downloaded_files: 0,
            downloaded_bytes: 0,
            cached_files: files,
            failed_sources: Vec::new(),
        })
    }

    /// Imports a folder downloaded by other means as `repo`. Online (a
    /// source resolves it) files are checked against the listing and recorded
    /// under its commit; offline they are recorded unverified under a commit
    /// derived from their hashes.
    pub async fn import(
        &self,
        repo: &RepoId,
        folder: &std::path::Path,
        revision: Option<&str>,
        offline: bool,
    ) -> Result<ImportReport, HubError> {
        if let Some(rev) = revision {
            paths::check_git_ref("revision", rev)?;
        }
        let mut listing = None;
        let mut source = "import".to_string();
        if !offline {
            for s in self.config.source_order.clone() {
                if let Ok(l) = self.resolve(&s, repo, revision).await {
                    check_listing(&s, &l)?;
                    listing = Some(l);
                    source = s;
                    break;
                }
            }
        }
        let expected: Option<Vec<super::cache::ExpectedFile>> = listing.as_ref().map(|l| {
            l.files
                .iter()
                .map(|f| (f.path.clone(), f.size, f.sha256.clone()))
                .collect()
        });
        let commit = match &listing {
            Some(l) => l.commit.clone(),
            None => {
                // Offline: a commit id derived from the folder's content.
                let mut h = <sha2::Sha256 as sha2::Digest>::new();
                for p in super::cache::walk_files(folder) {
                    sha2::Digest::update(&mut h, p.as_bytes());
                    let m = std::fs::metadata(folder.join(&p))
                        .map(|m| m.len())
                        .unwrap_or(0);
                    sha2::Digest::update(&mut h, m.to_le_bytes());
                }
                hex::encode(sha2::Digest::finalize(h))[..40].to_string()
            }
        };
        let (files, rejected) = self
            .cache
            .import(repo, folder, &commit, expected.as_deref())?;
        let requested = revision;
        let revision = revision
            .map(String::from)
            .or_else(|| listing.as_ref().map(|l| l.revision.clone()))
            .unwrap_or_else(|| "main".into());
        self.cache
            .write_pulled_refs(repo, requested, &revision, &commit)?;
        // Every imported file was hashed (and its blob checked).
        self.cache.note_verified(
            self.store.as_deref(),
            repo,
            files.iter().map(|f| f.sha256.as_str()),
        )?;
        let verified = listing.is_some();
        let complete = match &expected {
            Some(list) => list
                .iter()
                .all(|(p, _, _)| files.iter().any(|f| &f.path == p)),
            None => true,
        };
        if let Some(store) = &self.store {
            records::record_snapshot(
                store,
                repo,
                &SnapshotRecord {
                    source: source.clone(),
                    revision: revision.clone(),
                    commit: commit.clone(),
                    files: expected.as_ref().map(|e| e.len()).unwrap_or(files.len()),
                    complete,
                    verified,
                },
                &files,
            )?;
        }
        Ok(ImportReport {
            name: repo.id.clone(),
            source,
            commit,
            imported: files.len(),
            verified,
            rejected: rejected
                .into_iter()
                .map(|(path, reason)| RejectedFile { path, reason })
                .collect(),
        })
    }

    /// A complete copy of model `repo` that transformers or the ModelScope
    /// SDK downloaded (see [`super::external`]): ModelScope's cache first
    /// when ModelScope is the first source.
    pub fn external_copy(&self, repo: &RepoId) -> Option<super::ExternalModel> {
        super::ExternalCaches::from_env().find(repo, self.modelscope_first())
    }

    /// The current cached snapshot of `repo`, if it is in the cache.
    /// (Whether some text names a folder or a hub id is decided once, by
    /// [`crate::app::ModelSpec`].)
    pub fn cached_snapshot(&self, repo: &RepoId) -> Option<PathBuf> {
        let repo = self.cache.find(repo.kind, &repo.id).ok()?;
        let commit = self.cache.current_commit(&repo, None)?;
        Some(self.cache.snapshot_dir(&repo, &commit))
    }
}

/// Checks everything of a source plugin's listing that becomes a path in
/// the cache before anything is written: the revision is a valid git ref
/// name (it becomes `refs/<revision>`), the commit a valid commit id (it
/// becomes `snapshots/<commit>`), every file path a safe relative path and
/// every sha256 64 hex digits (it names a blob). A hostile listing fails
/// the source with the reason.
fn check_listing(source: &str, listing: &wit::Listing) -> Result<(), HubError> {
    let fail = |e: paths::PathError| HubError::Source {
        plugin: source.to_string(),
        reason: format!("refused its listing: {e}"),
    };
    paths::check_git_ref("revision", &listing.revision).map_err(fail)?;
    paths::check_commit("commit", &listing.commit).map_err(fail)?;
    for f in &listing.files {
        paths::check_relative("file path", &f.path).map_err(fail)?;
        if let Some(sha) = &f.sha256 {
            paths::check_sha256("sha256", sha).map_err(fail)?;
        }
    }
    Ok(())
}

/// The result of `cache import`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ImportReport {
    pub name: String,
    /// The source whose listing checked the files (`import` when offline).
    pub source: String,
    pub commit: String,
    pub imported: usize,
    /// Hashes were checked against a hub listing.
    pub verified: bool,
    /// Files left out because they disagree with the listing.
    pub rejected: Vec<RejectedFile>,
}

/// A file `import` refused, and why.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RejectedFile {
    pub path: String,
    pub reason: String,
}

/// `--include` / `--exclude` globs.
pub struct Filter {
    include: Option<GlobSet>,
    exclude: Option<GlobSet>,
}

impl Filter {
    pub fn new(include: &[String], exclude: &[String]) -> Result<Self, HubError> {
        let build = |globs: &[String]| -> Result<Option<GlobSet>, HubError> {
            if globs.is_empty() {
                return Ok(None);
            }
            let mut b = GlobSetBuilder::new();
            for g in globs {
                b.add(Glob::new(g).map_err(|e| HubError::Other(format!("glob `{g}`: {e}")))?);
            }
            b.build()
                .map(Some)
                .map_err(|e| HubError::Other(e.to_string()))
        };
        Ok(Self {
            include: build(include)?,
            exclude: build(exclude)?,
        })
    }

    pub fn keeps(&self, path: &str) -> bool {
        self.include.as_ref().is_none_or(|g| g.is_match(path))
            && !self.exclude.as_ref().is_some_and(|g| g.is_match(path))
    }
}

/// Holds an exclusive lock on `path` (waiting for another process's pull).
async fn lock_file(path: &std::path::Path) -> Result<LockGuard, HubError> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| HubError::io(path.display(), e))?;
    #[cfg(unix)]
    {
        use std::os::unix::io::AsRawFd;
        let fd = file.as_raw_fd();
        tokio::task::spawn_blocking(move || {
            // SAFETY: `fd` stays open: `file` outlives the lock (moved into the guard).
            unsafe { libc::flock(fd, libc::LOCK_EX) }
        })
        .await
        .map_err(|e| HubError::Other(e.to_string()))?;
    }
    Ok(LockGuard { _file: file })
}

/// Releases the lock when dropped (closing the file releases `flock`).
struct LockGuard {
    _file: std::fs::File,
}

/// A hub dataset as ms-swift users write it in a training spec:
/// `AI-ModelScope/alpaca-gpt4-data-zh` or `...#500` (use 500 samples).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubDatasetSpec {
    pub repo: RepoId,
    /// How many samples to take, when the spec says.
    pub samples: Option<usize>,
}

impl HubDatasetSpec {
    /// Parses `org/name[#N]`.
    pub fn parse(spec: &str) -> Result<Self, HubError> {
        let (name, samples) = match spec.rsplit_once('#') {
            Some((name, n)) => {
                let n = n
                    .trim()
                    .parse::<usize>()
                    .map_err(|_| HubError::InvalidName {
                        name: spec.to_string(),
                        reason: format!("`#{n}` is not a sample count (write `org/name#500`)"),
                    })?;
                (name, Some(n))
            }
            None => (spec, None),
        };
        Ok(Self {
            repo: RepoId::parse(RepoKind::Dataset, name)?,
            samples,
        })
    }
}

impl Hub {
    /// Makes a hub dataset available locally (cached like models; only the
    /// cache when `offline`) and returns where its snapshot is. The data
    /// loader reads the files from `report.path` and takes `spec.samples`.
    pub async fn fetch_dataset(
        &self,
        spec: &HubDatasetSpec,
        offline: bool,
        progress: &Progress,
    ) -> Result<PullReport, HubError> {
        let req = PullRequest {
            repo: spec.repo.id.clone(),
            kind: Some(RepoKind::Dataset),
            offline,
            ..Default::default()
        };
        self.pull(&req, progress).await
    }
}
