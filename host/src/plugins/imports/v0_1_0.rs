//! The 0.1.0 import traits, delegating to the 0.2.0 implementations in the
//! sibling modules: a 0.1.0 plugin gets exactly the host behaviour (checks,
//! limits, error messages) a 0.2.0 plugin gets, with the generated types
//! converted on the way in and out ([`Convert`]). Resources are shared, so
//! handles pass through untouched.

use wasmtime::component::Resource;

use super::model::{BatchHandle, PolicyHandle};
use super::tensors::TensorHandle;
use crate::plugins::bindings::v0_1_0::source as old_source;
use crate::plugins::bindings::v0_1_0::{Convert, format as old_format, method as old_method};
use crate::plugins::bindings::v0_2_0::source as new_source;
use crate::plugins::bindings::v0_2_0::{format as new_format, method as new_method};
use crate::plugins::state::PluginState;

use new_method::tuner::plugin::model as new_model;
use new_method::tuner::plugin::tensors as new_tensors;
use old_method::tuner::plugin::model as old_model;
use old_method::tuner::plugin::tensors as old_tensors;

impl old_format::tuner::plugin::log::Host for PluginState {
    fn log(&mut self, level: old_format::tuner::plugin::log::Level, message: String) {
        new_format::tuner::plugin::log::Host::log(self, level.convert(), message)
    }

    fn enabled(&mut self, level: old_format::tuner::plugin::log::Level) -> bool {
        new_format::tuner::plugin::log::Host::enabled(self, level.convert())
    }
}

impl old_source::tuner::plugin::http::Host for PluginState {
    fn send(
        &mut self,
        request: old_source::tuner::plugin::http::Request,
    ) -> Result<old_source::tuner::plugin::http::Response, old_source::tuner::plugin::http::HttpError>
    {
        new_source::tuner::plugin::http::Host::send(self, request.convert())
            .map(Convert::convert)
            .map_err(Convert::convert)
    }
}

type OldResult<T> = wasmtime::Result<Result<T, old_tensors::TensorError>>;
type OldTensorResult = OldResult<Resource<TensorHandle>>;

/// The 0.1.0 answer to a 0.2.0 one: the same value, the error converted.
fn old<T, U>(r: wasmtime::Result<Result<T, new_tensors::TensorError>>) -> OldResult<U>
where
    T: Convert<U>,
{
    Ok(r?.map(Convert::convert).map_err(Convert::convert))
}

/// `HostTensor` methods whose arguments pass through unchanged.
macro_rules! tensor_methods {
    ($($name:ident($($arg:ident: $ty:ty),*);)*) => {
        $(
            fn $name(&mut self, handle: Resource<TensorHandle> $(, $arg: $ty)*) -> OldTensorResult {
                old(<Self as new_tensors::HostTensor>::$name(self, handle $(, $arg)*))
            }
        )*
    };
}

impl old_tensors::HostTensor for PluginState {
    fn shape(&mut self, handle: Resource<TensorHandle>) -> wasmtime::Result<Vec<u32>> {
        <Self as new_tensors::HostTensor>::shape(self, handle)
    }

    fn dtype(&mut self, handle: Resource<TensorHandle>) -> wasmtime::Result<old_tensors::Dtype> {
        Ok(<Self as new_tensors::HostTensor>::dtype(self, handle)?.convert())
    }

    tensor_methods! {
        add(other: Resource<TensorHandle>);
        sub(other: Resource<TensorHandle>);
        mul(other: Resource<TensorHandle>);
        div(other: Resource<TensorHandle>);
        minimum(other: Resource<TensorHandle>);
        maximum(other: Resource<TensorHandle>);
        add_scalar(value: f64);
        scale(factor: f64);
        neg();
        exp();
        log();
        sigmoid();
        log_sigmoid();
        relu();
        sqr();
        sqrt();
        abs();
        clamp(min: f64, max: f64);
        sum(dims: Vec<u32>, keep_dims: bool);
        mean(dims: Vec<u32>, keep_dims: bool);
        max(dim: u32, keep_dims: bool);
        sum_all();
        mean_all();
        gather(dim: u32, index: Resource<TensorHandle>);
        narrow(dim: u32, start: u32, len: u32);
        reshape(shape: Vec<u32>);
        where_else(mask: Resource<TensorHandle>, other: Resource<TensorHandle>);
        detach();
    }

