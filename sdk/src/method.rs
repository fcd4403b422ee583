//! Method plugins: training strategies.
//!
//! A method declares its settings ([`MethodPlugin::settings`]): every key of
//! the training config that the host does not act on itself belongs to the
//! method (`lora_rank`, `beta`, ...). The host checks the user's values
//! against that schema, fills in defaults and calls
//! [`MethodPlugin::configure`], which builds the method instance for the
//! job. The instance says what the host must prepare ([`Plan`]: which
//! weights train, the adapter shape, how the base is quantised, whether a
//! reference model or generation is needed) and, every step, composes the
//! loss from host [`Tensor`] operations. Tensors stay on the host: you hold
//! handles, and only scalars or small lists (`to_list`) cross over.
//!
//! ```no_run
//! # use tuner_sdk::method::*;
//! fn loss(batch: &Batch, policy: &Policy) -> Result<Tensor, PluginError> {
//!     let lp = policy.token_logprobs(batch, true)?;   // [rows, seq_len - 1]
//!     let mask = batch.loss_mask()?;                   // [rows, seq_len - 1]
//!     Ok(lp.weighted_mean(&mask)?.neg()?)             // or: Ok(masked_nll(batch, policy)?)
//! }
//! ```

use std::fmt;

use serde_json::{Map, Value};

use crate::__bindings::method::exports::tuner::plugin::method_plugin as wit;

pub use crate::{PluginError, PluginInfo, PluginKind, Setting, SettingValue, Settings};

/// LoRA adapter shape, for [`Plan::adapter`].
///
/// ```
/// use tuner_sdk::method::AdapterSpec;
/// let adapter = AdapterSpec { rank: 8, alpha: 32.0, dropout: 0.05, target_modules: vec!["all-linear".into()], rslora: false };
/// assert_eq!(adapter.rank, 8);
/// ```
pub use crate::__bindings::method::exports::tuner::plugin::method_plugin::AdapterSpec;

/// What the host must prepare before training; returned by
/// [`MethodPlugin::plan`].
///
/// ```
/// use tuner_sdk::method::*;
/// let plan = Plan {
///     trains: Trainable::Full,
///     adapter: None,
///     base_quantization: Quantization::None,
///     needs_reference: false,
///     needs_generation: false,
///     accepts: vec![BatchKind::Chat, BatchKind::Text],
/// };
/// assert!(plan.adapter.is_none());
/// ```
pub use crate::__bindings::method::exports::tuner::plugin::method_plugin::Plan;

/// How the frozen base weights are stored.
///
/// ```
/// let q = tuner_sdk::method::Quantization::Nf4;
/// assert!(matches!(q, tuner_sdk::method::Quantization::Nf4));
/// ```
pub use crate::__bindings::method::exports::tuner::plugin::method_plugin::Quantization;

/// Which weights train.
///
/// ```
/// let t = tuner_sdk::method::Trainable::Adapters;
/// assert!(matches!(t, tuner_sdk::method::Trainable::Adapters));
/// ```
pub use crate::__bindings::method::exports::tuner::plugin::method_plugin::Trainable;

/// A tokenised, padded batch (a host resource).
///
/// ```no_run
/// # fn f(batch: &tuner_sdk::method::Batch) -> Result<(), tuner_sdk::method::TensorError> {
/// let ids = batch.input_ids()?;    // [rows, seq_len], u32
/// let mask = batch.loss_mask()?;   // [rows, seq_len - 1], f32
/// assert_eq!(ids.shape()[0], batch.rows());
/// # drop(mask); Ok(()) }
/// ```
pub use crate::__bindings::method::tuner::plugin::model::Batch;

/// What the rows of a batch hold.
///
/// ```
/// use tuner_sdk::method::BatchKind;
/// let accepts = vec![BatchKind::Chat, BatchKind::Text];
/// assert!(accepts.iter().any(|k| matches!(k, BatchKind::Chat)));
/// ```
pub use crate::__bindings::method::tuner::plugin::model::BatchKind;

/// The model under training (a host resource).
///
/// ```no_run
/// # fn f(batch: &tuner_sdk::method::Batch, policy: &tuner_sdk::method::Policy) -> Result<(), tuner_sdk::method::TensorError> {
/// let trained = policy.token_logprobs(batch, true)?;     // with gradient
/// let reference = policy.token_logprobs(batch, false)?;  // frozen, no gradient
/// let ratio = trained.sub(&reference)?;
/// # drop(ratio); Ok(()) }
/// ```
pub use crate::__bindings::method::tuner::plugin::model::Policy;

