//! Training jobs: records and per-step events in SQLite, and a queue that
//! runs one job at a time per device on a dedicated thread.
//!
//! The trainer is behind [`Trainer`] so the queue, the API and the CLI work
//! (and are tested) without a model. A job reports through its
//! [`JobContext`]: step events are stored, then broadcast to live
//! subscribers (SSE, the CLI's progress bar); subscribers read the stored
//! history first and drop live events they already have (by `seq`), so a
//! stream neither misses nor repeats an event.
//!
//! Crash safety: a job's row says which process runs it (`owner_pid`). When a
//! queue opens, `running` jobs whose process is gone become `interrupted`,
//! resumable from `last_checkpoint` with [`JobQueue::resume`].

use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use anyhow::{Context as _, Result};
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::broadcast;
use utoipa::ToSchema;

use super::config::TrainConfig;
use crate::store::Store;

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Queued,
    Running,
    Completed,
    Failed,
    Stopped,
    /// tuner stopped while the job ran; resumable from its last checkpoint.
    Interrupted,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Stopped => "stopped",
            JobStatus::Interrupted => "interrupted",
        }
    }

    fn parse(s: &str) -> JobStatus {
        match s {
            "queued" => JobStatus::Queued,
            "running" => JobStatus::Running,
            "completed" => JobStatus::Completed,
            "stopped" => JobStatus::Stopped,
            "interrupted" => JobStatus::Interrupted,
            _ => JobStatus::Failed,
        }
    }

    /// Neither waiting nor running.
    pub fn is_finished(self) -> bool {
        !matches!(self, JobStatus::Queued | JobStatus::Running)
    }
}

/// A training job (`GET /api/training/{id}`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JobRecord {
    pub id: i64,
    pub name: String,
    pub status: JobStatus,
    /// The checked configuration, defaults filled in.
    pub config: TrainConfig,
    /// Absolute output folder.
    pub output_dir: String,
    /// The resolved device (`cpu`, `cuda:0`); one job runs per device.
    pub device: String,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// Why it failed or was interrupted.
    pub error: Option<String>,
    /// The newest checkpoint folder, and the step it was written at.
    pub last_checkpoint: Option<String>,
    pub last_checkpoint_step: Option<u64>,
    /// The last reported optimiser step, of `total_steps` (once known).
    pub step: u64,
    pub total_steps: Option<u64>,
    /// The last reported training loss.
    pub loss: Option<f64>,
}

/// What the trainer reports every `logging_steps` (and for evaluations).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TrainEvent {
    /// Optimiser step (1-based).
    pub step: u64,
    /// Epochs done, fractional.
    pub epoch: f64,
    pub loss: Option<f64>,
    pub lr: Option<f64>,
    /// Global gradient norm before clipping.
    pub grad_norm: Option<f64>,
    pub tokens_per_s: Option<f64>,
    /// Peak memory of the device (or process RSS on CPU), bytes.
    pub memory_bytes: Option<u64>,
    /// Anything else: `eval_loss`, `truncated`, method-specific numbers.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    #[schema(value_type = Object)]
    pub metrics: Map<String, Value>,
}

/// A stored event: its number in the job (from 1) and when it was stored.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct StoredEvent {
    pub seq: u64,
    pub at: String,
    #[serde(flatten)]
    pub event: TrainEvent,
}

/// What subscribers of a job receive.
#[derive(Debug, Clone)]
pub enum JobUpdate {
    /// A step event (already stored).
    Event(StoredEvent),
    /// The record changed: started, total steps known, checkpoint written.
    Status(Box<JobRecord>),
    /// A line for people (loading the model, evaluation, ...); not stored.
    Log(String),
    /// The job finished; nothing follows.
    Finished(Box<JobRecord>),
}

/// How a trainer's run ended, when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobOutcome {
    /// Trained to the end; outputs are in the output folder.
    Completed,
    /// Stopped early because [`JobContext::should_stop`] said so.
    Stopped,
}

/// Runs one job to its end. Called on the queue's thread for the job's
/// device; an `Err` fails the job with that message (`{:#}`).
pub trait Trainer: Send + Sync {
    fn run(&self, job: &JobContext) -> Result<JobOutcome>;
}

/// What a running job sees: its config and output folder, and where to
/// report progress.
pub struct JobContext {
    id: i64,
    config: TrainConfig,
    output_dir: PathBuf,
    stop: Arc<AtomicBool>,
    shared: Arc<Shared>,
}

