//! `tuner export --merge ADAPTER --out DIR`: a PEFT adapter folder merged
//! into its base model and written as a full Hugging Face model folder
//! (config, safetensors shards with index, tokenizer files).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::Args;
use serde_json::json;

use crate::app::App;
use crate::train::peft::parse_size;

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// PEFT adapter folder (`adapter_config.json`, `adapter_model.safetensors`).
    pub adapter: PathBuf,
    /// Merge the adapter into the base weights (`W + scale * B A`) and write
    /// a full model folder. Required: it is the only export there is.
    #[arg(long)]
    pub merge: bool,
    /// Base model: a folder or a cached model id (default: the adapter's
    /// `base_model_name_or_path` when that is a folder).
    #[arg(long, value_name = "DIR|ID")]
    pub base: Option<String>,
    /// Output folder (created; an existing one is updated in place).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Largest shard, e.g. `5GB`, `500MB`, `2GiB`.
    #[arg(long, default_value = "5GB", value_name = "SIZE")]
    pub max_shard_size: String,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(app: App, args: ExportArgs) -> Result<ExitCode> {
    if !args.merge {
        bail!("tuner export needs --merge (the adapter folder itself is already PEFT's format)");
    }
    let max_shard = parse_size(&args.max_shard_size)?;
    let (base, summary) =
        app.export_merged(&args.adapter, args.base.as_deref(), &args.out, max_shard)?;
    if args.json {
        println!(
            "{}",
            json!({
                "out": args.out,
                "base": base,
                "shards": summary.shards,
                "total_size": summary.total_size,
                "tensors": summary.tensors,
                "merged": summary.replaced,
                "copied": summary.copied,
            })
        );
    } else {
        println!(
            "merged {} weights of {} into {} ({} tensors, {} bytes in {} shard{})",
            summary.replaced,
            base.display(),
            args.out.display(),
            summary.tensors,
            summary.total_size,
            summary.shards.len(),
            if summary.shards.len() == 1 { "" } else { "s" }
        );
    }
    Ok(ExitCode::SUCCESS)
}
