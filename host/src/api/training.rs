//! `/api/training`: submit, list, show, follow (SSE), stop and resume
//! training jobs. The jobs run in this process on the queue of
//! [`crate::train::jobs`]; the body of `POST` is a training config as JSON,
//! checked exactly like a config file (unknown keys name the closest valid
//! key).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::Stream;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::broadcast;
use utoipa::ToSchema;

use super::{ApiError, AppState};
use crate::app::training::SubmitError;
use crate::train::TrainConfig;
use crate::train::jobs::{JobError, JobQueue, JobRecord, JobUpdate, StoredEvent};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/training", get(list).post(submit))
        .route("/training/{id}", get(get_one))
        .route("/training/{id}/events", get(events))
        .route("/training/{id}/stop", post(stop))
        .route("/training/{id}/resume", post(resume))
}

/// Every training job, newest first.
#[derive(Serialize, ToSchema)]
pub struct JobList {
    pub jobs: Vec<JobRecord>,
}

fn job_error(e: JobError) -> ApiError {
    match e {
        JobError::NotFound(_) => ApiError::not_found("job_not_found", e.to_string()),
        JobError::Finished { .. } => {
            ApiError::new(StatusCode::CONFLICT, "job_finished", e.to_string())
        }
        JobError::NotResumable { .. } => {
            ApiError::new(StatusCode::CONFLICT, "job_not_resumable", e.to_string())
        }
        JobError::Unavailable(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "training_unavailable",
            e.to_string(),
        ),
        JobError::Store(e) => ApiError::internal(format!("{e:#}")),
    }
}

fn queue(state: &AppState) -> Result<Arc<JobQueue>, ApiError> {
    state
        .training()
        .map_err(|e| ApiError::internal(format!("{e:#}")))
}

/// Ids are numbers; anything else names no job.
fn job_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::not_found("job_not_found", format!("no training job {raw}")))
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_training_config", message)
}

/// Queues a training job (201). The body is a training config (see
/// docs/training.md); 400 names each bad or unknown key.
#[utoipa::path(post, path = "/api/training", tag = "training", request_body = TrainConfig,
    responses((status = 201, body = JobRecord),
              (status = 400, description = "invalid config", body = super::error::ErrorBody),
              (status = 503, description = "training cannot run in this build", body = super::error::ErrorBody)))]
pub async fn submit(
    State(state): State<AppState>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<(StatusCode, Json<JobRecord>), ApiError> {
    let Json(body) = body.map_err(|e| invalid(e.body_text()))?;
    // Asking the method plugins for their settings schemas runs wasm, and
    // creating the output folder touches the disk: off the async workers.
    let app = state.app().clone();
    let record = tokio::task::spawn_blocking(move || {
        let config = app.check_config_json(body)?;
        app.submit_confined(config)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(|e| match e {
        SubmitError::Invalid(message) => invalid(message),
        SubmitError::Job(e) => job_error(e),
        SubmitError::Other(e) => ApiError::internal(format!("{e:#}")),
    })?;
    Ok((StatusCode::CREATED, Json(record)))
}

#[utoipa::path(get, path = "/api/training", tag = "training",
    responses((status = 200, body = JobList)))]
pub async fn list(State(state): State<AppState>) -> Result<Json<JobList>, ApiError> {
    let jobs = queue(&state)?.list().map_err(job_error)?;
    Ok(Json(JobList { jobs }))
}

/// One training job: status, progress, last loss, checkpoint, config.
#[utoipa::path(get, path = "/api/training/{id}", tag = "training",
    params(("id" = i64, Path, description = "job id")),
    responses((status = 200, body = JobRecord),
              (status = 404, body = super::error::ErrorBody)))]
pub async fn get_one(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<JobRecord>, ApiError> {
    let id = job_id(&id)?;
    queue(&state)?.get(id).map(Json).map_err(job_error)
}

/// Stops a job: a queued one at once, a running one at its next step
/// (the answer may still say `running`; follow the events for the end).
#[utoipa::path(post, path = "/api/training/{id}/stop", tag = "training",
    params(("id" = i64, Path, description = "job id")),
    responses((status = 200, body = JobRecord),
              (status = 404, body = super::error::ErrorBody),
              (status = 409, description = "the job already finished", body = super::error::ErrorBody)))]