impl JobContext {
    pub fn id(&self) -> i64 {
        self.id
    }

    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// Absolute; created before the trainer runs.
    pub fn output_dir(&self) -> &Path {
        &self.output_dir
    }

    /// True once a stop was asked for: save what is useful, then return
    /// `Ok(JobOutcome::Stopped)`.
    pub fn should_stop(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Stores `event` and sends it to subscribers. Storage errors are logged,
    /// not returned: losing a progress line must not fail a training run.
    pub fn report(&self, event: TrainEvent) {
        match self.shared.store_event(self.id, &event) {
            Ok(stored) => self.shared.send(self.id, JobUpdate::Event(stored)),
            Err(e) => tracing::warn!(job = self.id, "storing a training event: {e:#}"),
        }
    }

    /// The number of optimiser steps the run will take, once known.
    pub fn set_total_steps(&self, total: u64) {
        self.update(
            "UPDATE training_jobs SET total_steps = ?2 WHERE id = ?1",
            params![self.id, total as i64],
        );
    }

    /// A checkpoint folder was written (atomically) for `step`.
    pub fn checkpoint_saved(&self, path: &Path, step: u64) {
        self.update(
            "UPDATE training_jobs SET last_checkpoint = ?2, last_checkpoint_step = ?3 WHERE id = ?1",
            params![self.id, path.display().to_string(), step as i64],
        );
    }

    /// A line for people watching (not stored).
    pub fn log(&self, message: impl Into<String>) {
        let message = message.into();
        tracing::info!(job = self.id, "{message}");
        self.shared.send(self.id, JobUpdate::Log(message));
    }

    fn update(&self, sql: &str, p: impl rusqlite::Params) {
        let result = self
            .shared
            .store
            .with(|c| c.execute(sql, p))
            .map_err(anyhow::Error::from)
            .and_then(|_| self.shared.get(self.id));
        match result {
            Ok(Some(rec)) => self.shared.send(self.id, JobUpdate::Status(Box::new(rec))),
            Ok(None) => {}
            Err(e) => tracing::warn!(job = self.id, "updating a training job: {e:#}"),
        }
    }
}

/// Why a queue operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("no training job {0}")]
    NotFound(i64),
    #[error("training job {id} is already {status}", status = .status.as_str())]
    Finished { id: i64, status: JobStatus },
    #[error("training job {id} is {status}; only interrupted, stopped or failed jobs resume", status = .status.as_str())]
    NotResumable { id: i64, status: JobStatus },
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

impl From<rusqlite::Error> for JobError {
    fn from(e: rusqlite::Error) -> Self {
        JobError::Store(e.into())
    }
}

/// How a queue treats jobs it finds in the database.
#[derive(Debug, Clone, Copy)]
pub struct QueueOptions {
    /// Run jobs left `queued` by an earlier process (`tuner serve`: yes; the
    /// CLI, which runs only its own job: no).
    pub adopt_queued: bool,
}

/// What [`JobQueue::subscribe`] returns: the record, the stored events,
/// and a live receiver unless the job has finished.
pub type Subscription = (
    JobRecord,
    Vec<StoredEvent>,
    Option<broadcast::Receiver<JobUpdate>>,
);

/// Jobs waiting and running in this process.
pub struct JobQueue {
    shared: Arc<Shared>,
}

struct Shared {
    store: Arc<Store>,
    /// `Err`: why training cannot run here (submissions are refused with it).
    trainer: Result<Arc<dyn Trainer>, String>,
    state: Mutex<QueueState>,
    wake: Condvar,
}

#[derive(Default)]
struct QueueState {
    /// Waiting job ids per device, oldest first.
    pending: HashMap<String, VecDeque<i64>>,
    /// Devices with a worker thread.
    workers: Vec<String>,
    /// Stop flags of running jobs.
    running: HashMap<i64, Arc<AtomicBool>>,
    /// Live subscribers per job (created on first subscription).
    channels: HashMap<i64, broadcast::Sender<JobUpdate>>,
    shutdown: bool,
}

const JOB_COLUMNS: &str = "id, name, status, config, output_dir, device, created_at, started_at,
    finished_at, error, last_checkpoint, last_checkpoint_step, step, total_steps, loss";

const NOW: &str = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

fn row_to_job(row: &rusqlite::Row) -> rusqlite::Result<JobRecord> {
    let config: String = row.get(3)?;
    let config = serde_json::from_str(&config).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(3, rusqlite::types::Type::Text, Box::new(e))
    })?;
    Ok(JobRecord {
        id: row.get(0)?,
        name: row.get(1)?,
        status: JobStatus::parse(&row.get::<_, String>(2)?),
        config,
        output_dir: row.get(4)?,
        device: row.get(5)?,
        created_at: row.get(6)?,
        started_at: row.get(7)?,
        finished_at: row.get(8)?,
        error: row.get(9)?,
        last_checkpoint: row.get(10)?,
        last_checkpoint_step: row.get::<_, Option<i64>>(11)?.map(|v| v as u64),
        step: row.get::<_, i64>(12)? as u64,
        total_steps: row.get::<_, Option<i64>>(13)?.map(|v| v as u64),
        loss: row.get(14)?,
    })
}