    fn to_dtype(
        &mut self,
        handle: Resource<TensorHandle>,
        dtype: old_tensors::Dtype,
    ) -> OldTensorResult {
        old(<Self as new_tensors::HostTensor>::to_dtype(
            self,
            handle,
            dtype.convert(),
        ))
    }

    fn to_list(&mut self, handle: Resource<TensorHandle>) -> OldResult<Vec<f64>> {
        old(<Self as new_tensors::HostTensor>::to_list(self, handle))
    }

    fn drop(&mut self, handle: Resource<TensorHandle>) -> wasmtime::Result<()> {
        <Self as new_tensors::HostTensor>::drop(self, handle)
    }
}

impl old_tensors::Host for PluginState {
    fn from_list(
        &mut self,
        values: Vec<f64>,
        shape: Vec<u32>,
        dtype: old_tensors::Dtype,
    ) -> OldTensorResult {
        old(<Self as new_tensors::Host>::from_list(
            self,
            values,
            shape,
            dtype.convert(),
        ))
    }

    fn full(&mut self, value: f64, shape: Vec<u32>, dtype: old_tensors::Dtype) -> OldTensorResult {
        old(<Self as new_tensors::Host>::full(
            self,
            value,
            shape,
            dtype.convert(),
        ))
    }
}

impl old_model::HostBatch for PluginState {
    fn kind(&mut self, handle: Resource<BatchHandle>) -> wasmtime::Result<old_model::BatchKind> {
        Ok(<Self as new_model::HostBatch>::kind(self, handle)?.convert())
    }

    fn rows(&mut self, handle: Resource<BatchHandle>) -> wasmtime::Result<u32> {
        <Self as new_model::HostBatch>::rows(self, handle)
    }

    fn seq_len(&mut self, handle: Resource<BatchHandle>) -> wasmtime::Result<u32> {
        <Self as new_model::HostBatch>::seq_len(self, handle)
    }

    fn pairs(&mut self, handle: Resource<BatchHandle>) -> wasmtime::Result<u32> {
        <Self as new_model::HostBatch>::pairs(self, handle)
    }

    fn input_ids(&mut self, handle: Resource<BatchHandle>) -> OldTensorResult {
        old(<Self as new_model::HostBatch>::input_ids(self, handle))
    }

    fn loss_mask(&mut self, handle: Resource<BatchHandle>) -> OldTensorResult {
        old(<Self as new_model::HostBatch>::loss_mask(self, handle))
    }

    fn answers(&mut self, handle: Resource<BatchHandle>) -> wasmtime::Result<Vec<Option<String>>> {
        <Self as new_model::HostBatch>::answers(self, handle)
    }

    fn drop(&mut self, handle: Resource<BatchHandle>) -> wasmtime::Result<()> {
        <Self as new_model::HostBatch>::drop(self, handle)
    }
}

impl old_model::HostPolicy for PluginState {
    fn token_logprobs(
        &mut self,
        handle: Resource<PolicyHandle>,
        batch: Resource<BatchHandle>,
        use_adapters: bool,
    ) -> OldTensorResult {
        old(<Self as new_model::HostPolicy>::token_logprobs(
            self,
            handle,
            batch,
            use_adapters,
        ))
    }

    fn generate(
        &mut self,
        handle: Resource<PolicyHandle>,
        batch: Resource<BatchHandle>,
        sampling: old_model::Sampling,
    ) -> OldResult<old_model::Rollout> {
        old(<Self as new_model::HostPolicy>::generate(
            self,
            handle,
            batch,
            sampling.convert(),
        ))
    }

    fn drop(&mut self, handle: Resource<PolicyHandle>) -> wasmtime::Result<()> {
        <Self as new_model::HostPolicy>::drop(self, handle)
    }
}

impl old_model::Host for PluginState {
    fn report_metric(&mut self, name: String, value: f64) -> wasmtime::Result<()> {
        <Self as new_model::Host>::report_metric(self, name, value)
    }
}
