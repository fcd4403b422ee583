//! `tuner train CONFIG`: one training job, run in this process, with a
//! progress bar on stderr (or JSON lines on stdout); and `tuner jobs
//! list|show` over the job records that `tuner train` and `tuner serve`
//! share.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use super::Context;
use crate::plugins::Kind;
use crate::store::Store;
use crate::train::config::RawConfig;
use crate::train::jobs::{JobQueue, JobRecord, JobStatus, JobUpdate, QueueOptions, StoredEvent};
use crate::train::{TrainerEnv, default_trainer};

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Training config: `.toml`, `.yaml`/`.yml` or `.json` (keys: docs/training.md).
    pub config: PathBuf,
    /// Continue from a checkpoint folder, or `latest` (the newest in output_dir).
    #[arg(long, value_name = "DIR|latest")]
    pub resume: Option<String>,
    /// Override a config key (repeatable), e.g. `--set learning_rate=2e-4`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Print the job's events as JSON lines on stdout instead of a progress bar.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Training jobs (from `tuner train` and the API), newest first.
    List {
        #[arg(long)]
        json: bool,
    },
    /// One job: status, progress, checkpoint, error and config.
    Show {
        id: i64,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(ctx: Context, args: TrainArgs) -> Result<ExitCode> {
    let mut raw = RawConfig::from_file(&args.config)?;
    for s in &args.set {
        raw.set(s)?;
    }
    if let Some(r) = &args.resume {
        raw.insert("resume_from_checkpoint", r.clone().into());
    }
    let config = raw.finish()?;
    let host = Arc::new(ctx.start_plugins()?);
    let methods: Vec<String> = host
        .list()
        .iter()
        .filter(|p| p.kind() == Kind::Method)
        .map(|p| p.name().to_string())
        .collect();
    let method_from_set = args
        .set
        .iter()
        .any(|s| s.trim_start().starts_with("training_method"));
    config.check_method(&methods).map_err(|e| {
        let origin = if method_from_set {
            "--set".to_string()
        } else {
            args.config.display().to_string()
        };
        anyhow::anyhow!("{origin}: {e}")
    })?;
    let store = Arc::new(Store::open(&ctx.settings.database)?);
    let env = TrainerEnv {
        host,
        store: store.clone(),
        settings: ctx.settings.clone(),
    };
    let trainer = default_trainer(&env)?;
    let queue = JobQueue::open(
        store,
        Ok(trainer),
        QueueOptions {
            adopt_queued: false,
        },
    )?;
    let cwd = std::env::current_dir().context("reading the current folder")?;
    let job = queue.submit(config, &cwd)?;
    stop_on_ctrl_c(queue.clone(), job.id, args.json);
    let (record, history, rx) = queue.subscribe(job.id, 0)?;
    let mut view = View::new(args.json, &record);
    view.status(&record);
    for e in &history {
        view.step(e);
    }
    let last = match rx {
        None => record,
        Some(mut rx) => loop {
            match rx.blocking_recv() {
                Ok(JobUpdate::Event(e)) => view.step(&e),
                Ok(JobUpdate::Status(r)) => view.status(&r),
                Ok(JobUpdate::Log(m)) => view.log(&m),
                Ok(JobUpdate::Finished(r)) => break *r,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    for e in queue.events(job.id, view.last_seq)? {
                        view.step(&e);
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                    break queue.get(job.id)?;
                }
            }
        },
    };
    view.end(&last)
}

/// The first Ctrl-C stops the job at its next step (a checkpoint-friendly
/// stop); a second one ends the process.
fn stop_on_ctrl_c(queue: Arc<JobQueue>, id: i64, quiet: bool) {
    let spawned = std::thread::Builder::new()
        .name("ctrl-c".into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if tokio::signal::ctrl_c().await.is_err() {
                    return;
                }
                if !quiet {
                    eprintln!("\nstopping after the current step (Ctrl-C again to quit now)");
                }
                let _ = queue.stop(id);
                let _ = tokio::signal::ctrl_c().await;
                std::process::exit(130);
            });
        });
    if let Err(e) = spawned {
        tracing::warn!("Ctrl-C will end the process without stopping the job cleanly: {e}");
    }
}

/// How a run is shown: a bar on a terminal, plain lines on other stderr,
/// or JSON lines on stdout.
struct View {
    json: bool,
    bar: Option<ProgressBar>,
    last_seq: u64,
}