fn row_to_event(row: &rusqlite::Row) -> rusqlite::Result<StoredEvent> {
    let metrics: Option<String> = row.get(9)?;
    Ok(StoredEvent {
        seq: row.get::<_, i64>(0)? as u64,
        at: row.get(10)?,
        event: TrainEvent {
            step: row.get::<_, i64>(1)? as u64,
            epoch: row.get(2)?,
            loss: row.get(3)?,
            lr: row.get(4)?,
            grad_norm: row.get(5)?,
            tokens_per_s: row.get(6)?,
            memory_bytes: row.get::<_, Option<i64>>(7)?.map(|v| v as u64),
            metrics: metrics
                .and_then(|m| serde_json::from_str(&m).ok())
                .unwrap_or_default(),
        },
    })
}

/// Whether process `pid` still exists.
fn process_alive(pid: i64) -> bool {
    #[cfg(unix)]
    {
        let Ok(pid) = libc::pid_t::try_from(pid) else {
            return false;
        };
        // SAFETY: signal 0 only checks that the process exists.
        let r = unsafe { libc::kill(pid, 0) };
        r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        false
    }
}

impl Shared {
    fn get(&self, id: i64) -> Result<Option<JobRecord>> {
        self.store.with(|c| {
            c.query_row(
                &format!("SELECT {JOB_COLUMNS} FROM training_jobs WHERE id = ?1"),
                [id],
                row_to_job,
            )
            .optional()
            .map_err(Into::into)
        })
    }

