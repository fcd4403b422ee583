//! `/api/data`: upload, validate, list, show, preview, stats and remove
//! training datasets.
//!
//! Uploads are multipart forms streamed to a temporary file in the data dir
//! (never held in memory) and refused with 413 past `server.max_upload_mib`
//! (default 1 GiB). Parsing runs the format plugins, which block: it is done
//! on the blocking pool.

use std::path::PathBuf;

use axum::extract::{DefaultBodyLimit, Multipart, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use utoipa::{IntoParams, ToSchema};

use super::{ApiError, AppState};
use crate::app::{DataError, ModelLookupError, StatsRequest, TrainingRender};
use crate::data::load::{LoadError, LoadOptions, LoadReport};
use crate::data::stats::DataStats;
use crate::data::store::{DatasetRecord, Datasets, StoreError};
use crate::plugins::CallError;
use crate::sample::Sample;
use crate::text::RenderPreview;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/data", get(list))
        .route("/data/upload", post(upload))
        .route("/data/validate", post(validate))
        .route("/data/{name}", get(get_one).delete(remove))
        .route("/data/{name}/preview", get(preview))
        .route("/data/{name}/stats", get(stats_of))
        // The upload limit is ours (`server.max_upload_mib`), checked while
        // streaming; axum's 2 MB default would refuse every real data set.
        .layer(DefaultBodyLimit::disable())
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::InvalidName(_) => ApiError::bad_request("invalid_name", e.to_string()),
            StoreError::Exists(_) => {
                ApiError::new(StatusCode::CONFLICT, "dataset_exists", e.to_string())
            }
            StoreError::NotFound(_) => ApiError::not_found("dataset_not_found", e.to_string()),
            StoreError::Load(e) => e.into(),
            other => ApiError::internal(other),
        }
    }
}

impl From<LoadError> for ApiError {
    fn from(e: LoadError) -> Self {
        match e {
            // A plugin that timed out, crashed or refused is the data's
            // problem (or the plugin's), not the server's: a 422 naming it.
            LoadError::Plugin(
                CallError::Timeout { .. }
                | CallError::MemoryLimit { .. }
                | CallError::Trap { .. }
                | CallError::Failed { .. }
                | CallError::BadResult { .. }
                | CallError::Degraded { .. },
            ) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "plugin_failed",
                e.to_string(),
            ),
            LoadError::Plugin(_) | LoadError::Sink(_) => ApiError::internal(e),
            LoadError::Strict { .. } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "rejected_records",
                e.to_string(),
            ),
            _ => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_data",
                e.to_string(),
            ),
        }
    }
}

/// The stored datasets, as the app opens them (the data dir is read per
/// request, so a config change applies without a restart).
fn datasets(state: &AppState) -> Result<Datasets<'_>, ApiError> {
    state
        .app()
        .datasets()
        .map_err(|e| ApiError::internal(format!("{e:#}")))
}

impl From<ModelLookupError> for ApiError {
    fn from(e: ModelLookupError) -> Self {
        let message = e.to_string();
        match e {
            ModelLookupError::NoFolder(_) | ModelLookupError::NotCached { .. } => {
                ApiError::not_found("model_not_found", message)
            }
            ModelLookupError::NoTokenizer { .. } => {
                ApiError::not_found("tokenizer_not_found", message)
            }
            ModelLookupError::Empty | ModelLookupError::InvalidName { .. } => {
                ApiError::bad_request("invalid_model", message)
            }
            ModelLookupError::BadTokenizer { .. } => {
                ApiError::bad_request("invalid_tokenizer", message)
            }
            ModelLookupError::Pull { .. } | ModelLookupError::Other(_) => {
                ApiError::internal(message)
            }
        }
    }
}

impl From<DataError> for ApiError {
    fn from(e: DataError) -> Self {
        match e {
            DataError::Model(e) => e.into(),
            DataError::Store(e) => e.into(),
            DataError::Load(e) => e.into(),
            DataError::Render { .. } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "render_failed",
                e.to_string(),
            ),
            DataError::Cancelled => client_gone(),
            DataError::Other(e) => ApiError::internal(format!("{e:#}")),
        }
    }
}