/// The whole next-token distribution at the trained positions of a batch,
/// from [`Policy::vocab_logprobs`].
///
/// ```no_run
/// # fn f(batch: &tuner_sdk::method::Batch, policy: &tuner_sdk::method::Policy) -> Result<(), tuner_sdk::method::TensorError> {
/// let dist = policy.vocab_logprobs(batch, true)?;
/// let entropy = dist.logprobs.entropy(1, false)?;   // [n]
/// let mean_entropy = entropy.weighted_mean(&dist.weights)?;
/// # drop(mean_entropy); Ok(()) }
/// ```
pub use crate::__bindings::method::tuner::plugin::model::Distribution;

/// One generated completion, in a [`Rollout`].
///
/// ```
/// use tuner_sdk::method::Completion;
/// let c = Completion { prompt_row: 0, text: "4".into(), tokens: 1, finished: true };
/// assert!(c.finished);
/// ```
pub use crate::__bindings::method::tuner::plugin::model::Completion;

/// Completions and a scoreable batch, from [`Policy::generate`].
///
/// ```no_run
/// # use tuner_sdk::method::*;
/// # fn f(batch: &Batch, policy: &Policy) -> Result<(), TensorError> {
/// let sampling = Sampling { max_new_tokens: 64, temperature: 1.0, top_p: 1.0, top_k: 0, samples_per_prompt: 4 };
/// let rollout = policy.generate(batch, sampling)?;
/// let lp = policy.token_logprobs(&rollout.batch, true)?;
/// # drop(lp); Ok(()) }
/// ```
pub use crate::__bindings::method::tuner::plugin::model::Rollout;

/// The scores one reward function gave a rollout, from [`Policy::score`].
///
/// ```
/// let s = tuner_sdk::method::RewardScores { name: "accuracy".into(), weight: 1.0, scores: vec![1.0, 0.0] };
/// assert_eq!(s.scores.len(), 2);
/// ```
pub use crate::__bindings::method::tuner::plugin::model::RewardScores;

/// Sampling settings for [`Policy::generate`].
///
/// ```
/// let greedy = tuner_sdk::method::Sampling { max_new_tokens: 32, temperature: 0.0, top_p: 1.0, top_k: 0, samples_per_prompt: 1 };
/// assert_eq!(greedy.temperature, 0.0);
/// ```
pub use crate::__bindings::method::tuner::plugin::model::Sampling;

/// Records a named scalar for the current step, shown beside the loss.
///
/// ```no_run
/// tuner_sdk::method::report_metric("reward", 0.75);
/// ```
pub use crate::__bindings::method::tuner::plugin::model::report_metric;

/// Element type of a tensor.
///
/// ```no_run
/// # use tuner_sdk::method::*;
/// # fn f(t: &Tensor) -> Result<(), TensorError> {
/// let as_float = t.to_dtype(Dtype::F32)?;
/// assert_eq!(as_float.dtype(), Dtype::F32);
/// # Ok(()) }
/// ```
pub use crate::__bindings::method::tuner::plugin::tensors::Dtype;

/// A handle to a tensor on the host. Every operation records itself on the
/// host's autograd tape.
///
/// ```no_run
/// # use tuner_sdk::method::*;
/// # fn f() -> Result<(), TensorError> {
/// let x = from_list(&[1.0, 2.0, 3.0, 4.0], &[2, 2], Dtype::F32)?;
/// let y = x.log_softmax(1)?.exp()?.sum(&[1], false)?;   // each row sums to 1
/// assert_eq!(y.to_list()?.len(), 2);
/// # Ok(()) }
/// ```
pub use crate::__bindings::method::tuner::plugin::tensors::Tensor;

/// Makes a tensor from row-major values (no gradient).
///
/// ```no_run
/// # use tuner_sdk::method::*;
/// let index = from_list(&[0.0, 2.0], &[2, 1], Dtype::U32)?;
/// # Ok::<(), TensorError>(())
/// ```
pub use crate::__bindings::method::tuner::plugin::tensors::from_list;

