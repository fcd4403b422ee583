//! Method plugins: training strategies.
//!
//! `configure` reads the job's configuration and returns a [`Plan`]: which
//! weights train, the adapter shape, how the base is quantised, and whether a
//! reference model or generation is needed. `loss` is called every step with
//! the batch and the policy; compose the objective from host [`Tensor`]
//! operations and return a 0-d loss tensor. Tensors stay on the host: you
//! hold handles, and only scalars or small lists (`to_list`) cross over.
//!
//! ```ignore
//! fn loss(batch: &Batch, policy: &Policy, _step: u64) -> Result<Tensor, PluginError> {
//!     let lp = policy.token_logprobs(batch, true)?;   // [rows, seq_len - 1]
//!     let mask = batch.loss_mask()?;                   // [rows, seq_len - 1]
//!     let loss = lp.mul(&mask)?.sum_all()?.div(&mask.sum_all()?)?.neg()?;
//!     Ok(loss)                                         // or: Ok(masked_nll(batch, policy)?)
//! }
//! ```

pub use crate::__bindings::method::exports::tuner::plugin::method_plugin::{
    AdapterSpec, Plan, Quantization, Trainable,
};
pub use crate::__bindings::method::tuner::plugin::model::{
    Batch, BatchKind, Completion, Policy, Rollout, Sampling, report_metric,
};
pub use crate::__bindings::method::tuner::plugin::tensors::{
    Dtype, Tensor, TensorError, from_list, full,
};
pub use crate::{PluginError, PluginInfo, PluginKind};

/// A training method.
pub trait MethodPlugin {
    /// Name, version, description. Use [`plugin_info!`](crate::plugin_info).
    fn info() -> PluginInfo;

    /// Reads the job configuration (a JSON object) and returns the plan.
    /// Report the first bad key with [`PluginError::field`].
    fn configure(config: &str) -> Result<Plan, PluginError>;

    /// The loss for one batch, a 0-d f32 tensor.
    fn loss(batch: &Batch, policy: &Policy, step: u64) -> Result<Tensor, PluginError>;
}

/// Lets `?` turn a tensor error into the plugin error `loss` returns; the
/// message is [`describe`]'s form, e.g. `shape: add: shapes [2, 3]
/// and [4] do not broadcast (dimension 1: 3 vs 4)`.
impl From<TensorError> for PluginError {
    fn from(err: TensorError) -> Self {
        PluginError::msg(describe(&err))
    }
}

/// A readable one-line form of a tensor error: its kind, then the host's
/// message. (The generated `Display` is the `Debug` form.)
pub fn describe(err: &TensorError) -> String {
    let (kind, message) = match err {
        TensorError::NotImplemented(m) => ("not implemented", m),
        TensorError::Shape(m) => ("shape", m),
        TensorError::Dtype(m) => ("dtype", m),
        TensorError::Invalid(m) => ("invalid", m),
        TensorError::Limit(m) => ("limit", m),
        TensorError::Device(m) => ("device", m),
    };
    format!("{kind}: {message}")
}

impl Tensor {
    /// A 0-d f32 tensor holding `value` (no gradient).
    pub fn scalar(value: f64) -> Result<Tensor, TensorError> {
        full(value, &[], Dtype::F32)
    }

    /// The value of a single-element tensor.
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
    pub fn numel(&self) -> u64 {
        self.shape().iter().map(|&d| d as u64).product()
    }

    /// `sum(self * weights) / sum(weights)` over all elements: the mean of
    /// `self` weighted by a loss mask, 0 when every weight is 0. Gradients
    /// flow to `self` (and to `weights`, if they carry any).
    pub fn weighted_mean(&self, weights: &Tensor) -> Result<Tensor, TensorError> {
        let total = self.mul(weights)?.sum_all()?;
        // A floor far below any real weight sum, so an all-zero mask gives
        // 0 / tiny = 0 instead of NaN without changing any other result.
        let count = weights.sum_all()?.clamp(1e-12, f64::MAX)?;
        total.div(&count)
    }
}

/// The usual language-modelling loss: the mean negative log-likelihood of the
/// trained tokens, weighted by the batch's loss mask
/// (`-sum(logp * mask) / sum(mask)`).
pub fn masked_nll(batch: &Batch, policy: &Policy) -> Result<Tensor, TensorError> {
    let logprobs = policy.token_logprobs(batch, true)?;
    let mask = batch.loss_mask()?;
    logprobs.weighted_mean(&mask)?.neg()
}

#[doc(hidden)]
#[macro_export]
macro_rules! __method_glue {
    ($export:ident, $ty:ty) => {
        impl $crate::__bindings::method::exports::tuner::plugin::method_plugin::Guest for $export {
            fn info() -> $crate::PluginInfo {
                <$ty as $crate::method::MethodPlugin>::info()
            }
            fn configure(config: String) -> Result<$crate::method::Plan, $crate::PluginError> {
                <$ty as $crate::method::MethodPlugin>::configure(&config)
            }
            fn loss(
                batch: &$crate::method::Batch,
                policy: &$crate::method::Policy,
                step: u64,
            ) -> Result<$crate::method::Tensor, $crate::PluginError> {
                <$ty as $crate::method::MethodPlugin>::loss(batch, policy, step)
            }
        }
    };
}
