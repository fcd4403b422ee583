//! The HTTP API (axum): routes grouped by resource, one state, one error type.
//!
//! Everything is under `/api`, but for the OpenAI-compatible routes under
//! `/v1` (same token, same Host/Origin guard); the OpenAPI document is at
//! `/api/openapi.json`. When a token is configured every route but
//! `/api/health` requires `Authorization: Bearer <token>`, and binding a
//! non-loopback address without a token is refused.

mod config;
mod data;
mod error;
mod guard;
mod health;
mod models;
pub mod openai;
mod openapi;
mod plugins;
mod training;
pub use plugins::{PluginDetail, PluginList, PluginView};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;

pub use error::ApiError;
pub use openapi::ApiDoc;

use crate::app::App;
use crate::config::Settings;
use crate::home::Home;
use crate::plugins::PluginHost;
use crate::store::Store;

/// Shared state of the server: the app (the service layer every handler
/// calls) and what only the server has (token, guard, request permits).
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    app: App,
    /// Started before the server listens ([`AppState::from_app`]).
    host: Arc<PluginHost>,
    store: Arc<Store>,
    token: Option<String>,
    started: Instant,
    /// Serialises read-modify-write of the config file.
    config_write: std::sync::Mutex<()>,
    /// Downloads started through `/api/models/download`.
    downloads: crate::hub::jobs::DownloadJobs,
    /// Allowed hosts and origins ([`guard`]).
    guard: guard::GuardSettings,
    /// The address the server listens on, set by [`serve`].
    bound: std::sync::OnceLock<SocketAddr>,
    /// Permits for heavy requests ([`AppState::heavy_permit`]).
    heavy: Arc<tokio::sync::Semaphore>,
    /// Permits for downloads started through the API
    /// ([`AppState::pull_permit`]); a pool of its own, since a pull holds
    /// its permit for minutes or hours.
    pulls: Arc<tokio::sync::Semaphore>,
}

impl AppState {
    /// The server's state over `app`. The plugin runtime and the database
    /// start now, so a server that cannot have them does not start.
    pub fn from_app(app: App, token: Option<String>) -> anyhow::Result<Self> {
        let settings = app.settings();
        let guard = guard::GuardSettings {
            allowed_hosts: settings.server.allowed_hosts.clone(),
            allowed_origins: settings.server.allowed_origins.clone(),
        };
        let permits = settings.server.max_heavy_requests.max(1);
        Ok(Self {
            inner: Arc::new(Inner {
                host: app.plugins()?,
                store: app.store()?,
                app,
                guard,
                bound: std::sync::OnceLock::new(),
                heavy: Arc::new(tokio::sync::Semaphore::new(permits)),
                pulls: Arc::new(tokio::sync::Semaphore::new(permits)),
                token: token.filter(|t| !t.is_empty()),
                started: Instant::now(),
                config_write: std::sync::Mutex::new(()),
                downloads: Default::default(),
            }),
        })
    }

    /// [`AppState::from_app`] over a plugin runtime and database already
    /// open (tests).
    pub fn new(
        host: Arc<PluginHost>,
        store: Arc<Store>,
        home: Home,
        settings: Settings,
        token: Option<String>,
    ) -> Self {
        Self::from_app(App::with_parts(home, settings, host, store), token)
            .expect("the plugins and the database are open")
    }

    /// The service layer.
    pub fn app(&self) -> &App {
        &self.inner.app
    }

    pub fn host(&self) -> &Arc<PluginHost> {
        &self.inner.host
    }

    /// The database.
    pub fn store(&self) -> &Arc<Store> {
        &self.inner.store
    }

    /// The home folder.
    pub fn home(&self) -> &Home {
        self.inner.app.home()
    }

    pub fn settings(&self) -> Settings {
        self.inner.app.settings()
    }

    /// The model hub (cache, sources, in-flight pulls).
    pub fn hub(&self) -> Result<Arc<crate::hub::Hub>, ApiError> {
        self.inner
            .app
            .hub()
            .map_err(|e| ApiError::internal(format!("{e:#}")))
    }

    /// The training job queue ([`App::training`]).
    pub fn training(&self) -> anyhow::Result<Arc<crate::train::JobQueue>> {
        self.inner.app.training()
    }

