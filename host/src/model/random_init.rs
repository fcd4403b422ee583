//! Tiny random Qwen3 checkpoints: a real `config.json` and `model.safetensors`
//! with the tensor names and shapes transformers writes, initialised like
//! transformers does (normal(0, initializer_range) for matrices, ones for
//! norms).
//!
//! No weights can be downloaded where tests and demos run, so they make their
//! own model folders; the tokenizer files are copied from a folder that has
//! them (the bundled Qwen3 tokenizer fixture, or a real model).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Normal};
use safetensors::{Dtype, View};

/// Shape of a random model. Vocabulary size comes from the tokenizer.
#[derive(Debug, Clone)]
pub struct TinyShape {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub tie_word_embeddings: bool,
    /// Standard deviation of the embedding (and lm_head) entries. transformers
    /// uses `initializer_range` (0.02) everywhere, but in a model this narrow
    /// that caps every logit near ±1 (the final norm fixes the hidden state's
    /// size), so a frozen tied head could never make a confident prediction
    /// and adapters would have nothing to learn with.
    pub embedding_std: f32,
}

impl Default for TinyShape {
    /// Small enough to train for a minute on two CPU cores.
    fn default() -> Self {
        Self {
            hidden_size: 64,
            intermediate_size: 128,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            head_dim: 16,
            tie_word_embeddings: true,
            embedding_std: 0.5,
        }
    }
}

/// The `config.json` of a random model, in the shape transformers writes for Qwen3.
pub fn config_json(shape: &TinyShape, vocab_size: usize) -> serde_json::Value {
    serde_json::json!({
        "architectures": ["Qwen3ForCausalLM"],
        "model_type": "qwen3",
        "attention_bias": false,
        "attention_dropout": 0.0,
        "bos_token_id": 151643,
        "eos_token_id": 151645,
        "head_dim": shape.head_dim,
        "hidden_act": "silu",
        "hidden_size": shape.hidden_size,
        "initializer_range": 0.02,
        "intermediate_size": shape.intermediate_size,
        "max_position_embeddings": 40960,
        "max_window_layers": shape.num_hidden_layers,
        "num_attention_heads": shape.num_attention_heads,
        "num_hidden_layers": shape.num_hidden_layers,
        "num_key_value_heads": shape.num_key_value_heads,
        "rms_norm_eps": 1e-6,
        "rope_scaling": null,
        "rope_theta": 1000000.0,
        "sliding_window": null,
        "tie_word_embeddings": shape.tie_word_embeddings,
        "torch_dtype": "float32",
        "use_cache": true,
        "use_sliding_window": false,
        "vocab_size": vocab_size,
    })
}

/// Tensor names and shapes of a Qwen3 checkpoint, as transformers names them.
pub fn tensor_shapes(shape: &TinyShape, vocab: usize) -> BTreeMap<String, Vec<usize>> {
    let (h, i, hd) = (shape.hidden_size, shape.intermediate_size, shape.head_dim);
    let (q, kv) = (
        shape.num_attention_heads * hd,
        shape.num_key_value_heads * hd,
    );
    let mut out = BTreeMap::new();
    out.insert("model.embed_tokens.weight".to_string(), vec![vocab, h]);
    out.insert("model.norm.weight".to_string(), vec![h]);
    if !shape.tie_word_embeddings {
        out.insert("lm_head.weight".to_string(), vec![vocab, h]);
    }
    for l in 0..shape.num_hidden_layers {
        let p = format!("model.layers.{l}");
        for (name, dims) in [
            ("input_layernorm", vec![h]),
            ("post_attention_layernorm", vec![h]),
            ("self_attn.q_proj", vec![q, h]),
            ("self_attn.k_proj", vec![kv, h]),
            ("self_attn.v_proj", vec![kv, h]),
            ("self_attn.o_proj", vec![h, q]),
            ("self_attn.q_norm", vec![hd]),
            ("self_attn.k_norm", vec![hd]),
            ("mlp.gate_proj", vec![i, h]),
            ("mlp.up_proj", vec![i, h]),
            ("mlp.down_proj", vec![h, i]),
        ] {
            out.insert(format!("{p}.{name}.weight"), dims);
        }
    }
    out
}

/// One f32 tensor ready for `safetensors::serialize`.
struct F32Tensor {
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl View for &F32Tensor {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// Writes a random Qwen3 model folder at `out`: config.json,
/// generation_config.json, model.safetensors (f32) and the tokenizer files
/// found in `tokenizer_dir`. The vocabulary size is the tokenizer's.
pub fn write_random_model(
    out: &Path,
    tokenizer_dir: &Path,
    shape: &TinyShape,
    seed: u64,
) -> Result<()> {
    let tokenizer_json = tokenizer_dir.join("tokenizer.json");
    if !tokenizer_json.is_file() {
        bail!(
            "{} has no tokenizer.json (a random model takes its vocabulary from a real tokenizer)",
            tokenizer_dir.display()
        );
    }
    let tokenizer = crate::text::Tokenizer::from_file(&tokenizer_json)
        .with_context(|| format!("reading {}", tokenizer_json.display()))?;
    let vocab = tokenizer.vocab_size();
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;

    let mut rng = StdRng::seed_from_u64(seed);
    let normal = Normal::new(0.0f32, 0.02).expect("valid normal");
    let embedding = Normal::new(0.0f32, shape.embedding_std.max(1e-6)).expect("valid normal");
    let tensors: BTreeMap<String, F32Tensor> = tensor_shapes(shape, vocab)
        .into_iter()
        .map(|(name, dims)| {
            let n: usize = dims.iter().product();
            let is_norm = dims.len() == 1;
            let is_vocab = name == "model.embed_tokens.weight" || name == "lm_head.weight";
            let bytes = (0..n)
                .flat_map(|_| {
                    let v = if is_norm {
                        1.0
                    } else if is_vocab {
                        embedding.sample(&mut rng)
                    } else {
                        normal.sample(&mut rng)
                    };
                    v.to_le_bytes()
                })
                .collect();
            (name, F32Tensor { shape: dims, bytes })
        })
        .collect();
    let mut metadata = std::collections::HashMap::new();
    metadata.insert("format".to_string(), "pt".to_string());
    safetensors::serialize_to_file(
        tensors.iter().map(|(k, v)| (k.clone(), v)),
        Some(metadata),
        &out.join("model.safetensors"),
    )
    .context("writing model.safetensors")?;

    // Sorted as transformers writes them (`sort_keys=True`).
    let mut config = config_json(shape, vocab);
    crate::fsio::sort_keys_deeply(&mut config);
    std::fs::write(out.join("config.json"), serde_json::to_vec_pretty(&config)?)?;
    let mut generation = serde_json::json!({
        "bos_token_id": 151643, "eos_token_id": [151645, 151643], "pad_token_id": 151643,
        "do_sample": true, "temperature": 0.6, "top_p": 0.95, "top_k": 20,
    });
    crate::fsio::sort_keys_deeply(&mut generation);
    std::fs::write(
        out.join("generation_config.json"),
        serde_json::to_vec_pretty(&generation)?,
    )?;
    // The tokenizer files (config and generation config are this model's
    // own, written above).
    for name in crate::text::TOKENIZER_FILES {
        let src = tokenizer_dir.join(name);
        if src.is_file() {
            std::fs::copy(&src, out.join(name))
                .with_context(|| format!("copying {}", src.display()))?;
        }
    }
    Ok(())
}
