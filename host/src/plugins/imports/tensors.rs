//! `tuner:plugin/tensors`: the host side of the tensor API method plugins
//! compose their losses from.
//!
//! A plugin holds handles; the candle [`Tensor`]s live in the store's
//! resource table. Every operation is an ordinary candle op, so it records
//! itself on candle's autograd tape and the loss a plugin returns can be
//! differentiated by the host. Composite operations (`log-sigmoid`,
//! `sigmoid`, the softmax family) are built from differentiable primitives
//! for the same reason: candle's fused kernels (as in candle-nn) do not all
//! carry gradients.
//!
//! The operations themselves are the plain functions in [`ops`], which take
//! and return candle tensors; the `Host*` impls below only move handles in
//! and out of the table. Tests call [`ops`] directly.
//!
//! Limits: a plugin holds at most [`MethodState::max_tensors`] live tensors
//! (the plugin limit `max_resources`); `to-list` copies out at most
//! [`ops::MAX_LIST_ELEMENTS`]; `from-list` and `full` create at most
//! [`ops::MAX_NEW_ELEMENTS`].

use candle_core::Tensor;
use wasmtime::component::Resource;

use super::model::MethodState;
use crate::plugins::bindings::v0_2_0::method::tuner::plugin::tensors::{self, Dtype, TensorError};
use crate::plugins::state::PluginState;

/// A tensor owned by the host, as it sits in the store's resource table.
pub struct TensorHandle {
    tensor: Tensor,
}

impl TensorHandle {
    pub fn tensor(&self) -> &Tensor {
        &self.tensor
    }
}

type TensorResult = wasmtime::Result<Result<Resource<TensorHandle>, TensorError>>;

impl PluginState {
    /// Puts `tensor` in the table for the plugin, unless it already holds
    /// the maximum number of live tensors.
    pub(crate) fn push_tensor(
        &mut self,
        tensor: Tensor,
    ) -> Result<Resource<TensorHandle>, TensorError> {
        let method: &mut MethodState = &mut self.method;
        if method.live_tensors >= method.max_tensors {
            return Err(TensorError::Limit(format!(
                "the plugin holds {} live tensors, the most allowed (plugin limit \
                 max_resources); drop handles it no longer needs",
                method.live_tensors
            )));
        }
        let handle = self
            .table
            .push(TensorHandle { tensor })
            .map_err(|e| TensorError::Limit(format!("cannot hold another tensor: {e}")))?;
        self.method.live_tensors += 1;
        Ok(handle)
    }

    /// The tensor behind a handle the plugin passed in.
    pub(crate) fn tensor(&self, handle: &Resource<TensorHandle>) -> wasmtime::Result<Tensor> {
        Ok(self.table.get(handle)?.tensor.clone())
    }

    /// Removes a tensor from the table (the plugin dropped it, or handed it
    /// back as its result).
    pub(crate) fn take_tensor(
        &mut self,
        handle: Resource<TensorHandle>,
    ) -> wasmtime::Result<Tensor> {
        let handle = self.table.delete(handle)?;
        self.method.live_tensors = self.method.live_tensors.saturating_sub(1);
        Ok(handle.tensor)
    }

    /// Runs a one-tensor op and stores its result.
    fn unary_op(
        &mut self,
        handle: &Resource<TensorHandle>,
        op: impl FnOnce(&Tensor) -> Result<Tensor, TensorError>,
    ) -> TensorResult {
        let a = self.tensor(handle)?;
        Ok(op(&a).and_then(|t| self.push_tensor(t)))
    }

    /// Runs a two-tensor op and stores its result.
    fn binary_op(
        &mut self,
        a: &Resource<TensorHandle>,
        b: &Resource<TensorHandle>,
        op: impl FnOnce(&Tensor, &Tensor) -> Result<Tensor, TensorError>,
    ) -> TensorResult {
        let (a, b) = (self.tensor(a)?, self.tensor(b)?);
        Ok(op(&a, &b).and_then(|t| self.push_tensor(t)))
    }
}

/// Generates the `HostTensor` methods that apply one [`ops`] function.
macro_rules! unary_methods {
    ($($name:ident => $f:expr),* $(,)?) => {
        $(
            fn $name(&mut self, handle: Resource<TensorHandle>) -> TensorResult {
                self.unary_op(&handle, $f)
            }
        )*
    };
}

macro_rules! binary_methods {
    ($($name:ident => $op:expr),* $(,)?) => {
        $(
            fn $name(&mut self, handle: Resource<TensorHandle>, other: Resource<TensorHandle>) -> TensorResult {
                self.binary_op(&handle, &other, |a, b| ops::binary($op, a, b))
            }
        )*
    };
}

impl tensors::HostTensor for PluginState {
    fn shape(&mut self, handle: Resource<TensorHandle>) -> wasmtime::Result<Vec<u32>> {
        Ok(self
            .tensor(&handle)?
            .dims()
            .iter()
            .map(|&d| d as u32)
            .collect())
    }

