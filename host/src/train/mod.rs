//! Training: optimiser and schedule, batches, jobs, checkpoints and outputs.
//!
//! The network itself lives in [`crate::model::qwen3`]; method plugins choose
//! what trains and compose the loss through the tensor API
//! ([`crate::plugins::imports::tensors`]). This module owns everything around
//! one optimisation step.

pub mod batch;
pub mod checkpoint;
pub mod config;
pub mod jobs;
pub mod optim;
pub mod peft;
pub mod rng;
pub mod schedule;
pub mod trainer;

pub use config::TrainConfig;
pub use jobs::{JobContext, JobOutcome, JobQueue, TrainEvent, Trainer};

/// What a trainer may need from the process that runs it.
pub struct TrainerEnv {
    pub host: std::sync::Arc<crate::plugins::PluginHost>,
    pub store: std::sync::Arc<crate::store::Store>,
    pub settings: crate::config::Settings,
}

/// The trainer the CLI and `tuner serve` use. `Err` (why training cannot
/// run) makes submissions fail with that message; records stay readable.
pub fn default_trainer(env: &TrainerEnv) -> anyhow::Result<std::sync::Arc<dyn Trainer>> {
    Ok(std::sync::Arc::new(trainer::Engine::new(
        env.host.clone(),
        env.settings.clone(),
    )))
}
