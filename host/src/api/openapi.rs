//! The OpenAPI document, generated from the handlers' annotations.

use axum::routing::get;
use axum::{Json, Router};
use utoipa::OpenApi;

use super::AppState;

#[derive(OpenApi)]
#[openapi(
    info(title = "tuner", description = "Fine-tune Qwen3 models; plugins are sandboxed WebAssembly components."),
    paths(
        super::health::health,
        super::plugins::list,
        super::plugins::get_one,
        super::plugins::reload,
        super::config::get_config,
        super::config::put_config,
        openapi_json,
    ),
    tags(
        (name = "health", description = "Liveness"),
        (name = "plugins", description = "Format, source and method plugins"),
        (name = "config", description = "Configuration"),
    )
)]
pub struct ApiDoc;

pub fn routes() -> Router<AppState> {
    Router::new().route("/openapi.json", get(openapi_json))
}

/// This document.
#[utoipa::path(get, path = "/api/openapi.json", tag = "health",
    responses((status = 200, description = "OpenAPI 3 document")))]
pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
