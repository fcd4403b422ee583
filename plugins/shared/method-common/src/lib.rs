//! What the bundled method plugins (`sft`, `lora`, `qlora`) share.
//!
//! The host hands `configure` the whole training configuration as a JSON
//! object (every key of the job, including keys for other methods). A method
//! reads the keys it uses, ignores the rest, and names the first bad value.
//! A `null` value means "not set" (the host may serialise unset options so).

use serde_json::{Map, Value};
use tuner_sdk::method::*;

/// LoRA defaults. `lora_alpha` follows ms-swift (32, independent of the
/// rank) rather than PEFT's 8, so configs written for ms-swift train the same.
pub const DEFAULT_RANK: u32 = 8;
pub const DEFAULT_ALPHA: f32 = 32.0;
pub const DEFAULT_DROPOUT: f32 = 0.05;
pub const ALL_LINEAR: &str = "all-linear";
/// Ranks above this are refused as a typo rather than allocated.
pub const MAX_RANK: u64 = 4096;

/// The job configuration object.
pub struct Config(Map<String, Value>);

impl Config {
    /// Parses the JSON text `configure` receives.
    pub fn parse(text: &str) -> Result<Config, PluginError> {
        match serde_json::from_str(text) {
            Ok(Value::Object(map)) => Ok(Config(map)),
            Ok(_) => Err(PluginError::msg("configuration must be a JSON object")),
            Err(e) => Err(PluginError::msg(format!("configuration is not JSON: {e}"))),
        }
    }

    /// The value of `key`, `None` when absent or `null`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }

    pub fn bool(&self, key: &str, default: bool) -> Result<bool, PluginError> {
        match self.get(key) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(PluginError::field(
                key,
                format!("expected true or false, found {v}"),
            )),
        }
    }

    /// A whole number in `min ..= max`.
    pub fn uint(&self, key: &str, default: u64, min: u64, max: u64) -> Result<u64, PluginError> {
        let Some(v) = self.get(key) else {
            return Ok(default);
        };
        let n = v
            .as_u64()
            .or_else(|| {
                v.as_f64()
                    .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                    .map(|f| f as u64)
            })
            .ok_or_else(|| {
                PluginError::field(key, format!("expected a whole number, found {v}"))
            })?;
        if n < min || n > max {
            return Err(PluginError::field(
                key,
                format!("must be between {min} and {max}, found {n}"),
            ));
        }
        Ok(n)
    }

    /// A finite number.
    pub fn number(&self, key: &str, default: f64) -> Result<f64, PluginError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .filter(|f| f.is_finite())
                .ok_or_else(|| PluginError::field(key, format!("expected a number, found {v}"))),
        }
    }

    /// A list of names, given as a JSON list of strings or as one string
    /// (comma- or space-separated, as on a command line).
    pub fn names(&self, key: &str) -> Result<Option<Vec<String>>, PluginError> {
        let names: Vec<String> = match self.get(key) {
            None => return Ok(None),
            Some(Value::String(s)) => s
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    Value::String(s) => Ok(s.trim().to_string()),
                    other => Err(PluginError::field(
                        key,
                        format!("expected names (strings), found {other}"),
                    )),
                })
                .collect::<Result<_, _>>()?,
            Some(v) => {
                return Err(PluginError::field(
                    key,
                    format!("expected a list of names, found {v}"),
                ));
            }
        };
        if names.is_empty() {
            return Err(PluginError::field(key, "the list is empty"));
        }
        Ok(Some(names))
    }
}

/// The LoRA adapter from `lora_rank`, `lora_alpha`, `lora_dropout`,
/// `target_modules` and `use_rslora`.
pub fn adapter_spec(config: &Config) -> Result<AdapterSpec, PluginError> {
    let rank = config.uint("lora_rank", DEFAULT_RANK as u64, 1, MAX_RANK)? as u32;
    let alpha = config.number("lora_alpha", DEFAULT_ALPHA as f64)?;
    if alpha <= 0.0 {
        return Err(PluginError::field(
            "lora_alpha",
            format!("must be greater than 0, found {alpha}"),
        ));
    }
    let dropout = config.number("lora_dropout", DEFAULT_DROPOUT as f64)?;
    if !(0.0..1.0).contains(&dropout) {
        return Err(PluginError::field(
            "lora_dropout",
            format!("must be at least 0 and below 1, found {dropout}"),
        ));
    }
    let target_modules = config
        .names("target_modules")?
        .unwrap_or_else(|| vec![ALL_LINEAR.to_string()]);
    for name in &target_modules {
        let ok = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !ok {
            return Err(PluginError::field(
                "target_modules",
                format!("`{name}` is not a module name (such as q_proj) or `{ALL_LINEAR}`"),
            ));
        }
    }
    if target_modules.len() > 1 && target_modules.iter().any(|m| m == ALL_LINEAR) {
        return Err(PluginError::field(
            "target_modules",
            format!("`{ALL_LINEAR}` already covers every linear layer; give it alone"),
        ));
    }
    Ok(AdapterSpec {
        rank,
        alpha: alpha as f32,
        dropout: dropout as f32,
        target_modules,
        rslora: config.bool("use_rslora", false)?,
    })
}

/// The base quantisation asked for by `load_in_4bit` / `load_in_8bit`, or
/// `None` when neither is set.
pub fn requested_quantization(config: &Config) -> Result<Option<Quantization>, PluginError> {
    let four = config.bool("load_in_4bit", false)?;
    let eight = config.bool("load_in_8bit", false)?;
    match (four, eight) {
        (true, true) => Err(PluginError::field(
            "load_in_8bit",
            "load_in_4bit and load_in_8bit are both true; choose one",
        )),
        (true, false) => Ok(Some(Quantization::Nf4)),
        (false, true) => Ok(Some(Quantization::Int8)),
        (false, false) => Ok(None),
    }
}

/// Sample kinds the supervised methods train on.
pub fn supervised_kinds() -> Vec<BatchKind> {
    vec![BatchKind::Chat, BatchKind::Text]
}

/// A plan that trains adapters of `adapter` on a base stored as `quantization`.
pub fn adapter_plan(adapter: AdapterSpec, quantization: Quantization) -> Plan {
    Plan {
        trains: Trainable::Adapters,
        adapter: Some(adapter),
        base_quantization: quantization,
        needs_reference: false,
        needs_generation: false,
        accepts: supervised_kinds(),
    }
}

/// The supervised loss: mean negative log-likelihood of the trained tokens,
/// weighted by the loss mask, `-sum(logp * mask) / sum(mask)`.
pub fn supervised_loss(batch: &Batch, policy: &Policy) -> Result<Tensor, PluginError> {
    Ok(masked_nll(batch, policy)?)
}