/// Stored datasets, by name.
#[utoipa::path(get, path = "/api/data", tag = "data",
    responses((status = 200, body = Vec<DatasetRecord>)))]
pub async fn list(State(state): State<AppState>) -> Result<Json<Vec<DatasetRecord>>, ApiError> {
    Ok(Json(datasets(&state)?.list()?))
}

/// One stored dataset.
#[utoipa::path(get, path = "/api/data/{name}", tag = "data",
    params(("name" = String, Path, description = "Dataset name")),
    responses((status = 200, body = DatasetRecord),
              (status = 400, description = "Invalid name", body = super::error::ErrorBody),
              (status = 404, description = "No such dataset", body = super::error::ErrorBody)))]
pub async fn get_one(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<DatasetRecord>, ApiError> {
    Ok(Json(datasets(&state)?.get(&name)?))
}

/// Removes a stored dataset (record and samples).
#[utoipa::path(delete, path = "/api/data/{name}", tag = "data",
    params(("name" = String, Path, description = "Dataset name")),
    responses((status = 200, description = "The removed dataset", body = DatasetRecord),
              (status = 404, description = "No such dataset", body = super::error::ErrorBody)))]
pub async fn remove(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<DatasetRecord>, ApiError> {
    Ok(Json(datasets(&state)?.remove(&name)?))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct PreviewQuery {
    /// Samples to return (default 5, at most 100).
    n: Option<usize>,
    /// Also render each sample with this model's chat template, trained
    /// text marked: a local model folder, or a model id in the model cache
    /// (`Qwen/Qwen3-0.6B`). Nothing is downloaded.
    model: Option<String>,
    /// Qwen3 hybrid thinking (only with `model`), as the training config's
    /// `enable_thinking`: default `false`, as in training, so what is
    /// rendered and counted as trained is what training trains.
    enable_thinking: Option<bool>,
    /// System prompt for chat samples without one (only with `model`), as
    /// the training config's `system`.
    system: Option<String>,
}

/// The first samples of a dataset.
#[derive(Debug, Serialize, ToSchema)]
pub struct Preview {
    pub dataset: DatasetRecord,
    /// Normalised samples, in file order.
    pub samples: Vec<Sample>,
    /// The model folder whose chat template rendered `rendered` (with `model`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_path: Option<String>,
    /// With `model`: each sample as the model sees it, one entry per sample
    /// in the order of `samples`; `segments` with a weight above 0 are
    /// trained (the assistant answers), the rest is context.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rendered: Option<Vec<RenderPreview>>,
}

/// The first N normalised samples of a stored dataset; with `model`, also
/// rendered with that model's chat template, trained spans marked.
#[utoipa::path(get, path = "/api/data/{name}/preview", tag = "data",
    params(("name" = String, Path, description = "Dataset name"), PreviewQuery),
    responses((status = 200, body = Preview),
              (status = 400, description = "Invalid dataset name or `model`, or a tokenizer/chat template that does not load", body = super::error::ErrorBody),
              (status = 404, description = "No such dataset, model or tokenizer", body = super::error::ErrorBody),
              (status = 422, description = "The chat template refused a sample", body = super::error::ErrorBody),
              (status = 429, description = "Too many heavy requests at once (`Retry-After`)", body = super::error::ErrorBody)))]