    fn dtype(&mut self, handle: Resource<TensorHandle>) -> wasmtime::Result<Dtype> {
        // Every tensor in the table went through `ops::admit`, so this holds.
        ops::wit_dtype(self.tensor(&handle)?.dtype()).ok_or_else(|| {
            wasmtime::format_err!("tensor.dtype: a host tensor has an unlisted dtype")
        })
    }

    binary_methods!(
        add => ops::Binary::Add,
        sub => ops::Binary::Sub,
        mul => ops::Binary::Mul,
        div => ops::Binary::Div,
        minimum => ops::Binary::Minimum,
        maximum => ops::Binary::Maximum,
    );

    unary_methods!(
        neg => ops::neg,
        exp => ops::exp,
        log => ops::log,
        sigmoid => ops::sigmoid,
        log_sigmoid => ops::log_sigmoid,
        relu => ops::relu,
        sqr => ops::sqr,
        sqrt => ops::sqrt,
        abs => ops::abs,
        sum_all => ops::sum_all,
        mean_all => ops::mean_all,
        detach => |a| Ok(a.detach()),
    );

    fn add_scalar(&mut self, handle: Resource<TensorHandle>, value: f64) -> TensorResult {
        self.unary_op(&handle, |a| ops::affine("add-scalar", a, 1.0, value))
    }

    fn scale(&mut self, handle: Resource<TensorHandle>, factor: f64) -> TensorResult {
        self.unary_op(&handle, |a| ops::affine("scale", a, factor, 0.0))
    }

    fn clamp(&mut self, handle: Resource<TensorHandle>, min: f64, max: f64) -> TensorResult {
        self.unary_op(&handle, |a| ops::clamp(a, min, max))
    }

    fn sum(
        &mut self,
        handle: Resource<TensorHandle>,
        dims: Vec<u32>,
        keep_dims: bool,
    ) -> TensorResult {
        self.unary_op(&handle, |a| ops::sum(a, &dims, keep_dims))
    }

    fn mean(
        &mut self,
        handle: Resource<TensorHandle>,
        dims: Vec<u32>,
        keep_dims: bool,
    ) -> TensorResult {
        self.unary_op(&handle, |a| ops::mean(a, &dims, keep_dims))
    }

    fn max(&mut self, handle: Resource<TensorHandle>, dim: u32, keep_dims: bool) -> TensorResult {
        self.unary_op(&handle, |a| ops::max(a, dim, keep_dims))
    }

    fn log_softmax(&mut self, handle: Resource<TensorHandle>, dim: u32) -> TensorResult {
        self.unary_op(&handle, |a| ops::log_softmax(a, dim))
    }

    fn softmax(&mut self, handle: Resource<TensorHandle>, dim: u32) -> TensorResult {
        self.unary_op(&handle, |a| ops::softmax(a, dim))
    }

    fn logsumexp(
        &mut self,
        handle: Resource<TensorHandle>,
        dim: u32,
        keep_dims: bool,
    ) -> TensorResult {
        self.unary_op(&handle, |a| ops::logsumexp(a, dim, keep_dims))
    }

    fn entropy(
        &mut self,
        handle: Resource<TensorHandle>,
        dim: u32,
        keep_dims: bool,
    ) -> TensorResult {
        self.unary_op(&handle, |a| ops::entropy(a, dim, keep_dims))
    }

    fn gather(
        &mut self,
        handle: Resource<TensorHandle>,
        dim: u32,
        index: Resource<TensorHandle>,
    ) -> TensorResult {
        self.binary_op(&handle, &index, |a, i| ops::gather(a, dim, i))
    }

    fn narrow(
        &mut self,
        handle: Resource<TensorHandle>,
        dim: u32,
        start: u32,
        len: u32,
    ) -> TensorResult {
        self.unary_op(&handle, |a| ops::narrow(a, dim, start, len))
    }

    fn reshape(&mut self, handle: Resource<TensorHandle>, shape: Vec<u32>) -> TensorResult {
        self.unary_op(&handle, |a| ops::reshape(a, &shape))
    }

    fn where_else(
        &mut self,
        handle: Resource<TensorHandle>,
        mask: Resource<TensorHandle>,
        other: Resource<TensorHandle>,
    ) -> TensorResult {
        let (a, m, o) = (
            self.tensor(&handle)?,
            self.tensor(&mask)?,
            self.tensor(&other)?,
        );
        Ok(ops::where_else(&a, &m, &o).and_then(|t| self.push_tensor(t)))
    }

    fn to_dtype(&mut self, handle: Resource<TensorHandle>, dtype: Dtype) -> TensorResult {
        self.unary_op(&handle, |a| ops::to_dtype(a, dtype))
    }

    fn to_list(
        &mut self,
        handle: Resource<TensorHandle>,
    ) -> wasmtime::Result<Result<Vec<f64>, TensorError>> {
        Ok(ops::to_list(&self.tensor(&handle)?))
    }

    fn drop(&mut self, handle: Resource<TensorHandle>) -> wasmtime::Result<()> {
        self.take_tensor(handle)?;
        Ok(())
    }
}

impl tensors::Host for PluginState {
    fn from_list(&mut self, values: Vec<f64>, shape: Vec<u32>, dtype: Dtype) -> TensorResult {
        let device = self.method.device.clone();
        Ok(ops::from_list(&values, &shape, dtype, &device).and_then(|t| self.push_tensor(t)))
    }