    fn store_event(&self, id: i64, e: &TrainEvent) -> Result<StoredEvent> {
        let metrics = (!e.metrics.is_empty()).then(|| Value::Object(e.metrics.clone()).to_string());
        self.store.with(|c| {
            let tx = c.transaction()?;
            let stored = tx.query_row(
                &format!(
                    "INSERT INTO training_events (job_id, seq, step, epoch, loss, lr, grad_norm,
                        tokens_per_s, memory_bytes, metrics, at)
                     VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM training_events
                                  WHERE job_id = ?1), ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, {NOW})
                     RETURNING seq, step, epoch, loss, lr, grad_norm, tokens_per_s,
                        memory_bytes, 0, metrics, at"
                ),
                params![
                    id,
                    e.step as i64,
                    e.epoch,
                    e.loss,
                    e.lr,
                    e.grad_norm,
                    e.tokens_per_s,
                    e.memory_bytes.map(|m| m as i64),
                    metrics
                ],
                row_to_event,
            )?;
            tx.execute(
                "UPDATE training_jobs SET step = MAX(step, ?2), loss = COALESCE(?3, loss)
                 WHERE id = ?1",
                params![id, e.step as i64, e.loss],
            )?;
            tx.commit()?;
            Ok(stored)
        })
    }

    fn send(&self, id: i64, update: JobUpdate) {
        let state = self.state.lock().unwrap();
        if let Some(tx) = state.channels.get(&id) {
            let _ = tx.send(update);
        }
    }

    /// Worker loop for one device: take the oldest waiting job, run it.
    fn work(self: Arc<Self>, device: String) {
        loop {
            let (id, stop) = {
                let mut state = self.state.lock().unwrap();
                loop {
                    if state.shutdown {
                        return;
                    }
                    if let Some(id) = state.pending.get_mut(&device).and_then(VecDeque::pop_front) {
                        let stop = Arc::new(AtomicBool::new(false));
                        state.running.insert(id, stop.clone());
                        break (id, stop);
                    }
                    state = self.wake.wait(state).unwrap();
                }
            };
            if let Err(e) = self.run_job(id, stop) {
                tracing::error!(job = id, "training job bookkeeping failed: {e:#}");
            }
            self.state.lock().unwrap().running.remove(&id);
        }
    }

    fn run_job(self: &Arc<Self>, id: i64, stop: Arc<AtomicBool>) -> Result<()> {
        // Only a job still queued starts (it may have been stopped meanwhile).
        let started = self.store.with(|c| {
            c.execute(
                &format!(
                    "UPDATE training_jobs SET status = 'running', started_at = {NOW},
                        owner_pid = ?2, error = NULL WHERE id = ?1 AND status = 'queued'"
                ),
                params![id, std::process::id() as i64],
            )
        })?;
        if started == 0 {
            return Ok(());
        }
        let Some(record) = self.get(id)? else {
            return Ok(());
        };
        self.send(id, JobUpdate::Status(Box::new(record.clone())));
        let output_dir = PathBuf::from(&record.output_dir);
        let result = match &self.trainer {
            Err(why) => Err(anyhow::anyhow!("{why}")),
            Ok(trainer) => std::fs::create_dir_all(&output_dir)
                .with_context(|| format!("creating the output folder {}", output_dir.display()))
                .and_then(|()| {
                    let ctx = JobContext {
                        id,
                        config: record.config.clone(),
                        output_dir,
                        stop,
                        shared: self.clone(),
                    };
                    std::panic::catch_unwind(AssertUnwindSafe(|| trainer.run(&ctx))).unwrap_or_else(
                        |panic| {
                            let msg = panic
                                .downcast_ref::<String>()
                                .cloned()
                                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                                .unwrap_or_else(|| "unknown cause".into());
                            Err(anyhow::anyhow!("the trainer panicked: {msg}"))
                        },
                    )
                }),
        };
        let (status, error) = match result {
            Ok(JobOutcome::Completed) => (JobStatus::Completed, None),
            Ok(JobOutcome::Stopped) => (JobStatus::Stopped, None),
            Err(e) => (JobStatus::Failed, Some(format!("{e:#}"))),
        };
        self.finish(id, status, error)
    }

    /// Records the end of a job and closes its live streams.
    fn finish(&self, id: i64, status: JobStatus, error: Option<String>) -> Result<()> {
        self.store.with(|c| {
            c.execute(
                &format!(
                    "UPDATE training_jobs SET status = ?2, error = ?3, finished_at = {NOW},
                        owner_pid = NULL WHERE id = ?1"
                ),
                params![id, status.as_str(), error],
            )
        })?;
        let record = self.get(id)?;
        // The row says finished before the channel goes: a subscriber either
        // holds the channel (and gets `Finished`) or reads the finished row.
        let tx = self.state.lock().unwrap().channels.remove(&id);
        if let (Some(tx), Some(record)) = (tx, record) {
            let _ = tx.send(JobUpdate::Finished(Box::new(record)));
        }
        Ok(())
    }
}

impl JobQueue {
    /// Opens the queue over `store`. Jobs left `running` by a process that is
    /// gone (or by an earlier queue of this process) become `interrupted`.
    /// `trainer` is `Err(reason)` where training cannot run (submissions are
    /// refused with the reason; records stay readable).
    pub fn open(
        store: Arc<Store>,
        trainer: Result<Arc<dyn Trainer>, String>,
        options: QueueOptions,
    ) -> Result<Arc<JobQueue>> {
        let queue = Arc::new(JobQueue {
            shared: Arc::new(Shared {
                store,
                trainer,
                state: Mutex::new(QueueState::default()),
                wake: Condvar::new(),
            }),
        });
        queue.recover()?;
        if options.adopt_queued {
            let waiting: Vec<(i64, String)> = queue.shared.store.with(|c| {
                let mut st = c.prepare(
                    "SELECT id, device FROM training_jobs WHERE status = 'queued' ORDER BY id",
                )?;
                st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })?;
            for (id, device) in waiting {
                queue.enqueue(id, device);
            }
        }
        Ok(queue)
    }

    fn recover(&self) -> Result<()> {
        let me = std::process::id() as i64;
        self.shared.store.with(|c| -> Result<()> {
            let running: Vec<(i64, Option<i64>)> = {
                let mut st =
                    c.prepare("SELECT id, owner_pid FROM training_jobs WHERE status = 'running'")?;
                st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<rusqlite::Result<_>>()?
            };
            for (id, pid) in running {
                // Another live tuner (a CLI run beside `tuner serve`) still owns it.
                if pid.is_some_and(|p| p != me && process_alive(p)) {
                    continue;
                }
                c.execute(
                    &format!(
                        "UPDATE training_jobs SET status = 'interrupted', finished_at = {NOW},
                            owner_pid = NULL,
                            error = 'tuner stopped while this job was running; resume it to \
                                     continue from its last checkpoint'
                         WHERE id = ?1"
                    ),
                    [id],
                )?;
            }
            Ok(())
        })
    }

