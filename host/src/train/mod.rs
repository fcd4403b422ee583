//! Training: optimiser and schedule, batches, jobs, checkpoints and outputs.
//!
//! The network itself lives in [`crate::model::qwen3`]; method plugins choose
//! what trains and compose the loss through the tensor API
//! ([`crate::plugins::imports::tensors`]). This module owns everything around
//! one optimisation step.
