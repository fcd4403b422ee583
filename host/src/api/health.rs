//! `GET /api/health`: liveness, version and uptime. Never requires a token.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;

#[derive(Serialize, ToSchema)]
pub struct Health {
    /// Always `ok` when the server answers.
    pub status: String,
    pub version: String,
    pub uptime_secs: f64,
    /// Active plugins.
    pub plugins: usize,
}

pub fn routes() -> Router<AppState> {
    Router::new().route("/health", get(health))
}

/// Liveness check.
#[utoipa::path(get, path = "/api/health", tag = "health",
    responses((status = 200, description = "The server is up", body = Health)))]
pub async fn health(State(state): State<AppState>) -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        uptime_secs: state.inner.started.elapsed().as_secs_f64(),
        plugins: state.host().list().len(),
    })
}
