//! Transfers one file into the blob store: ranged chunks in parallel,
//! resume from a chunk log, retries with backoff, sha256 before rename.
//!
//! On disk, while a file is under way: `blobs/<key>.incomplete` (the data,
//! at its final size when the size is known) and `blobs/<key>.chunks` (a
//! header line, then one line per finished chunk, `INDEX`, and progress
//! lines within a chunk, `INDEX BYTES`: the first BYTES of chunk INDEX are
//! on disk). Each line is appended only after the bytes it vouches for are
//! synced, every [`TransferOptions::progress_every`] within a chunk, so a
//! process killed at any moment re-fetches at most that much per chunk that
//! was in flight; a rerun continues each chunk from its recorded offset with
//! a `Range` request. Logs without progress lines (older tuners) still
//! parse: their chunks are done or not started. The first request of a file is a ranged probe: a server that
//! answers `200` instead of `206` (a mirror without range support) gets one
//! sequential stream instead.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use super::HubError;
use super::progress::Progress;
use super::retry::{self, Next, Retry, RetryPolicy};

/// Tunables of the download manager. Defaults suit a home connection.
#[derive(Debug, Clone)]
pub struct TransferOptions {
    /// Connections open at once, over all files and chunks. Default 8.
    pub connections: usize,
    /// Files larger than this are fetched in ranged chunks of this size.
    /// Default 16 MiB.
    pub chunk_size: u64,
    /// Attempts per request before giving up (429/5xx/reset). Default 8.
    pub max_attempts: u32,
    /// First backoff delay, doubled per attempt. Default 500 ms.
    pub backoff: Duration,
    /// Longest wait between attempts, `Retry-After` included. Default 60 s.
    pub max_backoff: Duration,
    /// A connection silent for this long is dropped and retried. Default 30 s.
    pub read_timeout: Duration,
    /// Within a chunk, the data is synced and its progress recorded every
    /// this many bytes, so a killed download loses at most this much per
    /// chunk in flight. Default 1 MiB; never more than a sixteenth of
    /// `chunk_size` (and at least 64 KiB).
    pub progress_every: u64,
}

impl Default for TransferOptions {
    fn default() -> Self {
        Self {
            connections: 8,
            chunk_size: 16 << 20,
            max_attempts: 8,
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(60),
            read_timeout: Duration::from_secs(30),
            progress_every: 1 << 20,
        }
    }
}

impl TransferOptions {
    /// The retry policy of every request: attempts and backoff.
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.max_attempts,
            backoff: self.backoff,
            max_backoff: self.max_backoff,
        }
    }
}

/// One file to fetch.
#[derive(Debug, Clone)]
pub struct FileTask {
    pub path: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub size: Option<u64>,
    pub sha256: Option<String>,
}

/// Downloads files for one source (its gate's client).
pub struct Downloader {
    client: reqwest::Client,
    opts: TransferOptions,
    permits: Arc<Semaphore>,
}

/// Outcome of one attempt at a byte range.
enum RangeOutcome {
    /// The server honoured the range and all bytes were written.
    Ranged,
    /// The server sent the whole file (no range support): written from 0.
    Whole,
}

impl Downloader {
    pub fn new(client: reqwest::Client, opts: TransferOptions) -> Self {
        let permits = Arc::new(Semaphore::new(opts.connections.max(1)));
        Self {
            client,
            opts,
            permits,
        }
    }