/// A tensor of `shape` filled with `value` (no gradient).
///
/// ```no_run
/// # use tuner_sdk::method::*;
/// let zeros = full(0.0, &[2, 3], Dtype::F32)?;
/// # Ok::<(), TensorError>(())
/// ```
pub use crate::__bindings::method::tuner::plugin::tensors::full;

/// A training method. One instance per job: [`configure`](Self::configure)
/// builds it from the checked settings, then the host asks it for the
/// [`plan`](Self::plan) and calls [`loss`](Self::loss) every step.
///
/// ```no_run
/// use tuner_sdk::method::*;
///
/// /// Label smoothing: mixes the target's NLL with the mean NLL over the vocabulary.
/// struct Smoothed {
///     smoothing: f64,
/// }
///
/// impl MethodPlugin for Smoothed {
///     fn info() -> PluginInfo {
///         tuner_sdk::plugin_info!(Method, "Label-smoothed full fine-tuning")
///     }
///
///     fn settings() -> Vec<Setting> {
///         vec![Setting::number("smoothing", 0.1)
///             .min(0)
///             .below(1)
///             .describe("Probability mass spread over the vocabulary")
///             .zh("分摊到整个词表的概率质量")]
///     }
///
///     fn configure(settings: &Settings, _job: &Job) -> Result<Self, PluginError> {
///         Ok(Smoothed { smoothing: settings.number("smoothing").unwrap_or(0.1) })
///     }
///
///     fn plan(&self) -> Plan {
///         Plan {
///             trains: Trainable::Full,
///             adapter: None,
///             base_quantization: Quantization::None,
///             needs_reference: false,
///             needs_generation: false,
///             accepts: vec![BatchKind::Chat, BatchKind::Text],
///         }
///     }
///
///     fn loss(&self, batch: &Batch, policy: &Policy, _step: u64) -> Result<Tensor, PluginError> {
///         let dist = policy.vocab_logprobs(batch, true)?;
///         let nll = dist.target_logprobs()?.neg()?;                 // [n]
///         let uniform = dist.logprobs.mean(&[1], false)?.neg()?;   // [n]
///         let e = self.smoothing;
///         let per_token = nll.scale(1.0 - e)?.add(&uniform.scale(e)?)?;
///         Ok(per_token.weighted_mean(&dist.weights)?)
///     }
/// }
///
/// tuner_sdk::export_plugin!(method: Smoothed);
/// ```
pub trait MethodPlugin: Sized + 'static {
    /// Name, version, description. Use [`plugin_info!`](crate::plugin_info).
    ///
    /// ```
    /// let info = tuner_sdk::plugin_info!(Method, "Full fine-tuning");
    /// # assert_eq!(info.kind, tuner_sdk::PluginKind::Method);
    /// ```
    fn info() -> PluginInfo;

    /// The method's own settings: keys of the training config, with types,
    /// defaults and descriptions. The host refuses other keys it does not
    /// know itself, checks values against this schema, and shows it in
    /// `tuner plugins info`. The default: none.
    ///
    /// ```
    /// use tuner_sdk::Setting;
    /// fn settings() -> Vec<Setting> {
    ///     vec![Setting::number("beta", 0.1).above(0).describe("DPO temperature")]
    /// }
    /// # assert_eq!(settings().len(), 1);
    /// ```
    fn settings() -> Vec<Setting> {
        Vec::new()
    }

    /// Builds the method for one job from its checked `settings` (every key
    /// of [`settings`](Self::settings), defaults filled in) and the host's
    /// part of the training config (`job`, read-only). Report a combination
    /// the schema cannot express with [`PluginError::field`].
    ///
    /// ```
    /// use tuner_sdk::method::{Job, PluginError, Settings};
    /// fn check(settings: &Settings, job: &Job) -> Result<f64, PluginError> {
    ///     let beta = settings.number("beta").unwrap_or(0.1);
    ///     if job.number("learning_rate").is_some_and(|lr| lr > 1e-3) && beta > 1.0 {
    ///         return Err(PluginError::field("beta", "too large for this learning rate"));
    ///     }
    ///     Ok(beta)
    /// }
    /// let job = Job::parse(r#"{"learning_rate": 0.01}"#)?;
    /// assert!(check(&Settings::new().with("beta", 2.0), &job).is_err());
    /// # Ok::<(), PluginError>(())
    /// ```
    fn configure(settings: &Settings, job: &Job) -> Result<Self, PluginError>;

    /// What the host must prepare before training.
    ///
    /// ```
    /// use tuner_sdk::method::*;
    /// fn plan(rank: u32) -> Plan {
    ///     Plan {
    ///         trains: Trainable::Adapters,
    ///         adapter: Some(AdapterSpec { rank, alpha: 32.0, dropout: 0.05, target_modules: vec!["all-linear".into()], rslora: false }),
    ///         base_quantization: Quantization::None,
    ///         needs_reference: false,
    ///         needs_generation: false,
    ///         accepts: vec![BatchKind::Chat],
    ///     }
    /// }
    /// # assert!(plan(8).adapter.is_some());
    /// ```
    fn plan(&self) -> Plan;

    /// The loss for one batch, a 0-d float tensor built from host
    /// operations; the host runs backward, clipping and the optimiser.
    /// `step` counts optimiser steps from 0.
    ///
    /// ```no_run
    /// # use tuner_sdk::method::*;
    /// # struct Sft;
    /// # impl Sft {
    /// fn loss(&self, batch: &Batch, policy: &Policy, _step: u64) -> Result<Tensor, PluginError> {
    ///     Ok(masked_nll(batch, policy)?)
    /// }
    /// # }
    /// ```
    fn loss(&self, batch: &Batch, policy: &Policy, step: u64) -> Result<Tensor, PluginError>;
}

