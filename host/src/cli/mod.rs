//! The command line (clap). Results go to stdout (`--json` gives a stable,
//! documented shape); progress and logs go to stderr.

mod cache;
mod chat;
mod data;
mod export;
mod init_model;
mod plugins;
mod pull;
mod serve;
mod train;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::app::App;
use crate::config::Settings;
use crate::home::Home;

/// Fine-tune Qwen3 models. Data formats, model sources and training methods
/// are sandboxed WebAssembly plugins.
#[derive(Debug, Parser)]
#[command(name = "tuner", version, propagate_version = true)]
pub struct Cli {
    /// User plugin folder (default: `plugins` in the tuner home).
    #[arg(long, global = true, env = "TUNER_PLUGIN_DIR", value_name = "DIR")]
    pub plugin_dir: Option<PathBuf>,

    /// More log output (-v: debug, -vv: trace). `RUST_LOG` overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP API (default http://127.0.0.1:8000).
    Serve(serve::ServeArgs),
    /// List, inspect, check, create and build plugins.
    #[command(subcommand)]
    Plugins(plugins::PluginsCommand),
    /// Inspect, validate, convert and store training data.
    #[command(subcommand)]
    Data(data::DataCommand),
    /// Download a model or dataset into the cache (ModelScope, then Hugging Face).
    Pull(pull::PullArgs),
    /// List, remove, verify, import and export cached models and datasets.
    #[command(subcommand)]
    Cache(cache::CacheCommand),
    /// Chat with a model in the terminal, or answer one prompt (--prompt, stdin).
    Chat(chat::ChatArgs),
    /// Fine-tune a model from a config file (TOML, YAML or JSON).
    Train(train::TrainArgs),
    /// List and show training jobs.
    #[command(subcommand)]
    Jobs(train::JobsCommand),
    /// Merge a LoRA adapter into its base model (`--merge`): a full HF folder.
    Export(export::ExportArgs),
    /// Write a tiny random Qwen3 model folder (demos and tests; no download).
    InitModel(init_model::InitModelArgs),
}

/// The app every command runs on: the home folder, the effective settings
/// (with `--plugin-dir` applied), and the services built on them on first
/// use.
pub fn open_app(cli: &Cli) -> Result<App> {
    let home = Home::from_env()?;
    let mut settings = Settings::load(&home)?;
    if let Some(dir) = &cli.plugin_dir {
        // clap already folded TUNER_PLUGIN_DIR into the flag.
        settings.plugin_dir = dir.clone();
        settings
            .overridden
            .entry("plugin_dir".into())
            .or_insert_with(|| "--plugin-dir".into());
    }
    Ok(App::new(home, settings))
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<std::process::ExitCode> {
    let app = open_app(&cli)?;
    match cli.command {
        Command::Serve(args) => serve::run(app, args),
        Command::Plugins(cmd) => plugins::run(app, cmd),
        Command::Data(cmd) => data::run(app, cmd),
        Command::Pull(args) => pull::run(app, args),
        Command::Cache(cmd) => cache::run(app, cmd),
        Command::Chat(args) => chat::run(app, args),
        Command::Train(args) => train::run(app, args),
        Command::Jobs(cmd) => train::run_jobs(app, cmd),
        Command::Export(args) => export::run(app, args),
        Command::InitModel(args) => init_model::run(app, args),
    }
}