pub async fn preview(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<PreviewQuery>,
) -> Result<Json<Preview>, ApiError> {
    let n = q.n.unwrap_or(5).min(100);
    // Rendering with a model's template is heavy; listing samples is not.
    let permit = q
        .model
        .is_some()
        .then(|| state.heavy_permit())
        .transpose()?;
    let cancel = super::CancelOnDrop::new();
    let cancelled = cancel.flag();
    let state2 = state.clone();
    let preview = tokio::task::spawn_blocking(move || -> Result<Preview, ApiError> {
        let _permit = permit;
        let d = datasets(&state2)?;
        let dataset = d.get(&name)?;
        let samples = d.samples(&name, Some(n))?;
        let (model_path, rendered) = match &q.model {
            None => (None, None),
            Some(model) => {
                let (dir, rendered) = state2.app().render_previews(
                    &samples,
                    model,
                    &training_render(&q.enable_thinking, &q.system),
                    &cancelled,
                )?;
                (Some(dir.display().to_string()), Some(rendered))
            }
        };
        Ok(Preview {
            dataset,
            samples,
            model_path,
            rendered,
        })
    })
    .await
    .map_err(ApiError::internal)??;
    Ok(Json(preview))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct StatsQuery {
    /// Add token statistics (`tokens`) measured with this model's chat
    /// template and tokenizer: a local model folder, or a model id in the
    /// model cache (`Qwen/Qwen3-0.6B`). Nothing is downloaded.
    model: Option<String>,
    /// Count samples longer than this (`over_max_seq_len`): in tokens with
    /// `model` (default 4096), in characters without (no count by default).
    max_seq_len: Option<u64>,
    /// Qwen3 hybrid thinking (only with `model`), as the training config's
    /// `enable_thinking`: default `false`, as in training, so what is
    /// rendered and counted as trained is what training trains.
    enable_thinking: Option<bool>,
    /// System prompt for chat samples without one (only with `model`), as
    /// the training config's `system`.
    system: Option<String>,
}

/// Counts and lengths of a stored dataset: in characters, and with `model`
/// also in tokens (prompt/response/total min, mean, p50, p95, max, and how
/// many samples `max_seq_len` would truncate).
#[utoipa::path(get, path = "/api/data/{name}/stats", tag = "data",
    params(("name" = String, Path, description = "Dataset name"), StatsQuery),
    responses((status = 200, body = DataStats),
              (status = 400, description = "Invalid dataset name, `model` or `max_seq_len`, or a tokenizer/chat template that does not load", body = super::error::ErrorBody),
              (status = 404, description = "No such dataset, model or tokenizer", body = super::error::ErrorBody),
              (status = 429, description = "Too many heavy requests at once (`Retry-After`)", body = super::error::ErrorBody)))]
pub async fn stats_of(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<StatsQuery>,
) -> Result<Json<DataStats>, ApiError> {
    if q.max_seq_len == Some(0) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "`max_seq_len` must be at least 1",
        ));
    }
    // Every stats request reads the whole dataset; with `model` it also
    // renders and tokenizes every sample.
    let permit = state.heavy_permit()?;
    let cancel = super::CancelOnDrop::new();
    let cancelled = cancel.flag();
    let state2 = state.clone();
    let stats = tokio::task::spawn_blocking(move || -> Result<DataStats, ApiError> {
        let _permit = permit;
        let samples = datasets(&state2)?.samples(&name, None)?;
        let request = StatsRequest {
            model: q.model,
            max_seq_len: q.max_seq_len,
            render: training_render(&q.enable_thinking, &q.system),
        };
        Ok(state2.app().dataset_stats(&samples, &request, &cancelled)?)
    })
    .await
    .map_err(ApiError::internal)??;
    Ok(Json(stats))
}

/// The training settings of a query (`enable_thinking` false by default, as
/// in the training config).
fn training_render(enable_thinking: &Option<bool>, system: &Option<String>) -> TrainingRender {
    TrainingRender {
        enable_thinking: enable_thinking.unwrap_or(false),
        system: system.clone(),
    }
}

/// The error of work stopped because its client went away (nobody reads it).
fn client_gone() -> ApiError {
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "cancelled",
        "the client went away; the work was stopped",
    )
}

/// The multipart form of `upload` and `validate`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct UploadForm {
    /// The data file (its file name picks the format when content does not).
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
    /// Dataset name (upload only).
    name: Option<String>,
    /// Format plugin instead of detection.
    format: Option<String>,
    /// Record layout instead of detection.
    layout: Option<String>,
    /// `true`: any rejected record fails the upload and nothing is stored.
    strict: Option<bool>,
    /// Column mapping `FIELD=NAME`; repeat the part for several.
    column: Option<String>,
    /// Format setting `KEY=VALUE`; repeat the part for several.
    set: Option<String>,
}

