//! Training configuration: `tuner train CONFIG.(toml|yaml|json)` and the
//! JSON body of `POST /api/training`.
//!
//! Every format is first read into a flat JSON object so that checks and
//! messages are the same whatever the source: unknown keys are reported
//! with the closest valid key, numbers written as strings (`"1e-4"`, common
//! in YAML where `1e-4` is not a float under YAML 1.1) are accepted, defaults
//! that depend on other keys are filled in, and then every value is checked.
//! Key names follow the original tool, Hugging Face `TrainingArguments` and
//! ms-swift, so existing configs mostly carry over. The reference is
//! `docs/training.md`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::plugins::settings::{self, Setting};

/// A complete, checked training configuration.
///
/// The host types only the keys it acts on itself. Every other key belongs to
/// the method plugin (`lora_rank`, `beta`, ...): it is checked against the
/// plugin's settings schema and kept, defaults filled in, in
/// [`TrainConfig::method_settings`], which serialises flat beside the host's
/// keys so a stored job reads like the file it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TrainConfig {
    /// Hub id (`Qwen/Qwen3-0.6B`, from the model cache) or a local model folder.
    pub model_name: String,
    /// `lora` (default), `qlora`, `full`/`sft`, or an installed method plugin.
    #[serde(default = "d_method")]
    pub training_method: String,
    /// Dataset specs `PATH_OR_NAME[#N]`: a file or stored dataset, optionally
    /// sampled to N samples. A single string is accepted too.
    #[serde(deserialize_with = "one_or_many")]
    pub dataset: Vec<String>,
    /// Fraction of the samples held out for validation (0 = none).
    #[serde(default, alias = "split_dataset_ratio")]
    pub val_size: f64,
    /// Passes over the data (fractions allowed); `max_steps` wins when set.
    #[serde(default = "d_epochs")]
    pub num_train_epochs: f64,
    /// Stop after this many optimiser steps.
    #[serde(default)]
    pub max_steps: Option<u64>,
    /// Samples per forward pass.
    #[serde(default = "d_batch")]
    pub per_device_train_batch_size: usize,
    /// Forward passes per optimiser step (effective batch = batch × this).
    #[serde(default = "d_accum")]
    pub gradient_accumulation_steps: usize,
    /// Peak learning rate; default 1e-4 for adapter methods, 1e-5 for full.
    #[serde(default = "d_lr_adapter")]
    pub learning_rate: f64,
    /// Decay after warm-up.
    #[serde(default)]
    pub lr_scheduler_type: LrScheduler,
    /// Warm-up as a fraction of the total steps.
    #[serde(default = "d_warmup_ratio")]
    pub warmup_ratio: f64,
    /// Warm-up in steps; overrides `warmup_ratio` when set.
    #[serde(default)]
    pub warmup_steps: Option<u64>,
    /// AdamW decoupled weight decay.
    #[serde(default = "d_weight_decay")]
    pub weight_decay: f64,
    /// Clip the global gradient norm to this (0 = no clipping).
    #[serde(default = "d_one")]
    pub max_grad_norm: f64,
    /// Samples are cut to this many tokens (counted and reported).
    #[serde(default = "d_seq", alias = "max_length")]
    pub max_seq_length: usize,
    /// Pack short samples into one sequence (attention never crosses samples).
    #[serde(default)]
    pub packing: bool,
    /// What one text sample is, for plain-text files read by this job (the
    /// `text` format's `split` setting); `None`: the format's default (`file`).
    #[serde(default)]
    pub text_split: Option<TextSplit>,
    /// Batch samples of similar length together.
    #[serde(default)]
    pub group_by_length: bool,
    /// Recompute each layer in the backward pass to save memory.
    #[serde(default = "d_true")]
    pub gradient_checkpointing: bool,
    /// Write a checkpoint every N optimiser steps (0 = only at the end).
    #[serde(default = "d_save_steps")]
    pub save_steps: u64,
    /// Checkpoints kept (oldest removed first; 0 = keep all).
    #[serde(default = "d_save_limit")]
    pub save_total_limit: usize,
    /// Report loss, lr, grad norm, tokens/s every N steps.
    #[serde(default = "d_logging_steps")]
    pub logging_steps: u64,
    /// Where checkpoints and the final adapter/model go. Default
    /// `output/<model>-<method>`; relative paths are resolved against the
    /// current folder (CLI) or the `runs` folder of the tuner home (API).
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub output_dir: Option<PathBuf>,
    /// Seed for initialisation, shuffling, dropout and sampling.
    #[serde(default = "d_seed")]
    pub seed: u64,
    /// System prompt for samples that have none.
    #[serde(default)]
    pub system: Option<String>,
    /// Render samples with Qwen3's thinking section enabled.
    #[serde(default)]
    pub enable_thinking: bool,
    /// `auto` (CUDA when available, else CPU), `cpu`, `cuda` or `cuda:N`.
    #[serde(default)]
    #[schema(value_type = String)]
    pub device: DeviceChoice,
    /// `auto` (bf16 on CUDA, f32 on CPU), `f32` or `bf16`.
    #[serde(default)]
    pub dtype: DtypeChoice,
    /// A checkpoint folder to continue from, or `latest` (newest in `output_dir`).
    #[serde(default)]
    pub resume_from_checkpoint: Option<String>,
    /// Job name shown in lists (default `<model>-<method>`).
    #[serde(default)]
    pub run_name: Option<String>,
    /// Reward plugins scoring the completions of methods that generate
    /// (GRPO), e.g. `["accuracy", "format"]`. A single string is accepted.
    #[serde(default, deserialize_with = "one_or_many")]
    pub reward_funcs: Vec<String>,
    /// One weight per entry of `reward_funcs` (default 1.0 each).
    #[serde(default)]
    pub reward_weights: Option<Vec<f64>>,
    /// Settings of each reward plugin, by name:
    /// `[reward_settings.length] buffer_fraction = 0.25`.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub reward_settings: Map<String, Value>,
    /// Compute the frozen reference's log-probs of every training and
    /// validation row once, before the first step, so that steps never run
    /// the reference (TRL's `DPOConfig.precompute_ref_log_probs`). For
    /// methods that compare with a reference on fixed data (`dpo` with
    /// `sigmoid`, `ipo`, `hinge`); refused for those without a reference
    /// and for those that generate.
    #[serde(default)]
    pub precompute_ref_log_probs: bool,
    /// The method plugin's settings, checked against its schema, defaults
    /// filled in (e.g. `lora_rank = 8`).
    #[serde(flatten, default)]
    #[schema(value_type = Object)]
    pub method_settings: BTreeMap<String, Value>,
}

