//! The service layer: one [`App`] per process, under the CLI and the HTTP API.
//!
//! `App` is built once from the home folder and the settings. It owns the
//! plugin runtime, the database, the model hub, the dataset resolver, the
//! loaded tokenizers and the training job queue, each made on first use and
//! then shared, and it offers the use cases both faces need:
//!
//! - [`models`]: what a user typed to name a model ([`ModelSpec`], the one
//!   rule for "local folder or hub id"), found in the cache or pulled.
//! - [`datasets`]: data specs to samples, token statistics, rendered
//!   previews, file validation.
//! - [`training`]: checking configs against the installed methods, the job
//!   queue, and what a running job asks of the process
//!   ([`crate::train::TrainerServices`]).
//! - [`export`]: merging an adapter into its base model.
//! - [`inference`]: models loaded for generation and the table of served ones.
//!
//! The CLI (`crate::cli`) and the handlers (`crate::api`) parse input, call
//! these, and format the answer; neither builds a plugin host, a hub or a
//! store of its own.

pub mod datasets;
pub mod export;
pub mod inference;
pub mod models;
pub mod training;

use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};

use anyhow::Result;

pub use crate::text::TrainingRender;
pub use datasets::{DataError, StatsRequest};
pub use models::{ModelLookupError, ModelSpec};

use crate::config::Settings;
use crate::data::resolve::DataResolver;
use crate::data::store::Datasets;
use crate::home::Home;
use crate::hub::{Hub, HubConfig};
use crate::plugins::PluginHost;
use crate::store::Store;
use crate::text::cache::ModelFilesCache;
use crate::train::JobQueue;

/// The process's services. Cheap to clone (one shared inside).
#[derive(Clone)]
pub struct App {
    inner: Arc<Inner>,
}

struct Inner {
    home: Home,
    settings: RwLock<Settings>,
    plugins: OnceLock<Arc<PluginHost>>,
    /// Held while the plugin runtime starts, so it starts once.
    plugins_starting: Mutex<()>,
    store: OnceLock<Arc<Store>>,
    hub: OnceLock<Arc<Hub>>,
    data: OnceLock<Arc<DataResolver>>,
    /// Tokenizers and chat templates, shared by every request naming a model.
    model_files: ModelFilesCache,
    /// Training jobs, opened on first use (or set by [`App::set_training`]).
    training: Mutex<Option<Arc<JobQueue>>>,
    /// Models loaded for generation (`tuner serve --model`, `/v1`).
    served: inference::ServedModels,
}

impl App {
    /// An app for `home` with `settings`; everything starts on first use.
    pub fn new(home: Home, settings: Settings) -> Self {
        Self {
            inner: Arc::new(Inner {
                home,
                settings: RwLock::new(settings),
                plugins: OnceLock::new(),
                plugins_starting: Mutex::new(()),
                store: OnceLock::new(),
                hub: OnceLock::new(),
                data: OnceLock::new(),
                model_files: ModelFilesCache::default(),
                training: Mutex::new(None),
                served: inference::ServedModels::default(),
            }),
        }
    }

    /// An app over a plugin runtime and database that are already open (the
    /// server, which starts them before it listens; tests).
    pub fn with_parts(
        home: Home,
        settings: Settings,
        plugins: Arc<PluginHost>,
        store: Arc<Store>,
    ) -> Self {
        let app = Self::new(home, settings);
        let _ = app.inner.plugins.set(plugins);
        let _ = app.inner.store.set(store);
        app
    }

    /// Where all state lives.
    pub fn home(&self) -> &Home {
        &self.inner.home
    }

    /// The effective settings now (a copy).
    pub fn settings(&self) -> Settings {
        self.inner
            .settings
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Changes the settings. What was already started (the plugin runtime,
    /// the hub) keeps the settings it started with; per-call lookups (the
    /// data folder, the runs folder) see the change at once.
    pub fn update_settings(&self, change: impl FnOnce(&mut Settings)) {
        change(
            &mut self
                .inner
                .settings
                .write()
                .unwrap_or_else(PoisonError::into_inner),
        );
    }

    /// The plugin runtime: the bundled plugins and the plugin folder,
    /// started on first use.
    pub fn plugins(&self) -> Result<Arc<PluginHost>> {
        if let Some(host) = self.inner.plugins.get() {
            return Ok(host.clone());
        }
        let _one = self
            .inner
            .plugins_starting
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(host) = self.inner.plugins.get() {
            return Ok(host.clone());
        }
        let settings = self.settings();
        let host = Arc::new(PluginHost::start(
            settings.plugin_limits(),
            Some(settings.plugin_dir.clone()),
            Some(settings.compile_cache_dir.clone()),
        )?);
        Ok(self.inner.plugins.get_or_init(|| host).clone())
    }

    /// The database, opened on first use.
    pub fn store(&self) -> Result<Arc<Store>> {
        if let Some(store) = self.inner.store.get() {
            return Ok(store.clone());
        }
        let store = Arc::new(Store::open(&self.settings().database)?);
        Ok(self.inner.store.get_or_init(|| store).clone())
    }

    /// The model hub (cache, sources, in-flight pulls), made on first use
    /// from the settings of that moment. Every pull it makes is recorded in
    /// the database.
    pub fn hub(&self) -> Result<Arc<Hub>> {
        if let Some(hub) = self.inner.hub.get() {
            return Ok(hub.clone());
        }
        let hub = Arc::new(self.hub_with(HubConfig::from_settings(&self.settings()))?);
        Ok(self.inner.hub.get_or_init(|| hub).clone())
    }

    /// A hub with its own transfer settings (`tuner pull --connections`),
    /// over the same plugins and database as [`App::hub`].
    pub fn hub_with(&self, config: HubConfig) -> Result<Hub> {
        Ok(Hub::new(self.plugins()?, Some(self.store()?), config))
    }

    /// Dataset specs to samples: files, stored datasets, hub datasets.
    pub fn data(&self) -> Result<Arc<DataResolver>> {
        if let Some(data) = self.inner.data.get() {
            return Ok(data.clone());
        }
        let data = Arc::new(DataResolver::new(
            self.plugins()?,
            self.store()?,
            self.settings().data_dir,
            self.hub()?,
        ));
        Ok(self.inner.data.get_or_init(|| data).clone())
    }

    /// The stored datasets (the data folder as configured now).
    pub fn datasets(&self) -> Result<Datasets<'_>> {
        self.store()?;
        let store = self.inner.store.get().expect("opened above");
        Ok(Datasets::new(&self.settings().data_dir, store))
    }

    /// Loaded tokenizers and chat templates.
    pub fn model_files_cache(&self) -> &ModelFilesCache {
        &self.inner.model_files
    }
}
