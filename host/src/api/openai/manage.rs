//! `/api/inference`: load and unload served models and adapters.
//!
//! Names from requests are untrusted. A model is a hub id already in the
//! cache or a folder under tuner's home (nothing is downloaded by the
//! way); an adapter folder must lie inside the runs folder, where jobs
//! submitted over the API write ([`crate::app::App::runs_dir`]).

use std::collections::BTreeMap;
use std::path::{Path as FsPath, PathBuf};

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::api::{ApiError, AppState};
use crate::app::models::WhenMissing;
use crate::app::{ModelLookupError, ModelSpec};
use crate::infer::{Engine, EngineOptions, ModelOptions};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/inference/models", get(list).post(load))
        .route("/inference/models/{name}", delete(unload))
        .route("/inference/models/{name}/adapters", post(load_adapter))
        .route("/inference/adapters/{name}", delete(unload_adapter))
}

/// A served adapter.
#[derive(Serialize, ToSchema)]
pub struct AdapterView {
    pub name: String,
    pub path: String,
    pub rank: usize,
}

/// A served model, its adapters and its load.
#[derive(Serialize, ToSchema)]
pub struct ServedView {
    pub name: String,
    pub context_len: usize,
    pub max_batch: usize,
    pub max_queue: usize,
    /// Requests generating now.
    pub running: usize,
    /// Requests waiting for a slot.
    pub waiting: usize,
    pub adapters: Vec<AdapterView>,
}

#[derive(Serialize, ToSchema)]
pub struct ServedList {
    pub models: Vec<ServedView>,
}

fn view(engine: &Engine) -> ServedView {
    let load = engine.load();
    let options = engine.options();
    ServedView {
        name: engine.name().to_string(),
        context_len: engine.context_len(),
        max_batch: options.max_batch,
        max_queue: options.max_queue,
        running: load.running,
        waiting: load.waiting,
        adapters: engine
            .adapters()
            .iter()
            .map(|a| AdapterView {
                name: a.name.clone(),
                path: a.dir.display().to_string(),
                rank: a.rank,
            })
            .collect(),
    }
}

/// The served models.
#[utoipa::path(get, path = "/api/inference/models", tag = "inference",
    responses((status = 200, body = ServedList)))]
pub async fn list(State(state): State<AppState>) -> Json<ServedList> {
    Json(ServedList {
        models: state.app().served().list().iter().map(view).collect(),
    })
}

/// `POST /api/inference/models`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoadModel {
    /// A hub id in the model cache (`Qwen/Qwen3-0.6B`) or a model folder
    /// under tuner's home. Nothing is downloaded.
    pub model: String,
    /// The name requests select it by (default: `model`).
    pub name: Option<String>,
    /// Adapters to load with it: name → PEFT folder inside the runs folder.
    #[serde(default)]
    pub adapters: BTreeMap<String, String>,
}

/// `POST /api/inference/models/{name}/adapters`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoadAdapter {
    /// The name requests select it by.
    pub name: String,
    /// A PEFT adapter folder inside the runs folder (relative to it, or
    /// absolute).
    pub path: String,
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_inference_request", message)
}

fn json<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(b)| b).map_err(|e| invalid(e.body_text()))
}

/// A served name: printable, at most 256 bytes. It is only a key of the
/// served table, never a path.
fn check_name(what: &str, name: &str) -> Result<(), ApiError> {
    if name.trim().is_empty() || name.len() > 256 || name.chars().any(char::is_control) {
        return Err(
            invalid(format!("{what} must be 1 to 256 bytes of printable text")).with_param(what),
        );
    }
    Ok(())
}

fn conflict(name: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "name_taken",
        format!("a model or adapter named {name:?} is already served"),
    )
}

/// The folder a model named over the API lives in: a cached hub id, or a
/// folder under the home (the folder holding the database).
fn model_dir(state: &AppState, model: &str) -> Result<PathBuf, ApiError> {
    if let ModelSpec::Folder(dir) = ModelSpec::parse(model)? {
        let home = state.settings().database.parent().map(FsPath::to_path_buf);
        let inside = match (dir.canonicalize(), home.map(|h| h.canonicalize())) {
            (Ok(dir), Some(Ok(home))) => dir.starts_with(home),
            (Err(_), _) => return Err(ModelLookupError::NoFolder(model.to_string()).into()),
            _ => false,
        };
        if !inside {
            return Err(invalid(format!(
                "`{model}` is outside tuner's home: over the API a model is a hub id in the \
                 cache or a folder under the home"
            ))
            .with_param("model"));
        }
    }
    Ok(state.app().model_dir(model, WhenMissing::Fail)?)
}

/// An adapter folder named over the API: inside the runs folder, checked
/// as `output_dir` is for jobs, and again after symlinks are resolved.
fn adapter_dir(state: &AppState, raw: &str) -> Result<PathBuf, ApiError> {
    let runs = state.app().runs_dir();
    let outside = || {
        invalid(format!(
            "adapter path `{raw}` is outside the runs folder {}: over the API adapters are \
             read only from there",
            runs.display()
        ))
        .with_param("path")
    };
    let full = runs.join(raw);
    let relative = full.strip_prefix(&runs).map_err(|_| outside())?;
    crate::paths::check_relative_path("path", relative)
        .map_err(|e| invalid(e.to_string()).with_param("path"))?;
    let canon = full.canonicalize().map_err(|_| {
        ApiError::not_found("adapter_not_found", format!("no adapter folder at `{raw}`"))
            .with_param("path")
    })?;
    let root = runs.canonicalize().map_err(|_| outside())?;
    if !canon.starts_with(&root) {
        return Err(outside());
    }
    Ok(canon)
}

