//! `config.json` of a dense Qwen3 model, as transformers writes it.
//!
//! Both spellings in the wild are accepted: transformers 4.x writes
//! `rope_theta` and `torch_dtype` at the top level, 5.x writes
//! `rope_parameters.rope_theta` and `dtype`.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// The fields the network needs; the rest of the file is ignored.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Qwen3Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    /// Per-head size; not always `hidden_size / num_attention_heads`
    /// (0.6B: 16 heads x 128 over a hidden size of 1024).
    #[serde(default)]
    pub head_dim: Option<usize>,
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    #[serde(default)]
    pub rope_theta: Option<f64>,
    #[serde(default)]
    pub rope_parameters: Option<RopeParameters>,
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    #[serde(default, alias = "dtype")]
    pub torch_dtype: Option<String>,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub hidden_act: Option<String>,
    #[serde(default)]
    pub model_type: Option<String>,
}

/// transformers 5.x: `"rope_parameters": {"rope_type": "default", "rope_theta": ..}`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct RopeParameters {
    #[serde(default)]
    pub rope_type: Option<String>,
    #[serde(default)]
    pub rope_theta: Option<f64>,
}

fn default_eps() -> f64 {
    1e-6
}

fn default_max_pos() -> usize {
    40960
}

impl Qwen3Config {
    /// Reads and checks `config.json` (a file, or a model folder holding one).
    pub fn from_path(path: &Path) -> Result<Self> {
        let file = if path.is_dir() {
            path.join("config.json")
        } else {
            path.to_path_buf()
        };
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading model config {}", file.display()))?;
        Self::from_json(&text).with_context(|| format!("model config {}", file.display()))
    }

    /// Parses and checks the text of a `config.json`.
    pub fn from_json(text: &str) -> Result<Self> {
        let config: Qwen3Config = serde_json::from_str(text).context("invalid config.json")?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<()> {
        if let Some(t) = &self.model_type
            && t != "qwen3"
        {
            bail!("model_type is {t:?}: only dense Qwen3 (\"qwen3\") is supported");
        }
        if self.attention_bias {
            bail!("attention_bias = true is not supported (Qwen3 has no attention bias)");
        }
        if let Some(act) = &self.hidden_act
            && act != "silu"
        {
            bail!("hidden_act {act:?} is not supported (Qwen3 uses \"silu\")");
        }
        if let Some(s) = &self.rope_scaling
            && !s.is_null()
        {
            bail!("rope_scaling is not supported: {s}");
        }
        if let Some(p) = &self.rope_parameters
            && let Some(t) = &p.rope_type
            && t != "default"
        {
            bail!("rope_parameters.rope_type {t:?} is not supported (only \"default\")");
        }
        for (key, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("head_dim", self.head_dim()),
        ] {
            if v == 0 {
                bail!("{key} must be positive");
            }
        }
        if !self
            .num_attention_heads
            .is_multiple_of(self.num_key_value_heads)
        {
            bail!(
                "num_attention_heads ({}) is not a multiple of num_key_value_heads ({})",
                self.num_attention_heads,
                self.num_key_value_heads
            );
        }
        if !self.head_dim().is_multiple_of(2) {
            bail!(
                "head_dim ({}) must be even for rotary embeddings",
                self.head_dim()
            );
        }
        Ok(())
    }

    /// Per-head size (`head_dim`, else `hidden_size / num_attention_heads`).
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// Rotary base, from either spelling; transformers' default otherwise.
    pub fn rope_theta(&self) -> f64 {
        self.rope_theta
            .or_else(|| self.rope_parameters.as_ref().and_then(|p| p.rope_theta))
            .unwrap_or(10_000.0)
    }

    /// Number of parameters the checkpoint holds (lm_head counted once when tied).
    pub fn num_parameters(&self) -> usize {
        let (h, i, d) = (self.hidden_size, self.intermediate_size, self.head_dim());
        let q = self.num_attention_heads * d;
        let kv = self.num_key_value_heads * d;
        let attn = h * q + 2 * h * kv + q * h + 2 * d;
        let mlp = 3 * h * i;
        let layer = attn + mlp + 2 * h;
        let embed = self.vocab_size * h;
        let head = if self.tie_word_embeddings { 0 } else { embed };
        embed + self.num_hidden_layers * layer + h + head
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures")
            .join(name)
    }

    #[test]
    fn published_configs_load_with_their_sizes() {
        // Published totals (model cards): 0.6B, 1.7B, 4.0B, 8.2B, 14.8B.
        for (name, billions, tied) in [
            ("Qwen3-0.6B", 0.6, true),
            ("Qwen3-1.7B", 1.7, true),
            ("Qwen3-4B", 4.0, true),
            ("Qwen3-8B", 8.2, false),
            ("Qwen3-14B", 14.8, false),
        ] {
            let c =
                Qwen3Config::from_path(&fixture(&format!("qwen3-configs/{name}.json"))).unwrap();
            assert_eq!(c.head_dim(), 128, "{name}");
            assert_eq!(c.rope_theta(), 1e6, "{name}");
            assert_eq!(c.tie_word_embeddings, tied, "{name}");
            assert_eq!(c.torch_dtype.as_deref(), Some("bfloat16"));
            let b = c.num_parameters() as f64 / 1e9;
            assert!(
                (b - billions).abs() / billions < 0.05,
                "{name}: {b:.3}B vs {billions}B"
            );
        }
    }

    #[test]
    fn transformers5_spelling_and_default_head_dim() {
        let c = Qwen3Config::from_path(&fixture("tiny-qwen3/tied")).unwrap();
        assert_eq!(c.rope_theta(), 1e6);
        assert_eq!(c.torch_dtype.as_deref(), Some("float32"));
        assert_eq!(c.head_dim(), 8);
        let j = r#"{"vocab_size":10,"hidden_size":8,"intermediate_size":4,"num_hidden_layers":1,
                    "num_attention_heads":2,"num_key_value_heads":1}"#;
        let c = Qwen3Config::from_json(j).unwrap();
        assert_eq!(c.head_dim(), 4);
        assert_eq!(c.rope_theta(), 10_000.0);
    }

    #[test]
    fn unsupported_settings_are_named() {
        let cfg = |extra: &str| {
            format!(
                r#"{{"vocab_size":10,"hidden_size":8,"intermediate_size":4,"num_hidden_layers":1,
                     "num_attention_heads":2,{extra}}}"#
            )
        };
        let err = Qwen3Config::from_json(&cfg(r#""num_key_value_heads":1,"attention_bias":true"#))
            .unwrap_err();
        assert!(format!("{err:#}").contains("attention_bias"), "{err:#}");
        let err = Qwen3Config::from_json(&cfg(r#""num_key_value_heads":3"#)).unwrap_err();
        assert!(
            format!("{err:#}").contains("not a multiple of num_key_value_heads"),
            "{err:#}"
        );
        let err = Qwen3Config::from_json(r#"{"hidden_size":8}"#).unwrap_err();
        assert!(format!("{err:#}").contains("vocab_size"), "{err:#}");
    }
}