/// The host's part of the training config (model, lengths, learning rate,
/// ...), as passed to [`MethodPlugin::configure`]: a JSON object, for
/// reading only. Getters return `None` for an absent or `null` key, or one
/// of another type.
///
/// ```
/// use tuner_sdk::method::Job;
/// let job = Job::parse(r#"{"learning_rate": 2e-4, "max_length": 2048, "model_name": "Qwen/Qwen3-0.6B", "bf16": true}"#)?;
/// assert_eq!(job.number("learning_rate"), Some(2e-4));
/// assert_eq!(job.integer("max_length"), Some(2048));
/// assert_eq!(job.text("model_name"), Some("Qwen/Qwen3-0.6B"));
/// assert_eq!(job.bool("bf16"), Some(true));
/// assert_eq!(job.number("warmup_ratio"), None);
/// # Ok::<(), tuner_sdk::PluginError>(())
/// ```
#[derive(Clone, Debug)]
pub struct Job {
    json: String,
    fields: Map<String, Value>,
}

impl Job {
    /// Reads the JSON text of a job. The SDK does this before
    /// [`MethodPlugin::configure`] and reports text that is not a JSON
    /// object as the `configure` error; use it yourself in tests.
    ///
    /// ```
    /// use tuner_sdk::method::Job;
    /// assert!(Job::parse("{}").is_ok());
    /// let err = Job::parse("[1, 2]").unwrap_err();
    /// assert_eq!(err.to_string(), "configuration must be a JSON object");
    /// ```
    pub fn parse(json: impl Into<String>) -> Result<Job, PluginError> {
        let json = json.into();
        match serde_json::from_str(&json) {
            Ok(Value::Object(fields)) => Ok(Job { json, fields }),
            Ok(_) => Err(PluginError::msg("configuration must be a JSON object")),
            Err(e) => Err(PluginError::msg(format!("configuration is not JSON: {e}"))),
        }
    }

    /// The JSON text as the host sent it, for reading with your own parser.
    ///
    /// ```
    /// let job = tuner_sdk::method::Job::parse(r#"{"seed": 42}"#)?;
    /// assert!(job.json().contains("seed"));
    /// # Ok::<(), tuner_sdk::PluginError>(())
    /// ```
    pub fn json(&self) -> &str {
        &self.json
    }

    fn field(&self, key: &str) -> Option<&Value> {
        self.fields.get(key).filter(|v| !v.is_null())
    }

    /// A number (an integer converts).
    ///
    /// ```
    /// let job = tuner_sdk::method::Job::parse(r#"{"learning_rate": 1e-5}"#)?;
    /// assert_eq!(job.number("learning_rate"), Some(1e-5));
    /// # Ok::<(), tuner_sdk::PluginError>(())
    /// ```
    pub fn number(&self, key: &str) -> Option<f64> {
        self.field(key)?.as_f64()
    }

