//! The training use cases: checking a config against the installed method
//! plugins, submitting jobs (from the CLI, relative to the current folder;
//! over the API, confined to the runs folder), the job queue, and what a
//! running job asks of the process ([`TrainerServices`]).

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError};

use anyhow::Result;

use super::App;
use super::models::WhenMissing;
use crate::data::LoadOptions;
use crate::plugins::PluginHost;
use crate::sample::Sample;
use crate::train::config::{MethodCatalog, RawConfig};
use crate::train::jobs::{JobError, JobQueue, JobRecord, QueueOptions};
use crate::train::{TrainConfig, TrainerServices, default_trainer};

/// Why a job was not submitted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The config is not valid (the message names the key).
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Job(#[from] JobError),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl App {
    /// The settings schemas of the installed method plugins, which decide
    /// which keys beyond the host's a config may have.
    pub fn method_catalog(&self) -> Result<MethodCatalog> {
        Ok(MethodCatalog::from_host(&*self.plugins()?))
    }

    /// A config file's keys (with `--set` overrides applied), checked.
    pub fn check_config(&self, raw: RawConfig) -> Result<TrainConfig> {
        Ok(raw.finish(&self.method_catalog()?)?)
    }

    /// A config sent as JSON, checked exactly like a config file.
    pub fn check_config_json(&self, value: serde_json::Value) -> Result<TrainConfig, SubmitError> {
        TrainConfig::from_json(value, &self.method_catalog()?)
            .map_err(|e| SubmitError::Invalid(e.to_string()))
    }

    /// Where jobs submitted over the API put their `output_dir` (beside
    /// the database).
    pub fn runs_dir(&self) -> PathBuf {
        let db = &self.settings().database;
        db.parent().unwrap_or(Path::new(".")).join("runs")
    }

    /// The training job queue, opened on first use with the real trainer;
    /// jobs left running by a dead process become `interrupted` then, and
    /// jobs left queued run (as `tuner serve` wants).
    pub fn training(&self) -> Result<Arc<JobQueue>> {
        self.job_queue(QueueOptions { adopt_queued: true })
    }

    /// [`App::training`] with the queue's options (`tuner train` runs only
    /// its own job, so it adopts no queued ones).
    pub fn job_queue(&self, options: QueueOptions) -> Result<Arc<JobQueue>> {
        let mut slot = self
            .inner
            .training
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(queue) = slot.as_ref() {
            return Ok(queue.clone());
        }
        // Weak: the queue (and its trainer) belong to the app, not the other
        // way round, so dropping the app frees everything.
        let services: Arc<dyn TrainerServices> = Arc::new(JobServices(Arc::downgrade(&self.inner)));
        let trainer = default_trainer(services).map_err(|e| format!("{e:#}"));
        let queue = JobQueue::open(self.store()?, trainer, options)?;
        *slot = Some(queue.clone());
        Ok(queue)
    }

    /// Uses `queue` for training (tests: a fake trainer). False when a queue
    /// is already in use.
    pub fn set_training(&self, queue: Arc<JobQueue>) -> bool {
        let mut slot = self
            .inner
            .training
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if slot.is_some() {
            return false;
        }
        *slot = Some(queue);
        true
    }

    /// Submits a job sent over the API. Its `output_dir` must be a relative
    /// folder: it is created under [`App::runs_dir`], checked at the moment
    /// of creation (no folder on the way may be a symlink out of it).
    pub fn submit_confined(&self, config: TrainConfig) -> Result<JobRecord, SubmitError> {
        let runs = self.runs_dir();
        let out = config.resolved_output_dir(&runs);
        let relative = out.strip_prefix(&runs).map_err(|_| {
            SubmitError::Invalid(format!(
                "output_dir `{}` is outside the runs folder {}: a job submitted over the API \
                 writes only there; give a relative folder",
                out.display(),
                runs.display()
            ))
        })?;
        crate::paths::check_relative_path("output_dir", relative).map_err(|e| {
            SubmitError::Invalid(format!(
                "{e} (a job submitted over the API writes only under the runs folder {})",
                runs.display()
            ))
        })?;
        let queue = self.training()?;
        crate::paths::create_dir_in(&runs, relative)
            .map_err(|e| SubmitError::Invalid(format!("output_dir: {e}")))?;
        Ok(queue.submit(config, &runs)?)
    }
}

/// What a training job asks of the process, answered by the app as the
/// CLI and the API answer the same questions.
struct JobServices(std::sync::Weak<super::Inner>);

impl JobServices {
    fn app(&self) -> Result<App> {
        self.0
            .upgrade()
            .map(|inner| App { inner })
            .ok_or_else(|| anyhow::anyhow!("tuner is shutting down"))
    }
}

impl TrainerServices for JobServices {
    fn plugins(&self) -> Result<Arc<PluginHost>> {
        self.app()?.plugins()
    }

    fn model_dir(&self, name: &str, log: &dyn Fn(String)) -> Result<PathBuf> {
        let app = self.app()?;
        match app.model_dir(name, WhenMissing::Fail) {
            Ok(dir) => Ok(dir),
            Err(super::ModelLookupError::NotCached { .. }) => {
                log(format!("{name} is not in the cache; downloading it"));
                let progress: crate::hub::Progress = Arc::new(crate::hub::progress::Silent);
                Ok(app.model_dir(name, WhenMissing::Pull(&progress))?)
            }
            Err(e) => Err(e.into()),
        }
    }

    fn resolve_data(
        &self,
        specs: &[String],
        options: &LoadOptions,
        seed: u64,
    ) -> Result<Vec<Sample>> {
        self.app()?.data()?.resolve_all(specs, options, seed)
    }
}
