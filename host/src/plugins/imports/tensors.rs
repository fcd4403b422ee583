//! `tuner:plugin/tensors`: the host side of the tensor API method plugins
//! compose their losses from.
//!
//! A plugin holds handles; the candle [`Tensor`]s live in the store's
//! resource table. Every operation is an ordinary candle op, so it records
//! itself on candle's autograd tape and the loss a plugin returns can be
//! differentiated by the host. Composite operations (`log-sigmoid`,
//! `sigmoid`) are built from differentiable primitives for the same reason:
//! candle's fused kernels (as in candle-nn) do not all carry gradients.
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
use crate::plugins::bindings::method::tuner::plugin::tensors::{self, Dtype, TensorError};
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

    use crate::plugins::bindings::method::tuner::plugin::tensors::{Dtype, TensorError};

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