fn d_method() -> String {
    "lora".into()
}
fn d_epochs() -> f64 {
    3.0
}
fn d_batch() -> usize {
    2
}
fn d_accum() -> usize {
    4
}
fn d_lr_adapter() -> f64 {
    1e-4
}
fn d_warmup_ratio() -> f64 {
    0.05
}
fn d_weight_decay() -> f64 {
    0.1
}
fn d_one() -> f64 {
    1.0
}
fn d_seq() -> usize {
    2048
}
fn d_true() -> bool {
    true
}
fn d_save_steps() -> u64 {
    500
}
fn d_save_limit() -> usize {
    2
}
fn d_logging_steps() -> u64 {
    5
}
fn d_seed() -> u64 {
    42
}

/// Learning-rate decay after warm-up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LrScheduler {
    #[default]
    Cosine,
    Linear,
    Constant,
}

/// How a plain-text file is split into text samples, before the samples are
/// cut into `max_seq_length` blocks (see `train::blocks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TextSplit {
    /// The whole file is one document.
    File,
    /// Blocks separated by blank lines.
    Paragraph,
    /// Each non-blank line.
    Line,
}

impl TextSplit {
    /// The value of the `text` format's `split` setting.
    pub fn as_str(self) -> &'static str {
        match self {
            TextSplit::File => "file",
            TextSplit::Paragraph => "paragraph",
            TextSplit::Line => "line",
        }
    }
}

/// Parameter dtype.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DtypeChoice {
    #[default]
    Auto,
    F32,
    Bf16,
}

/// Where a job runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DeviceChoice {
    /// CUDA device 0 when this build has CUDA and one is present, else the CPU.
    #[default]
    Auto,
    Cpu,
    Cuda(usize),
}

impl DeviceChoice {
    /// The device a job actually uses: `auto` resolved. Jobs with the same
    /// resolved device wait for each other.
    pub fn resolve(self) -> DeviceChoice {
        match self {
            DeviceChoice::Auto if candle_core::utils::cuda_is_available() => DeviceChoice::Cuda(0),
            DeviceChoice::Auto => DeviceChoice::Cpu,
            d => d,
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceChoice::Auto => f.write_str("auto"),
            DeviceChoice::Cpu => f.write_str("cpu"),
            DeviceChoice::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl FromStr for DeviceChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" | "gpu" => Ok(DeviceChoice::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceChoice::Cuda)
                .ok_or_else(|| format!("unknown device \"{s}\"; use auto, cpu, cuda or cuda:N")),
        }
    }
}

impl TryFrom<String> for DeviceChoice {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<DeviceChoice> for String {
    fn from(d: DeviceChoice) -> String {
        d.to_string()
    }
}

/// A string or a list of strings.
fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    OneOrMany::deserialize(d)
        .map(|v| match v {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        })
        .map_err(|_| serde::de::Error::custom("expected a string or a list of strings"))
}

/// What kind of value a key holds, for lenient reading of strings.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Float,
    Int,
    Bool,
    Other,
}

/// Every key the host acts on itself, with aliases, and its kind. Any
/// other key belongs to the method plugin (see [`MethodCatalog`]).
const KEYS: &[(&str, Kind)] = &[
    ("model_name", Kind::Other),
    ("training_method", Kind::Other),
    ("dataset", Kind::Other),
    ("val_size", Kind::Float),
    ("split_dataset_ratio", Kind::Float),
    ("num_train_epochs", Kind::Float),
    ("max_steps", Kind::Int),
    ("per_device_train_batch_size", Kind::Int),
    ("gradient_accumulation_steps", Kind::Int),
    ("learning_rate", Kind::Float),
    ("lr_scheduler_type", Kind::Other),
    ("warmup_ratio", Kind::Float),
    ("warmup_steps", Kind::Int),
    ("weight_decay", Kind::Float),
    ("max_grad_norm", Kind::Float),
    ("max_seq_length", Kind::Int),
    ("max_length", Kind::Int),
    ("packing", Kind::Bool),
    ("text_split", Kind::Other),
    ("group_by_length", Kind::Bool),
    ("gradient_checkpointing", Kind::Bool),
    ("save_steps", Kind::Int),
    ("save_total_limit", Kind::Int),
    ("logging_steps", Kind::Int),
    ("output_dir", Kind::Other),
    ("seed", Kind::Int),
    ("system", Kind::Other),
    ("enable_thinking", Kind::Bool),
    ("device", Kind::Other),
    ("dtype", Kind::Other),
    ("resume_from_checkpoint", Kind::Other),
    ("run_name", Kind::Other),
    ("reward_funcs", Kind::Other),
    ("reward_weights", Kind::Other),
    ("reward_settings", Kind::Other),
    ("precompute_ref_log_probs", Kind::Bool),
];