    /// Whether jobs can run here (a trainer is available).
    pub fn can_train(&self) -> Result<(), JobError> {
        match &self.shared.trainer {
            Ok(_) => Ok(()),
            Err(why) => Err(JobError::Unavailable(why.clone())),
        }
    }

    /// Records a job as `queued` and schedules it. A relative `output_dir`
    /// is resolved against `output_base`.
    pub fn submit(&self, config: TrainConfig, output_base: &Path) -> Result<JobRecord, JobError> {
        self.can_train()?;
        let device = config.device.resolve().to_string();
        let output_dir = config.resolved_output_dir(output_base);
        let json = serde_json::to_string(&config).context("serialising the config")?;
        let id: i64 = self.shared.store.with(|c| {
            c.query_row(
                &format!(
                    "INSERT INTO training_jobs (name, status, config, output_dir, device, created_at)
                     VALUES (?1, 'queued', ?2, ?3, ?4, {NOW}) RETURNING id"
                ),
                params![config.name(), json, output_dir.display().to_string(), device],
                |r| r.get(0),
            )
        })?;
        self.enqueue(id, device);
        self.get(id)
    }

    fn enqueue(&self, id: i64, device: String) {
        let mut state = self.shared.state.lock().unwrap();
        state
            .pending
            .entry(device.clone())
            .or_default()
            .push_back(id);
        if !state.workers.contains(&device) {
            state.workers.push(device.clone());
            let shared = self.shared.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("train-{device}"))
                .spawn(move || shared.work(device));
            if let Err(e) = spawned {
                tracing::error!("cannot start a training thread: {e}");
            }
        }
        drop(state);
        self.shared.wake.notify_all();
    }

    /// One job.
    pub fn get(&self, id: i64) -> Result<JobRecord, JobError> {
        self.shared.get(id)?.ok_or(JobError::NotFound(id))
    }

    /// Every job, newest first.
    pub fn list(&self) -> Result<Vec<JobRecord>, JobError> {
        Ok(self.shared.store.with(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {JOB_COLUMNS} FROM training_jobs ORDER BY id DESC"
            ))?;
            st.query_map([], row_to_job)?
                .collect::<rusqlite::Result<Vec<_>>>()
        })?)
    }

    /// Stored events of job `id` with `seq > after`, in order.
    pub fn events(&self, id: i64, after: u64) -> Result<Vec<StoredEvent>, JobError> {
        Ok(self.shared.store.with(|c| {
            let mut st = c.prepare(
                "SELECT seq, step, epoch, loss, lr, grad_norm, tokens_per_s, memory_bytes, 0,
                        metrics, at
                 FROM training_events WHERE job_id = ?1 AND seq > ?2 ORDER BY seq",
            )?;
            st.query_map(params![id, after as i64], row_to_event)?
                .collect::<rusqlite::Result<Vec<_>>>()
        })?)
    }

    /// The record, the stored events after `after`, and (unless the job has
    /// finished) a receiver of what follows. Live events with a `seq` at or
    /// below the last one returned here are repeats: skip them.
    pub fn subscribe(&self, id: i64, after: u64) -> Result<Subscription, JobError> {
        let record = self.get(id)?;
        if record.status.is_finished() {
            let history = self.events(id, after)?;
            return Ok((record, history, None));
        }
        let rx = {
            let mut state = self.shared.state.lock().unwrap();
            state
                .channels
                .entry(id)
                .or_insert_with(|| broadcast::channel(1024).0)
                .subscribe()
        };
        // Read after subscribing, so nothing falls between the two.
        let record = self.get(id)?;
        let history = self.events(id, after)?;
        if record.status.is_finished() {
            self.shared.state.lock().unwrap().channels.remove(&id);
            return Ok((record, history, None));
        }
        Ok((record, history, Some(rx)))
    }

    /// Stops job `id`: a queued job at once, a running one as soon as its
    /// trainer next checks [`JobContext::should_stop`]. Returns the record.
    pub fn stop(&self, id: i64) -> Result<JobRecord, JobError> {
        let record = self.get(id)?;
        if record.status.is_finished() {
            return Err(JobError::Finished {
                id,
                status: record.status,
            });
        }
        let was_waiting = {
            let mut state = self.shared.state.lock().unwrap();
            if let Some(flag) = state.running.get(&id) {
                flag.store(true, Ordering::Relaxed);
                false
            } else {
                let mut found = false;
                for q in state.pending.values_mut() {
                    if let Some(pos) = q.iter().position(|j| *j == id) {
                        q.remove(pos);
                        found = true;
                    }
                }
                found || record.status == JobStatus::Queued
            }
        };
        if was_waiting {
            // Guarded on `queued`: a worker that just took it sees the change.
            let changed = self.shared.store.with(|c| {
                c.execute(
                    "UPDATE training_jobs SET status = 'running' WHERE id = ?1 AND status = 'queued'",
                    [id],
                )
            })?;
            if changed == 1 {
                self.shared.finish(id, JobStatus::Stopped, None)?;
            }
        }
        self.get(id)
    }

    /// Queues an interrupted, stopped or failed job again, continuing from
    /// its last checkpoint (events after that checkpoint are dropped, since
    /// those steps run again). Without a checkpoint it starts over.
    pub fn resume(&self, id: i64) -> Result<JobRecord, JobError> {
        self.can_train()?;
        let record = self.get(id)?;
        if !matches!(
            record.status,
            JobStatus::Interrupted | JobStatus::Stopped | JobStatus::Failed
        ) {
            return Err(JobError::NotResumable {
                id,
                status: record.status,
            });
        }
        let mut config = record.config.clone();
        config.resume_from_checkpoint = record.last_checkpoint.clone();
        let keep_until = record.last_checkpoint_step.unwrap_or(0);
        if record.last_checkpoint.is_none() {
            config.resume_from_checkpoint = None;
        }
        let json = serde_json::to_string(&config).context("serialising the config")?;
        self.shared.store.with(|c| -> rusqlite::Result<()> {
            let tx = c.transaction()?;
            tx.execute(
                "DELETE FROM training_events WHERE job_id = ?1 AND step > ?2",
                params![id, keep_until as i64],
            )?;
            tx.execute(
                "UPDATE training_jobs SET status = 'queued', config = ?2, error = NULL,
                    started_at = NULL, finished_at = NULL, step = ?3,
                    loss = (SELECT loss FROM training_events WHERE job_id = ?1 AND loss IS NOT NULL
                            ORDER BY seq DESC LIMIT 1)
                 WHERE id = ?1",
                params![id, json, keep_until as i64],
            )?;
            tx.commit()
        })?;
        self.enqueue(id, record.device);
        self.get(id)
    }
}

