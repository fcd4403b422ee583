//! The in-process API server every suite starts: [`TestHome::server`]
//! returns a [`ServerBuilder`] (plugin limits or a shared runtime, token,
//! configuration, hub endpoints, a training queue), whose
//! [`ServerBuilder::start`] gives a [`TestServer`].

use std::net::SocketAddr;
use std::sync::Arc;

use tuner::api::AppState;
use tuner::config::{ConfigFile, Settings};
use tuner::plugins::{PluginHost, PluginLimits};
use tuner::store::Store;
use tuner::train::jobs::{JobQueue, QueueOptions, Trainer};

use crate::hub_emulator::HubEmulator;
use crate::{TestHome, test_limits};

/// A change to the resolved settings, applied when the server starts.
type SettingsEdit<'a> = Box<dyn FnOnce(&mut Settings) + 'a>;

/// What a [`TestServer`] is started with. By default: a fresh plugin
/// runtime on the home with [`test_limits`], the home's database, default
/// configuration, no token, no training queue.
#[must_use = "a server builder does nothing until `start`"]
pub struct ServerBuilder<'a> {
    home: &'a TestHome,
    limits: PluginLimits,
    host: Option<Arc<PluginHost>>,
    config: ConfigFile,
    private_hosts: bool,
    settings: Vec<SettingsEdit<'a>>,
    token: Option<String>,
    trainer: Option<Result<Arc<dyn Trainer>, String>>,
}

impl<'a> ServerBuilder<'a> {
    pub(crate) fn new(home: &'a TestHome) -> Self {
        Self {
            home,
            limits: test_limits(),
            host: None,
            config: ConfigFile::default(),
            private_hosts: false,
            settings: Vec::new(),
            token: None,
            trainer: None,
        }
    }

    /// Limits of the plugin runtime started for the server (instead of
    /// [`test_limits`]).
    pub fn limits(mut self, limits: PluginLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Serves over a runtime already started (shared by a suite, or one
    /// the test goes on using) instead of starting one.
    pub fn host(mut self, host: Arc<PluginHost>) -> Self {
        self.host = Some(host);
        self
    }

    /// Requires this API token.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Edits the configuration file the settings are resolved from.
    pub fn config(mut self, edit: impl FnOnce(&mut ConfigFile)) -> Self {
        edit(&mut self.config);
        self
    }

    /// Points both hub sources (`modelscope`, `huggingface`) at `url`.
    pub fn endpoints(self, url: &str) -> Self {
        self.config(|f| {
            for source in ["modelscope", "huggingface"] {
                f.endpoints.insert(source.to_string(), url.to_string());
            }
        })
    }

    /// Downloads from `emu`: both hub sources point at it, ModelScope is
    /// tried first, and plugins may reach its loopback address.
    pub fn hub_emulator(mut self, emu: &HubEmulator) -> Self {
        self.private_hosts = true;
        self.endpoints(&emu.url()).config(|f| {
            f.source_order = Some(vec!["modelscope".into(), "huggingface".into()]);
        })
    }

    /// Edits the resolved settings (after the configuration file).
    pub fn settings(mut self, edit: impl FnOnce(&mut Settings) + 'a) -> Self {
        self.settings.push(Box::new(edit));
        self
    }

    /// Opens a training queue over the home's database that runs jobs with
    /// `trainer` (or fails them with the message), adopting queued jobs.
    pub fn trainer(mut self, trainer: Result<Arc<dyn Trainer>, String>) -> Self {
        self.trainer = Some(trainer);
        self
    }

    /// The API state the server will get.
    pub fn state(self) -> AppState {
        let home = self.home;
        let host = self.host.unwrap_or_else(|| {
            let mut limits = self.limits;
            if self.private_hosts {
                limits.allow_private_hosts = true;
            }
            Arc::new(home.start(limits))
        });
        let mut settings = Settings::resolve(&home.home, &self.config).unwrap();
        for edit in self.settings {
            edit(&mut settings);
        }
        let store = Arc::new(Store::open(&home.home.database).unwrap());
        let state = AppState::new(host, store, home.home.clone(), settings, self.token);
        if let Some(trainer) = self.trainer {
            let queue = JobQueue::open(
                state.store().clone(),
                trainer,
                QueueOptions { adopt_queued: true },
            )
            .unwrap();
            assert!(state.set_training(queue));
        }
        state
    }

    /// Starts the server on a free loopback port.
    pub async fn start(self) -> TestServer {
        TestServer::start(self.state()).await
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
