//! Training: optimiser and schedule, batches, jobs, checkpoints and outputs.
//!
//! The network itself lives in [`crate::model::qwen3`]; method plugins choose
//! what trains and compose the loss through the tensor API
//! ([`crate::plugins::imports::tensors`]). This module owns everything around
//! one optimisation step.

pub mod batch;
pub mod blocks;
pub mod checkpoint;
pub mod config;
pub mod jobs;
pub mod optim;
pub mod peft;
pub mod reference;
pub mod rewards;
pub mod rng;
pub mod rollout;
pub mod schedule;
pub mod trainer;

pub use config::TrainConfig;
pub use jobs::{JobContext, JobOutcome, JobQueue, TrainEvent, Trainer};

/// What a running job asks of the process around it: the plugins, the
/// model folder (pulled when missing, and recorded like any pull), and the
/// samples its data specs name. The service layer ([`crate::app::App`])
/// implements it, so a job resolves models and data exactly as the CLI and
/// the API do.
pub trait TrainerServices: Send + Sync {
    /// The plugin runtime.
    fn plugins(&self) -> anyhow::Result<std::sync::Arc<crate::plugins::PluginHost>>;
    /// The folder of the model `name` names, downloading it when it is a
    /// hub id not in the cache (`log` tells the job's log).
    fn model_dir(&self, name: &str, log: &dyn Fn(String)) -> anyhow::Result<std::path::PathBuf>;
    /// The samples of the data specs, sampled and mixed with `seed`.
    fn resolve_data(
        &self,
        specs: &[String],
        options: &crate::data::LoadOptions,
        seed: u64,
    ) -> anyhow::Result<Vec<crate::sample::Sample>>;
}

/// The trainer the CLI and `tuner serve` use. `Err` (why training cannot
/// run) makes submissions fail with that message; records stay readable.
pub fn default_trainer(
    services: std::sync::Arc<dyn TrainerServices>,
) -> anyhow::Result<std::sync::Arc<dyn Trainer>> {
    Ok(std::sync::Arc::new(trainer::Engine::new(services)))
}
