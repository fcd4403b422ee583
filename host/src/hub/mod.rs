//! Models and datasets from hubs: the download manager and the cache.
//!
//! Source plugins only *resolve* a repository to a listing (commit, files,
//! sizes, sha256, URLs); the host does every transfer ([`download`]):
//! several files at once, large files in ranged chunks, resume from partial
//! data (a chunk log beside each `.incomplete` file survives crashes and
//! `kill -9`), retries with backoff on 429/5xx/resets honouring
//! `Retry-After`, sha256 verification before a file becomes visible (atomic
//! rename into the blob store), and tolerance of mirrors that drop
//! `Content-Range`, `Content-Length` or `X-Repo-Commit`.
//!
//! Transfers use the source plugin's own network gate
//! ([`crate::plugins::imports::http::HttpGate::transfer_client`]): a file URL,
//! and every redirect it takes (the Hugging Face LFS CDN, `*.hf.co`), must be
//! a host the plugin declared or the endpoint the user configured for it.
//!
//! The cache ([`cache`]) uses the Hugging Face hub layout
//! (`models--org--name/{blobs,snapshots/<commit>,refs}`), so transformers and
//! other HF tools reuse it; ModelScope files land in the same layout keyed by
//! the ModelScope commit. Blobs are named by their sha256, so identical
//! content is stored (and downloaded) once. [`pull`] ties it together with
//! the source order and fallback; [`records`] keeps what was downloaded, from
//! where, in SQLite.

pub mod cache;
pub mod download;
pub mod external;
pub mod jobs;
pub mod progress;
pub mod pull;
pub mod records;
pub mod repo;
pub mod retry;

pub use cache::{Cache, CachedRepo};
pub use download::TransferOptions;
pub use external::{ExternalCaches, ExternalModel};
pub use progress::{Progress, ProgressSink};
pub use pull::{Hub, HubConfig, HubDatasetSpec, PullReport, PullRequest, SourceAttempt};
pub use repo::{RepoId, RepoKind};

/// Why a hub operation failed. Messages say what to do next.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HubError {
    #[error("`{name}` is not a valid repository name: {reason}")]
    InvalidName { name: String, reason: String },
    #[error("no source plugin named `{0}` (see `tuner plugins list`)")]
    UnknownSource(String),
    #[error("source `{plugin}` failed: {reason}")]
    Source { plugin: String, reason: String },
    #[error("{}", all_failed(.0))]
    AllSourcesFailed(Vec<SourceAttempt>),
    #[error("download of `{path}` from {url} failed: {reason}")]
    Transfer {
        path: String,
        url: String,
        reason: String,
    },
    #[error(
        "`{path}` failed verification: expected sha256 {expected}, got {actual} (the file was \
         discarded, nothing corrupt was kept)"
    )]
    Checksum {
        path: String,
        expected: String,
        actual: String,
    },
    #[error("`{url}` is refused: {reason}")]
    Refused { url: String, reason: String },
    #[error(
        "not enough free disk space in {dir}: {needed} needed, {available} available \
         (free some space or set MODEL_CACHE_DIR to a larger disk)"
    )]
    DiskFull {
        dir: String,
        needed: String,
        available: String,
    },
    #[error(
        "`{0}` is not in the cache (offline mode uses only the cache; run `tuner pull` online first)"
    )]
    NotCached(String),
    #[error("{0}")]
    Io(String),
    #[error("{0}")]
    Other(String),
    /// An untrusted name (revision, commit, file path) that would not stay
    /// inside the cache, or a write the filesystem would take elsewhere.
    #[error(transparent)]
    Path(#[from] crate::paths::PathError),
}

fn all_failed(attempts: &[SourceAttempt]) -> String {
    let mut s = String::from("every source failed:");
    for a in attempts {
        s.push_str(&format!("\n  {}: {}", a.source, a.error));
    }
    s
}

impl HubError {
    pub(crate) fn io(what: impl std::fmt::Display, e: std::io::Error) -> Self {
        HubError::Io(format!("{what}: {e}"))
    }
}

/// `1.23 GiB`-style sizes for messages.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}