    /// Fetches `task` into `blobs/`, verifies it and returns the final blob
    /// path (named by its sha256). Nothing is visible under that name
    /// before verification.
    pub async fn fetch(
        self: &Arc<Self>,
        task: &FileTask,
        blobs: &Path,
        progress: &Progress,
    ) -> Result<(PathBuf, String), HubError> {
        let key = match &task.sha256 {
            Some(sha) => sha.clone(),
            None => format!(
                "pending-{}",
                &hex::encode(Sha256::digest(task.url.as_bytes()))[..24]
            ),
        };
        let data = blobs.join(format!("{key}.incomplete"));
        let log = blobs.join(format!("{key}.chunks"));
        // A corrupt result is discarded and fetched once more before giving up.
        for round in 0..2 {
            self.fetch_data(task, &data, &log, progress).await?;
            let path = data.clone();
            let actual = tokio::task::spawn_blocking(move || sha256_file(&path))
                .await
                .map_err(|e| HubError::Other(e.to_string()))?
                .map_err(|e| HubError::io(data.display(), e))?;
            if let Some(size) = task.size {
                let len = std::fs::metadata(&data).map(|m| m.len()).unwrap_or(0);
                if len != size {
                    discard(&data, &log);
                    return Err(HubError::Transfer {
                        path: task.path.clone(),
                        url: task.url.clone(),
                        reason: format!("got {len} bytes, the listing says {size}"),
                    });
                }
            }
            match &task.sha256 {
                Some(expected) if *expected != actual => {
                    discard(&data, &log);
                    if round == 0 {
                        progress.note(&format!(
                            "{}: sha256 mismatch, discarded and fetching again",
                            task.path
                        ));
                        continue;
                    }
                    return Err(HubError::Checksum {
                        path: task.path.clone(),
                        expected: expected.clone(),
                        actual,
                    });
                }
                _ => {}
            }
            let blob = blobs.join(&actual);
            std::fs::rename(&data, &blob).map_err(|e| HubError::io(blob.display(), e))?;
            let _ = std::fs::remove_file(&log);
            return Ok((blob, actual));
        }
        unreachable!("the loop returns")
    }