    fn full(&mut self, value: f64, shape: Vec<u32>, dtype: Dtype) -> TensorResult {
        let device = self.method.device.clone();
        Ok(ops::full(value, &shape, dtype, &device).and_then(|t| self.push_tensor(t)))
    }
}

/// The tensor operations, on candle tensors, with the checks and error
/// messages plugins see.
pub mod ops {
    use candle_core::{DType, Device, Shape, Tensor};

    use crate::plugins::bindings::v0_2_0::method::tuner::plugin::tensors::{Dtype, TensorError};

    /// Most elements `to-list` copies out.
    pub const MAX_LIST_ELEMENTS: usize = 65_536;
    /// Most elements `from-list` and `full` create (64 Mi).
    pub const MAX_NEW_ELEMENTS: usize = 1 << 26;

    pub type OpResult = Result<Tensor, TensorError>;

    /// The candle dtype of a WIT dtype.
    pub fn candle_dtype(dtype: Dtype) -> DType {
        match dtype {
            Dtype::F32 => DType::F32,
            Dtype::Bf16 => DType::BF16,
            Dtype::F16 => DType::F16,
            Dtype::I64 => DType::I64,
            Dtype::U32 => DType::U32,
        }
    }

    /// The WIT dtype of a candle dtype, if plugins have a name for it.
    pub fn wit_dtype(dtype: DType) -> Option<Dtype> {
        Some(match dtype {
            DType::F32 => Dtype::F32,
            DType::BF16 => Dtype::Bf16,
            DType::F16 => Dtype::F16,
            DType::I64 => Dtype::I64,
            DType::U32 => Dtype::U32,
            _ => return None,
        })
    }

    /// Converts a host tensor (from the batch or the model) to a dtype the
    /// WIT can name: f64 becomes f32, u8 becomes u32.
    pub fn admit(t: Tensor) -> OpResult {
        match t.dtype() {
            DType::F64 | DType::F8E4M3 => t.to_dtype(DType::F32).map_err(err("admit")),
            DType::U8 => t.to_dtype(DType::U32).map_err(err("admit")),
            dt if wit_dtype(dt).is_some() => Ok(t),
            dt => Err(TensorError::Dtype(format!(
                "host tensor of dtype {dt:?} cannot be handed to a plugin"
            ))),
        }
    }

    /// Maps a candle error to the plugin-facing kind, prefixed with the op.
    pub fn err(op: &'static str) -> impl Fn(candle_core::Error) -> TensorError {
        move |e| {
            use candle_core::Error as E;
            let msg = format!("{op}: {e}");
            match e {
                E::ShapeMismatchBinaryOp { .. }
                | E::ShapeMismatch { .. }
                | E::UnexpectedNumberOfDims { .. }
                | E::UnexpectedShape { .. }
                | E::BroadcastIncompatibleShapes { .. }
                | E::OnlySingleDimension { .. }
                | E::EmptyTensor { .. } => TensorError::Shape(msg),
                E::UnexpectedDType { .. }
                | E::DTypeMismatchBinaryOp { .. }
                | E::UnsupportedDTypeForOp(..) => TensorError::Dtype(msg),
                E::DimOutOfRange { .. }
                | E::DuplicateDimIndex { .. }
                | E::NarrowInvalidArgs { .. }
                | E::InvalidIndex { .. } => TensorError::Invalid(msg),
                _ => TensorError::Device(msg),
            }
        }
    }

    fn shape_str(t: &Tensor) -> String {
        format!("{:?}", t.dims())
    }

    fn is_float(dt: DType) -> bool {
        dt.is_float()
    }

    fn need_float(op: &str, t: &Tensor) -> Result<(), TensorError> {
        if is_float(t.dtype()) {
            Ok(())
        } else {
            Err(TensorError::Dtype(format!(
                "{op} needs a float tensor (f32, bf16, f16), got {}; convert it with to-dtype",
                t.dtype().as_str()
            )))
        }
    }

    fn same_dtype(op: &str, a: &Tensor, b: &Tensor) -> Result<(), TensorError> {
        if a.dtype() == b.dtype() {
            Ok(())
        } else {
            Err(TensorError::Dtype(format!(
                "{op}: the operands' dtypes differ ({} and {}); convert one with to-dtype",
                a.dtype().as_str(),
                b.dtype().as_str()
            )))
        }
    }

    /// The broadcast shape of two shapes, NumPy rules.
    fn broadcast(op: &str, a: &Shape, b: &Shape) -> Result<Shape, TensorError> {
        let (ad, bd) = (a.dims(), b.dims());
        let rank = ad.len().max(bd.len());
        let mut out = vec![0; rank];
        for i in 0..rank {
            let x = if i < rank - ad.len() {
                1
            } else {
                ad[i - (rank - ad.len())]
            };
            let y = if i < rank - bd.len() {
                1
            } else {
                bd[i - (rank - bd.len())]
            };
            out[i] = match (x, y) {
                (x, y) if x == y => x,
                (1, y) => y,
                (x, 1) => x,
                _ => {
                    return Err(TensorError::Shape(format!(
                        "{op}: shapes {ad:?} and {bd:?} do not broadcast (dimension {i}: {x} vs {y})"
                    )));
                }
            };
        }
        Ok(Shape::from(out))
    }