/// An upload's result.
#[derive(Debug, Serialize, ToSchema)]
pub struct Uploaded {
    pub dataset: DatasetRecord,
    pub report: LoadReport,
}

/// A received upload: the temporary file (removed on drop) and the form.
struct Received {
    path: PathBuf,
    file_name: String,
    name: Option<String>,
    options: LoadOptions,
}

impl Drop for Received {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn too_large(limit: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "upload_too_large",
        format!(
            "the upload is larger than the limit of {} MiB; raise `server.max_upload_mib` in \
             config.toml, or add the file from the command line (`tuner data add FILE --name NAME`)",
            limit >> 20
        ),
    )
}

fn pair(value: &str, what: &str) -> Result<(String, String), ApiError> {
    value
        .split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_form",
                format!("{what} `{value}`: expected KEY=VALUE"),
            )
        })
}

/// Streams the multipart form to a temporary file, enforcing the size limit.
///
/// A refused upload is answered only after the rest of the body has been read
/// and thrown away (bounded in time and bytes, like nginx's lingering close):
/// closing the connection on a client that is still sending makes it see
/// "connection reset" instead of the 413 that explains what to do.
async fn receive(
    state: &AppState,
    headers: &HeaderMap,
    mut form: Multipart,
) -> Result<Received, ApiError> {
    let result = receive_into(state, headers, &mut form).await;
    if let Err(e) = &result
        && e.status == StatusCode::PAYLOAD_TOO_LARGE
    {
        discard_rest(&mut form).await;
    }
    result
}

/// A heavy-request permit for a form upload; when none is free, the form is
/// drained before the 429 goes out, for the reason given at [`receive`].
async fn form_permit(
    state: &AppState,
    form: &mut Multipart,
) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
    let refused = match state.heavy_permit() {
        Ok(permit) => return Ok(permit),
        Err(e) => e,
    };
    discard_rest(form).await;
    Err(refused)
}

/// Reads and drops what is left of a refused form, for at most 64 MiB or 5 s.
async fn discard_rest(form: &mut Multipart) {
    const MAX_BYTES: usize = 64 << 20;
    let drain = async {
        let mut discarded = 0usize;
        while let Ok(Some(mut field)) = form.next_field().await {
            while let Ok(Some(chunk)) = field.chunk().await {
                discarded += chunk.len();
                if discarded > MAX_BYTES {
                    return;
                }
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), drain).await;
}

async fn receive_into(
    state: &AppState,
    headers: &HeaderMap,
    form: &mut Multipart,
) -> Result<Received, ApiError> {
    let settings = state.settings();
    let limit = settings.server.max_upload_bytes;
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit + 64 * 1024) {
        return Err(too_large(limit));
    }
    let dir = settings.data_dir.join(".uploads");
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(ApiError::internal)?;
    let path = dir.join(crate::paths::unique_temp_name("upload"));
    let mut received = Received {
        path,
        file_name: String::new(),
        name: None,
        options: LoadOptions::default(),
    };
    let bad = |e: axum::extract::multipart::MultipartError| {
        ApiError::bad_request("invalid_form", format!("reading the multipart form: {e}"))
    };
    let mut got_file = false;
    while let Some(mut field) = form.next_field().await.map_err(bad)? {
        let field_name = field.name().unwrap_or_default().to_string();
        if field_name == "file" {
            let raw = field.file_name().unwrap_or("upload").to_string();
            // Only the last path component: the name is for messages and detection.
            received.file_name = raw
                .rsplit(['/', '\\'])
                .next()
                .filter(|s| !s.is_empty())
                .unwrap_or("upload")
                .to_string();
            let mut file = tokio::fs::File::create(&received.path)
                .await
                .map_err(ApiError::internal)?;
            let mut size = 0u64;
            while let Some(chunk) = field.chunk().await.map_err(bad)? {
                size += chunk.len() as u64;
                if size > limit {
                    return Err(too_large(limit));
                }
                file.write_all(&chunk).await.map_err(ApiError::internal)?;
            }
            file.flush().await.map_err(ApiError::internal)?;
            got_file = true;
            continue;
        }
        let value = field.text().await.map_err(bad)?;
        let o = &mut received.options;
        match field_name.as_str() {
            "name" => received.name = Some(value),
            "format" => o.format = Some(value).filter(|v| !v.is_empty()),
            "layout" => o.layout = Some(value).filter(|v| !v.is_empty()),
            "strict" => o.strict = matches!(value.trim(), "true" | "1" | "yes"),
            "column" => o.columns.push(pair(&value, "column")?),
            "set" => o.settings.push(pair(&value, "set")?),
            other => {
                return Err(ApiError::bad_request(
                    "invalid_form",
                    format!(
                        "unknown form field `{other}`; expected file, name, format, layout, strict, column, set"
                    ),
                ));
            }
        }
    }
    if !got_file {
        return Err(ApiError::bad_request(
            "invalid_form",
            "the form has no `file` part",
        ));
    }
    Ok(received)
}

