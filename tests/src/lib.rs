//! Helpers for tuner's end-to-end suites: the test-only plugins built by
//! `build.rs`, throwaway homes, an in-process API server, and a tiny local
//! HTTP server that counts what it is asked for, and the hub emulator.

pub mod hub_emulator;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tuner::api::AppState;
use tuner::config::{ConfigFile, Settings};
use tuner::home::Home;
use tuner::plugins::{PluginHost, PluginLimits};
use tuner::store::Store;

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

    /// API state over `host`, with this home's database and settings.
    pub fn app_state(&self, host: Arc<PluginHost>, token: Option<String>) -> AppState {
        self.state(host, &ConfigFile::default(), token)
    }

    /// [`TestHome::app_state`] with the settings of `file` (endpoints,
    /// source order, limits), without a token.
    pub fn app_state_with(&self, host: Arc<PluginHost>, file: &ConfigFile) -> AppState {
        self.state(host, file, None)
    }

    fn state(&self, host: Arc<PluginHost>, file: &ConfigFile, token: Option<String>) -> AppState {
        let settings = Settings::resolve(&self.home, file).unwrap();
        let store = Arc::new(Store::open(&self.home.database).unwrap());
        AppState::new(host, store, self.home.clone(), settings, token)
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

/// An API server on a free loopback port, stopped when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl TestServer {
    pub async fn start(state: AppState) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(tuner::api::serve(state, listener, async {
            let _ = rx.await;
        }));
        Self {
            addr,
            client: reqwest::Client::new(),
            stop: Some(tx),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn get_json(&self, path: &str) -> (u16, serde_json::Value) {
        let resp = self.client.get(self.url(path)).send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(serde_json::Value::Null))
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
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

/// The `tuner` binary of this workspace, for suites that run it as a
/// process (integration tests outside the `tuner` package get no
/// `CARGO_BIN_EXE_tuner`): builds it if needed and returns its path.
pub fn tuner_bin() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args(["build", "-q", "-p", "tuner", "--bin", "tuner"])
        .status()
        .expect("running cargo build");
    assert!(status.success(), "building the tuner binary failed");
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("tuner");
    assert!(bin.is_file(), "{}", bin.display());
    bin
}

/// `tuner serve` as a process, with `home` as `TUNER_HOME`, on a free
/// loopback port, without a token or a plugin folder from the environment;
/// killed (SIGKILL) when dropped. For suites that need a real process: to
/// kill it mid-job, or to read its memory.
pub struct ServeProcess {
    pub child: std::process::Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

impl ServeProcess {
    /// Starts it and waits (at most a minute) until `/api/health` answers.
    pub fn start(home: &Path) -> ServeProcess {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new(tuner_bin())
            .args(["serve", "--port", &port.to_string(), "--no-watch"])
            .env("TUNER_HOME", home)
            .env_remove("TUNER_PLUGIN_DIR")
            .env_remove("TUNER_API_TOKEN")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let serve = ServeProcess {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        for _ in 0..600 {
            if reqwest::blocking::get(format!("{}/api/health", serve.url)).is_ok() {
                return serve;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("tuner serve did not answer");
    }

    /// Peak resident memory of the process (VmHWM), in bytes.
    pub fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
        let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kib << 10
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
