//! `tuner data ...`: inspect, validate, stats, convert, add, list, rm.
//!
//! FILE arguments go through the same loader as stored datasets (decoding,
//! format detection, the format plugins). Where a command takes a dataset,
//! it accepts a file path or the name of a stored dataset, with an optional
//! `#N` sample count (`alpaca_zh#500`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};
use clap::{Args, Subcommand};
use serde::Serialize;

use crate::app::{App, StatsRequest, TrainingRender};
use crate::data::load::{LoadOptions, LoadReport};
use crate::data::registry::REGISTRY_FILE;
use crate::data::spec;
use crate::data::stats::DataStats;
use crate::sample::Sample;

#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Show a file's format, layout, encoding, counts and first samples.
    Inspect {
        /// A file, or a LLaMA-Factory registry entry (`DIR:NAME`) whose
        /// file_name is a file (read with the entry's layout and columns).
        file: String,
        /// Samples to show.
        #[arg(short = 'n', long, default_value_t = 3)]
        samples: usize,
        /// Model folder or cached model id (tokenizer.json and
        /// tokenizer_config.json with the chat template): also show each
        /// sample as the model sees it, trained text in [[ ]].
        #[arg(long, value_name = "DIR|ID")]
        tokenizer: Option<String>,
        #[command(flatten)]
        render: RenderArgs,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// Check every record of a file; exit status 1 when any is rejected.
    Validate {
        /// A file, or a LLaMA-Factory registry entry (`DIR:NAME`) whose
        /// file_name is a file.
        file: String,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// Counts and lengths of a file or stored dataset.
    Stats {
        /// File, stored dataset name, LLaMA-Factory registry entry
        /// (`DIR:NAME`), hub dataset (`org/name`), or any of them with `#N`.
        dataset: String,
        /// Model folder or cached model id with tokenizer.json and
        /// tokenizer_config.json (chat template): adds token lengths of the
        /// rendered samples.
        #[arg(long, value_name = "DIR|ID")]
        tokenizer: Option<String>,
        /// Count samples longer than this (tokens with --tokenizer, default
        /// 4096; characters without).
        #[arg(long)]
        max_seq_len: Option<u64>,
        #[command(flatten)]
        render: RenderArgs,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// Export normalised samples as OpenAI-messages JSON Lines; several
    /// specs (`FILE#N`, `NAME#N`) are sampled and mixed.
    Convert {
        #[arg(required = true)]
        datasets: Vec<String>,
        /// Output file.
        #[arg(short, long)]
        output: PathBuf,
        /// Seed for sampling, mixing and splitting.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Fraction of samples written to --val-output instead.
        #[arg(long, default_value_t = 0.0)]
        val_ratio: f64,
        /// Validation output (required with --val-ratio).
        #[arg(long)]
        val_output: Option<PathBuf>,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// Load a file and store it as a dataset.
    Add {
        file: PathBuf,
        /// Dataset name: letters, digits, `.`, `_`, `-`.
        #[arg(long)]
        name: String,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// List stored datasets.
    List(JsonOnly),
    /// List the datasets of a LLaMA-Factory data folder (its
    /// `dataset_info.json`); use one as `DIR:NAME` wherever a dataset goes.
    ListRegistry {
        /// The folder holding dataset_info.json.
        dir: PathBuf,
        #[command(flatten)]
        json: JsonOnly,
    },
    /// Remove a stored dataset.
    Rm {
        name: String,
        #[command(flatten)]
        json: JsonOnly,
    },
}

#[derive(Debug, Args)]
pub struct JsonOnly {
    /// Print JSON (stable shape, see docs/cli.md).
    #[arg(long)]
    pub json: bool,
}

/// The training settings that change how samples render (with
/// --tokenizer): the same keys as the training config, with its defaults, so
/// the rendered text and token counts are what training trains.
#[derive(Debug, Args)]
pub struct RenderArgs {
    /// Render with Qwen3 thinking on, as training with `enable_thinking =
    /// true` does (default off, as in training: the empty think block of
    /// the last turn is then prompt, not trained).
    #[arg(long)]
    pub enable_thinking: bool,
    /// System prompt for chat samples without one, as the training config's
    /// `system`.
    #[arg(long, value_name = "TEXT")]
    pub system: Option<String>,
}

impl RenderArgs {
    fn training(&self) -> TrainingRender {
        TrainingRender {
            enable_thinking: self.enable_thinking,
            system: self.system.clone(),
        }
    }
}

/// Options shared by the commands that read files.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Format plugin to use instead of detecting one (jsonl, json, csv, text).
    #[arg(long)]
    pub format: Option<String>,
    /// Record layout instead of detecting it (alpaca, sharegpt, openai,
    /// preference, unpaired, prompt, prompt-completion, text).
    #[arg(long)]
    pub layout: Option<String>,
    /// Column mapping LAYOUT_FIELD=FILE_FIELD, e.g. `output=response`. Repeatable.
    #[arg(long = "column", value_name = "FIELD=NAME")]
    pub columns: Vec<String>,
    /// Format setting KEY=VALUE, e.g. `delimiter=;` or `split=paragraph`. Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub settings: Vec<String>,
    /// Fail on any rejected record (nothing is stored).
    #[arg(long)]
    pub strict: bool,
    /// Print JSON (stable shape, see docs/cli.md).
    #[arg(long)]
    pub json: bool,
}

fn pairs(items: &[String], what: &str) -> Result<Vec<(String, String)>> {
    items
        .iter()
        .map(|item| {
            item.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.to_string()))
                .with_context(|| format!("{what} `{item}`: expected KEY=VALUE"))
        })
        .collect()
}

impl LoadArgs {
    fn options(&self) -> Result<LoadOptions> {
        Ok(LoadOptions {
            format: self.format.clone(),
            layout: self.layout.clone(),
            columns: pairs(&self.columns, "--column")?,
            settings: pairs(&self.settings, "--set")?,
            strict: self.strict,
            ..LoadOptions::default()
        })
    }
}

/// `tuner data inspect --json`.
#[derive(Serialize)]
struct Inspection<'a> {
    #[serde(flatten)]
    report: &'a LoadReport,
    layout: String,
    first_samples: Vec<Sample>,
    /// With --tokenizer: each sample rendered, with its trained spans.
    #[serde(skip_serializing_if = "Option::is_none")]
    rendered: Option<Vec<crate::text::RenderPreview>>,
}