/// Uploads a data file and stores it as a dataset (multipart form).
#[utoipa::path(post, path = "/api/data/upload", tag = "data",
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses((status = 201, description = "Stored", body = Uploaded),
              (status = 400, description = "Bad form or name", body = super::error::ErrorBody),
              (status = 409, description = "Name taken", body = super::error::ErrorBody),
              (status = 413, description = "Larger than server.max_upload_mib", body = super::error::ErrorBody),
              (status = 422, description = "Not loadable, rejected records in strict mode, or the format plugin failed (`plugin_failed`, naming it); nothing stored", body = super::error::ErrorBody),
              (status = 429, description = "Too many heavy requests at once (`Retry-After`)", body = super::error::ErrorBody)))]
pub async fn upload(
    State(state): State<AppState>,
    headers: HeaderMap,
    mut form: Multipart,
) -> Result<(StatusCode, Json<Uploaded>), ApiError> {
    let permit = form_permit(&state, &mut form).await?;
    let received = receive(&state, &headers, form).await?;
    let name = received
        .name
        .clone()
        .ok_or_else(|| ApiError::bad_request("invalid_form", "the form has no `name` part"))?;
    crate::data::store::validate_name(&name)?;
    let state2 = state.clone();
    let (dataset, report) = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let r = &received;
        Ok::<_, ApiError>(datasets(&state2)?.add(
            state2.host(),
            &r.path,
            &r.file_name,
            &name,
            &r.options,
        )?)
    })
    .await
    .map_err(ApiError::internal)??;
    Ok((StatusCode::CREATED, Json(Uploaded { dataset, report })))
}

/// Checks a data file without storing it (multipart form; `name` ignored).
#[utoipa::path(post, path = "/api/data/validate", tag = "data",
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses((status = 200, description = "What a load would find", body = LoadReport),
              (status = 413, description = "Larger than server.max_upload_mib", body = super::error::ErrorBody),
              (status = 422, description = "Not loadable at all, or the format plugin failed (`plugin_failed`, naming it)", body = super::error::ErrorBody),
              (status = 429, description = "Too many heavy requests at once (`Retry-After`)", body = super::error::ErrorBody)))]
pub async fn validate(
    State(state): State<AppState>,
    headers: HeaderMap,
    mut form: Multipart,
) -> Result<Json<LoadReport>, ApiError> {
    let permit = form_permit(&state, &mut form).await?;
    let received = receive(&state, &headers, form).await?;
    let state2 = state.clone();
    let report = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let r = &received;
        Ok::<_, ApiError>(
            state2
                .app()
                .validate_file(&r.path, &r.file_name, &r.options)?,
        )
    })
    .await
    .map_err(ApiError::internal)??;
    Ok(Json(report))
}