    /// Uses `queue` for training (tests: a fake trainer). False when a queue
    /// is already in use.
    pub fn set_training(&self, queue: Arc<crate::train::JobQueue>) -> bool {
        self.inner.app.set_training(queue)
    }

    /// Downloads started through the API.
    pub fn downloads(&self) -> &crate::hub::jobs::DownloadJobs {
        &self.inner.downloads
    }

    /// A permit to run one heavy request (upload, validation, token
    /// statistics, rendered preview), or 429 `too_busy` with `Retry-After`
    /// when `server.max_heavy_requests` are running. Move the permit into
    /// the blocking work so that it is held until that work really ends.
    pub fn heavy_permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
        self.permit(
            &self.inner.heavy,
            "heavy requests (uploads, validation, token statistics, rendered previews)",
        )
    }

    /// A permit to run one download started through the API, held by the
    /// download until it ends; 429 `too_busy` when
    /// `server.max_heavy_requests` downloads are running.
    pub fn pull_permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
        self.permit(&self.inner.pulls, "downloads")
    }

    fn permit(
        &self,
        pool: &Arc<tokio::sync::Semaphore>,
        what: &str,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
        pool.clone().try_acquire_owned().map_err(|_| {
            ApiError::new(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                "too_busy",
                format!(
                    "the server is already running {} {what}; retry shortly",
                    self.settings().server.max_heavy_requests
                ),
            )
        })
    }
}

/// Set when dropped: give the flag to blocking work and keep this in the
/// handler. When the client goes away axum drops the handler's future, this
/// with it, and the blocking work sees the flag and stops.
#[derive(Default)]
pub(crate) struct CancelOnDrop(pub Arc<std::sync::atomic::AtomicBool>);

impl CancelOnDrop {
    pub fn new() -> Self {
        Self(Arc::default())
    }

    /// The flag to check.
    pub fn flag(&self) -> Arc<std::sync::atomic::AtomicBool> {
        self.0.clone()
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// All routes, with authentication applied.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .merge(health::routes())
        .merge(plugins::routes())
        .merge(data::routes())
        .merge(models::routes())
        .merge(training::routes())
        .merge(config::routes())
        .merge(openapi::routes())
        .merge(openai::manage::routes())
        .fallback(|| async { ApiError::not_found("no_such_route", "no such API route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not accept that HTTP method",
            )
        });
    let v1 = openai::routes().fallback(|| async {
        openai::OpenAiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "not_found_error",
            "no such route under /v1 (chat/completions, completions, models)",
        )
        .code("no_such_route")
    });
    Router::new()
        .nest("/api", api)
        .nest("/v1", v1)
        .fallback(|| async {
            ApiError::not_found(
                "no_such_route",
                "no such route; the API lives under /api (OpenAI-compatible routes under /v1)",
            )
        })
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .layer(middleware::from_fn_with_state(state.clone(), guard::guard))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// Checks the bearer token, when one is configured.
async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(expected) = &state.inner.token else {
        return next.run(req).await;
    };
    if req.uri().path() == "/api/health" {
        return next.run(req).await;
    }
    let presented = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    match presented {
        Some(token) if constant_time_eq(token.as_bytes(), expected.as_bytes()) => {
            next.run(req).await
        }
        // OpenAI clients read OpenAI's error shape.
        _ if req.uri().path().starts_with("/v1/") => {
            axum::response::IntoResponse::into_response(openai::OpenAiError::unauthorized())
        }
        _ => axum::response::IntoResponse::into_response(ApiError::unauthorized()),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Refuses to expose the API beyond this machine without a token.
pub fn check_bind(addr: &SocketAddr, token: Option<&str>) -> anyhow::Result<()> {
    if !addr.ip().is_loopback() && token.is_none_or(str::is_empty) {
        anyhow::bail!(
            "refusing to listen on {addr} without an API token: anyone who can reach it could \
             control tuner. Pass --token (or set TUNER_API_TOKEN); clients then send \
             `Authorization: Bearer <token>`. Or bind 127.0.0.1."
        );
    }
    Ok(())
}

/// Serves until `shutdown` resolves, then finishes in-flight requests.
pub async fn serve(
    state: AppState,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        let _ = state.inner.bound.set(addr);
    }
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}