impl View {
    fn new(json: bool, record: &JobRecord) -> Self {
        let bar = (!json && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::with_draw_target(
                Some(record.total_steps.unwrap_or(0)),
                ProgressDrawTarget::stderr(),
            );
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix} [{bar:30}] {pos}/{len} steps  {msg}  {elapsed} ETA {eta}",
                )
                .unwrap()
                .progress_chars("=> "),
            );
            bar.set_prefix(format!("job {}", record.id));
            bar
        });
        if !json {
            eprintln!(
                "job {} ({}): {} on {}, output {}",
                record.id,
                record.name,
                record.config.training_method,
                record.device,
                record.output_dir
            );
        }
        Self {
            json,
            bar,
            last_seq: 0,
        }
    }

    fn line(&self, value: serde_json::Value) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{value}");
        let _ = out.flush();
    }

    fn status(&mut self, r: &JobRecord) {
        if self.json {
            self.line(json!({"event": "status", "job": r}));
        } else if let (Some(bar), Some(total)) = (&self.bar, r.total_steps) {
            bar.set_length(total);
        }
    }

    fn step(&mut self, e: &StoredEvent) {
        if e.seq <= self.last_seq {
            return;
        }
        self.last_seq = e.seq;
        if self.json {
            let mut v = serde_json::to_value(e).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.insert("event".into(), "step".into());
            }
            self.line(v);
            return;
        }
        let ev = &e.event;
        let mut parts = Vec::new();
        if let Some(l) = ev.loss {
            parts.push(format!("loss {l:.4}"));
        }
        if let Some(t) = ev.tokens_per_s {
            parts.push(format!("{t:.0} tok/s"));
        }
        if let Some(lr) = ev.lr {
            parts.push(format!("lr {lr:.2e}"));
        }
        parts.push(format!("epoch {:.2}", ev.epoch));
        let msg = parts.join(" | ");
        match &self.bar {
            Some(bar) => {
                bar.set_position(ev.step);
                bar.set_message(msg);
            }
            None => eprintln!("step {}: {msg}", ev.step),
        }
    }

    fn log(&self, message: &str) {
        if self.json {
            self.line(json!({"event": "log", "message": message}));
        } else if let Some(bar) = &self.bar {
            bar.println(message);
        } else {
            eprintln!("{message}");
        }
    }

    fn end(self, r: &JobRecord) -> Result<ExitCode> {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        if self.json {
            self.line(json!({"event": "end", "job": r}));
        }
        match r.status {
            JobStatus::Completed => {
                if !self.json {
                    println!(
                        "job {} completed: {} steps{}; output in {}",
                        r.id,
                        r.step,
                        r.loss
                            .map(|l| format!(", final loss {l:.4}"))
                            .unwrap_or_default(),
                        r.output_dir
                    );
                }
                Ok(ExitCode::SUCCESS)
            }
            JobStatus::Stopped => {
                if !self.json {
                    let resume = match &r.last_checkpoint {
                        Some(c) => format!("; resume with --resume {c}"),
                        None => String::new(),
                    };
                    eprintln!("job {} stopped at step {}{resume}", r.id, r.step);
                }
                Ok(ExitCode::from(130))
            }
            _ => bail!(
                "training job {} {}: {}",
                r.id,
                r.status.as_str(),
                r.error.as_deref().unwrap_or("no reason recorded")
            ),
        }
    }
}

pub fn run_jobs(ctx: Context, cmd: JobsCommand) -> Result<ExitCode> {
    let store = Arc::new(Store::open(&ctx.settings.database)?);
    // No trainer: this only reads (and marks jobs of dead processes interrupted).
    let queue = JobQueue::open(
        store,
        Err("`tuner jobs` does not run jobs".into()),
        QueueOptions {
            adopt_queued: false,
        },
    )?;
    match cmd {
        JobsCommand::List { json } => {
            let jobs = queue.list()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&json!({"jobs": jobs}))?);
            } else if jobs.is_empty() {
                println!("no training jobs");
            } else {
                println!(
                    "{:>5}  {:<11}  {:>13}  {:>9}  {:<24}  NAME",
                    "ID", "STATUS", "STEP", "LOSS", "CREATED"
                );
                for j in jobs {
                    let steps = match j.total_steps {
                        Some(t) => format!("{}/{t}", j.step),
                        None => j.step.to_string(),
                    };
                    let loss = j.loss.map(|l| format!("{l:.4}")).unwrap_or("-".into());
                    println!(
                        "{:>5}  {:<11}  {:>13}  {:>9}  {:<24}  {}",
                        j.id,
                        j.status.as_str(),
                        steps,
                        loss,
                        j.created_at,
                        j.name
                    );
                }
            }
        }
        JobsCommand::Show { id, json } => {
            let j = queue.get(id)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&j)?);
            } else {
                println!("job {} ({}): {}", j.id, j.name, j.status.as_str());
                println!("  device       {}", j.device);
                println!("  output       {}", j.output_dir);
                println!(
                    "  step         {}{}",
                    j.step,
                    j.total_steps
                        .map(|t| format!(" of {t}"))
                        .unwrap_or_default()
                );
                if let Some(l) = j.loss {
                    println!("  loss         {l:.4}");
                }
                println!("  created      {}", j.created_at);
                if let Some(t) = &j.started_at {
                    println!("  started      {t}");
                }
                if let Some(t) = &j.finished_at {
                    println!("  finished     {t}");
                }
                if let Some(c) = &j.last_checkpoint {
                    println!("  checkpoint   {c}");
                }
                if let Some(e) = &j.error {
                    println!("  error        {e}");
                }
                println!("  config       {}", serde_json::to_string(&j.config)?);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
