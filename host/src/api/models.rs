//! `/api/models`: recommended models, downloads (with an SSE progress
//! stream) and the model cache. Paths are the original tool's.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiError, AppState};
use crate::hub::jobs::DownloadStatus;
use crate::hub::{CachedRepo, ExternalModel, HubError, PullRequest, RepoId, RepoKind};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/models", get(recommended))
        .route("/models/download", post(start_download))
        .route("/models/downloads/{id}", get(download_status))
        .route("/models/downloads/{id}/events", get(download_events))
        .route("/models/cache/list", get(cache_list))
        .route("/models/cache/all", delete(cache_clear))
        .route("/models/cache/{name}", delete(cache_remove))
}

/// A recommended model with size and memory hints.
#[derive(Serialize, ToSchema)]
pub struct RecommendedModel {
    pub name: String,
    /// Parameters, in billions.
    pub params_b: f64,
    /// Download size of the bf16 weights, GiB (approximate).
    pub download_gib: f64,
    /// GPU memory for LoRA fine-tuning in bf16, GiB (rule of thumb).
    pub vram_lora_gib: f64,
    /// GPU memory for QLoRA (4-bit base), GiB (rule of thumb).
    pub vram_qlora_gib: f64,
    /// Whether it is in the cache.
    pub cached: bool,
    pub note: String,
}

/// The recommended Qwen3 models.
#[derive(Serialize, ToSchema)]
pub struct RecommendedList {
    pub models: Vec<RecommendedModel>,
}

const RECOMMENDED: [(&str, f64, f64, f64, f64, &str); 4] = [
    (
        "Qwen/Qwen3-0.6B",
        0.6,
        1.5,
        4.0,
        3.0,
        "fast experiments, runs on CPU",
    ),
    (
        "Qwen/Qwen3-4B",
        4.0,
        8.0,
        16.0,
        8.0,
        "good quality on a 16-24 GB GPU",
    ),
    (
        "Qwen/Qwen3-8B",
        8.2,
        16.4,
        24.0,
        12.0,
        "best balance on a 24 GB GPU",
    ),
    (
        "Qwen/Qwen3-14B",
        14.8,
        29.5,
        40.0,
        18.0,
        "needs a 40+ GB GPU for LoRA, 24 GB for QLoRA",
    ),
];

/// Recommended models (Qwen3 0.6B/4B/8B/14B) with size and VRAM hints.
#[utoipa::path(get, path = "/api/models", tag = "models",
    responses((status = 200, body = RecommendedList)))]
pub async fn recommended(State(state): State<AppState>) -> Result<Json<RecommendedList>, ApiError> {
    let hub = state.hub()?;
    let models = RECOMMENDED
        .iter()
        .map(|&(name, p, d, l, q, note)| RecommendedModel {
            name: name.into(),
            params_b: p,
            download_gib: d,
            vram_lora_gib: l,
            vram_qlora_gib: q,
            cached: hub.cache.find(RepoKind::Model, name).is_ok(),
            note: note.into(),
        })
        .collect();
    Ok(Json(RecommendedList { models }))
}

/// Query of `POST /api/models/download`.
#[derive(Deserialize, IntoParams)]
pub struct DownloadQuery {
    /// Repository id, e.g. `Qwen/Qwen3-0.6B`.
    pub model_name: String,
    /// Fetch again even files already cached.
    #[serde(default)]
    pub force: bool,
    /// Use only this source plugin.
    pub source: Option<String>,
    /// Branch, tag or commit.
    pub revision: Option<String>,
    /// A dataset repository instead of a model.
    #[serde(default)]
    pub dataset: bool,
}

/// The id of a started download.
#[derive(Serialize, ToSchema)]
pub struct DownloadStarted {
    pub id: String,
    /// Poll here.
    pub status_url: String,
    /// Or follow this SSE stream.
    pub events_url: String,
}

fn hub_error(e: HubError) -> ApiError {
    match e {
        HubError::InvalidName { .. } => ApiError::bad_request("invalid_name", e.to_string()),
        HubError::Path(crate::paths::PathError::Invalid { .. }) => {
            ApiError::bad_request("invalid_name", e.to_string())
        }
        HubError::NotCached(_) => ApiError::not_found("not_cached", e.to_string()),
        HubError::UnknownSource(_) => ApiError::bad_request("unknown_source", e.to_string()),
        other => ApiError::internal(other),
    }
}

/// Starts a download in the background; returns its id at once (202).
#[utoipa::path(post, path = "/api/models/download", tag = "models", params(DownloadQuery),
    responses((status = 202, body = DownloadStarted),
              (status = 400, description = "invalid name or source", body = super::error::ErrorBody),
              (status = 429, description = "Too many downloads at once (`Retry-After`)", body = super::error::ErrorBody)))]
pub async fn start_download(
    State(state): State<AppState>,
    Query(q): Query<DownloadQuery>,
) -> Result<(StatusCode, Json<DownloadStarted>), ApiError> {
    let kind = if q.dataset {
        RepoKind::Dataset
    } else {
        RepoKind::Model
    };
    RepoId::parse(kind, &q.model_name).map_err(hub_error)?;
    // Query values arrive percent-decoded; the decoded revision must be a
    // valid git ref name (it becomes `refs/<revision>` in the cache).
    if let Some(rev) = &q.revision {
        crate::paths::check_git_ref("revision", rev)
            .map_err(|e| ApiError::bad_request("invalid_revision", e.to_string()))?;
    }
    let hub = state.hub()?;
    if let Some(s) = &q.source
        && state.host().source(s).is_none()
    {
        return Err(hub_error(HubError::UnknownSource(s.clone())));
    }
    let permit = state.pull_permit()?;
    let id = state.downloads().start(
        hub,
        permit,
        PullRequest {
            repo: q.model_name,
            kind: Some(kind),
            revision: q.revision,
            source: q.source,
            force: q.force,
            ..Default::default()
        },
    );
    Ok((
        StatusCode::ACCEPTED,
        Json(DownloadStarted {
            status_url: format!("/api/models/downloads/{id}"),
            events_url: format!("/api/models/downloads/{id}/events"),
            id,
        }),
    ))
}