pub fn run(app: App, cmd: DataCommand) -> Result<ExitCode> {
    // Stops nothing: the CLI has no client that goes away mid-request.
    let never = std::sync::atomic::AtomicBool::new(false);
    match cmd {
        DataCommand::Inspect {
            file,
            samples,
            tokenizer,
            render,
            load,
        } => {
            let (path, options) = app.data()?.single_file(&file, &load.options()?)?;
            let (report, first) = app.inspect_file(&path, &display(&path), &options, samples)?;
            let rendered = match &tokenizer {
                None => None,
                Some(dir) => {
                    let (_, previews) =
                        app.render_previews(&first, dir, &render.training(), &never)?;
                    Some(previews)
                }
            };
            let view = Inspection {
                layout: report.main_layout(),
                report: &report,
                first_samples: first,
                rendered,
            };
            if load.json {
                print_json(&view)?;
            } else {
                print_report(&report);
                for (i, s) in view.first_samples.iter().enumerate() {
                    println!("\n--- sample {} ({}) ---", i + 1, s.kind());
                    print_sample(s);
                    if let Some(preview) = view.rendered.as_ref().and_then(|r| r.get(i)) {
                        for seq in &preview.sequences {
                            println!("--- rendered {} (trained text in [[ ]]) ---", seq.label);
                            println!("{}", seq.marked("[[", "]]"));
                        }
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        DataCommand::Validate { file, load } => {
            let (path, options) = app.data()?.single_file(&file, &load.options()?)?;
            let report = app.validate_file(&path, &display(&path), &options)?;
            if load.json {
                print_json(&report)?;
            } else {
                print_report(&report);
            }
            Ok(if report.rejected == 0 && report.samples > 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        DataCommand::Stats {
            dataset,
            tokenizer,
            max_seq_len,
            render,
            load,
        } => {
            let samples = app.data()?.resolve(&dataset, &load.options()?, 42)?;
            let request = StatsRequest {
                model: tokenizer,
                max_seq_len,
                render: render.training(),
            };
            let stats = app.dataset_stats(&samples, &request, &never)?;
            if load.json {
                print_json(&stats)?;
            } else {
                print_stats(&stats);
            }
            Ok(ExitCode::SUCCESS)
        }
        DataCommand::Convert {
            datasets,
            output,
            seed,
            val_ratio,
            val_output,
            load,
        } => {
            let options = load.options()?;
            if val_ratio > 0.0 && val_output.is_none() {
                bail!("--val-ratio needs --val-output FILE for the validation samples");
            }
            let all = app.data()?.resolve_all(&datasets, &options, seed)?;
            let (train, val) = spec::split(all, val_ratio, seed);
            write_openai(&output, &train)?;
            if let Some(path) = &val_output {
                write_openai(path, &val)?;
            }
            let summary = serde_json::json!({
                "output": output, "samples": train.len(),
                "val_output": val_output, "val_samples": val.len(),
            });
            if load.json {
                print_json(&summary)?;
            } else {
                println!("wrote {} samples to {}", train.len(), output.display());
                if let Some(path) = &val_output {
                    println!(
                        "wrote {} validation samples to {}",
                        val.len(),
                        path.display()
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        DataCommand::Add { file, name, load } => {
            let host = app.plugins()?;
            let (record, report) =
                app.datasets()?
                    .add(&host, &file, &display(&file), &name, &load.options()?)?;
            if load.json {
                print_json(&serde_json::json!({"dataset": record, "report": report}))?;
            } else {
                print_report(&report);
                println!("stored as `{}` ({} samples)", record.name, record.samples);
            }
            Ok(ExitCode::SUCCESS)
        }
        DataCommand::List(json) => {
            let list = app.datasets()?.list()?;
            if json.json {
                print_json(&list)?;
            } else if list.is_empty() {
                println!("no datasets; add one with `tuner data add FILE --name NAME`");
            } else {
                println!(
                    "{:<24} {:>9} {:<12} {:<8} {:<20}",
                    "NAME", "SAMPLES", "LAYOUT", "FORMAT", "CREATED"
                );
                for d in list {
                    println!(
                        "{:<24} {:>9} {:<12} {:<8} {:<20}",
                        d.name, d.samples, d.layout, d.format, d.created
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        DataCommand::ListRegistry { dir, json } => {
            let entries = app.data()?.registry(&dir)?;
            if json.json {
                let view: Vec<serde_json::Value> = entries
                    .iter()
                    .map(|(name, entry)| match entry {
                        Ok(e) => serde_json::to_value(e).unwrap_or_default(),
                        Err(e) => serde_json::json!({"name": name, "error": format!("{e:#}")}),
                    })
                    .collect();
                print_json(&view)?;
            } else if entries.is_empty() {
                println!("{} lists no datasets", dir.join(REGISTRY_FILE).display());
            } else {
                println!("{:<28} {:<10} {:<11} SOURCE", "NAME", "FORMAT", "LAYOUT");
                for (name, entry) in &entries {
                    match entry {
                        Ok(e) => println!(
                            "{:<28} {:<10} {:<11} {}",
                            name,
                            e.formatting,
                            e.layout,
                            e.source_text()
                        ),
                        Err(e) => println!("{name:<28} error: {e:#}"),
                    }
                }
                println!(
                    "\nuse one as `{}:NAME` in `tuner data`, a training config or the API",
                    dir.display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        DataCommand::Rm { name, json } => {
            let removed = app.datasets()?.remove(&name)?;
            if json.json {
                print_json(&removed)?;
            } else {
                println!("removed `{}` ({} samples)", removed.name, removed.samples);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

fn write_openai(path: &Path, samples: &[Sample]) -> Result<()> {
    let mut text = Vec::new();
    for s in samples {
        serde_json::to_writer(&mut text, &s.to_openai())?;
        text.push(b'\n');
    }
    crate::fsio::write_atomically(path, &text)
        .with_context(|| format!("writing {}", path.display()))
}

fn print_json(value: &impl Serialize) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

fn counts(map: &std::collections::BTreeMap<String, u64>) -> String {
    map.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn print_report(r: &LoadReport) {
    println!("file:     {}", r.file);
    println!("format:   {}", r.format);
    println!("encoding: {}", r.encoding.name());
    println!("layout:   {} ({})", r.main_layout(), counts(&r.layouts));
    println!("samples:  {} ({})", r.samples, counts(&r.kinds));
    for (field, n) in &r.ignored_fields {
        println!(
            "ignored:  field `{field}` in {n} record{} (no part of a sample comes from it)",
            if *n == 1 { "" } else { "s" }
        );
    }
    println!("rejected: {}", r.rejected);
    for e in &r.errors {
        println!("  {e}");
    }
    if r.rejected > r.errors.len() as u64 {
        println!("  ... and {} more", r.rejected - r.errors.len() as u64);
    }
}

fn print_sample(s: &Sample) {
    let turns = |label: &str, turns: &[crate::sample::Message]| {
        for t in turns {
            println!("[{label}{}] {}", t.role, t.content);
        }
    };
    match s {
        Sample::Chat { messages, tools } => {
            if let Some(tools) = tools {
                println!("[tools] {tools}");
            }
            turns("", messages);
        }
        Sample::Preference {
            prompt,
            chosen,
            rejected,
        } => {
            turns("", prompt);
            turns("chosen ", chosen);
            turns("rejected ", rejected);
        }
        Sample::Unpaired {
            prompt,
            completion,
            label,
        } => {
            turns("", prompt);
            let label = if *label { "desirable " } else { "undesirable " };
            turns(label, completion);
        }
        Sample::Prompt { prompt, answer } => {
            turns("", prompt);
            if let Some(a) = answer {
                println!("[answer] {a}");
            }
        }
        Sample::Text { text } => println!("{text}"),
    }
}

fn print_stats(s: &DataStats) {
    println!("samples: {} ({})", s.samples, counts(&s.kinds));
    println!("roles:   {}", counts(&s.roles));
    let row = |label: &str, sum: &Option<crate::data::stats::Summary>| {
        if let Some(x) = sum {
            println!(
                "{label:<10} min {:>7}  mean {:>9.1}  p50 {:>7}  p95 {:>7}  max {:>7}",
                x.min, x.mean, x.p50, x.p95, x.max
            );
        }
    };
    row("turns", &s.turns);
    println!("lengths in {}:", s.unit);
    row("prompt", &s.prompt_length);
    row("response", &s.response_length);
    row("total", &s.total_length);
    if let (Some(max), Some(over)) = (s.max_seq_len, s.over_max_seq_len) {
        println!("over max_seq_len {max}: {over}");
    }
    if let Some(t) = &s.tokens {
        println!("lengths in tokens (rendered with the chat template):");
        let row = |label: &str, d: &Option<crate::text::stats::Distribution>| {
            if let Some(x) = d {
                println!(
                    "{label:<10} min {:>7}  mean {:>9.1}  p50 {:>7}  p95 {:>7}  max {:>7}",
                    x.min, x.mean, x.p50, x.p95, x.max
                );
            }
        };
        row("prompt", &t.prompt_tokens);
        row("response", &t.response_tokens);
        row("total", &t.total_tokens);
        println!("over max_seq_len {}: {}", t.max_seq_len, t.over_max_seq_len);
        if t.text_blocks > 0 {
            println!(
                "text samples: {} tokens, cut into {} training blocks of {} tokens",
                t.text_tokens, t.text_blocks, t.max_seq_len
            );
        }
        if t.failed > 0 {
            println!("failed to render: {}", t.failed);
            for e in &t.errors {
                println!("  sample {}: {}", e.index, e.message);
            }
        }
    }
}