    /// Checks `dim` against the rank of `t`.
    fn check_dim(op: &str, t: &Tensor, dim: u32) -> Result<usize, TensorError> {
        let dim = dim as usize;
        if dim < t.rank() {
            Ok(dim)
        } else {
            Err(TensorError::Invalid(format!(
                "{op}: dimension {dim} is out of range for a tensor of shape {}",
                shape_str(t)
            )))
        }
    }

    fn check_dims(op: &str, t: &Tensor, dims: &[u32]) -> Result<Vec<usize>, TensorError> {
        if dims.is_empty() {
            return Err(TensorError::Invalid(format!(
                "{op}: no dimensions given; use {op}-all to reduce every dimension"
            )));
        }
        let mut out = Vec::with_capacity(dims.len());
        for &d in dims {
            let d = check_dim(op, t, d)?;
            if out.contains(&d) {
                return Err(TensorError::Invalid(format!(
                    "{op}: dimension {d} is listed twice"
                )));
            }
            out.push(d);
        }
        out.sort_unstable();
        Ok(out)
    }

    /// Elementwise binary operations (broadcasting).
    #[derive(Debug, Clone, Copy)]
    pub enum Binary {
        Add,
        Sub,
        Mul,
        Div,
        Minimum,
        Maximum,
    }

    pub fn binary(op: Binary, a: &Tensor, b: &Tensor) -> OpResult {
        let name = match op {
            Binary::Add => "add",
            Binary::Sub => "sub",
            Binary::Mul => "mul",
            Binary::Div => "div",
            Binary::Minimum => "minimum",
            Binary::Maximum => "maximum",
        };
        same_dtype(name, a, b)?;
        let shape = broadcast(name, a.shape(), b.shape())?;
        // Explicit broadcast_as keeps the gradient path (candle sums the
        // broadcast dimensions back in backward).
        let a = a.broadcast_as(&shape).map_err(err(name))?;
        let b = b.broadcast_as(&shape).map_err(err(name))?;
        let out = match op {
            Binary::Add => a.add(&b),
            Binary::Sub => a.sub(&b),
            Binary::Mul => a.mul(&b),
            Binary::Div => a.div(&b),
            Binary::Minimum => a.minimum(&b),
            Binary::Maximum => a.maximum(&b),
        };
        out.map_err(err(name))
    }

    /// `a * mul + add`.
    pub fn affine(op: &'static str, a: &Tensor, mul: f64, add: f64) -> OpResult {
        if !mul.is_finite() || !add.is_finite() {
            return Err(TensorError::Invalid(format!(
                "{op}: the value must be finite"
            )));
        }
        a.affine(mul, add).map_err(err(op))
    }

    pub fn neg(a: &Tensor) -> OpResult {
        if a.dtype() == DType::U32 {
            return Err(TensorError::Dtype(
                "neg: u32 has no negative values; convert with to-dtype".into(),
            ));
        }
        a.neg().map_err(err("neg"))
    }

    pub fn exp(a: &Tensor) -> OpResult {
        need_float("exp", a)?;
        a.exp().map_err(err("exp"))
    }

    pub fn log(a: &Tensor) -> OpResult {
        need_float("log", a)?;
        a.log().map_err(err("log"))
    }

    /// `log(sigmoid(x)) = min(x, 0) - log(1 + e^-|x|)`: no overflow for any
    /// `x`, and every step is a differentiable primitive. `min(x, 0)` is
    /// written `x - relu(x)` so the derivative at exactly 0 is right (0.5):
    /// candle gives ties in `minimum` half the gradient each, which would
    /// make it 1. DPO hits `x = 0` on its first step.
    pub fn log_sigmoid(a: &Tensor) -> OpResult {
        need_float("log-sigmoid", a)?;
        let e = err("log-sigmoid");
        let min0 = a.sub(&a.relu().map_err(&e)?).map_err(&e)?;
        let tail = a.abs().map_err(&e)?.neg().map_err(&e)?.exp().map_err(&e)?;
        let tail = tail.affine(1.0, 1.0).map_err(&e)?.log().map_err(&e)?;
        min0.sub(&tail).map_err(&e)
    }

    /// `sigmoid(x) = exp(log_sigmoid(x))`: stable at both ends (the naive
    /// `1 / (1 + e^-x)` has an infinite intermediate for very negative `x`,
    /// whose gradient is NaN).
    pub fn sigmoid(a: &Tensor) -> OpResult {
        need_float("sigmoid", a)?;
        log_sigmoid(a)?.exp().map_err(err("sigmoid"))
    }

    pub fn relu(a: &Tensor) -> OpResult {
        a.relu().map_err(err("relu"))
    }

    pub fn sqr(a: &Tensor) -> OpResult {
        a.sqr().map_err(err("sqr"))
    }