/// The status of a download.
#[utoipa::path(get, path = "/api/models/downloads/{id}", tag = "models",
    params(("id" = String, Path, description = "download id")),
    responses((status = 200, body = DownloadStatus),
              (status = 404, body = super::error::ErrorBody)))]
pub async fn download_status(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<DownloadStatus>, ApiError> {
    state
        .downloads()
        .status(&id)
        .map(Json)
        .ok_or_else(|| ApiError::not_found("download_not_found", format!("no download `{id}`")))
}

/// Server-sent events: the download's status (event `progress`) until it
/// ends (event `done` or `failed`, then the stream closes).
#[utoipa::path(get, path = "/api/models/downloads/{id}/events", tag = "models",
    params(("id" = String, Path, description = "download id")),
    responses((status = 200, description = "text/event-stream of DownloadStatus JSON"),
              (status = 404, body = super::error::ErrorBody)))]
pub async fn download_events(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let (first, rx) = state
        .downloads()
        .subscribe(&id)
        .ok_or_else(|| ApiError::not_found("download_not_found", format!("no download `{id}`")))?;
    let stream = futures_util::stream::unfold(
        (Some(first), rx, false),
        |(pending, mut rx, finished)| async move {
            if finished {
                return None;
            }
            let status = match pending {
                Some(s) => s,
                None => loop {
                    match rx.recv().await {
                        Ok(s) => break s,
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(_) => return None,
                    }
                },
            };
            let (name, end) = match status.state {
                crate::hub::jobs::DownloadState::Running => ("progress", false),
                crate::hub::jobs::DownloadState::Done => ("done", true),
                crate::hub::jobs::DownloadState::Failed => ("failed", true),
            };
            let event = Event::default()
                .event(name)
                .json_data(&status)
                .unwrap_or_else(|_| Event::default().event(name));
            Some((Ok(event), (None, rx, end)))
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// The cache's contents.
#[derive(Serialize, ToSchema)]
pub struct CacheList {
    pub cache_dir: String,
    pub repos: Vec<CachedRepo>,
    /// With `all=true`: the models in the Hugging Face and ModelScope
    /// caches, which tuner uses where they are (read-only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external: Option<Vec<ExternalModel>>,
}

/// Query of `GET /api/models/cache/list`.
#[derive(Deserialize, IntoParams)]
pub struct CacheListQuery {
    /// Also list the models other tools downloaded (`tuner cache list --all`).
    #[serde(default)]
    pub all: bool,
}

/// Cached models and datasets: name, source, revision, files, size, complete.
#[utoipa::path(get, path = "/api/models/cache/list", tag = "models", params(CacheListQuery),
    responses((status = 200, body = CacheList)))]
pub async fn cache_list(
    State(state): State<AppState>,
    Query(q): Query<CacheListQuery>,
) -> Result<Json<CacheList>, ApiError> {
    let hub = state.hub()?;
    Ok(Json(CacheList {
        cache_dir: hub.cache.root.display().to_string(),
        repos: hub.cache.list(hub.store()),
        external: q.all.then(|| crate::hub::ExternalCaches::from_env().list()),
    }))
}

/// What a removal freed.
#[derive(Serialize, ToSchema)]
pub struct Removed {
    pub removed: Vec<String>,
    pub freed_bytes: u64,
}

/// Removes one cached model (`Qwen/Qwen3-0.6B`, URL-encoded, or `Qwen_Qwen3-0.6B`).
#[utoipa::path(delete, path = "/api/models/cache/{name}", tag = "models",
    params(("name" = String, Path, description = "repository id")),
    responses((status = 200, body = Removed),
              (status = 400, body = super::error::ErrorBody),
              (status = 404, body = super::error::ErrorBody)))]
pub async fn cache_remove(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Removed>, ApiError> {
    let hub = state.hub()?;
    let repo = hub
        .cache
        .find(RepoKind::Model, &name)
        .or_else(|e| match e {
            HubError::NotCached(_) => hub.cache.find(RepoKind::Dataset, &name),
            e => Err(e),
        })
        .map_err(hub_error)?;
    let freed = hub.cache.remove(&repo, hub.store()).map_err(hub_error)?;
    Ok(Json(Removed {
        removed: vec![repo.id],
        freed_bytes: freed,
    }))
}

/// Removes everything from the model cache.
#[utoipa::path(delete, path = "/api/models/cache/all", tag = "models",
    responses((status = 200, body = Removed)))]
pub async fn cache_clear(State(state): State<AppState>) -> Result<Json<Removed>, ApiError> {
    let hub = state.hub()?;
    let size: u64 = hub.cache.list(None).iter().map(|r| r.size_bytes).sum();
    let removed = hub.cache.clear(hub.store()).map_err(hub_error)?;
    Ok(Json(Removed {
        removed,
        freed_bytes: size,
    }))
}