/// Names other tools use, mapped to ours: suggestions spelling alone would miss.
const OTHER_NAMES: &[(&str, &str)] = &[
    ("model", "model_name"),
    ("model_name_or_path", "model_name"),
    ("model_id_or_path", "model_name"),
    ("train_type", "training_method"),
    ("method", "training_method"),
    ("lr", "learning_rate"),
    ("epochs", "num_train_epochs"),
    ("batch_size", "per_device_train_batch_size"),
    ("max_seq_len", "max_seq_length"),
    ("datasets", "dataset"),
    ("scheduler", "lr_scheduler_type"),
    ("lr_scheduler", "lr_scheduler_type"),
    ("val_dataset_ratio", "val_size"),
    ("resume", "resume_from_checkpoint"),
    ("system_prompt", "system"),
    ("name", "run_name"),
];

/// The host key another tool's name stands for (`lr` → `learning_rate`).
fn other_name(unknown: &str) -> Option<&'static str> {
    let lower = unknown.to_ascii_lowercase().replace('-', "_");
    OTHER_NAMES
        .iter()
        .find(|(theirs, _)| *theirs == lower)
        .map(|(_, ours)| *ours)
}

/// The settings each installed method plugin declares: what the keys of a
/// config outside the host's own are checked against.
///
/// A method whose schema could not be read (a broken plugin) is kept with
/// the reason, so a config naming it fails with that reason rather than
/// "not installed".
#[derive(Debug, Clone, Default)]
pub struct MethodCatalog {
    methods: BTreeMap<String, Result<Vec<Setting>, String>>,
}

impl MethodCatalog {
    /// An empty catalog: only configs for no method would pass.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a method and its schema.
    pub fn with(mut self, name: &str, schema: Result<Vec<Setting>, String>) -> Self {
        self.methods.insert(name.to_string(), schema);
        self
    }

    /// Every method plugin of `host`, asking each for its settings.
    pub fn from_host(host: &crate::plugins::PluginHost) -> Self {
        let mut catalog = Self::new();
        for plugin in host.methods() {
            let schema = plugin.settings().map_err(|e| e.to_string());
            catalog.methods.insert(plugin.name().to_string(), schema);
        }
        catalog
    }

    /// The schema of `method`, `None` when no such method is installed.
    pub fn schema(&self, method: &str) -> Option<&Result<Vec<Setting>, String>> {
        self.methods.get(method)
    }

    /// Installed method names, with `full` (another name for `sft`).
    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.methods.keys().cloned().collect();
        if self.methods.contains_key("sft") {
            names.push("full".into());
        }
        names.sort();
        names
    }

    /// The methods other than `except` that declare `key`.
    fn owners_of(&self, key: &str, except: &str) -> Vec<&str> {
        self.methods
            .iter()
            .filter(|(name, _)| name.as_str() != except)
            .filter(|(_, schema)| {
                schema
                    .as_ref()
                    .is_ok_and(|s| s.iter().any(|setting| setting.name == key))
            })
            .map(|(name, _)| name.as_str())
            .collect()
    }
}