    pub fn sqrt(a: &Tensor) -> OpResult {
        need_float("sqrt", a)?;
        a.sqrt().map_err(err("sqrt"))
    }

    pub fn abs(a: &Tensor) -> OpResult {
        if a.dtype() == DType::U32 {
            return Ok(a.clone());
        }
        a.abs().map_err(err("abs"))
    }

    pub fn clamp(a: &Tensor, min: f64, max: f64) -> OpResult {
        if min.is_nan() || max.is_nan() || min > max {
            return Err(TensorError::Invalid(format!(
                "clamp: min ({min}) must not exceed max ({max})"
            )));
        }
        a.clamp(min, max).map_err(err("clamp"))
    }

    pub fn sum(a: &Tensor, dims: &[u32], keep_dims: bool) -> OpResult {
        let dims = check_dims("sum", a, dims)?;
        if keep_dims {
            a.sum_keepdim(dims)
        } else {
            a.sum(dims)
        }
        .map_err(err("sum"))
    }

    pub fn mean(a: &Tensor, dims: &[u32], keep_dims: bool) -> OpResult {
        need_float("mean", a)?;
        let dims = check_dims("mean", a, dims)?;
        if keep_dims {
            a.mean_keepdim(dims)
        } else {
            a.mean(dims)
        }
        .map_err(err("mean"))
    }

    pub fn max(a: &Tensor, dim: u32, keep_dims: bool) -> OpResult {
        let dim = check_dim("max", a, dim)?;
        if a.dim(dim).map_err(err("max"))? == 0 {
            return Err(TensorError::Shape(format!(
                "max: dimension {dim} of {} is empty",
                shape_str(a)
            )));
        }
        if keep_dims {
            a.max_keepdim(dim)
        } else {
            a.max(dim)
        }
        .map_err(err("max"))
    }

    /// Checks a float tensor and a non-empty `dim` for the softmax family.
    fn softmax_dim(op: &str, a: &Tensor, dim: u32) -> Result<usize, TensorError> {
        need_float(op, a)?;
        let dim = check_dim(op, a, dim)?;
        if a.dims()[dim] == 0 {
            return Err(TensorError::Shape(format!(
                "{op}: dimension {dim} of {} is empty",
                shape_str(a)
            )));
        }
        Ok(dim)
    }

    /// The maximum along `dim` (kept), detached, with infinities and NaN
    /// replaced by 0: the shift that makes `exp` safe. Detached because the
    /// result does not depend on it (its gradient would cancel exactly);
    /// not finite, it would turn `x - max` into NaN for a row of `-inf`.
    fn stable_shift(op: &'static str, a: &Tensor, dim: usize) -> OpResult {
        let e = err(op);
        let max = a.max_keepdim(dim).map_err(&e)?.detach();
        let finite = max.abs().map_err(&e)?.lt(f64::INFINITY).map_err(&e)?;
        let zero = max.zeros_like().map_err(&e)?;
        finite.where_cond(&max, &zero).map_err(&e)
    }

    /// `z = a - m` and `log(sum(exp(z)))` along `dim` (kept), `m` the
    /// stable shift.
    fn shifted_logsumexp(
        op: &'static str,
        a: &Tensor,
        dim: usize,
    ) -> Result<(Tensor, Tensor, Tensor), TensorError> {
        let e = err(op);
        let m = stable_shift(op, a, dim)?;
        let z = a.broadcast_sub(&m).map_err(&e)?;
        let lse = z
            .exp()
            .and_then(|x| x.sum_keepdim(dim))
            .and_then(|x| x.log())
            .map_err(&e)?;
        Ok((z, lse, m))
    }

    /// `log(sum(exp(a)))` along `dim`, kept: `m + log(sum(exp(a - m)))`.
    fn logsumexp_keep(op: &'static str, a: &Tensor, dim: usize) -> OpResult {
        let (_, lse, m) = shifted_logsumexp(op, a, dim)?;
        lse.add(&m).map_err(err(op))
    }

    /// `(a - m) - log(sum(exp(a - m)))` along a checked `dim`: the shifted
    /// values are small, so large logits keep their precision.
    fn log_softmax_at(op: &'static str, a: &Tensor, dim: usize) -> OpResult {
        let (z, lse, _) = shifted_logsumexp(op, a, dim)?;
        z.broadcast_sub(&lse).map_err(err(op))
    }

    /// The log-probabilities of a softmax along `dim`, `a - logsumexp(a)`.
    pub fn log_softmax(a: &Tensor, dim: u32) -> OpResult {
        let dim = softmax_dim("log-softmax", a, dim)?;
        log_softmax_at("log-softmax", a, dim)
    }

    /// `exp(log_softmax(a))`: stable for any logits.
    pub fn softmax(a: &Tensor, dim: u32) -> OpResult {
        let dim = softmax_dim("softmax", a, dim)?;
        log_softmax_at("softmax", a, dim)?
            .exp()
            .map_err(err("softmax"))
    }

