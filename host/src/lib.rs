//! tuner: fine-tune Qwen3 models, with data formats, model sources and
//! training methods as sandboxed WebAssembly plugins.
//!
//! This crate is both the `tuner` binary and its library. The modules:
//! - [`home`]: where all state lives (`TUNER_HOME`, platform dirs).
//! - [`config`]: the configuration file and environment overrides.
//! - [`model`]: chat template, tokenizer, loss mask and token statistics.
//! - [`plugins`]: the wasmtime runtime: discovery, validation, sandbox,
//!   compile cache, hot reload, host interfaces.
//! - [`hub`]: models and datasets from hubs: downloads and the cache.
//! - [`data`]: training data: decoding, format plugins, datasets, sampling.
//! - [`paths`]: untrusted names to paths that provably stay inside a root.
//! - [`fsio`]: whole files written atomically (temporary file, sync, rename).
//! - [`store`]: the SQLite database.
//! - [`api`]: the HTTP API (axum) and its OpenAPI document.
//! - [`cli`]: the command line (clap).

pub mod api;
pub mod cli;
pub mod config;
pub mod data;
pub mod fsio;
pub mod home;
pub mod hub;
pub mod model;
pub mod paths;
pub mod plugins;
pub mod store;
pub mod train;
