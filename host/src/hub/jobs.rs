//! Background downloads for the HTTP API: an id per request, a status that
//! can be polled, and a broadcast of progress events for SSE.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::broadcast;
use utoipa::ToSchema;

use super::progress::ProgressSink;
use super::pull::{Hub, PullReport, PullRequest};

/// Where a download stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DownloadState {
    Running,
    Done,
    Failed,
}

/// A download's status (`GET /api/models/downloads/{id}`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DownloadStatus {
    pub id: String,
    pub model_name: String,
    pub state: DownloadState,
    /// The source being tried or that served it.
    pub source: Option<String>,
    pub files_total: usize,
    pub files_done: usize,
    pub bytes_total: u64,
    pub bytes_done: u64,
    pub error: Option<String>,
    pub result: Option<PullReport>,
    /// Notes: retries, fallbacks.
    pub notes: Vec<String>,
}

/// One progress event on the SSE stream: the status at that moment.
pub type DownloadEvent = DownloadStatus;

struct Job {
    status: Mutex<DownloadStatus>,
    bytes: AtomicU64,
    events: broadcast::Sender<DownloadEvent>,
}

impl Job {
    fn snapshot(&self) -> DownloadStatus {
        let mut s = self.status.lock().unwrap().clone();
        s.bytes_done = self.bytes.load(Ordering::Relaxed);
        s
    }

    fn publish(&self) {
        let _ = self.events.send(self.snapshot());
    }
}

impl ProgressSink for Job {
    fn resolving(&self, source: &str) {
        self.status.lock().unwrap().source = Some(source.to_string());
        self.publish();
    }
    fn planned(&self, files: usize, bytes: u64) {
        {
            let mut s = self.status.lock().unwrap();
            s.files_total = files;
            s.bytes_total = bytes;
        }
        self.publish();
    }
    fn file_started(&self, _path: &str, _size: Option<u64>, already: u64) {
        self.bytes.fetch_add(already, Ordering::Relaxed);
    }
    fn advanced(&self, _path: &str, n: u64) {
        let before = self.bytes.fetch_add(n, Ordering::Relaxed);
        // About one event per MiB keeps the stream readable.
        if (before >> 20) != ((before + n) >> 20) {
            self.publish();
        }
    }
    fn file_done(&self, _path: &str) {
        self.status.lock().unwrap().files_done += 1;
        self.publish();
    }
    fn note(&self, message: &str) {
        let mut s = self.status.lock().unwrap();
        if s.notes.len() < 100 {
            s.notes.push(message.to_string());
        }
    }
}

/// All downloads started through the API in this process.
#[derive(Default)]
pub struct DownloadJobs {
    jobs: Mutex<HashMap<String, Arc<Job>>>,
    next: AtomicU64,
}

impl DownloadJobs {
    /// Starts `req` in the background and returns its id at once. `permit`
    /// is held until the download ends (the server's bound on concurrent
    /// downloads).
    pub fn start(
        &self,
        hub: Arc<Hub>,
        permit: tokio::sync::OwnedSemaphorePermit,
        req: PullRequest,
    ) -> String {
        let id = format!(
            "dl-{}-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0),
            self.next.fetch_add(1, Ordering::Relaxed)
        );
        let (tx, _) = broadcast::channel(256);
        let job = Arc::new(Job {
            status: Mutex::new(DownloadStatus {
                id: id.clone(),
                model_name: req.repo.clone(),
                state: DownloadState::Running,
                source: None,
                files_total: 0,
                files_done: 0,
                bytes_total: 0,
                bytes_done: 0,
                error: None,
                result: None,
                notes: Vec::new(),
            }),
            bytes: AtomicU64::new(0),
            events: tx,
        });
        self.jobs.lock().unwrap().insert(id.clone(), job.clone());
        tokio::spawn(async move {
            let sink: super::Progress = job.clone();
            let result = hub.pull(&req, &sink).await;
            drop(permit);
            {
                let mut s = job.status.lock().unwrap();
                match result {
                    Ok(report) => {
                        s.state = DownloadState::Done;
                        s.source = Some(report.source.clone());
                        s.files_done = report.files;
                        s.result = Some(report);
                    }
                    Err(e) => {
                        s.state = DownloadState::Failed;
                        s.error = Some(e.to_string());
                    }
                }
            }
            job.publish();
        });
        id
    }

    /// The status of download `id`.
    pub fn status(&self, id: &str) -> Option<DownloadStatus> {
        self.jobs.lock().unwrap().get(id).map(|j| j.snapshot())
    }

    /// The current status and a receiver of later events.
    pub fn subscribe(
        &self,
        id: &str,
    ) -> Option<(DownloadStatus, broadcast::Receiver<DownloadEvent>)> {
        let jobs = self.jobs.lock().unwrap();
        let job = jobs.get(id)?;
        let rx = job.events.subscribe();
        Some((job.snapshot(), rx))
    }
}