    /// A whole number.
    ///
    /// ```
    /// let job = tuner_sdk::method::Job::parse(r#"{"max_length": 1024}"#)?;
    /// assert_eq!(job.integer("max_length"), Some(1024));
    /// # Ok::<(), tuner_sdk::PluginError>(())
    /// ```
    pub fn integer(&self, key: &str) -> Option<i64> {
        self.field(key)?.as_i64()
    }

    /// `true` or `false`.
    ///
    /// ```
    /// let job = tuner_sdk::method::Job::parse(r#"{"gradient_checkpointing": false}"#)?;
    /// assert_eq!(job.bool("gradient_checkpointing"), Some(false));
    /// # Ok::<(), tuner_sdk::PluginError>(())
    /// ```
    pub fn bool(&self, key: &str) -> Option<bool> {
        self.field(key)?.as_bool()
    }

    /// A string.
    ///
    /// ```
    /// let job = tuner_sdk::method::Job::parse(r#"{"model_name": "Qwen/Qwen3-0.6B"}"#)?;
    /// assert_eq!(job.text("model_name"), Some("Qwen/Qwen3-0.6B"));
    /// # Ok::<(), tuner_sdk::PluginError>(())
    /// ```
    pub fn text(&self, key: &str) -> Option<&str> {
        self.field(key)?.as_str()
    }
}

/// Why a tensor operation failed. Displays as the kind, then the host's
/// message: `shape: add: shapes [2, 3] and [4] do not broadcast`. `?` turns
/// it into the [`PluginError`] `loss` returns.
///
/// ```
/// use tuner_sdk::method::{PluginError, TensorError};
/// let err = TensorError::Shape("add: shapes [2, 3] and [4] do not broadcast".into());
/// assert_eq!(err.to_string(), "shape: add: shapes [2, 3] and [4] do not broadcast");
/// assert_eq!(PluginError::from(err).message, "shape: add: shapes [2, 3] and [4] do not broadcast");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TensorError {
    /// The host does not implement this operation yet.
    NotImplemented(String),
    /// Shapes do not fit the operation.
    Shape(String),
    /// The element type does not fit the operation.
    Dtype(String),
    /// A bad argument (dimension out of range, empty list, ...).
    Invalid(String),
    /// The plugin holds too many live tensors, or asked for too much data.
    Limit(String),
    /// The device failed (out of memory, kernel error).
    Device(String),
}

impl fmt::Display for TensorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, message) = match self {
            TensorError::NotImplemented(m) => ("not implemented", m),
            TensorError::Shape(m) => ("shape", m),
            TensorError::Dtype(m) => ("dtype", m),
            TensorError::Invalid(m) => ("invalid", m),
            TensorError::Limit(m) => ("limit", m),
            TensorError::Device(m) => ("device", m),
        };
        write!(f, "{kind}: {message}")
    }
}

impl std::error::Error for TensorError {}

/// Lets `?` turn a tensor error into the plugin error `loss` returns; the
/// message is the tensor error's display form.
impl From<TensorError> for PluginError {
    fn from(err: TensorError) -> Self {
        PluginError::msg(err.to_string())
    }
}

impl Tensor {
    /// A 0-d f32 tensor holding `value` (no gradient).
    ///
    /// ```no_run
    /// let half = tuner_sdk::method::Tensor::scalar(0.5)?;
    /// # Ok::<(), tuner_sdk::method::TensorError>(())
    /// ```
    pub fn scalar(value: f64) -> Result<Tensor, TensorError> {
        full(value, &[], Dtype::F32)
    }

    /// The value of a single-element tensor.
    ///
    /// ```no_run
    /// # use tuner_sdk::method::*;
    /// # fn f(loss: &Tensor) -> Result<(), TensorError> {
    /// report_metric("loss_copy", loss.to_scalar()?);
    /// # Ok(()) }
    /// ```
    pub fn to_scalar(&self) -> Result<f64, TensorError> {
        let values = self.to_list()?;
        match values.as_slice() {
            [v] => Ok(*v),
            _ => Err(TensorError::Shape(format!(
                "to_scalar: the tensor has shape {:?}, not a single element",
                self.shape()
            ))),
        }
    }

    /// Number of elements.
    ///
    /// ```no_run
    /// # fn f(t: &tuner_sdk::method::Tensor) {
    /// let small_enough_to_copy = t.numel() <= 65_536;
    /// # }
    /// ```
    pub fn numel(&self) -> u64 {
        self.shape().iter().map(|&d| d as u64).product()
    }

