//! `tuner pull`: download a model or dataset into the cache, with per-file
//! and total progress bars on stderr and the result on stdout.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, Result, bail};
use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::app::{App, ModelSpec};
use crate::hub::{HubConfig, Progress, ProgressSink, PullRequest, RepoKind, human_bytes};

#[derive(Debug, Args)]
pub struct PullArgs {
    /// Repository id (`Qwen/Qwen3-0.6B`), or a local folder (checked, not copied).
    pub model: String,
    /// Use only this source plugin (default: the configured order, modelscope then huggingface).
    #[arg(long)]
    pub source: Option<String>,
    /// Branch, tag or commit (default: the hub's default branch).
    #[arg(long)]
    pub revision: Option<String>,
    /// Only files matching this glob (repeatable), e.g. `*.safetensors`.
    #[arg(long)]
    pub include: Vec<String>,
    /// Leave out files matching this glob (repeatable).
    #[arg(long)]
    pub exclude: Vec<String>,
    /// Fetch again even files already in the cache.
    #[arg(long)]
    pub force: bool,
    /// A dataset repository instead of a model.
    #[arg(long)]
    pub dataset: bool,
    /// Use only the cache; never touch the network.
    #[arg(long)]
    pub offline: bool,
    /// Parallel connections (default 8).
    #[arg(long, value_name = "N")]
    pub connections: Option<usize>,
    /// Cache folder (default: MODEL_CACHE_DIR, `model_cache_dir`, or the platform cache).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<std::path::PathBuf>,
    /// Size of the ranged chunks large files are fetched in, in MiB (default 16).
    #[arg(long, value_name = "MIB")]
    pub chunk_mib: Option<u64>,
    /// Print the result as JSON (stable shape, see docs/cli.md).
    #[arg(long)]
    pub json: bool,
}

pub fn run(app: App, args: PullArgs) -> Result<ExitCode> {
    // It becomes `refs/<revision>` in the cache: a git ref name or nothing.
    if let Some(rev) = &args.revision {
        crate::paths::check_git_ref("revision", rev)?;
    }
    if let Some(dir) = &args.cache_dir {
        app.update_settings(|s| s.model_cache_dir = dir.clone());
    }
    if !args.dataset {
        match ModelSpec::parse(&args.model)? {
            // A local model folder works wherever a model id does.
            ModelSpec::Folder(dir) if dir.is_dir() => {
                let path = dir.canonicalize()?;
                if args.json {
                    println!(
                        "{}",
                        serde_json::json!({"name": args.model, "source": "local", "path": path})
                    );
                } else {
                    println!("{} is a local folder; nothing to download", path.display());
                }
                return Ok(ExitCode::SUCCESS);
            }
            ModelSpec::Folder(_) => bail!("no model folder at `{}`", args.model),
            ModelSpec::Hub(_) => {}
        }
    }
    let mut config = HubConfig::from_settings(&app.settings());
    if let Some(n) = args.connections {
        config.transfer.connections = n.max(1);
    }
    if let Some(m) = args.chunk_mib {
        config.transfer.chunk_size = m.clamp(1, 1024) << 20;
    }
    let hub = app.hub_with(config)?;
    let req = PullRequest {
        repo: args.model.clone(),
        kind: Some(if args.dataset {
            RepoKind::Dataset
        } else {
            RepoKind::Model
        }),
        revision: args.revision,
        source: args.source,
        include: args.include,
        exclude: args.exclude,
        force: args.force,
        offline: args.offline,
    };
    let bars = Arc::new(Bars::new());
    let progress: Progress = bars.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(hub.pull(&req, &progress));
    bars.finish();
    let report = result?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for f in &report.failed_sources {
            eprintln!("note: {} failed first: {}", f.source, f.error);
        }
        println!(
            "{} ({}) from {}: {} files, {} downloaded ({}), {} already cached\n{}",
            report.name,
            &report.commit[..report.commit.len().min(12)],
            report.source,
            report.files,
            report.downloaded_files,
            human_bytes(report.downloaded_bytes),
            report.cached_files,
            report.path.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// indicatif bars: one per file under way plus a total (bytes, speed, ETA).
/// Also `tuner chat`'s, when its model must be downloaded first.
pub(super) struct Bars {
    multi: MultiProgress,
    total: ProgressBar,
    files: Mutex<HashMap<String, ProgressBar>>,
}

impl Bars {
    pub(super) fn new() -> Self {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let total = multi.add(ProgressBar::new(0));
        total.set_style(
            ProgressStyle::with_template(
                "{prefix:>12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
            )
            .unwrap()
            .progress_chars("=> "),
        );
        total.set_prefix("total");
        Self {
            multi,
            total,
            files: Mutex::new(HashMap::new()),
        }
    }

    pub(super) fn finish(&self) {
        for (_, b) in self.files.lock().unwrap().drain() {
            b.finish_and_clear();
        }
        self.total.finish_and_clear();
    }
}

impl ProgressSink for Bars {
    fn resolving(&self, source: &str) {
        self.total.set_message(format!("asking {source}"));
        let _ = self.multi.println(format!("resolving with {source}"));
    }
    fn planned(&self, files: usize, bytes: u64) {
        self.total.set_length(bytes);
        let _ = self
            .multi
            .println(format!("{files} files, {} to fetch", human_bytes(bytes)));
    }
    fn file_started(&self, path: &str, size: Option<u64>, already: u64) {
        let bar = self.multi.add(ProgressBar::new(size.unwrap_or(0)));
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>12.dim} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}",
            )
            .unwrap()
            .progress_chars("=> "),
        );
        bar.set_prefix(short(path));
        bar.set_position(already);
        self.total.inc(already);
        self.files.lock().unwrap().insert(path.to_string(), bar);
    }
    fn advanced(&self, path: &str, n: u64) {
        if let Some(b) = self.files.lock().unwrap().get(path) {
            b.inc(n);
        }
        self.total.inc(n);
    }
    fn file_done(&self, path: &str) {
        if let Some(b) = self.files.lock().unwrap().remove(path) {
            b.finish_and_clear();
        }
        let _ = self.multi.println(format!("done {path}"));
    }
    fn note(&self, message: &str) {
        let _ = self.multi.println(format!("note: {message}"));
    }
}

fn short(path: &str) -> String {
    let name = path.rsplit('/').next().unwrap_or(path);
    if name.chars().count() > 12 {
        format!(
            "…{}",
            name.chars()
                .rev()
                .take(11)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<String>()
        )
    } else {
        name.to_string()
    }
}