/// Loads a model (and adapters) for serving (201). Loading runs off the
/// async workers, under a heavy-request permit.
#[utoipa::path(post, path = "/api/inference/models", tag = "inference", request_body = LoadModel,
    responses((status = 201, body = ServedView),
              (status = 400, description = "invalid model, name or adapter path", body = crate::api::error::ErrorBody),
              (status = 404, description = "model not in the cache, or no such folder", body = crate::api::error::ErrorBody),
              (status = 409, description = "the name is already served", body = crate::api::error::ErrorBody),
              (status = 429, description = "too many heavy requests", body = crate::api::error::ErrorBody)))]
pub async fn load(
    State(state): State<AppState>,
    body: Result<Json<LoadModel>, JsonRejection>,
) -> Result<(StatusCode, Json<ServedView>), ApiError> {
    let req = json(body)?;
    let name = req.name.clone().unwrap_or_else(|| req.model.clone());
    check_name("name", &name)?;
    let served = state.app().served();
    if served.resolve(&name).is_some() {
        return Err(conflict(&name));
    }
    let dir = model_dir(&state, &req.model)?;
    let mut adapters = Vec::new();
    for (adapter, path) in &req.adapters {
        check_name("adapters", adapter)?;
        if adapter == &name || served.resolve(adapter).is_some() {
            return Err(conflict(adapter));
        }
        adapters.push((adapter.clone(), adapter_dir(&state, path)?));
    }
    let permit = state.heavy_permit()?;
    let app = state.app().clone();
    let engine = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let engine = app.start_engine(
            &dir.to_string_lossy(),
            Some(&name),
            ModelOptions::default(),
            EngineOptions::default(),
            WhenMissing::Fail,
        )?;
        for (adapter, dir) in &adapters {
            engine.load_adapter(adapter, dir)?;
        }
        anyhow::Ok(engine)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(|e| ApiError::bad_request("model_load_failed", format!("{e:#}")))?;
    let shown = view(&engine);
    served
        .insert(engine)
        .map_err(|e| ApiError::new(StatusCode::CONFLICT, "name_taken", format!("{e:#}")))?;
    Ok((StatusCode::CREATED, Json(shown)))
}

/// Stops serving a model and its adapters; requests running finish.
#[utoipa::path(delete, path = "/api/inference/models/{name}", tag = "inference",
    params(("name" = String, Path, description = "served model name")),
    responses((status = 204, description = "unloaded"),
              (status = 404, description = "no model of that name", body = crate::api::error::ErrorBody)))]
pub async fn unload(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    match state.app().served().remove(&name) {
        Some(_) => Ok(StatusCode::NO_CONTENT),
        None => Err(ApiError::not_found(
            "model_not_found",
            format!("no model named {name:?} is served"),
        )),
    }
}

/// Loads a PEFT adapter onto a served model (201).
#[utoipa::path(post, path = "/api/inference/models/{name}/adapters", tag = "inference",
    request_body = LoadAdapter,
    params(("name" = String, Path, description = "served model name")),
    responses((status = 201, body = ServedView),
              (status = 400, description = "invalid name or path, or the adapter does not fit the model", body = crate::api::error::ErrorBody),
              (status = 404, description = "no such model or adapter folder", body = crate::api::error::ErrorBody),
              (status = 409, description = "the name is already served", body = crate::api::error::ErrorBody)))]
pub async fn load_adapter(
    State(state): State<AppState>,
    Path(model): Path<String>,
    body: Result<Json<LoadAdapter>, JsonRejection>,
) -> Result<(StatusCode, Json<ServedView>), ApiError> {
    let req = json(body)?;
    check_name("name", &req.name)?;
    let served = state.app().served();
    if served.get(&model).is_none() {
        return Err(ApiError::not_found(
            "model_not_found",
            format!("no model named {model:?} is served"),
        ));
    }
    if served.resolve(&req.name).is_some() {
        return Err(conflict(&req.name));
    }
    let dir = adapter_dir(&state, &req.path)?;
    let permit = state.heavy_permit()?;
    let app = state.app().clone();
    let (m, name) = (model.clone(), req.name.clone());
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        app.served().load_adapter(&m, &name, &dir)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(|e| ApiError::bad_request("adapter_load_failed", format!("{e:#}")))?;
    let engine = served.get(&model).ok_or_else(|| {
        ApiError::not_found(
            "model_not_found",
            format!("{model:?} was unloaded meanwhile"),
        )
    })?;
    Ok((StatusCode::CREATED, Json(view(&engine))))
}

/// Unloads an adapter; requests running with it finish.
#[utoipa::path(delete, path = "/api/inference/adapters/{name}", tag = "inference",
    params(("name" = String, Path, description = "adapter name")),
    responses((status = 204, description = "unloaded"),
              (status = 404, description = "no adapter of that name", body = crate::api::error::ErrorBody)))]
pub async fn unload_adapter(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    if state.app().served().unload_adapter(&name) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(
            "adapter_not_found",
            format!("no adapter named {name:?} is served"),
        ))
    }
}
