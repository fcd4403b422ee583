//! Helpers for tuner's end-to-end suites: the test-only plugins built by
//! `build.rs`, throwaway homes, the one in-process API server every suite
//! starts ([`TestHome::server`]), the one way suites run the `tuner` binary
//! ([`TunerCommand`], [`ServeProcess`]), a tiny local HTTP server that
//! counts what it is asked for, the hub emulator, and the training suites'
//! tiny model and `tuner train --json` runs ([`training`]), and the checks
//! of loss plugins against formula fixtures ([`loss_check`]).

pub mod hub_emulator;
pub mod loss_check;
mod process;
mod server;
pub mod training;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tuner::api::AppState;
use tuner::config::{ConfigFile, Settings};
use tuner::home::Home;
use tuner::plugins::{PluginHost, PluginLimits};

pub use process::{ServeProcess, TunerCommand, release_tuner, repo_root, tuner_bin};
pub use server::{ServerBuilder, TestServer};

/// Path of a test plugin component (`tests/plugins/<name>`).
pub fn test_plugin(name: &str) -> PathBuf {
    let p = Path::new(env!("TUNER_TEST_PLUGINS")).join(format!("{name}.wasm"));
    assert!(p.is_file(), "test plugin {} was not built", p.display());
    p
}

/// Copies test plugin `name` (and its manifest, if it has one) into `dir`
/// as `as_name.wasm`.
pub fn install(dir: &Path, name: &str, as_name: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let src = test_plugin(name);
    let manifest = src.with_extension("toml");
    if manifest.is_file() {
        let text = std::fs::read_to_string(&manifest).unwrap().replace(
            &format!("name = \"{name}\""),
            &format!("name = \"{as_name}\""),
        );
        std::fs::write(dir.join(format!("{as_name}.toml")), text).unwrap();
    }
    let tmp = dir.join(format!(".{as_name}.partial"));
    std::fs::copy(&src, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join(format!("{as_name}.wasm"))).unwrap();
}

/// Small limits so hostile plugins are stopped quickly in tests.
pub fn test_limits() -> PluginLimits {
    PluginLimits {
        call_timeout: Duration::from_secs(1),
        load_timeout: Duration::from_secs(1),
        memory_bytes: 64 << 20,
        http_timeout: Duration::from_secs(5),
        ..PluginLimits::default()
    }
}

/// A temporary tuner home with a plugin folder.
pub struct TestHome {
    pub dir: tempfile::TempDir,
    pub home: Home,
}

impl TestHome {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        std::fs::create_dir_all(&home.plugin_dir).unwrap();
        Self { dir, home }
    }

    pub fn plugin_dir(&self) -> &Path {
        &self.home.plugin_dir
    }

    /// Starts the plugin runtime on this home (bundled + folder plugins).
    pub fn start(&self, limits: PluginLimits) -> PluginHost {
        PluginHost::start(
            limits,
            Some(self.home.plugin_dir.clone()),
            Some(self.home.compile_cache_dir.clone()),
        )
        .unwrap()
    }

    /// An in-process API server on this home (its database and settings);
    /// see [`ServerBuilder`] for the options, then `.start().await`.
    pub fn server(&self) -> ServerBuilder<'_> {
        ServerBuilder::new(self)
    }

    /// API state over `host`, with this home's database and settings:
    /// `self.server().host(host)` with an optional token, unstarted.
    pub fn app_state(&self, host: Arc<PluginHost>, token: Option<String>) -> AppState {
        let builder = self.server().host(host);
        match token {
            Some(token) => builder.token(token),
            None => builder,
        }
        .state()
    }

    /// `tuner` as a process with this home as `TUNER_HOME`.
    pub fn tuner(&self) -> TunerCommand {
        TunerCommand::new(self.dir.path())
    }

    pub fn settings(&self) -> Settings {
        Settings::resolve(&self.home, &ConfigFile::default()).unwrap()
    }
}

impl Default for TestHome {
    fn default() -> Self {
        Self::new()
    }
}

/// Polls `check` every 50 ms until it returns true or `limit` passes.
pub async fn eventually(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// A local HTTP server that records every path it is asked for.
/// `/redirect?to=URL` answers 302 to `URL`; everything else answers 200 `hello`.
pub struct CountingServer {
    pub addr: SocketAddr,
    pub hits: Arc<std::sync::Mutex<Vec<String>>>,
    requests: Arc<AtomicUsize>,
}

impl CountingServer {
    pub async fn start() -> Self {
        use axum::extract::{Query, Request};
        use axum::response::{IntoResponse, Redirect};
        let hits = Arc::new(std::sync::Mutex::new(Vec::new()));
        let requests = Arc::new(AtomicUsize::new(0));
        let (h, r) = (hits.clone(), requests.clone());
        let app = axum::Router::new().fallback(move |req: Request| {
            let (h, r) = (h.clone(), r.clone());
            async move {
                r.fetch_add(1, Ordering::SeqCst);
                h.lock().unwrap().push(req.uri().path().to_string());
                if req.uri().path() == "/redirect" {
                    let Query(q): Query<std::collections::HashMap<String, String>> =
                        Query::try_from_uri(req.uri()).unwrap();
                    return Redirect::to(&q["to"]).into_response();
                }
                "hello".into_response()
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            addr,
            hits,
            requests,
        }
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    pub fn paths(&self) -> Vec<String> {
        self.hits.lock().unwrap().clone()
    }
}
