//! Method plugins: training strategies.
//!
//! `configure` reads the job's configuration and returns a [`Plan`]: which
//! weights train, the adapter shape, how the base is quantised, and whether a
//! reference model or generation is needed. `loss` is called every step with
//! the batch and the policy; compose the objective from host [`Tensor`]
//! operations and return a 0-d loss tensor. Tensors stay on the host: you
//! hold handles, and only scalars or small lists (`to_list`) cross over.

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

/// Lets `?` turn a tensor error into the plugin error `loss` returns.
impl From<TensorError> for PluginError {
    fn from(err: TensorError) -> Self {
        PluginError::msg(format!("{err:?}"))
    }
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
