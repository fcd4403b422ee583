//! `/api/plugins`: list, inspect and reload plugins.

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use utoipa::ToSchema;

use super::{ApiError, AppState};
use crate::plugins::plugin::{CallStats, Degraded};
use crate::plugins::registry::LoadFailure;
use crate::plugins::settings::Setting;
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

/// One plugin in full: what the list shows, plus the settings it declares
/// (a method's training-config keys, a format's `--set` keys), which the
/// web UI builds its forms from.
#[derive(Serialize, ToSchema)]
pub struct PluginDetail {
    #[serde(flatten)]
    pub view: PluginView,
    /// Declared settings, in the plugin's order; empty for source plugins.
    pub settings: Vec<Setting>,
    /// Why the settings could not be read, when the plugin failed to say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settings_error: Option<String>,
}

impl PluginDetail {
    /// Asks the plugin for its settings (a call into the sandbox: run it off
    /// the async threads).
    pub fn of(plugin: &Plugin) -> Self {
        // Sources declare none: `settings()` answers an empty list for them.
        let (settings, settings_error) = match plugin.settings() {
            Ok(s) => (s, None),
            Err(e) => (Vec::new(), Some(e.to_string())),
        };
        Self {
            view: PluginView::from(plugin),
            settings,
            settings_error,
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
    responses((status = 200, body = PluginDetail),
              (status = 404, description = "No such plugin", body = super::error::ErrorBody)))]
pub async fn get_one(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<PluginDetail>, ApiError> {
    let plugin = state.host().get(&name).ok_or_else(|| {
        ApiError::not_found("plugin_not_found", format!("no plugin named `{name}`"))
    })?;
    let detail = tokio::task::spawn_blocking(move || PluginDetail::of(&plugin))
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(detail))
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