    pub fn logsumexp(a: &Tensor, dim: u32, keep_dims: bool) -> OpResult {
        let dim = softmax_dim("logsumexp", a, dim)?;
        let lse = logsumexp_keep("logsumexp", a, dim)?;
        if keep_dims {
            Ok(lse)
        } else {
            lse.squeeze(dim).map_err(err("logsumexp"))
        }
    }

    /// `-sum(exp(a) * a)` along `dim` for log-probabilities `a`. A zero
    /// probability (`a = -inf`) adds 0, as its limit does, rather than
    /// `0 * -inf = NaN`: `a` is first raised to the dtype's lowest finite
    /// value.
    pub fn entropy(a: &Tensor, dim: u32, keep_dims: bool) -> OpResult {
        let dim = softmax_dim("entropy", a, dim)?;
        let e = err("entropy");
        let lowest = match a.dtype() {
            DType::F16 => half::f16::MIN.to_f64(),
            DType::BF16 => half::bf16::MIN.to_f64(),
            DType::F32 => f32::MIN as f64,
            _ => f64::MIN,
        };
        let floor = Tensor::new(lowest, a.device())
            .and_then(|t| t.to_dtype(a.dtype()))
            .and_then(|t| t.broadcast_as(a.shape()))
            .map_err(&e)?;
        let a = a.maximum(&floor).map_err(&e)?;
        let plogp = a.exp().and_then(|p| p.mul(&a)).map_err(&e)?;
        if keep_dims {
            plogp.sum_keepdim(dim)
        } else {
            plogp.sum(dim)
        }
        .and_then(|s| s.neg())
        .map_err(&e)
    }

    pub fn sum_all(a: &Tensor) -> OpResult {
        a.sum_all().map_err(err("sum-all"))
    }

    pub fn mean_all(a: &Tensor) -> OpResult {
        need_float("mean-all", a)?;
        if a.elem_count() == 0 {
            return Err(TensorError::Shape("mean-all: the tensor is empty".into()));
        }
        a.mean_all().map_err(err("mean-all"))
    }

    /// `torch.gather`: `out[i][j] = a[i][index[i][j]]` for `dim = 1`.
    pub fn gather(a: &Tensor, dim: u32, index: &Tensor) -> OpResult {
        let dim = check_dim("gather", a, dim)?;
        if !matches!(index.dtype(), DType::U32 | DType::I64) {
            return Err(TensorError::Dtype(format!(
                "gather: the index must be u32 or i64, got {}",
                index.dtype().as_str()
            )));
        }
        if index.rank() != a.rank() {
            return Err(TensorError::Shape(format!(
                "gather: the index has shape {} but the tensor {}; they need the same rank",
                shape_str(index),
                shape_str(a)
            )));
        }
        for (d, (&n, &m)) in a.dims().iter().zip(index.dims()).enumerate() {
            if d != dim && m > n {
                return Err(TensorError::Shape(format!(
                    "gather: index shape {} exceeds tensor shape {} in dimension {d}",
                    shape_str(index),
                    shape_str(a)
                )));
            }
        }
        // Out-of-range positions would read past the data: refuse them.
        if index.elem_count() > 0 {
            let flat = index
                .flatten_all()
                .map_err(err("gather"))?
                .to_dtype(DType::I64)
                .map_err(err("gather"))?;
            let lo = flat
                .min(0)
                .and_then(|t| t.to_scalar::<i64>())
                .map_err(err("gather"))?;
            let hi = flat
                .max(0)
                .and_then(|t| t.to_scalar::<i64>())
                .map_err(err("gather"))?;
            let size = a.dims()[dim] as i64;
            if lo < 0 || hi >= size {
                let bad = if lo < 0 { lo } else { hi };
                return Err(TensorError::Invalid(format!(
                    "gather: index {bad} is out of range for dimension {dim} of size {size}"
                )));
            }
        }
        a.contiguous()
            .and_then(|a| a.gather(&index.contiguous()?, dim))
            .map_err(err("gather"))
    }

    pub fn narrow(a: &Tensor, dim: u32, start: u32, len: u32) -> OpResult {
        let dim = check_dim("narrow", a, dim)?;
        let size = a.dims()[dim];
        let (start, len) = (start as usize, len as usize);
        if start + len > size {
            return Err(TensorError::Invalid(format!(
                "narrow: {start} .. {} is outside dimension {dim} of size {size}",
                start + len
            )));
        }
        a.narrow(dim, start, len).map_err(err("narrow"))
    }

    pub fn reshape(a: &Tensor, shape: &[u32]) -> OpResult {
        let dims: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
        let count = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
        if count != Some(a.elem_count()) {
            return Err(TensorError::Shape(format!(
                "reshape: cannot view {} ({} elements) as {dims:?}",
                shape_str(a),
                a.elem_count()
            )));
        }
        a.reshape(dims).map_err(err("reshape"))
    }

    /// Where `mask` is non-zero take `a`, else `other`; all three broadcast.
    pub fn where_else(a: &Tensor, mask: &Tensor, other: &Tensor) -> OpResult {
        same_dtype("where-else", a, other)?;
        let shape = broadcast("where-else", a.shape(), other.shape())?;
        let shape = broadcast("where-else", &shape, mask.shape())?;
        let e = err("where-else");
        let pred = mask
            .ne(0f64)
            .map_err(&e)?
            .broadcast_as(&shape)
            .map_err(&e)?;
        let a = a.broadcast_as(&shape).map_err(&e)?;
        let other = other.broadcast_as(&shape).map_err(&e)?;
        pred.where_cond(&a, &other).map_err(&e)
    }