pub async fn stop(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<JobRecord>, ApiError> {
    let id = job_id(&id)?;
    queue(&state)?.stop(id).map(Json).map_err(job_error)
}

/// Queues an interrupted, stopped or failed job again, from its last
/// checkpoint (or from the start when it has none).
#[utoipa::path(post, path = "/api/training/{id}/resume", tag = "training",
    params(("id" = i64, Path, description = "job id")),
    responses((status = 200, body = JobRecord),
              (status = 404, body = super::error::ErrorBody),
              (status = 409, description = "the job is queued, running or completed", body = super::error::ErrorBody),
              (status = 503, body = super::error::ErrorBody)))]
pub async fn resume(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<JobRecord>, ApiError> {
    let id = job_id(&id)?;
    queue(&state)?.resume(id).map(Json).map_err(job_error)
}

/// Server-sent events of a job: `status` (the record) first, then every
/// stored `step` event (SSE id = its `seq`), then live `step`, `status` and
/// `log` events, and `end` (the final record) when the job finishes; then
/// the stream closes. A reconnecting client's `Last-Event-ID` skips the
/// steps it has.
#[utoipa::path(get, path = "/api/training/{id}/events", tag = "training",
    params(("id" = i64, Path, description = "job id")),
    responses((status = 200, description = "text/event-stream: status, step (StoredEvent), log, end"),
              (status = 404, body = super::error::ErrorBody)))]
pub async fn events(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let id = job_id(&id)?;
    let after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let queue = queue(&state)?;
    let (record, history, rx) = queue.subscribe(id, after).map_err(job_error)?;
    let mut follow = Follow {
        queue,
        id,
        pending: VecDeque::new(),
        last_seq: after,
        done: rx.is_none(),
        rx,
    };
    follow.pending.push_back(json_event("status", &record));
    for e in history {
        follow.push_step(e);
    }
    if follow.done {
        follow.pending.push_back(json_event("end", &record));
    }
    let stream = futures_util::stream::unfold(follow, |mut f| async move {
        loop {
            if let Some(ev) = f.pending.pop_front() {
                return Some((Ok(ev), f));
            }
            if f.done {
                return None;
            }
            f.next_live().await;
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

fn json_event<T: Serialize>(name: &'static str, data: &T) -> Event {
    Event::default()
        .event(name)
        .json_data(data)
        .unwrap_or_else(|_| Event::default().event(name))
}

/// One SSE subscriber: what is ready to send and where the rest comes from.
struct Follow {
    queue: Arc<JobQueue>,
    id: i64,
    pending: VecDeque<Event>,
    rx: Option<broadcast::Receiver<JobUpdate>>,
    /// The newest step sent; live repeats of stored steps are skipped.
    last_seq: u64,
    done: bool,
}

impl Follow {
    fn push_step(&mut self, e: StoredEvent) {
        if e.seq > self.last_seq {
            self.last_seq = e.seq;
            self.pending
                .push_back(json_event("step", &e).id(e.seq.to_string()));
        }
    }

    fn end(&mut self, record: &JobRecord) {
        self.pending.push_back(json_event("end", record));
        self.done = true;
    }

    /// Waits for the next live update and queues what it sends.
    async fn next_live(&mut self) {
        let Some(rx) = self.rx.as_mut() else {
            self.done = true;
            return;
        };
        match rx.recv().await {
            Ok(JobUpdate::Event(e)) => self.push_step(e),
            Ok(JobUpdate::Status(r)) => self.pending.push_back(json_event("status", &r)),
            Ok(JobUpdate::Log(m)) => self
                .pending
                .push_back(json_event("log", &serde_json::json!({ "message": m }))),
            Ok(JobUpdate::Finished(r)) => self.end(&r),
            Err(broadcast::error::RecvError::Lagged(_)) => {
                // Too slow a reader: what it missed is in the database.
                if let Ok(missed) = self.queue.events(self.id, self.last_seq) {
                    for e in missed {
                        self.push_step(e);
                    }
                }
            }
            Err(broadcast::error::RecvError::Closed) => {
                self.rx = None;
                match self.queue.get(self.id) {
                    Ok(r) => self.end(&r),
                    Err(_) => self.done = true,
                }
            }
        }
    }
}