/// Why a key is unknown, with the most useful hint: another tool's name for
/// a host key, a near-miss of a host or method key, or the methods that do
/// declare it.
fn unknown_key_message(
    key: &str,
    method: &str,
    schema: &[Setting],
    catalog: &MethodCatalog,
) -> String {
    if let Some(ours) = other_name(key) {
        return format!("unknown key \"{key}\"; did you mean \"{ours}\"?");
    }
    let host_keys = KEYS.iter().map(|(k, _)| *k);
    let method_keys = schema.iter().map(|s| s.name.as_str());
    if let Some(close) = settings::closest(key, host_keys.chain(method_keys)) {
        let whose = if schema.iter().any(|s| s.name == close) {
            format!(" (a setting of method \"{method}\")")
        } else {
            String::new()
        };
        return format!("unknown key \"{key}\"; did you mean \"{close}\"{whose}?");
    }
    let owners = catalog.owners_of(key, method);
    if !owners.is_empty() {
        return format!(
            "\"{key}\" is a setting of method {}, not of training_method \"{method}\"",
            owners
                .iter()
                .map(|o| format!("\"{o}\""))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    format!(
        "unknown key \"{key}\" (see docs/training.md for the host's keys and \
         `tuner plugins info {method}` for the method's)"
    )
}

/// A configuration that cannot be used: one line per problem, each naming
/// the file (or `--set`) and the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.problems.join("\n"))
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    fn one(origin: &str, message: impl fmt::Display) -> Self {
        Self {
            problems: vec![prefixed(origin, message)],
        }
    }
}

fn prefixed(origin: &str, message: impl fmt::Display) -> String {
    if origin.is_empty() {
        message.to_string()
    } else {
        format!("{origin}: {message}")
    }
}

/// Keys and values before checking: what a file or request said, with
/// `--set` overrides applied on top.
#[derive(Debug, Clone, Default)]
pub struct RawConfig {
    /// Where the keys came from (file name; empty for an API body).
    origin: String,
    map: Map<String, Value>,
    /// Keys given by `--set`, so their problems name `--set`.
    overridden: Vec<String>,
}

impl RawConfig {
    /// Reads a `.toml`, `.yaml`/`.yml` or `.json` file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::one(&origin, format!("cannot read: {e}")))?;
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        let value: Value = match ext.as_str() {
            "toml" => toml::from_str(&text).map_err(|e| {
                ConfigError::one(&origin, format!("not valid TOML: {}", e.message()))
            })?,
            "yaml" | "yml" => serde_norway::from_str(&text)
                .map_err(|e| ConfigError::one(&origin, format!("not valid YAML: {e}")))?,
            "json" => serde_json::from_str(&text)
                .map_err(|e| ConfigError::one(&origin, format!("not valid JSON: {e}")))?,
            _ => {
                return Err(ConfigError::one(
                    &origin,
                    "unknown config format: name the file .toml, .yaml, .yml or .json",
                ));
            }
        };
        Self::from_value(&origin, value)
    }

    /// A JSON object (the API body); `origin` prefixes messages (may be empty).
    pub fn from_value(origin: &str, value: Value) -> Result<Self, ConfigError> {
        match value {
            Value::Object(map) => Ok(Self {
                origin: origin.to_string(),
                map,
                overridden: Vec::new(),
            }),
            Value::Null => Err(ConfigError::one(origin, "the configuration is empty")),
            _ => Err(ConfigError::one(
                origin,
                "the configuration must be a table of keys (key = value)",
            )),
        }
    }

    /// Applies `key=value` (from `--set`). The value is read as JSON when it
    /// parses (`3`, `true`, `["q_proj","v_proj"]`), else taken as a string.
    pub fn set(&mut self, assignment: &str) -> Result<(), ConfigError> {
        let (key, value) = assignment.split_once('=').ok_or_else(|| {
            ConfigError::one("--set", format!("\"{assignment}\" is not key=value"))
        })?;
        let key = key.trim().to_string();
        let value = value.trim();
        let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.into()));
        self.overridden.push(key.clone());
        self.map.insert(key, value);
        Ok(())
    }

    /// Sets a key from code (e.g. `--resume`), as `--set` would.
    pub fn insert(&mut self, key: &str, value: Value) {
        self.overridden.push(key.to_string());
        self.map.insert(key.to_string(), value);
    }

    fn origin_of(&self, key: &str) -> &str {
        if self.overridden.iter().any(|k| k == key) {
            "--set"
        } else {
            &self.origin
        }
    }

    /// Checks keys and values against the host's keys and the chosen
    /// method's settings (from `catalog`) and fills in defaults.
    pub fn finish(mut self, catalog: &MethodCatalog) -> Result<TrainConfig, ConfigError> {
        let method = self
            .map
            .get("training_method")
            .and_then(Value::as_str)
            .unwrap_or("lora")
            // Looked up as written: the job runs the plugin of exactly this
            // name (`TrainConfig::method_plugin`), so `LoRA` must not pass here.
            .to_string();
        let plugin = if method == "full" {
            "sft"
        } else {
            method.as_str()
        };
        let schema: &[Setting] = match catalog.schema(plugin) {
            Some(Ok(schema)) => schema,
            Some(Err(reason)) => {
                return Err(ConfigError::one(
                    self.origin_of("training_method"),
                    format!("method plugin \"{plugin}\" cannot be used: {reason}"),
                ));
            }
            None => {
                let known = catalog.names();
                let hint = settings::closest(&method, known.iter().map(String::as_str))
                    .map(|k| format!("; did you mean \"{k}\"?"))
                    .unwrap_or_default();
                return Err(ConfigError::one(
                    self.origin_of("training_method"),
                    format!(
                        "training_method \"{method}\" is not an installed method plugin{hint} \
                         (installed: {})",
                        known.join(", ")
                    ),
                ));
            }
        };
        let mut problems = Vec::new();
        let mut method_given = Map::new();
        let mut keys: Vec<String> = self.map.keys().cloned().collect();
        keys.sort();
        for key in keys {
            if KEYS.iter().any(|(k, _)| *k == key) {
                continue;
            }
            if schema.iter().any(|s| s.name == key) {
                let value = self.map.remove(&key).expect("key listed from the map");
                method_given.insert(key, value);
            } else {
                let message = unknown_key_message(&key, plugin, schema, catalog);
                problems.push(prefixed(self.origin_of(&key), message));
            }
        }
        if !problems.is_empty() {
            return Err(ConfigError { problems });
        }
        let method_values = settings::check(schema, &method_given).map_err(|bad| ConfigError {
            problems: bad
                .into_iter()
                .map(|p| {
                    prefixed(
                        self.origin_of(&p.key),
                        format!("{} (method \"{plugin}\"): {}", p.key, p.message),
                    )
                })
                .collect(),
        })?;
        for (key, kind) in KEYS {
            if let Some(v) = self.map.get_mut(*key) {
                coerce(v, *kind);
            }
        }
        if self.map.get("val_size").is_some() && self.map.get("split_dataset_ratio").is_some() {
            return Err(ConfigError::one(
                &self.origin,
                "val_size and split_dataset_ratio are the same key; give one",
            ));
        }
        if self.map.get("max_seq_length").is_some() && self.map.get("max_length").is_some() {
            return Err(ConfigError::one(
                &self.origin,
                "max_seq_length and max_length are the same key; give one",
            ));
        }
        self.fill_dependent_defaults();
        match serde_json::from_value::<TrainConfig>(Value::Object(self.map.clone())) {
            Ok(mut config) => {
                config.check().map_err(|problems| ConfigError {
                    problems: problems
                        .into_iter()
                        .map(|(key, m)| prefixed(self.origin_of(key), m))
                        .collect(),
                })?;
                config.method_settings = method_values
                    .into_iter()
                    .map(|(k, v)| (k, v.to_json()))
                    .collect();
                Ok(config)
            }
            Err(_) => Err(ConfigError {
                problems: self.type_errors(),
            }),
        }
    }

    /// Defaults that depend on the method.
    fn fill_dependent_defaults(&mut self) {
        let method = self
            .map
            .get("training_method")
            .and_then(Value::as_str)
            .unwrap_or("lora")
            .to_ascii_lowercase();
        if !self.map.contains_key("learning_rate") && (method == "full" || method == "sft") {
            self.map.insert("learning_rate".into(), 1e-5.into());
        }
    }

    /// Which keys fail to read, and why (serde stops at the first; this
    /// finds each one by reading the keys one at a time).
    fn type_errors(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for required in ["model_name", "dataset"] {
            if !self.map.contains_key(required) {
                problems.push(prefixed(
                    &self.origin,
                    format!("missing required key \"{required}\""),
                ));
            }
        }
        let mut keys: Vec<&String> = self
            .map
            .keys()
            .filter(|k| KEYS.iter().any(|(host, _)| host == k))
            .collect();
        keys.sort();
        for key in keys {
            let mut probe = Map::new();
            probe.insert("model_name".into(), "m".into());
            probe.insert("dataset".into(), "d".into());
            probe.insert(key.clone(), self.map[key].clone());
            if let Err(e) = serde_json::from_value::<TrainConfig>(Value::Object(probe)) {
                problems.push(prefixed(
                    self.origin_of(key),
                    format!("{key}: {}", plain(&e)),
                ));
            }
        }
        if problems.is_empty() {
            // Not expected; keep serde's own message rather than none.
            if let Err(e) = serde_json::from_value::<TrainConfig>(Value::Object(self.map.clone())) {
                problems.push(prefixed(&self.origin, e));
            }
        }
        problems
    }
}

