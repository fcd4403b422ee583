//! tuner: fine-tune Qwen3 models, with data formats, model sources and
//! training methods as sandboxed WebAssembly plugins.
//!
//! This crate is both the `tuner` binary and its library. The modules:
//! - [`home`]: where all state lives (`TUNER_HOME`, platform dirs).
//! - [`config`]: the configuration file and environment overrides.
//! - [`sample`]: the normalised training sample every layer shares.
//! - [`text`]: chat template, tokenizer, loss mask, token statistics, preview.
//! - [`model`]: the network: Qwen3, linear layers, LoRA, quantization.
//! - [`plugins`]: the wasmtime runtime: discovery, validation, sandbox,
//!   compile cache, hot reload, host interfaces.
//! - [`hub`]: models and datasets from hubs: downloads and the cache.
//! - [`data`]: training data: decoding, format plugins, datasets, sampling.
//! - [`paths`]: untrusted names to paths that provably stay inside a root.
//! - [`fsio`]: whole files written atomically (temporary file, sync, rename).
//! - [`store`]: the SQLite database.
//! - [`train`]: the training loop, optimiser, batches, jobs, checkpoints.
//! - [`app`]: the service layer: one [`app::App`] owning the plugins, store,
//!   hub, dataset resolver and job queue, with the use cases of both faces.
//! - [`blocking`]: the one bridge from blocking code to async downloads.
//! - [`api`]: the HTTP API (axum) and its OpenAPI document.
//! - [`cli`]: the command line (clap).

pub mod api;
pub mod app;
pub mod blocking;
pub mod cli;
pub mod config;
pub mod data;
pub mod fsio;
pub mod home;
pub mod hub;
pub mod infer;
pub mod model;
pub mod paths;
pub mod plugins;
pub mod sample;
pub mod store;
pub mod text;
pub mod train;
