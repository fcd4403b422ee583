//! `tuner serve`: the HTTP API, with the plugin folder watched for changes;
//! with `--model`, also a model served on the OpenAI-compatible `/v1` routes.

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::Args;

use crate::api::{self, AppState};
use crate::app::App;
use crate::plugins::watch;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to bind (default from config, else 127.0.0.1).
    #[arg(long)]
    pub host: Option<IpAddr>,
    /// Port to bind (default from config, else 8000).
    #[arg(long)]
    pub port: Option<u16>,
    /// API token clients must send as `Authorization: Bearer <token>`.
    /// Required when binding a non-loopback address.
    #[arg(long, env = "TUNER_API_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Do not watch the plugin folder for changes.
    #[arg(long)]
    pub no_watch: bool,
    /// Serve this model on `/v1` (a folder, or a hub id, pulled if not cached).
    #[arg(long)]
    pub model: Option<String>,
    /// A PEFT adapter to serve with `--model`, selected by `model: NAME`
    /// (repeatable).
    #[arg(long = "adapter", value_name = "NAME=DIR", requires = "model")]
    pub adapters: Vec<String>,
    /// The name requests select the model by (default: `--model` as given).
    #[arg(long, requires = "model")]
    pub served_name: Option<String>,
    /// Sequences generated together in one step.
    #[arg(long, requires = "model")]
    pub max_batch: Option<usize>,
    /// Requests waiting beyond those running; more get 429.
    #[arg(long, requires = "model")]
    pub max_queue: Option<usize>,
}

/// Loads `--model` and its adapters into the app's served table.
fn load_model(app: &App, args: &ServeArgs) -> Result<()> {
    let Some(model) = &args.model else {
        return Ok(());
    };
    let adapters = args
        .adapters
        .iter()
        .map(|a| {
            a.split_once('=')
                .filter(|(n, d)| !n.is_empty() && !d.is_empty())
                .with_context(|| format!("--adapter `{a}`: expected NAME=DIR"))
        })
        .collect::<Result<Vec<_>>>()?;
    let defaults = crate::infer::EngineOptions::default();
    let options = crate::infer::EngineOptions {
        max_batch: args.max_batch.unwrap_or(defaults.max_batch).max(1),
        max_queue: args.max_queue.unwrap_or(defaults.max_queue),
        ..defaults
    };
    let bars = std::sync::Arc::new(super::pull::Bars::new());
    let progress: crate::hub::Progress = bars.clone();
    let engine = app.start_engine(
        model,
        args.served_name.as_deref(),
        crate::infer::ModelOptions::default(),
        options,
        crate::app::models::WhenMissing::Pull(&progress),
    );
    bars.finish();
    let engine = engine?;
    for (name, dir) in adapters {
        engine
            .load_adapter(name, std::path::Path::new(dir))
            .with_context(|| format!("--adapter {name}={dir}"))?;
    }
    let name = engine.name().to_string();
    app.served().insert(engine)?;
    eprintln!("serving {name} on /v1 (OpenAI-compatible)");
    Ok(())
}

pub fn run(app: App, args: ServeArgs) -> Result<ExitCode> {
    let settings = app.settings();
    let host_ip: IpAddr = match args.host {
        Some(ip) => ip,
        None => settings.server.host.parse().with_context(|| {
            format!(
                "server.host `{}` is not an IP address",
                settings.server.host
            )
        })?,
    };
    let addr = SocketAddr::new(host_ip, args.port.unwrap_or(settings.server.port));
    api::check_bind(&addr, args.token.as_deref())?;

    let plugins = app.plugins()?;
    for f in plugins.failures() {
        tracing::warn!(file = %f.file.display(), "plugin not loaded: {}", f.error);
    }
    // The file's other values were checked when it was read; source names
    // can only be checked once the plugins are loaded.
    let sources: Vec<String> = plugins
        .sources()
        .iter()
        .map(|p| p.name().to_string())
        .collect();
    crate::config::ConfigFile::read(&app.home().config_file)?
        .validate_sources(&sources)
        .with_context(|| format!("in {}", app.home().config_file.display()))?;
    let _watcher = if args.no_watch {
        None
    } else {
        watch::watch(plugins.clone())?
    };

    load_model(&app, &args)?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let state = AppState::from_app(app, args.token)?;
    // Opened now, not on first request: jobs a dead server left running are
    // marked interrupted and queued ones start again.
    if let Err(e) = state.training() {
        tracing::warn!("training jobs unavailable: {e:#}");
    }
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
            format!("cannot listen on {addr} (is another tuner running? try --port)")
        })?;
        let shown = listener.local_addr()?;
        tracing::info!(
            plugins = plugins.list().len(),
            "tuner {} listening on http://{shown}",
            env!("CARGO_PKG_VERSION")
        );
        eprintln!("tuner listening on http://{shown} (Ctrl-C to stop)");
        api::serve(state, listener, async {
            let _ = tokio::signal::ctrl_c().await;
            eprintln!("shutting down: finishing requests in flight");
        })
        .await
    })?;
    Ok(ExitCode::SUCCESS)
}