/// serde's message, in words users know (`f64` is "a number").
fn plain(e: &serde_json::Error) -> String {
    e.to_string()
        .replace("expected f64", "expected a number")
        .replace("expected u64", "expected a whole number ≥ 0")
        .replace("expected usize", "expected a whole number ≥ 0")
        .replace("expected a boolean", "expected true or false")
}

/// Reads `"1e-4"` as a number, `"true"` as a boolean, `2.0` as 2 where the
/// key wants one; anything else is left for serde to reject by name.
fn coerce(v: &mut Value, kind: Kind) {
    match (kind, &*v) {
        (Kind::Float, Value::String(s)) => {
            if let Ok(f) = s.trim().parse::<f64>()
                && let Some(n) = serde_json::Number::from_f64(f)
            {
                *v = Value::Number(n);
            }
        }
        (Kind::Int, Value::String(s)) => {
            if let Ok(i) = s.trim().parse::<u64>() {
                *v = i.into();
            }
        }
        (Kind::Int, Value::Number(n)) => {
            if let Some(f) = n.as_f64()
                && n.as_u64().is_none()
                && f.fract() == 0.0
                && (0.0..9.0e15).contains(&f)
            {
                *v = (f as u64).into();
            }
        }
        (Kind::Bool, Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" => *v = true.into(),
            "false" | "no" | "off" => *v = false.into(),
            _ => {}
        },
        _ => {}
    }
}

impl TrainConfig {
    /// Reads and checks a config file, with `--set key=value` overrides.
    pub fn load(
        path: &Path,
        overrides: &[String],
        catalog: &MethodCatalog,
    ) -> Result<Self, ConfigError> {
        let mut raw = RawConfig::from_file(path)?;
        for o in overrides {
            raw.set(o)?;
        }
        raw.finish(catalog)
    }

    /// Reads and checks a JSON object (the API body). Messages have no prefix.
    pub fn from_json(value: Value, catalog: &MethodCatalog) -> Result<Self, ConfigError> {
        RawConfig::from_value("", value)?.finish(catalog)
    }

    /// The host's part of the configuration as a JSON object (every host
    /// key, defaults filled in; no method settings): the `job` a method
    /// plugin's `configure` may read.
    pub fn to_job_json(&self) -> String {
        let mut host = self.clone();
        host.method_settings.clear();
        serde_json::to_string(&host).expect("a TrainConfig always serialises")
    }

    /// Host keys and method settings in one flat JSON object: the shape
    /// `configure` of a `tuner:plugin@0.1.0` method plugin reads.
    pub fn to_plugin_json(&self) -> String {
        serde_json::to_string(self).expect("a TrainConfig always serialises")
    }

    /// The method's settings, checked again against the plugin's schema now
    /// (a job stored earlier may meet a plugin that changed since). Keys the
    /// plugin no longer declares are an error naming them.
    pub fn method_values(&self, schema: &[Setting]) -> Result<settings::Values, ConfigError> {
        let stale: Vec<String> = self
            .method_settings
            .keys()
            .filter(|k| !schema.iter().any(|s| &s.name == *k))
            .map(|k| {
                format!(
                    "\"{k}\" is not a setting of method \"{}\" (any more): \
                     the plugin changed since the job was submitted",
                    self.method_plugin()
                )
            })
            .collect();
        if !stale.is_empty() {
            return Err(ConfigError { problems: stale });
        }
        let given: Map<String, Value> = self
            .method_settings
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        settings::check(schema, &given).map_err(|bad| ConfigError {
            problems: bad
                .into_iter()
                .map(|p| {
                    format!(
                        "{} (method \"{}\"): {}",
                        p.key,
                        self.method_plugin(),
                        p.message
                    )
                })
                .collect(),
        })
    }

    /// How training renders this config's samples (`enable_thinking`,
    /// `system`); the data commands render with the same settings.
    pub fn training_render(&self) -> crate::text::TrainingRender {
        crate::text::TrainingRender {
            enable_thinking: self.enable_thinking,
            system: self.system.clone(),
        }
    }