    /// `sum(self * weights) / sum(weights)` over all elements: the mean of
    /// `self` weighted by a loss mask, 0 when every weight is 0. Gradients
    /// flow to `self` (and to `weights`, if they carry any).
    ///
    /// ```no_run
    /// # use tuner_sdk::method::*;
    /// # fn f(batch: &Batch, policy: &Policy) -> Result<Tensor, TensorError> {
    /// let lp = policy.token_logprobs(batch, true)?;
    /// lp.weighted_mean(&batch.loss_mask()?)?.neg()
    /// # }
    /// ```
    pub fn weighted_mean(&self, weights: &Tensor) -> Result<Tensor, TensorError> {
        let total = self.mul(weights)?.sum_all()?;
        // A floor far below any real weight sum, so an all-zero mask gives
        // 0 / tiny = 0 instead of NaN without changing any other result.
        let count = weights.sum_all()?.clamp(1e-12, f64::MAX)?;
        total.div(&count)
    }
}

impl Distribution {
    /// The log-probability of the target token at each position, `[n]`:
    /// `logprobs` gathered at `targets`.
    ///
    /// ```no_run
    /// # use tuner_sdk::method::*;
    /// # fn f(batch: &Batch, policy: &Policy) -> Result<Tensor, TensorError> {
    /// let dist = policy.vocab_logprobs(batch, true)?;
    /// dist.target_logprobs()?.weighted_mean(&dist.weights)?.neg()   // the usual NLL
    /// # }
    /// ```
    pub fn target_logprobs(&self) -> Result<Tensor, TensorError> {
        let n = self.targets.numel() as u32;
        let index = self.targets.reshape(&[n, 1])?;
        self.logprobs.gather(1, &index)?.reshape(&[n])
    }
}

/// The usual language-modelling loss: the mean negative log-likelihood of the
/// trained tokens, weighted by the batch's loss mask
/// (`-sum(logp * mask) / sum(mask)`).
///
/// ```no_run
/// # use tuner_sdk::method::*;
/// # fn f(batch: &Batch, policy: &Policy) -> Result<Tensor, PluginError> {
/// Ok(masked_nll(batch, policy)?)
/// # }
/// ```
pub fn masked_nll(batch: &Batch, policy: &Policy) -> Result<Tensor, TensorError> {
    let logprobs = policy.token_logprobs(batch, true)?;
    let mask = batch.loss_mask()?;
    logprobs.weighted_mean(&mask)?.neg()
}

/// Adapts a [`MethodPlugin`] instance to the WIT `method` resource.
#[doc(hidden)]
pub struct MethodResource<T: MethodPlugin>(T);

impl<T: MethodPlugin> wit::GuestMethod for MethodResource<T> {
    fn plan(&self) -> Plan {
        self.0.plan()
    }

    fn loss(&self, batch: &Batch, policy: &Policy, step: u64) -> Result<Tensor, PluginError> {
        self.0.loss(batch, policy, step)
    }
}

#[doc(hidden)]
pub fn __configure<T: MethodPlugin>(
    settings: Vec<(String, SettingValue)>,
    job: String,
) -> Result<wit::Method, PluginError> {
    let job = Job::parse(job)?;
    let method = T::configure(&Settings::from(settings), &job)?;
    Ok(wit::Method::new(MethodResource(method)))
}

#[doc(hidden)]
#[macro_export]
macro_rules! __method_glue {
    ($export:ident, $ty:ty) => {
        impl $crate::__bindings::method::exports::tuner::plugin::method_plugin::Guest for $export {
            type Method = $crate::method::MethodResource<$ty>;
            fn info() -> $crate::PluginInfo {
                <$ty as $crate::method::MethodPlugin>::info()
            }
            fn settings() -> Vec<$crate::Setting> {
                <$ty as $crate::method::MethodPlugin>::settings()
            }
            fn configure(
                settings: Vec<(String, $crate::SettingValue)>,
                job: String,
            ) -> Result<
                $crate::__bindings::method::exports::tuner::plugin::method_plugin::Method,
                $crate::PluginError,
            > {
                $crate::method::__configure::<$ty>(settings, job)
            }
        }
    };
}
