//! `tuner init-model DIR`: a tiny random Qwen3 folder for demos and tests.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use crate::app::App;
use crate::model::random_init::{TinyShape, write_random_model};

#[derive(Debug, Args)]
pub struct InitModelArgs {
    /// Folder to write (config.json, model.safetensors, tokenizer files).
    pub out: PathBuf,
    /// Folder with tokenizer.json and tokenizer_config.json to copy (for
    /// example a downloaded Qwen3, or tests/fixtures/qwen3 in the repository).
    #[arg(long, value_name = "DIR")]
    pub tokenizer: PathBuf,
    #[arg(long, default_value_t = 64)]
    pub hidden_size: usize,
    #[arg(long, default_value_t = 128)]
    pub intermediate_size: usize,
    #[arg(long, default_value_t = 2)]
    pub layers: usize,
    #[arg(long, default_value_t = 4)]
    pub heads: usize,
    #[arg(long, default_value_t = 2)]
    pub kv_heads: usize,
    #[arg(long, default_value_t = 16)]
    pub head_dim: usize,
    /// Give the model its own lm_head instead of tying it to the embeddings.
    #[arg(long)]
    pub untied: bool,
    /// Standard deviation of the embedding entries (see `TinyShape`).
    #[arg(long, default_value_t = 0.5)]
    pub embedding_std: f32,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

pub fn run(_app: App, args: InitModelArgs) -> Result<ExitCode> {
    let shape = TinyShape {
        hidden_size: args.hidden_size,
        intermediate_size: args.intermediate_size,
        num_hidden_layers: args.layers,
        num_attention_heads: args.heads,
        num_key_value_heads: args.kv_heads,
        head_dim: args.head_dim,
        tie_word_embeddings: !args.untied,
        embedding_std: args.embedding_std,
    };
    write_random_model(&args.out, &args.tokenizer, &shape, args.seed)?;
    println!("random Qwen3 model written to {}", args.out.display());
    Ok(ExitCode::SUCCESS)
}
