//! The OpenAPI document, generated from the handlers' annotations.

use axum::routing::get;
use axum::{Json, Router};
use utoipa::OpenApi;

use super::AppState;

#[derive(OpenApi)]
#[openapi(
    info(title = "tuner", description = "Fine-tune Qwen3 models; plugins are sandboxed WebAssembly components. Every route answers 403 `host_not_allowed` when the Host header names another server, and state-changing routes answer 403 `origin_not_allowed` to requests from other web origins."),
    paths(
        super::health::health,
        super::plugins::list,
        super::plugins::get_one,
        super::plugins::reload,
        super::config::get_config,
        super::config::put_config,
        super::models::recommended,
        super::models::start_download,
        super::models::download_status,
        super::models::download_events,
        super::models::cache_list,
        super::models::cache_remove,
        super::models::cache_clear,
        super::data::list,
        super::data::get_one,
        super::data::remove,
        super::data::preview,
        super::data::stats_of,
        super::data::upload,
        super::data::validate,
        super::training::submit,
        super::training::list,
        super::training::get_one,
        super::training::events,
        super::training::stop,
        super::training::resume,
        super::openai::chat::chat_completions,
        super::openai::completions::completions,
        super::openai::list_models,
        super::openai::manage::list,
        super::openai::manage::load,
        super::openai::manage::unload,
        super::openai::manage::load_adapter,
        super::openai::manage::unload_adapter,
        openapi_json,
    ),
    modifiers(&BearerToken),
    tags(
        (name = "health", description = "Liveness"),
        (name = "plugins", description = "Format, source and method plugins"),
        (name = "config", description = "Configuration"),
        (name = "data", description = "Training datasets: upload, validate, preview, stats"),
        (name = "models", description = "Recommended models, downloads and the model cache"),
        (name = "training", description = "Training jobs: submit, follow, stop, resume"),
        (name = "openai", description = "OpenAI-compatible generation under /v1 (same bearer token)"),
        (name = "inference", description = "Served models and adapters: load, unload, list"),
    )
)]
pub struct ApiDoc;

/// Documents the optional bearer token (required when the server is bound
/// beyond loopback; `/api/health` never needs it).
struct BearerToken;

impl utoipa::Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        // Optional: an empty requirement means "no token" is acceptable too.
        openapi.security = Some(vec![
            SecurityRequirement::new("bearer", Vec::<String>::new()),
            SecurityRequirement::default(),
        ]);
    }
}

pub fn routes() -> Router<AppState> {
    Router::new().route("/openapi.json", get(openapi_json))
}

/// This document.
#[utoipa::path(get, path = "/api/openapi.json", tag = "health",
    responses((status = 200, description = "OpenAPI 3 document")))]
pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