    /// Gets the bytes into `data`, resuming what `log` says is done.
    async fn fetch_data(
        self: &Arc<Self>,
        task: &FileTask,
        data: &Path,
        log: &Path,
        progress: &Progress,
    ) -> Result<(), HubError> {
        let Some(size) = task.size else {
            return self.fetch_sequential(task, data, progress).await;
        };
        let chunk = self.opts.chunk_size.max(1);
        let chunks = size.div_ceil(chunk).max(1);
        // Bytes already on disk per chunk (finished chunks count in full).
        let done = if data.exists() {
            read_log(log, chunk, size)
        } else {
            BTreeMap::new()
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(data)
            .map_err(|e| HubError::io(data.display(), e))?;
        if done.is_empty() {
            // A fresh start: reset the log header and any stale bytes.
            file.set_len(0)
                .map_err(|e| HubError::io(data.display(), e))?;
            write_log_header(log, chunk, size)?;
        }
        file.set_len(size)
            .map_err(|e| HubError::io(data.display(), e))?;
        drop(file);
        let already: u64 = done.values().sum();
        progress.file_started(&task.path, Some(size), already);
        if size == 0 {
            return Ok(());
        }
        // (chunk, bytes of it already on disk) for every unfinished chunk.
        let mut pending: Vec<(u64, u64)> = (0..chunks)
            .map(|i| (i, done.get(&i).copied().unwrap_or(0)))
            .filter(|&(i, have)| have < chunk_len(i, chunk, size))
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        // The first missing chunk probes: does the server do ranges? The
        // other chunks start as soon as its answer is a 206 (and do nothing
        // if it is a whole-file 200).
        let (probe_tx, probe_rx) = tokio::sync::watch::channel(None::<bool>);
        let first = pending.remove(0);
        let mut handles = Vec::new();
        for (i, have) in pending {
            let this = self.clone();
            let mut rx = probe_rx.clone();
            let (task, data, log, progress) = (
                task.clone(),
                data.to_path_buf(),
                log.to_path_buf(),
                progress.clone(),
            );
            handles.push(tokio::spawn(async move {
                let ranged = rx.wait_for(|v| v.is_some()).await.map(|v| *v == Some(true));
                match ranged {
                    Ok(true) => {
                        this.fetch_chunk(&task, &data, &log, i, have, chunk, size, &progress, None)
                            .await
                    }
                    // Whole file, or the probe failed (its error is reported).
                    _ => Ok(RangeOutcome::Whole),
                }
            }));
        }
        let probe = self
            .fetch_chunk(
                task,
                data,
                log,
                first.0,
                first.1,
                chunk,
                size,
                progress,
                Some(&probe_tx),
            )
            .await;
        drop(probe_tx);
        let mut first_err = probe.err();
        for h in handles {
            match h.await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                Err(e) => {
                    first_err.get_or_insert(HubError::Other(e.to_string()));
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// One chunk, from byte `have` of it, retried (from where it stopped)
    /// until done or out of attempts.
    #[allow(clippy::too_many_arguments)]
    async fn fetch_chunk(
        &self,
        task: &FileTask,
        data: &Path,
        log: &Path,
        index: u64,
        have: u64,
        chunk: u64,
        size: u64,
        progress: &Progress,
        probe: Option<&tokio::sync::watch::Sender<Option<bool>>>,
    ) -> Result<RangeOutcome, HubError> {
        let start = index * chunk;
        let end = (start + chunk).min(size); // exclusive
        let mut pos = (start + have).min(end);
        let checkpoint = Checkpoint {
            log,
            index,
            start,
            every: self
                .opts
                .progress_every
                .min(chunk / 16)
                .max(MIN_PROGRESS_EVERY),
        };
        let mut retry = Retry::new(self.opts.retry_policy());
        let _permit = self.permits.acquire().await.expect("semaphore open");
        loop {
            let mut req = self
                .client
                .get(&task.url)
                .header(reqwest::header::RANGE, format!("bytes={pos}-{}", end - 1));
            for (k, v) in &task.headers {
                req = req.header(k, v);
            }
            let resp = match self.send(req, task, &mut retry, progress).await? {
                resp if resp.status() == reqwest::StatusCode::PARTIAL_CONTENT => {
                    if let Some(p) = probe {
                        p.send_replace(Some(true));
                    }
                    resp
                }
                resp if resp.status() == reqwest::StatusCode::OK => {
                    if let Some(p) = probe {
                        p.send_replace(Some(false));
                    }
                    // No range support: take the whole body from byte 0.
                    progress.note(&format!(
                        "{}: the server ignores ranges; fetching it in one stream",
                        task.path
                    ));
                    self.write_whole(resp, task, data, log, size, progress, &mut retry)
                        .await?;
                    return Ok(RangeOutcome::Whole);
                }
                resp => {
                    return Err(self.fail(task, format!("HTTP {}", resp.status())));
                }
            };
            if let Some(cr) = resp.headers().get(reqwest::header::CONTENT_RANGE) {
                let ok = cr
                    .to_str()
                    .ok()
                    .and_then(|v| v.strip_prefix("bytes "))
                    .and_then(|v| v.split('-').next())
                    .and_then(|v| v.parse::<u64>().ok())
                    == Some(pos);
                if !ok {
                    return Err(self.fail(task, format!("unexpected Content-Range {cr:?}")));
                }
            }
            match self
                .stream_into(resp, data, pos, end, task, progress, Some(&checkpoint))
                .await
            {
                Ok(written) => {
                    pos += written;
                    if pos >= end {
                        sync_and_log(data, log, index)?;
                        return Ok(RangeOutcome::Ranged);
                    }
                    // Ended early without an error: treat as a drop.
                    self.backoff(task, &mut retry, None, "connection closed early", progress)
                        .await?;
                }
                Err((written, why)) => {
                    pos += written;
                    self.backoff(task, &mut retry, None, &why, progress).await?;
                }
            }
        }
    }

    /// Writes a whole-file `200` body from byte 0 (no resume possible with
    /// such a server; a drop restarts the stream).
    #[allow(clippy::too_many_arguments)]
    async fn write_whole(
        &self,
        mut resp: reqwest::Response,
        task: &FileTask,
        data: &Path,
        log: &Path,
        size: u64,
        progress: &Progress,
        retry: &mut Retry,
    ) -> Result<(), HubError> {
        loop {
            match self
                .stream_into(resp, data, 0, size, task, progress, None)
                .await
            {
                Ok(n) if n >= size => {
                    let f = std::fs::OpenOptions::new()
                        .write(true)
                        .open(data)
                        .map_err(|e| HubError::io(data.display(), e))?;
                    f.sync_data().map_err(|e| HubError::io(data.display(), e))?;
                    let _ = std::fs::remove_file(log);
                    return Ok(());
                }
                Ok(_) => {
                    self.backoff(task, retry, None, "connection closed early", progress)
                        .await?
                }
                Err((_, why)) => self.backoff(task, retry, None, &why, progress).await?,
            }
            let mut req = self.client.get(&task.url);
            for (k, v) in &task.headers {
                req = req.header(k, v);
            }
            resp = self.send(req, task, retry, progress).await?;
            if !resp.status().is_success() {
                return Err(self.fail(task, format!("HTTP {}", resp.status())));
            }
        }
    }

    /// Unknown size: one stream, resumed with a range from the current length
    /// when the server allows it, restarted otherwise.
    async fn fetch_sequential(
        &self,
        task: &FileTask,
        data: &Path,
        progress: &Progress,
    ) -> Result<(), HubError> {
        let _permit = self.permits.acquire().await.expect("semaphore open");
        let mut retry = Retry::new(self.opts.retry_policy());
        let mut pos = std::fs::metadata(data).map(|m| m.len()).unwrap_or(0);
        progress.file_started(&task.path, None, pos);
        loop {
            let mut req = self.client.get(&task.url);
            if pos > 0 {
                req = req.header(reqwest::header::RANGE, format!("bytes={pos}-"));
            }
            for (k, v) in &task.headers {
                req = req.header(k, v);
            }
            let resp = self.send(req, task, &mut retry, progress).await?;
            match resp.status().as_u16() {
                206 => {}
                200 => pos = 0,
                416 if pos > 0 => return Ok(()), // already complete
                s => return Err(self.fail(task, format!("HTTP {s}"))),
            }
            if pos == 0 {
                std::fs::File::create(data).map_err(|e| HubError::io(data.display(), e))?;
            }
            let expected = resp.content_length();
            match self
                .stream_into(resp, data, pos, u64::MAX, task, progress, None)
                .await
            {
                Ok(n) => {
                    pos += n;
                    if expected.is_none_or(|e| n >= e) {
                        return Ok(());
                    }
                    self.backoff(task, &mut retry, None, "connection closed early", progress)
                        .await?;
                }
                Err((n, why)) => {
                    pos += n;
                    self.backoff(task, &mut retry, None, &why, progress).await?;
                }
            }
        }
    }

    /// Sends with retries on 429, 5xx and transport errors.
    async fn send(
        &self,
        req: reqwest::RequestBuilder,
        task: &FileTask,
        retry: &mut Retry,
        progress: &Progress,
    ) -> Result<reqwest::Response, HubError> {
        loop {
            let Some(r) = req.try_clone() else {
                return Err(self.fail(task, "request cannot be retried".into()));
            };
            match r.send().await {
                Ok(resp) if retry::is_retryable(resp.status()) => {
                    let why = format!("HTTP {}", resp.status().as_u16());
                    let after = retry::retry_after(resp.headers());
                    self.backoff(task, retry, after, &why, progress).await?;
                }
                Ok(resp) => return Ok(resp),
                Err(e) => {
                    if let Some(why) = crate::plugins::imports::http::refusal(&e) {
                        return Err(HubError::Refused {
                            url: task.url.clone(),
                            reason: why,
                        });
                    }
                    let why = error_chain(&e);
                    self.backoff(task, retry, None, &why, progress).await?;
                }
            }
        }
    }

    /// Counts a failed attempt (`why`) against `retry`: says so and waits
    /// before the next, or fails when attempts are used up.
    async fn backoff(
        &self,
        task: &FileTask,
        retry: &mut Retry,
        retry_after: Option<Duration>,
        why: &str,
        progress: &Progress,
    ) -> Result<(), HubError> {
        let max = retry.policy().max_attempts;
        let (wait, attempt) = match retry.failed(retry_after) {
            Next::GiveUp => {
                return Err(self.fail(task, format!("{why} (gave up after {max} attempts)")));
            }
            Next::Wait { delay, attempt } => (delay, attempt),
        };
        progress.note(&format!(
            "{}: {why}; retrying in {:.1}s (attempt {attempt}/{max})",
            task.path,
            wait.as_secs_f64(),
        ));
        tracing::debug!(path = %task.path, "{why}; retry in {wait:?}");
        tokio::time::sleep(wait).await;
        Ok(())
    }

    /// Copies the body into `data` at `pos`, up to `end`. Returns the bytes
    /// written, or (bytes written, reason) when the stream broke. With a
    /// `checkpoint`, the data is synced and its progress logged every
    /// `checkpoint.every` bytes.
    #[allow(clippy::too_many_arguments)]
    async fn stream_into(
        &self,
        mut resp: reqwest::Response,
        data: &Path,
        pos: u64,
        end: u64,
        task: &FileTask,
        progress: &Progress,
        checkpoint: Option<&Checkpoint<'_>>,
    ) -> Result<u64, (u64, String)> {
        let mut file = match std::fs::OpenOptions::new().write(true).open(data) {
            Ok(f) => f,
            Err(e) => return Err((0, format!("{}: {e}", data.display()))),
        };
        if let Err(e) = file.seek(SeekFrom::Start(pos)) {
            return Err((0, e.to_string()));
        }
        let mut written = 0u64;
        let mut unsynced = 0u64;
        loop {
            let next = tokio::time::timeout(self.opts.read_timeout, resp.chunk()).await;
            let bytes = match next {
                Err(_) => return Err((written, "no data for too long".into())),
                Ok(Err(e)) => return Err((written, error_chain(&e))),
                Ok(Ok(None)) => return Ok(written),
                Ok(Ok(Some(b))) => b,
            };
            let room = end.saturating_sub(pos + written);
            let take = (bytes.len() as u64).min(room) as usize;
            if let Err(e) = file.write_all(&bytes[..take]) {
                return Err((written, format!("writing {}: {e}", data.display())));
            }
            written += take as u64;
            unsynced += take as u64;
            progress.advanced(&task.path, take as u64);
            if take < bytes.len() || pos + written >= end {
                return Ok(written);
            }
            if let Some(c) = checkpoint
                && unsynced >= c.every
            {
                if let Err(e) = c.record(&file, pos + written) {
                    return Err((written, e));
                }
                unsynced = 0;
            }
        }
    }

    fn fail(&self, task: &FileTask, reason: String) -> HubError {
        HubError::Transfer {
            path: task.path.clone(),
            url: task.url.clone(),
            reason,
        }
    }
}

fn chunk_len(i: u64, chunk: u64, size: u64) -> u64 {
    ((i + 1) * chunk).min(size) - i * chunk
}

/// The smallest progress step within a chunk: below it, the syncs cost more
/// than the bytes they save.
const MIN_PROGRESS_EVERY: u64 = 64 << 10;

/// Where and how often a ranged chunk records its progress.
struct Checkpoint<'a> {
    log: &'a Path,
    index: u64,
    /// The chunk's first byte in the file.
    start: u64,
    every: u64,
}

impl Checkpoint<'_> {
    /// Syncs `file`, then records that the chunk is on disk up to `pos`
    /// (absolute): the log never claims bytes that are not durable.
    fn record(&self, file: &std::fs::File, pos: u64) -> Result<(), String> {
        file.sync_data().map_err(|e| format!("syncing: {e}"))?;
        let mut l = std::fs::OpenOptions::new()
            .append(true)
            .open(self.log)
            .map_err(|e| format!("{}: {e}", self.log.display()))?;
        // One write per line, so a kill leaves whole lines or a torn last
        // line (which `read_log` ignores).
        l.write_all(format!("{} {}\n", self.index, pos - self.start).as_bytes())
            .map_err(|e| format!("{}: {e}", self.log.display()))
    }
}

/// Bytes on disk per chunk as recorded in `log` (a finished chunk counts in
/// full), if it was written for the same chunk size and file size
/// (otherwise nothing counts as done). Lines are `INDEX` (finished) or
/// `INDEX BYTES` (the first BYTES of the chunk); the largest claim per chunk
/// wins, and a last line without its newline (torn by a kill) is ignored.
fn read_log(log: &Path, chunk: u64, size: u64) -> BTreeMap<u64, u64> {
    let mut done = BTreeMap::new();
    let Ok(text) = std::fs::read_to_string(log) else {
        return done;
    };
    let mut lines = text.split_inclusive('\n');
    if lines.next() != Some(&format!("tuner-chunks {chunk} {size}\n")) {
        return done;
    }
    let chunks = size.div_ceil(chunk.max(1));
    for line in lines {
        let Some(line) = line.strip_suffix('\n') else {
            break;
        };
        let mut parts = line.split_whitespace();
        let Some(Ok(index)) = parts.next().map(str::parse::<u64>) else {
            continue;
        };
        if index >= chunks {
            continue;
        }
        let full = chunk_len(index, chunk, size);
        let bytes = match (parts.next().map(str::parse::<u64>), parts.next()) {
            (None, _) => full,
            (Some(Ok(b)), None) => b.min(full),
            _ => continue,
        };
        let have = done.entry(index).or_insert(0);
        *have = (*have).max(bytes);
    }
    done
}

fn write_log_header(log: &Path, chunk: u64, size: u64) -> Result<(), HubError> {
    std::fs::write(log, format!("tuner-chunks {chunk} {size}\n"))
        .map_err(|e| HubError::io(log.display(), e))
}

/// Makes a finished chunk durable, then records it.
fn sync_and_log(data: &Path, log: &Path, index: u64) -> Result<(), HubError> {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(data)
        .map_err(|e| HubError::io(data.display(), e))?;
    f.sync_data().map_err(|e| HubError::io(data.display(), e))?;
    let mut l = std::fs::OpenOptions::new()
        .append(true)
        .open(log)
        .map_err(|e| HubError::io(log.display(), e))?;
    writeln!(l, "{index}").map_err(|e| HubError::io(log.display(), e))
}

fn discard(data: &Path, log: &Path) {
    let _ = std::fs::remove_file(data);
    let _ = std::fs::remove_file(log);
}

/// Lowercase hex sha256 of a file, read in 1 MiB blocks.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

fn error_chain(e: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

/// Free bytes on the file system holding `dir`.
#[cfg(unix)]
pub fn free_space(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a valid out-pointer.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

/// Free bytes (unknown on this platform: never refuses).
#[cfg(not(unix))]
pub fn free_space(_dir: &Path) -> std::io::Result<u64> {
    Ok(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_logs_old_and_new_parse() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("x.chunks");
        // An older tuner's log: finished chunks only.
        std::fs::write(&log, "tuner-chunks 100 250\n0\n2\n").unwrap();
        assert_eq!(
            read_log(&log, 100, 250),
            BTreeMap::from([(0, 100), (2, 50)])
        );
        // Progress within chunks; the largest claim wins, out-of-range
        // chunks and garbage are ignored, a torn last line does not count.
        std::fs::write(
            &log,
            "tuner-chunks 100 250\n1 30\n1 60\n0 40\n0\n7 10\nx y\n1 9 9\n2 2",
        )
        .unwrap();
        assert_eq!(
            read_log(&log, 100, 250),
            BTreeMap::from([(0, 100), (1, 60)])
        );
        // Progress beyond a chunk's end is capped at its length.
        std::fs::write(&log, "tuner-chunks 100 250\n2 80\n").unwrap();
        assert_eq!(read_log(&log, 100, 250), BTreeMap::from([(2, 50)]));
        // Another chunk size: nothing counts.
        assert!(read_log(&log, 50, 250).is_empty());
    }
}