    pub fn to_dtype(a: &Tensor, dtype: Dtype) -> OpResult {
        a.to_dtype(candle_dtype(dtype)).map_err(err("to-dtype"))
    }

    pub fn to_list(a: &Tensor) -> Result<Vec<f64>, TensorError> {
        if a.elem_count() > MAX_LIST_ELEMENTS {
            return Err(TensorError::Limit(format!(
                "to-list: the tensor has {} elements ({}); at most {MAX_LIST_ELEMENTS} are copied out",
                a.elem_count(),
                shape_str(a)
            )));
        }
        let e = err("to-list");
        a.detach()
            .to_dtype(DType::F64)
            .map_err(&e)?
            .flatten_all()
            .map_err(&e)?
            .to_vec1::<f64>()
            .map_err(&e)
    }

    fn new_dims(op: &str, shape: &[u32]) -> Result<Vec<usize>, TensorError> {
        let dims: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
        match dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)) {
            Some(n) if n <= MAX_NEW_ELEMENTS => Ok(dims),
            _ => Err(TensorError::Limit(format!(
                "{op}: shape {dims:?} has more than {MAX_NEW_ELEMENTS} elements"
            ))),
        }
    }

    pub fn from_list(values: &[f64], shape: &[u32], dtype: Dtype, device: &Device) -> OpResult {
        let dims = new_dims("from-list", shape)?;
        let count: usize = dims.iter().product();
        if count != values.len() {
            return Err(TensorError::Shape(format!(
                "from-list: {} values do not fill shape {dims:?} ({count} elements)",
                values.len()
            )));
        }
        let dt = candle_dtype(dtype);
        if let Some(i) = values.iter().position(|v| !fits(*v, dt)) {
            return Err(TensorError::Invalid(format!(
                "from-list: value {} (index {i}) is not a valid {}",
                values[i],
                dt.as_str()
            )));
        }
        let e = err("from-list");
        Tensor::from_slice(values, dims, device)
            .map_err(&e)?
            .to_dtype(dt)
            .map_err(&e)
    }

    pub fn full(value: f64, shape: &[u32], dtype: Dtype, device: &Device) -> OpResult {
        let dims = new_dims("full", shape)?;
        let dt = candle_dtype(dtype);
        if !fits(value, dt) {
            return Err(TensorError::Invalid(format!(
                "full: {value} is not a valid {}",
                dt.as_str()
            )));
        }
        let e = err("full");
        Tensor::new(value, device)
            .and_then(|t| t.to_dtype(dt))
            .and_then(|t| t.broadcast_as(dims))
            .and_then(|t| t.contiguous())
            .map_err(&e)
    }

    /// Whether `v` converts to `dt` without silently changing: integers must
    /// be whole and in range; floats may be anything (NaN and infinities are
    /// the plugin's business).
    fn fits(v: f64, dt: DType) -> bool {
        match dt {
            DType::U32 => v.fract() == 0.0 && (0.0..=u32::MAX as f64).contains(&v),
            DType::I64 => v.fract() == 0.0 && v.abs() <= (1u64 << 53) as f64,
            _ => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor};

    use super::ops;
    use crate::model::qwen3::ops::testing::{finite_diff_check, randn};
    use crate::plugins::bindings::v0_2_0::method::tuner::plugin::tensors::TensorError;

    fn rows(t: &Tensor) -> Vec<Vec<f64>> {
        t.to_dtype(DType::F64).unwrap().to_vec2().unwrap()
    }

    /// `log(sum(exp(row)))` in f64, the maximum subtracted first.
    fn lse(row: &[f64]) -> f64 {
        let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        m + row.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
    }

    fn close(a: f64, b: f64) -> bool {
        a == b || (a - b).abs() <= 1e-5 * (1.0 + a.abs().max(b.abs()))
    }

    const X: [[f32; 4]; 3] = [
        [0.5, -1.0, 2.0, 0.0],
        // Large logits: a naive exp overflows f32.
        [1000.0, 1001.0, 999.5, 1002.0],
        [-3.0, -3.0, -3.0, -3.0],
    ];

    #[test]
    fn the_softmax_family_matches_f64_references() {
        let x = Tensor::new(&X, &Device::Cpu).unwrap();
        let want: Vec<Vec<f64>> = X
            .iter()
            .map(|r| r.iter().map(|&v| v as f64).collect())
            .collect();

        let lsm = rows(&ops::log_softmax(&x, 1).unwrap());
        let sm = rows(&ops::softmax(&x, 1).unwrap());
        let lse_keep = ops::logsumexp(&x, 1, true).unwrap();
        assert_eq!(lse_keep.dims(), [3, 1]);
        let lse_flat: Vec<f64> = ops::logsumexp(&x, 1, false)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_vec1()
            .unwrap();
        let ent: Vec<f64> = ops::entropy(&ops::log_softmax(&x, 1).unwrap(), 1, false)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_vec1()
            .unwrap();
        for (i, row) in want.iter().enumerate() {
            let l = lse(row);
            assert!(
                close(lse_flat[i], l),
                "logsumexp row {i}: {} vs {l}",
                lse_flat[i]
            );
            let mut h = 0.0;
            for (j, &v) in row.iter().enumerate() {
                let lp = v - l;
                assert!(
                    close(lsm[i][j], lp),
                    "log-softmax [{i}][{j}]: {} vs {lp}",
                    lsm[i][j]
                );
                assert!(close(sm[i][j], lp.exp()), "softmax [{i}][{j}]");
                h -= lp.exp() * lp;
            }
            assert!(close(ent[i], h), "entropy row {i}: {} vs {h}", ent[i]);
        }
        // The uniform row: entropy log 4.
        assert!(close(ent[2], 4f64.ln()));
        // Along dimension 0 too.
        let col = rows(&ops::log_softmax(&x, 0).unwrap());
        let c0: Vec<f64> = want.iter().map(|r| r[0]).collect();
        assert!(close(col[1][0], c0[1] - lse(&c0)));
    }

    #[test]
    fn infinities_give_the_limits_not_nan() {
        let inf = f32::INFINITY;
        let x = Tensor::new(&[[-inf, -inf], [0.0, -inf], [inf, 0.0]], &Device::Cpu).unwrap();
        let l: Vec<f32> = ops::logsumexp(&x, 1, false).unwrap().to_vec1().unwrap();
        assert_eq!(l, [-inf, 0.0, inf]);
        // A zero probability adds nothing to the entropy.
        let p = Tensor::new(&[[0.5f32.ln(), 0.5f32.ln(), -inf]], &Device::Cpu).unwrap();
        let h: Vec<f32> = ops::entropy(&p, 1, false).unwrap().to_vec1().unwrap();
        assert!((h[0] - 2f32.ln()).abs() < 1e-6, "{h:?}");
        let lsm = rows(&ops::log_softmax(&p, 1).unwrap());
        assert_eq!(lsm[0][2], f64::NEG_INFINITY);
        assert!((lsm[0][0] - 0.5f64.ln()).abs() < 1e-6);
    }

    #[test]
    fn the_softmax_family_has_the_right_gradients() {
        let x = randn(&[3, 5], 7).affine(3.0, 0.0).unwrap();
        let w = randn(&[3, 5], 8);
        let v = randn(&[3], 9);
        // Every op in one scalar, with weights so no gradient cancels.
        let f = |x: &candle_core::Tensor| -> candle_core::Result<Tensor> {
            let map = |e: TensorError| candle_core::Error::Msg(format!("{e:?}"));
            let lsm = ops::log_softmax(x, 1).map_err(map)?;
            let a = (lsm.clone() * &w)?.sum_all()?;
            let b = (ops::softmax(x, 0).map_err(map)? * &w)?.sum_all()?;
            let c = (ops::logsumexp(x, 1, false).map_err(map)? * &v)?.sum_all()?;
            let d = (ops::entropy(&lsm, 1, true).map_err(map)?.squeeze(1)? * &v)?.sum_all()?;
            let e = ops::logsumexp(x, 0, true).map_err(map)?.sum_all()?;
            a.add(&b)?.add(&c)?.add(&d)?.add(&e)
        };
        finite_diff_check(&x, f, 1e-6);
    }

    #[test]
    fn the_softmax_family_refuses_bad_input() {
        let dev = Device::Cpu;
        let u = Tensor::zeros((2, 3), DType::U32, &dev).unwrap();
        let a = Tensor::zeros((2, 3), DType::F32, &dev).unwrap();
        let empty = Tensor::zeros((2, 0), DType::F32, &dev).unwrap();
        let msg = |e: TensorError| {
            format!("{e:?}")
                .trim_start_matches("TensorError::")
                .to_string()
        };
        assert!(
            msg(ops::log_softmax(&u, 1).unwrap_err())
                .starts_with("Dtype(\"log-softmax needs a float tensor"),
        );
        assert!(
            msg(ops::softmax(&a, 2).unwrap_err())
                .contains("softmax: dimension 2 is out of range for a tensor of shape [2, 3]")
        );
        assert_eq!(
            msg(ops::logsumexp(&empty, 1, false).unwrap_err()),
            "Shape(\"logsumexp: dimension 1 of [2, 0] is empty\")"
        );
        assert!(msg(ops::entropy(&u, 0, false).unwrap_err()).starts_with("Dtype(\"entropy"));
        // bf16 works and stays bf16.
        let b = a.to_dtype(DType::BF16).unwrap();
        let h = ops::entropy(&ops::log_softmax(&b, 1).unwrap(), 1, false).unwrap();
        assert_eq!(h.dtype(), DType::BF16);
        let h: Vec<f32> = h.to_dtype(DType::F32).unwrap().to_vec1().unwrap();
        assert!(h.iter().all(|v| (v - 3f32.ln()).abs() < 1e-2), "{h:?}");
    }
}
