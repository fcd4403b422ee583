//! `/api/config`: the effective configuration, and changes to the file.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use utoipa::ToSchema;

use super::{ApiError, AppState};
use crate::config::{ConfigError, ConfigFile, Settings};

/// Names of the installed source plugins.
fn source_plugins(state: &AppState) -> Vec<String> {
    state
        .host()
        .sources()
        .iter()
        .map(|p| p.name().to_string())
        .collect()
}

/// The configuration file's contents and the settings in effect.
#[derive(Serialize, ToSchema)]
pub struct ConfigView {
    /// Values in effect: file, environment and defaults combined.
    pub effective: Settings,
    /// What the configuration file holds.
    pub file: ConfigFile,
    /// True after a change: the running server keeps the settings it started
    /// with; the new file applies from the next start (and to the CLI at once).
    pub restart_required: bool,
}

pub fn routes() -> Router<AppState> {
    Router::new().route("/config", get(get_config).put(put_config))
}

/// The effective configuration.
#[utoipa::path(get, path = "/api/config", tag = "config",
    responses((status = 200, body = ConfigView)))]
pub async fn get_config(State(state): State<AppState>) -> Result<Json<ConfigView>, ApiError> {
    let file = ConfigFile::read(&state.home().config_file)
        .map_err(|e| ApiError::internal(format!("{e:#}")))?;
    Ok(Json(ConfigView {
        effective: state.settings(),
        file,
        restart_required: false,
    }))
}

fn invalid(e: ConfigError) -> ApiError {
    ApiError::bad_request("invalid_config", e.to_string()).with_param(e.key)
}

/// Changes keys of the configuration file; keys not in the body are kept.
/// The body must be a JSON object of `config.toml` keys; every value is
/// checked (folders, endpoints, source names, ranges) and the error names
/// the key (`error.param`).
#[utoipa::path(put, path = "/api/config", tag = "config",
    request_body = ConfigFile,
    responses((status = 200, body = ConfigView),
              (status = 400, description = "Not a JSON object, unknown key, or invalid value; `error.param` names the key", body = super::error::ErrorBody)))]
pub async fn put_config(
    State(state): State<AppState>,
    body: Result<Json<serde_json::Value>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<ConfigView>, ApiError> {
    let Json(value) = body.map_err(|e| ApiError::bad_request("invalid_config", e.body_text()))?;
    let patch = ConfigFile::from_json(value).map_err(invalid)?;
    patch.validate().map_err(invalid)?;
    patch
        .validate_sources(&source_plugins(&state))
        .map_err(invalid)?;
    let _guard = state.inner.config_write.lock().unwrap();
    let path = &state.home().config_file;
    let mut file = ConfigFile::read(path).map_err(|e| ApiError::internal(format!("{e:#}")))?;
    let before = file.clone();
    file.merge(patch);
    file.validate().map_err(invalid)?;
    let next = Settings::resolve(state.home(), &file)
        .map_err(|e| ApiError::bad_request("invalid_config", format!("{e:#}")))?;
    if file != before {
        file.write(path)
            .map_err(|e| ApiError::internal(format!("{e:#}")))?;
    }
    Ok(Json(ConfigView {
        effective: next,
        file: file.clone(),
        restart_required: file != before,
    }))
}