    /// How this config's data files are read: `text_split` becomes the
    /// `split` of whichever format declares one (the `text` format).
    pub fn data_load_options(&self) -> crate::data::LoadOptions {
        crate::data::LoadOptions {
            format_defaults: self
                .text_split
                .iter()
                .map(|split| ("split".to_string(), split.as_str().to_string()))
                .collect(),
            ..crate::data::LoadOptions::default()
        }
    }

    /// The method plugin that runs this config (`full` is `sft`).
    pub fn method_plugin(&self) -> &str {
        match self.training_method.as_str() {
            "full" => "sft",
            m => m,
        }
    }

    /// The job's display name: `run_name`, else `<model>-<method>`.
    pub fn name(&self) -> String {
        if let Some(n) = self.run_name.as_deref().filter(|n| !n.trim().is_empty()) {
            return n.trim().to_string();
        }
        format!("{}-{}", self.model_short_name(), self.training_method)
    }

    /// The last path component of `model_name` (`Qwen3-0.6B`).
    pub fn model_short_name(&self) -> &str {
        self.model_name
            .trim_end_matches(['/', '\\'])
            .rsplit(['/', '\\'])
            .next()
            .filter(|s| !s.is_empty())
            .unwrap_or("model")
    }

    /// `output_dir`, or `output/<model>-<method>`, made absolute against `base`.
    pub fn resolved_output_dir(&self, base: &Path) -> PathBuf {
        let dir = self.output_dir.clone().unwrap_or_else(|| {
            PathBuf::from("output").join(format!(
                "{}-{}",
                self.model_short_name(),
                self.training_method
            ))
        });
        if dir.is_absolute() {
            dir
        } else {
            base.join(dir)
        }
    }

    /// Warm-up steps for a run of `total_steps`.
    pub fn warmup_steps_for(&self, total_steps: u64) -> u64 {
        self.warmup_steps
            .unwrap_or_else(|| (self.warmup_ratio * total_steps as f64).ceil() as u64)
    }