impl Drop for JobQueue {
    /// Worker threads end after their current job; a job still running when
    /// the process exits is `interrupted` at the next start.
    fn drop(&mut self) {
        self.shared.state.lock().unwrap().shutdown = true;
        self.shared.wake.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    fn config(extra: Value) -> TrainConfig {
        let mut v = serde_json::json!({"model_name": "m", "dataset": "d", "device": "cpu"});
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        // The fake trainer runs no plugin: a method with no settings.
        let catalog = crate::train::config::MethodCatalog::new().with("lora", Ok(Vec::new()));
        TrainConfig::from_json(v, &catalog).unwrap()
    }

    /// Reports `max_steps` steps; each step waits for a go from the test
    /// when `gate` is set, so the test decides when things happen.
    struct Fake {
        gate: Option<Mutex<mpsc::Receiver<()>>>,
        started: Mutex<Vec<i64>>,
        concurrent: std::sync::atomic::AtomicUsize,
        max_concurrent: std::sync::atomic::AtomicUsize,
    }

    impl Fake {
        fn new(gate: Option<mpsc::Receiver<()>>) -> Arc<Self> {
            Arc::new(Self {
                gate: gate.map(Mutex::new),
                started: Mutex::new(Vec::new()),
                concurrent: Default::default(),
                max_concurrent: Default::default(),
            })
        }
    }

    impl Trainer for Fake {
        fn run(&self, job: &JobContext) -> Result<JobOutcome> {
            self.started.lock().unwrap().push(job.id());
            let now = self.concurrent.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_concurrent.fetch_max(now, Ordering::SeqCst);
            let total = job.config().max_steps.unwrap_or(3);
            job.set_total_steps(total);
            let mut outcome = JobOutcome::Completed;
            for step in 1..=total {
                if let Some(g) = &self.gate {
                    let _ = g.lock().unwrap().recv();
                }
                if job.should_stop() {
                    outcome = JobOutcome::Stopped;
                    break;
                }
                job.report(TrainEvent {
                    step,
                    epoch: step as f64 / total as f64,
                    loss: Some(2.0 / step as f64),
                    ..Default::default()
                });
                if step == 2 {
                    job.checkpoint_saved(&job.output_dir().join("checkpoint-2"), 2);
                }
            }
            self.concurrent.fetch_sub(1, Ordering::SeqCst);
            if job.config().system.as_deref() == Some("fail") {
                anyhow::bail!("plugin `lora` returned a non-scalar loss");
            }
            Ok(outcome)
        }
    }

    fn wait_until(queue: &JobQueue, id: i64, f: impl Fn(&JobRecord) -> bool) -> JobRecord {
        for _ in 0..500 {
            let r = queue.get(id).unwrap();
            if f(&r) {
                return r;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!(
            "job {id} never reached the expected state: {:?}",
            queue.get(id)
        );
    }

    fn open(
        dir: &Path,
        trainer: Arc<dyn Trainer>,
        adopt_queued: bool,
    ) -> (Arc<Store>, Arc<JobQueue>) {
        let store = Arc::new(Store::open(&dir.join("t.db")).unwrap());
        let q = JobQueue::open(store.clone(), Ok(trainer), QueueOptions { adopt_queued }).unwrap();
        (store, q)
    }

    #[test]
    fn a_job_runs_to_completion_with_events() {
        let dir = tempfile::tempdir().unwrap();
        let (_s, q) = open(dir.path(), Fake::new(None), true);
        let job = q.submit(config(serde_json::json!({})), dir.path()).unwrap();
        assert_eq!(job.status, JobStatus::Queued);
        assert_eq!(job.device, "cpu");
        assert_eq!(
            job.output_dir,
            dir.path().join("output/m-lora").display().to_string()
        );
        let done = wait_until(&q, job.id, |r| r.status.is_finished());
        assert_eq!(done.status, JobStatus::Completed);
        assert_eq!((done.step, done.total_steps), (3, Some(3)));
        assert_eq!(done.loss, Some(2.0 / 3.0));
        assert!(done.started_at.is_some() && done.finished_at.is_some());
        assert_eq!(done.last_checkpoint_step, Some(2));
        let events = q.events(job.id, 0).unwrap();
        assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(events[1].event.loss, Some(1.0));
        assert_eq!(q.events(job.id, 2).unwrap().len(), 1);
        assert!(dir.path().join("output/m-lora").is_dir());
    }

    #[test]
    fn failures_and_panics_fail_the_job_with_the_message() {
        struct Panics;
        impl Trainer for Panics {
            fn run(&self, _: &JobContext) -> Result<JobOutcome> {
                panic!("boom");
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let (_s, q) = open(dir.path(), Fake::new(None), true);
        let job = q
            .submit(config(serde_json::json!({"system": "fail"})), dir.path())
            .unwrap();
        let done = wait_until(&q, job.id, |r| r.status.is_finished());
        assert_eq!(done.status, JobStatus::Failed);
        assert_eq!(
            done.error.as_deref(),
            Some("plugin `lora` returned a non-scalar loss")
        );

        let dir2 = tempfile::tempdir().unwrap();
        let (_s, q) = open(dir2.path(), Arc::new(Panics), true);
        let job = q
            .submit(config(serde_json::json!({})), dir2.path())
            .unwrap();
        let done = wait_until(&q, job.id, |r| r.status.is_finished());
        assert_eq!(done.error.as_deref(), Some("the trainer panicked: boom"));
    }

    #[test]
    fn one_job_at_a_time_per_device_and_stop() {
        let dir = tempfile::tempdir().unwrap();
        let (go, gate) = mpsc::channel();
        let fake = Fake::new(Some(gate));
        let (_s, q) = open(dir.path(), fake.clone(), true);
        let a = q
            .submit(config(serde_json::json!({"max_steps": 4})), dir.path())
            .unwrap();
        let b = q.submit(config(serde_json::json!({})), dir.path()).unwrap();
        let c = q.submit(config(serde_json::json!({})), dir.path()).unwrap();
        wait_until(&q, a.id, |r| r.status == JobStatus::Running);
        go.send(()).unwrap();
        wait_until(&q, a.id, |r| r.step == 1);
        assert_eq!(
            q.get(b.id).unwrap().status,
            JobStatus::Queued,
            "b waits for a"
        );
        // A queued job stops at once and never runs.
        assert_eq!(q.stop(c.id).unwrap().status, JobStatus::Stopped);
        // A running job stops when its trainer next looks.
        assert_eq!(q.stop(a.id).unwrap().status, JobStatus::Running);
        go.send(()).unwrap();
        let a_done = wait_until(&q, a.id, |r| r.status.is_finished());
        assert_eq!((a_done.status, a_done.step), (JobStatus::Stopped, 1));
        for _ in 0..3 {
            go.send(()).unwrap();
        }
        let b_done = wait_until(&q, b.id, |r| r.status.is_finished());
        assert_eq!(b_done.status, JobStatus::Completed);
        assert_eq!(*fake.started.lock().unwrap(), [a.id, b.id]);
        assert_eq!(fake.max_concurrent.load(Ordering::SeqCst), 1);
        assert!(matches!(q.stop(b.id), Err(JobError::Finished { .. })));
        assert!(matches!(q.stop(999), Err(JobError::NotFound(999))));
    }

    #[test]
    fn running_jobs_are_interrupted_on_restart_and_resume_from_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let (go, gate) = mpsc::channel();
        let (_s, q) = open(dir.path(), Fake::new(Some(gate)), true);
        let a = q
            .submit(config(serde_json::json!({"max_steps": 5})), dir.path())
            .unwrap();
        for _ in 0..3 {
            go.send(()).unwrap();
        }
        wait_until(&q, a.id, |r| r.step == 3);
        let b = q.submit(config(serde_json::json!({})), dir.path()).unwrap();
        // "The process dies": a new queue over the same database, while the
        // old one's thread is still blocked inside step 4.
        let (_s2, q2) = open(dir.path(), Fake::new(None), false);
        let a2 = q2.get(a.id).unwrap();
        assert_eq!(a2.status, JobStatus::Interrupted);
        assert!(a2.error.unwrap().contains("resume"));
        assert_eq!(a2.last_checkpoint_step, Some(2));
        // Not adopted by a queue that runs only its own jobs.
        assert_eq!(q2.get(b.id).unwrap().status, JobStatus::Queued);
        // The old worker stays parked inside step 4, like a dead process.
        std::mem::forget(go);

        let resumed = q2.resume(a.id).unwrap();
        assert_eq!(resumed.status, JobStatus::Queued);
        assert_eq!(resumed.step, 2);
        assert_eq!(
            resumed.config.resume_from_checkpoint.as_deref(),
            Some(
                dir.path()
                    .join("output/m-lora/checkpoint-2")
                    .to_str()
                    .unwrap()
            )
        );
        let done = wait_until(&q2, a.id, |r| r.status.is_finished());
        assert_eq!(done.status, JobStatus::Completed);
        // Steps 1-2 from before the checkpoint, then the fake's 5 again.
        let steps: Vec<u64> = q2
            .events(a.id, 0)
            .unwrap()
            .iter()
            .map(|e| e.event.step)
            .collect();
        assert_eq!(steps, [1, 2, 1, 2, 3, 4, 5]);
        assert!(matches!(
            q2.resume(a.id),
            Err(JobError::NotResumable { .. })
        ));
    }

    #[test]
    fn subscribers_get_history_then_live_then_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let (go, gate) = mpsc::channel();
        let (_s, q) = open(dir.path(), Fake::new(Some(gate)), true);
        let a = q
            .submit(config(serde_json::json!({"max_steps": 3})), dir.path())
            .unwrap();
        go.send(()).unwrap();
        wait_until(&q, a.id, |r| r.step == 1);
        let (rec, history, rx) = q.subscribe(a.id, 0).unwrap();
        assert_eq!(rec.status, JobStatus::Running);
        assert_eq!(history.len(), 1);
        let mut rx = rx.unwrap();
        go.send(()).unwrap();
        go.send(()).unwrap();
        let mut seqs = vec![history[0].seq];
        loop {
            match rx.blocking_recv().unwrap() {
                JobUpdate::Event(e) if e.seq > *seqs.last().unwrap() => seqs.push(e.seq),
                JobUpdate::Finished(r) => {
                    assert_eq!(r.status, JobStatus::Completed);
                    break;
                }
                _ => {}
            }
        }
        assert_eq!(seqs, [1, 2, 3]);
        let (_, history, rx) = q.subscribe(a.id, 1).unwrap();
        assert!(rx.is_none(), "a finished job has no live stream");
        assert_eq!(history.len(), 2);
    }

    #[test]
    fn without_a_trainer_submissions_are_refused_but_records_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("t.db")).unwrap());
        let q = JobQueue::open(
            store,
            Err("training engine not wired yet".into()),
            QueueOptions { adopt_queued: true },
        )
        .unwrap();
        let e = q
            .submit(config(serde_json::json!({})), dir.path())
            .unwrap_err();
        assert_eq!(e.to_string(), "training engine not wired yet");
        assert!(q.list().unwrap().is_empty());
    }
}
