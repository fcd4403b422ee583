//! `tuner:plugin/tensors` and `tuner:plugin/model`: the host side of the
//! tensor API method plugins compose their losses from.
//!
//! Not implemented yet: the training engine (candle tensors, the trainable
//! Qwen3, batches) arrives with its own issue. Until then every operation
//! answers `tensor-error::not-implemented` (or traps, where the WIT function
//! has no error case), so a method plugin's `loss` fails with a clear message
//! while `info` and `configure` work. The handle types already live in the
//! store's resource table, whose capacity caps how many a plugin may hold.

use wasmtime::component::Resource;

use crate::plugins::bindings::method::tuner::plugin::model::{self, BatchKind, Rollout, Sampling};
use crate::plugins::bindings::method::tuner::plugin::tensors::{self, Dtype, TensorError};
use crate::plugins::state::PluginState;

/// A tensor owned by the host (engine pending).
pub struct TensorHandle {
    _engine_pending: (),
}

/// A batch owned by the host (engine pending).
pub struct BatchHandle {
    _engine_pending: (),
}

/// The model under training (engine pending).
pub struct PolicyHandle {
    _engine_pending: (),
}

const PENDING: &str = "the training engine is not implemented yet in this tuner build";

fn pending<T>(op: &str) -> wasmtime::Result<Result<T, TensorError>> {
    Ok(Err(TensorError::NotImplemented(format!("{op}: {PENDING}"))))
}

fn trap<T>(op: &str) -> wasmtime::Result<T> {
    Err(wasmtime::format_err!("{op}: {PENDING}"))
}

type TensorResult = wasmtime::Result<Result<Resource<TensorHandle>, TensorError>>;

/// Generates the `not-implemented` answer for tensor methods returning a tensor.
macro_rules! pending_ops {
    ($($name:ident($($arg:ident: $ty:ty),*)),* $(,)?) => {
        $(
            fn $name(&mut self, _handle: Resource<TensorHandle>, $($arg: $ty),*) -> TensorResult {
                $(let _ = $arg;)*
                pending(concat!("tensor.", stringify!($name)))
            }
        )*
    };
}

impl tensors::HostTensor for PluginState {
    fn shape(&mut self, _handle: Resource<TensorHandle>) -> wasmtime::Result<Vec<u32>> {
        trap("tensor.shape")
    }

    fn dtype(&mut self, _handle: Resource<TensorHandle>) -> wasmtime::Result<Dtype> {
        trap("tensor.dtype")
    }

    pending_ops!(
        add(other: Resource<TensorHandle>),
        sub(other: Resource<TensorHandle>),
        mul(other: Resource<TensorHandle>),
        div(other: Resource<TensorHandle>),
        minimum(other: Resource<TensorHandle>),
        maximum(other: Resource<TensorHandle>),
        add_scalar(value: f64),
        scale(factor: f64),
        neg(),
        exp(),
        log(),
        sigmoid(),
        log_sigmoid(),
        relu(),
        sqr(),
        sqrt(),
        abs(),
        clamp(min: f64, max: f64),
        sum(dims: Vec<u32>, keep_dims: bool),
        mean(dims: Vec<u32>, keep_dims: bool),
        max(dim: u32, keep_dims: bool),
        sum_all(),
        mean_all(),
        gather(dim: u32, index: Resource<TensorHandle>),
        narrow(dim: u32, start: u32, len: u32),
        reshape(shape: Vec<u32>),
        where_else(mask: Resource<TensorHandle>, other: Resource<TensorHandle>),
        to_dtype(dtype: Dtype),
        detach(),
    );

    fn to_list(
        &mut self,
        _handle: Resource<TensorHandle>,
    ) -> wasmtime::Result<Result<Vec<f64>, TensorError>> {
        pending("tensor.to-list")
    }

    fn drop(&mut self, rep: Resource<TensorHandle>) -> wasmtime::Result<()> {
        self.table.delete(rep)?;
        Ok(())
    }
}

impl tensors::Host for PluginState {
    fn from_list(&mut self, _values: Vec<f64>, _shape: Vec<u32>, _dtype: Dtype) -> TensorResult {
        pending("from-list")
    }

    fn full(&mut self, _value: f64, _shape: Vec<u32>, _dtype: Dtype) -> TensorResult {
        pending("full")
    }
}

impl model::HostBatch for PluginState {
    fn kind(&mut self, _handle: Resource<BatchHandle>) -> wasmtime::Result<BatchKind> {
        trap("batch.kind")
    }

    fn rows(&mut self, _handle: Resource<BatchHandle>) -> wasmtime::Result<u32> {
        trap("batch.rows")
    }

    fn seq_len(&mut self, _handle: Resource<BatchHandle>) -> wasmtime::Result<u32> {
        trap("batch.seq-len")
    }

    fn pairs(&mut self, _handle: Resource<BatchHandle>) -> wasmtime::Result<u32> {
        trap("batch.pairs")
    }

    fn input_ids(&mut self, _handle: Resource<BatchHandle>) -> TensorResult {
        pending("batch.input-ids")
    }

    fn loss_mask(&mut self, _handle: Resource<BatchHandle>) -> TensorResult {
        pending("batch.loss-mask")
    }

    fn answers(&mut self, _handle: Resource<BatchHandle>) -> wasmtime::Result<Vec<Option<String>>> {
        trap("batch.answers")
    }

    fn drop(&mut self, rep: Resource<BatchHandle>) -> wasmtime::Result<()> {
        self.table.delete(rep)?;
        Ok(())
    }
}

impl model::HostPolicy for PluginState {
    fn token_logprobs(
        &mut self,
        _handle: Resource<PolicyHandle>,
        _batch: Resource<BatchHandle>,
        _use_adapters: bool,
    ) -> TensorResult {
        pending("policy.token-logprobs")
    }

    fn generate(
        &mut self,
        _handle: Resource<PolicyHandle>,
        _batch: Resource<BatchHandle>,
        _sampling: Sampling,
    ) -> wasmtime::Result<Result<Rollout, TensorError>> {
        pending("policy.generate")
    }

    fn drop(&mut self, rep: Resource<PolicyHandle>) -> wasmtime::Result<()> {
        self.table.delete(rep)?;
        Ok(())
    }
}

impl model::Host for PluginState {
    fn report_metric(&mut self, name: String, value: f64) -> wasmtime::Result<()> {
        tracing::debug!(target: "tuner::plugin", plugin = &*self.plugin, metric = %name, value);
        Ok(())
    }
}