    /// Value checks; each problem with the key it is about.
    fn check(&self) -> Result<(), Vec<(&'static str, String)>> {
        let mut p: Vec<(&'static str, String)> = Vec::new();
        let mut bad = |key: &'static str, msg: String| p.push((key, msg));
        if self.model_name.trim().is_empty() {
            bad("model_name", "model_name must not be empty".into());
        }
        if self.training_method.trim().is_empty() {
            bad(
                "training_method",
                "training_method must not be empty".into(),
            );
        }
        if self.dataset.is_empty() {
            bad("dataset", "dataset must name at least one dataset".into());
        }
        for d in &self.dataset {
            if let Err(e) = d.parse::<crate::data::spec::Spec>() {
                bad("dataset", format!("dataset: {e}"));
            }
        }
        let positive = |v: f64| v.is_finite() && v > 0.0;
        if !positive(self.learning_rate) {
            bad(
                "learning_rate",
                format!("learning_rate must be > 0 (got {})", self.learning_rate),
            );
        }
        if !positive(self.num_train_epochs) {
            bad(
                "num_train_epochs",
                format!(
                    "num_train_epochs must be > 0 (got {})",
                    self.num_train_epochs
                ),
            );
        }
        if self.max_steps == Some(0) {
            bad(
                "max_steps",
                "max_steps must be ≥ 1 (leave it out to train by epochs)".into(),
            );
        }
        if self.per_device_train_batch_size == 0 {
            bad(
                "per_device_train_batch_size",
                "per_device_train_batch_size must be ≥ 1".into(),
            );
        }
        if self.gradient_accumulation_steps == 0 {
            bad(
                "gradient_accumulation_steps",
                "gradient_accumulation_steps must be ≥ 1".into(),
            );
        }
        if !(0.0..1.0).contains(&self.val_size) {
            bad(
                "val_size",
                format!("val_size must be in [0, 1) (got {})", self.val_size),
            );
        }
        if !(0.0..1.0).contains(&self.warmup_ratio) {
            bad(
                "warmup_ratio",
                format!("warmup_ratio must be in [0, 1) (got {})", self.warmup_ratio),
            );
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            bad(
                "weight_decay",
                format!("weight_decay must be ≥ 0 (got {})", self.weight_decay),
            );
        }
        if !(self.max_grad_norm.is_finite() && self.max_grad_norm >= 0.0) {
            bad(
                "max_grad_norm",
                format!(
                    "max_grad_norm must be ≥ 0 (0 = no clipping; got {})",
                    self.max_grad_norm
                ),
            );
        }
        if self.max_seq_length < 2 {
            bad("max_seq_length", "max_seq_length must be ≥ 2 tokens".into());
        }
        for (i, name) in self.reward_funcs.iter().enumerate() {
            if name.trim().is_empty() {
                bad("reward_funcs", format!("reward_funcs[{i}] is empty"));
            } else if self.reward_funcs[..i].contains(name) {
                bad(
                    "reward_funcs",
                    format!("reward_funcs names `{name}` twice; give each reward once"),
                );
            }
        }
        if let Some(weights) = &self.reward_weights {
            if weights.len() != self.reward_funcs.len() {
                bad(
                    "reward_weights",
                    format!(
                        "reward_weights has {} entries but reward_funcs has {}; give one weight per reward",
                        weights.len(),
                        self.reward_funcs.len()
                    ),
                );
            }
            if let Some(w) = weights.iter().find(|w| !w.is_finite()) {
                bad(
                    "reward_weights",
                    format!("reward_weights must be finite numbers (got {w})"),
                );
            }
        }
        if self.logging_steps == 0 {
            bad("logging_steps", "logging_steps must be ≥ 1".into());
        }
        if let Some(r) = &self.resume_from_checkpoint
            && r.trim().is_empty()
        {
            bad(
                "resume_from_checkpoint",
                "resume_from_checkpoint must be a folder or \"latest\"".into(),
            );
        }
        if p.is_empty() { Ok(()) } else { Err(p) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::settings::{Bounds, SettingKind, SettingValue};

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn setting(name: &str, kind: SettingKind, default: Option<SettingValue>) -> Setting {
        Setting {
            name: name.into(),
            kind,
            default,
            description: String::new(),
            description_zh: None,
        }
    }

    /// Stand-ins for installed method plugins (the real schemas live in
    /// the plugins; these tests are about the host's side of the check).
    fn catalog() -> MethodCatalog {
        let rank = SettingKind::Integer {
            bounds: Bounds {
                min: Some(1.0),
                max: Some(4096.0),
                ..Bounds::default()
            },
        };
        let dropout = SettingKind::Number {
            bounds: Bounds {
                min: Some(0.0),
                max: Some(1.0),
                exclusive_max: true,
                ..Bounds::default()
            },
        };
        let adapters = vec![
            setting("lora_rank", rank, Some(SettingValue::Integer(8))),
            setting("lora_dropout", dropout, Some(SettingValue::Number(0.05))),
            setting("target_modules", SettingKind::Names, None),
            setting(
                "load_in_4bit",
                SettingKind::Boolean,
                Some(SettingValue::Boolean(false)),
            ),
        ];
        MethodCatalog::new()
            .with("lora", Ok(adapters.clone()))
            .with("qlora", Ok(adapters))
            .with("sft", Ok(vec![]))
            .with("broken", Err("it trapped in settings()".into()))
    }

    fn from_json(v: Value) -> Result<TrainConfig, ConfigError> {
        TrainConfig::from_json(v, &catalog())
    }

    #[test]
    fn toml_with_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "c.toml",
            "model_name = \"Qwen/Qwen3-0.6B\"\ndataset = \"alpaca_zh#500\"\nlora_rank = 16\n",
        );
        let c = TrainConfig::load(&p, &[], &catalog()).unwrap();
        assert_eq!(c.dataset, ["alpaca_zh#500"]);
        assert_eq!(c.method_settings["lora_rank"], 16);
        assert_eq!(
            c.method_settings["lora_dropout"], 0.05,
            "the plugin's default"
        );
        assert!(
            !c.method_settings.contains_key("target_modules"),
            "no default: unset"
        );
        assert_eq!(c.training_method, "lora");
        assert_eq!(c.learning_rate, 1e-4);
        assert_eq!(c.lr_scheduler_type, LrScheduler::Cosine);
        assert_eq!(c.device, DeviceChoice::Auto);
        assert_eq!(c.name(), "Qwen3-0.6B-lora");
        assert_eq!(
            c.resolved_output_dir(Path::new("/w")),
            Path::new("/w/output/Qwen3-0.6B-lora")
        );
    }

    #[test]
    fn yaml_with_lists_and_string_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "c.yaml",
            "model_name: /models/qwen\ntraining_method: qlora\ndataset:\n  - a.jsonl\n  - b#10\n\
             learning_rate: 2e-4\nwarmup_ratio: \"0.1\"\ntarget_modules: q_proj, v_proj\n\
             device: cuda:1\ndtype: bf16\nmax_steps: 20.0\nlora_rank: \"4\"\n",
        );
        let c = TrainConfig::load(&p, &[], &catalog()).unwrap();
        assert_eq!(c.dataset, ["a.jsonl", "b#10"]);
        assert_eq!(c.learning_rate, 2e-4);
        assert_eq!(c.warmup_ratio, 0.1);
        assert_eq!(
            c.method_settings["target_modules"],
            serde_json::json!(["q_proj", "v_proj"])
        );
        assert_eq!(c.method_settings["lora_rank"], 4);
        assert_eq!(c.device, DeviceChoice::Cuda(1));
        assert_eq!(c.dtype, DtypeChoice::Bf16);
        assert_eq!(c.max_steps, Some(20));
        assert_eq!(c.method_plugin(), "qlora");
    }

    #[test]
    fn full_has_its_own_learning_rate_and_plugin() {
        let c = from_json(serde_json::json!({
            "model_name": "m", "dataset": ["d"], "training_method": "full"}))
        .unwrap();
        assert_eq!(c.learning_rate, 1e-5);
        assert_eq!(c.method_plugin(), "sft");
        assert!(c.method_settings.is_empty());
    }

    #[test]
    fn unknown_key_names_the_closest_of_either_side() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "config.toml",
            "model_name = \"m\"\ndataset = \"d\"\nlora_rnak = 8\n",
        );
        let e = TrainConfig::load(&p, &[], &catalog()).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}: unknown key \"lora_rnak\"; did you mean \"lora_rank\" (a setting of method \"lora\")?",
                p.display()
            )
        );
        let e = from_json(serde_json::json!({
            "model_name": "m", "dataset": "d", "lr": 1e-4, "zzzzzzzzzz": 1, "learning_rat": 1}))
        .unwrap_err();
        assert_eq!(
            e.problems,
            [
                "unknown key \"learning_rat\"; did you mean \"learning_rate\"?",
                "unknown key \"lr\"; did you mean \"learning_rate\"?",
                "unknown key \"zzzzzzzzzz\" (see docs/training.md for the host's keys and \
                 `tuner plugins info lora` for the method's)"
            ]
        );
    }

    #[test]
    fn precompute_ref_log_probs_is_a_host_bool_off_by_default() {
        let base = serde_json::json!({"model_name": "m", "dataset": "d"});
        assert!(!from_json(base.clone()).unwrap().precompute_ref_log_probs);
        let mut on = base.clone();
        on["precompute_ref_log_probs"] = "true".into(); // as YAML or --set may give it
        assert!(from_json(on).unwrap().precompute_ref_log_probs);
        let mut near = base;
        near["precompute_ref_logprobs"] = true.into();
        assert_eq!(
            from_json(near).unwrap_err().problems,
            ["unknown key \"precompute_ref_logprobs\"; did you mean \"precompute_ref_log_probs\"?"]
        );
    }

    #[test]
    fn a_key_of_another_method_says_whose_it_is() {
        let e = from_json(serde_json::json!({
            "model_name": "m", "dataset": "d", "training_method": "full", "load_in_4bit": true}))
        .unwrap_err();
        assert_eq!(
            e.problems,
            [
                "\"load_in_4bit\" is a setting of method \"lora\", \"qlora\", not of training_method \"sft\""
            ]
        );
    }

    #[test]
    fn overrides_apply_and_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "c.yml", "model_name: m\ndataset: d\n");
        let c = TrainConfig::load(
            &p,
            &[
                "lora_rank=4".into(),
                "packing=true".into(),
                "system=Be brief.".into(),
            ],
            &catalog(),
        )
        .unwrap();
        assert_eq!(
            (c.method_settings["lora_rank"].clone(), c.packing),
            (4.into(), true)
        );
        assert_eq!(c.system.as_deref(), Some("Be brief."));
        let e = TrainConfig::load(&p, &["learning_rat=1".into()], &catalog()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--set: unknown key \"learning_rat\"; did you mean \"learning_rate\"?"
        );
        let e = TrainConfig::load(&p, &["learning_rate=0".into()], &catalog()).unwrap_err();
        assert_eq!(e.to_string(), "--set: learning_rate must be > 0 (got 0)");
        let e = TrainConfig::load(&p, &["lora_rank=0".into()], &catalog()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--set: lora_rank (method \"lora\"): must be at least 1, found 0"
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        let bad = |extra: serde_json::Value| {
            let mut v = serde_json::json!({"model_name": "m", "dataset": "d"});
            v.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            from_json(v).unwrap_err().to_string()
        };
        assert_eq!(
            bad(serde_json::json!({"learning_rate": -1})),
            "learning_rate must be > 0 (got -1)"
        );
        assert_eq!(
            bad(serde_json::json!({"learning_rate": "fast"})),
            "learning_rate: invalid type: string \"fast\", expected a number"
        );
        assert_eq!(
            bad(serde_json::json!({"lr_scheduler_type": "step"})),
            "lr_scheduler_type: unknown variant `step`, expected one of `cosine`, `linear`, `constant`"
        );
        assert!(
            bad(serde_json::json!({"device": "tpu"})).starts_with("device: unknown device \"tpu\"")
        );
        assert_eq!(
            bad(serde_json::json!({"per_device_train_batch_size": 0})),
            "per_device_train_batch_size must be ≥ 1"
        );
        // In the plugin's schema order.
        assert_eq!(
            bad(serde_json::json!({"lora_dropout": 1.5, "lora_rank": "x"})),
            "lora_rank (method \"lora\"): expected a whole number, found \"x\"\n\
             lora_dropout (method \"lora\"): must be below 1, found 1.5"
        );
        assert!(bad(serde_json::json!({"dataset": "x#0"})).contains("sample count"));
        let e = from_json(serde_json::json!({"lora_rank": 4})).unwrap_err();
        assert_eq!(
            e.problems,
            [
                "missing required key \"model_name\"",
                "missing required key \"dataset\""
            ]
        );
    }

    #[test]
    fn unknown_or_broken_method_is_named() {
        let e = from_json(serde_json::json!({
            "model_name": "m", "dataset": "d", "training_method": "lorra"}))
        .unwrap_err()
        .to_string();
        assert!(e.contains("did you mean \"lora\"?"), "{e}");
        assert!(
            e.contains("installed: broken, full, lora, qlora, sft"),
            "{e}"
        );
        let e = from_json(serde_json::json!({
            "model_name": "m", "dataset": "d", "training_method": "broken"}))
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "method plugin \"broken\" cannot be used: it trapped in settings()"
        );
    }

    #[test]
    fn stored_settings_are_checked_again_against_the_plugin() {
        let c = from_json(serde_json::json!({"model_name": "m", "dataset": "d", "lora_rank": 2}))
            .unwrap();
        let Some(Ok(schema)) = catalog().schema("lora").cloned() else {
            unreachable!()
        };
        let values = c.method_values(&schema).unwrap();
        assert_eq!(values[0], ("lora_rank".into(), SettingValue::Integer(2)));
        let e = c.method_values(&schema[1..]).unwrap_err().to_string();
        assert!(
            e.contains("\"lora_rank\" is not a setting of method \"lora\""),
            "{e}"
        );
    }

    #[test]
    fn job_json_has_every_host_key_and_keys_table_matches() {
        let c = from_json(serde_json::json!({"model_name": "m", "dataset": "d"})).unwrap();
        let v: Value = serde_json::from_str(&c.to_job_json()).unwrap();
        let mut serialised: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        serialised.sort();
        let aliases = ["split_dataset_ratio", "max_length"];
        let mut table: Vec<&str> = KEYS
            .iter()
            .map(|(k, _)| *k)
            .filter(|k| !aliases.contains(k))
            .collect();
        table.sort();
        assert_eq!(serialised, table);
        // Round trip: what the API stores (host and method keys, flat)
        // reads back the same.
        let stored = serde_json::to_value(&c).unwrap();
        assert_eq!(stored["lora_rank"], 8);
        assert_eq!(from_json(stored.clone()).unwrap(), c);
        assert_eq!(serde_json::from_value::<TrainConfig>(stored).unwrap(), c);
    }
}
