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

use crate::app::App;
use crate::train::config::RawConfig;
use crate::train::jobs::{JobQueue, JobRecord, JobStatus, JobUpdate, QueueOptions, StoredEvent};

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

pub fn run(app: App, args: TrainArgs) -> Result<ExitCode> {
    let mut raw = RawConfig::from_file(&args.config)?;
    for s in &args.set {
        raw.set(s)?;
    }
    if let Some(r) = &args.resume {
        raw.insert("resume_from_checkpoint", r.clone().into());
    }
    // The method plugins' settings schemas decide which of the remaining
    // keys are valid, so the config is checked once the plugins are loaded.
    let config = app.check_config(raw)?;
    let queue = app.job_queue(QueueOptions {
        adopt_queued: false,
    })?;
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
        let msg = step_summary(ev);
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

pub fn run_jobs(app: App, cmd: JobsCommand) -> Result<ExitCode> {
    let store = app.store()?;
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

/// One step in words: the loss, then the metrics the method reported
/// (`report-metric`, e.g. a DPO margin) and the eval loss, then speed,
/// learning rate and epoch. Used by the progress bar and the plain
/// per-step lines alike.
fn step_summary(ev: &crate::train::TrainEvent) -> String {
    let mut parts = Vec::new();
    if let Some(l) = ev.loss {
        parts.push(format!("loss {l:.4}"));
    }
    // By name, so the line reads the same whatever order they came in.
    let mut metrics: Vec<_> = ev.metrics.iter().collect();
    metrics.sort_by(|a, b| a.0.cmp(b.0));
    for (name, value) in metrics {
        if let Some(v) = value.as_f64() {
            parts.push(format!("{name} {}", metric_text(v)));
        }
    }
    if let Some(t) = ev.tokens_per_s {
        parts.push(format!("{t:.0} tok/s"));
    }
    if let Some(lr) = ev.lr {
        parts.push(format!("lr {lr:.2e}"));
    }
    parts.push(format!("epoch {:.2}", ev.epoch));
    parts.join(" | ")
}

/// Four significant digits, in plain notation where that stays short.
fn metric_text(v: f64) -> String {
    if v == 0.0 {
        "0.000".into()
    } else if (1e-3..1e5).contains(&v.abs()) {
        let decimals = (3 - v.abs().log10().floor() as i32).clamp(0, 6) as usize;
        format!("{v:.decimals$}")
    } else {
        format!("{v:.3e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_metrics_appear_beside_the_loss() {
        let mut metrics = serde_json::Map::new();
        metrics.insert("reward_margin".into(), json!(0.123456));
        metrics.insert("eval_loss".into(), json!(2.5));
        metrics.insert("truncated".into(), json!("3 samples"));
        let ev = crate::train::TrainEvent {
            step: 3,
            epoch: 0.5,
            loss: Some(1.25),
            lr: Some(1e-4),
            grad_norm: None,
            tokens_per_s: Some(812.4),
            memory_bytes: None,
            metrics,
        };
        assert_eq!(
            step_summary(&ev),
            "loss 1.2500 | eval_loss 2.500 | reward_margin 0.1235 | 812 tok/s | lr 1.00e-4 | epoch 0.50"
        );
        assert_eq!(metric_text(12345.678), "12346");
        assert_eq!(metric_text(1e-7), "1.000e-7");
        assert_eq!(metric_text(0.0), "0.000");
    }
}
