//! `/api/plugins`: list, inspect and reload plugins.

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use utoipa::ToSchema;

use super::{ApiError, AppState};
use crate::plugins::plugin::{CallStats, Degraded};
use crate::plugins::registry::LoadFailure;
use crate::plugins::{Plugin, PluginHost, PluginMeta, ReloadReport};

/// A plugin as the API and `tuner plugins list --json` show it.
#[derive(Serialize, ToSchema)]
pub struct PluginView {
    #[serde(flatten)]
    pub meta: PluginMeta,
    pub stats: CallStats,
    /// Set while the plugin is left out of format detection after its
    /// `detect` ran out of time or crashed: why, and until when.
    pub degraded: Option<Degraded>,
}

impl From<&Plugin> for PluginView {
    fn from(p: &Plugin) -> Self {
        Self {
            meta: p.meta.clone(),
            stats: p.stats(),
            degraded: p.degraded(),
        }
    }
}

/// Every active plugin, and the files that failed to load.
#[derive(Serialize, ToSchema)]
pub struct PluginList {
    pub plugins: Vec<PluginView>,
    /// Files in the plugin folder that are not loaded, with the reason.
    pub failures: Vec<LoadFailure>,
    /// The user plugin folder.
    pub plugin_dir: Option<String>,
}

impl PluginList {
    pub fn of(host: &PluginHost) -> Self {
        Self {
            plugins: host.list().iter().map(|p| PluginView::from(&**p)).collect(),
            failures: host.failures(),
            plugin_dir: host.plugin_dir().map(|d| d.display().to_string()),
        }
    }
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/plugins", get(list))
        .route("/plugins/reload", post(reload))
        .route("/plugins/{name}", get(get_one))
}

/// Lists plugins.
#[utoipa::path(get, path = "/api/plugins", tag = "plugins",
    responses((status = 200, body = PluginList)))]
pub async fn list(State(state): State<AppState>) -> Json<PluginList> {
    Json(PluginList::of(state.host()))
}

/// One plugin by name.
#[utoipa::path(get, path = "/api/plugins/{name}", tag = "plugins",
    params(("name" = String, Path, description = "Plugin name")),
    responses((status = 200, body = PluginView),
              (status = 404, description = "No such plugin", body = super::error::ErrorBody)))]
pub async fn get_one(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<PluginView>, ApiError> {
    state
        .host()
        .get(&name)
        .map(|p| Json(PluginView::from(&*p)))
        .ok_or_else(|| ApiError::not_found("plugin_not_found", format!("no plugin named `{name}`")))
}

/// Rescans the plugin folder now (the file watcher normally does this).
#[utoipa::path(post, path = "/api/plugins/reload", tag = "plugins",
    responses((status = 200, description = "What changed", body = ReloadReport)))]
pub async fn reload(State(state): State<AppState>) -> Result<Json<ReloadReport>, ApiError> {
    let host = state.host().clone();
    // Compiling plugins is CPU work: keep it off the async threads.
    let report = tokio::task::spawn_blocking(move || host.reload())
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(report))
}
