//! The linear layers of the network, with the three kinds of base weight that
//! training needs: trainable (full fine-tuning), frozen (adapters on a dense
//! base) and quantised (QLoRA), each optionally carrying a LoRA adapter.
//!
//! A frozen base must not cost a weight-sized gradient: candle's matmul
//! backward always computes both operand gradients, so `x.matmul(W^T)` with a
//! constant `W` would still allocate `[out, in]` per layer per step. The
//! frozen path is therefore a custom op ([`FrozenMatmul`]) whose backward
//! returns only the input gradient `grad @ W`.

use candle_core::backend::BackendStorage;
use candle_core::{
    CpuStorage, CudaStorage, CustomOp1, Layout, Result, Shape, Storage, Tensor, Var,
};

use crate::model::lora::Lora;
use crate::model::quant::QuantizedWeight;

/// The base weight `[out, in]` of a linear layer.
pub enum LinearBase {
    /// Trained directly (full fine-tuning).
    Trainable(Var),
    /// Constant; gradients flow only to the input.
    Frozen(Tensor),
    /// Constant, stored in 4 or 8 bits; gradients flow only to the input.
    Quantized(QuantizedWeight),
}

/// One `nn.Linear` without bias (Qwen3 has none), by its HF module path.
pub struct Linear {
    /// HF module path, e.g. `model.layers.0.self_attn.q_proj`.
    pub name: String,
    pub base: LinearBase,
    pub lora: Option<Lora>,
}

/// How a forward pass runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode {
    /// Training: adapter dropout is active.
    pub training: bool,
    /// Apply LoRA adapters (off gives the base model, e.g. a DPO reference).
    pub adapters: bool,
}

impl Mode {
    /// Training with adapters.
    pub const TRAIN: Mode = Mode {
        training: true,
        adapters: true,
    };
    /// Evaluation with adapters.
    pub const EVAL: Mode = Mode {
        training: false,
        adapters: true,
    };
}

impl Linear {
    /// A linear without adapter.
    pub fn new(name: impl Into<String>, base: LinearBase) -> Self {
        Linear {
            name: name.into(),
            base,
            lora: None,
        }
    }

    /// `x [.., in] -> [.., out]`: `x W^T (+ lora(x))`.
    pub fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let y = match &self.base {
            LinearBase::Trainable(w) => matmul_t(x, w.as_tensor())?,
            LinearBase::Frozen(w) => frozen_matmul(x, w)?,
            LinearBase::Quantized(q) => q.forward(x)?,
        };
        match &self.lora {
            Some(lora) if mode.adapters => y + lora.forward(x, mode.training)?,
            _ => Ok(y),
        }
    }

    /// `(out_features, in_features)`.
    pub fn shape(&self) -> (usize, usize) {
        match &self.base {
            LinearBase::Trainable(w) => dims2(w.as_tensor()),
            LinearBase::Frozen(w) => dims2(w),
            LinearBase::Quantized(q) => q.shape(),
        }
    }

    pub fn in_features(&self) -> usize {
        self.shape().1
    }

    pub fn out_features(&self) -> usize {
        self.shape().0
    }

    /// The dense base weight (dequantised for a quantised base), detached.
    pub fn base_weight(&self) -> Result<Tensor> {
        match &self.base {
            LinearBase::Trainable(w) => Ok(w.as_tensor().detach()),
            LinearBase::Frozen(w) => Ok(w.clone()),
            LinearBase::Quantized(q) => q.dequantize(),
        }
    }

    /// Every variable this layer reads: the base weight when it trains, and
    /// the LoRA factors.
    pub fn vars(&self) -> Vec<Var> {
        let mut vars: Vec<Var> = self.trainable_var().into_iter().cloned().collect();
        if let Some(lora) = &self.lora {
            vars.push(lora.a.clone());
            vars.push(lora.b.clone());
        }
        vars
    }

    /// The trainable base weight, if this layer trains its base.
    pub fn trainable_var(&self) -> Option<&Var> {
        match &self.base {
            LinearBase::Trainable(w) => Some(w),
            _ => None,
        }
    }
}

fn dims2(w: &Tensor) -> (usize, usize) {
    let d = w.dims();
    (d[0], d[1])
}

/// `x [.., in] @ w^T` with `w` `[out, in]`, flattening the leading dims so
/// the matmul is one 2-D product (and its weight gradient one `[out, in]`).
fn matmul_t(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let (rows, in_f, mut out_dims) = flat_dims(x)?;
    let y = x.reshape((rows, in_f))?.matmul(&w.t()?)?;
    *out_dims.last_mut().expect("rank >= 1") = w.dim(0)?;
    y.reshape(out_dims)
}

fn flat_dims(x: &Tensor) -> Result<(usize, usize, Vec<usize>)> {
    let dims = x.dims().to_vec();
    let Some(&in_f) = dims.last() else {
        candle_core::bail!("linear: input is a scalar")
    };
    let rows = dims[..dims.len() - 1].iter().product();
    Ok((rows, in_f, dims))
}

/// `x [.., in] @ w^T` for a constant `w` `[out, in]`; only `x` gets a
/// gradient, and no weight-sized buffer is made in the backward pass.
pub fn frozen_matmul(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let (rows, in_f, mut out_dims) = flat_dims(x)?;
    let (out_f, w_in) = w.dims2()?;
    if w_in != in_f {
        candle_core::bail!("frozen linear: input has {in_f} features, weight [{out_f}, {w_in}]")
    }
    if x.dtype() != w.dtype() {
        candle_core::bail!(
            "frozen linear: input is {:?}, weight {:?}",
            x.dtype(),
            w.dtype()
        )
    }
    let x2 = x.reshape((rows, in_f))?.contiguous()?;
    let y = x2.apply_op1(FrozenMatmul { w: w.contiguous()? })?;
    *out_dims.last_mut().expect("rank >= 1") = out_f;
    y.reshape(out_dims)
}

/// The custom op behind [`frozen_matmul`]: holds `W`, maps `x [n, in]` to
/// `x W^T [n, out]`.
struct FrozenMatmul {
    /// Contiguous `[out, in]`.
    w: Tensor,
}

impl FrozenMatmul {
    /// One product on any backend: `W^T` is the stored weight seen through a
    /// transposed layout, so nothing is copied.
    fn fwd<S: BackendStorage>(&self, x: &S, xl: &Layout, w: &S, wl: &Layout) -> Result<(S, Shape)> {
        let (n, in_f) = xl.shape().dims2()?;
        let (out_f, _) = wl.shape().dims2()?;
        let wt = wl.transpose(0, 1)?;
        let y = x.matmul(w, (1, n, out_f, in_f), xl, &wt)?;
        Ok((y, Shape::from((n, out_f))))
    }
}

impl CustomOp1 for FrozenMatmul {
    fn name(&self) -> &'static str {
        "frozen-linear"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (w, wl) = self.w.storage_and_layout();
        match &*w {
            Storage::Cpu(w) => self.fwd(s, l, w, wl),
            _ => candle_core::bail!("frozen linear: weight and input on different devices"),
        }
    }

    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        let (w, wl) = self.w.storage_and_layout();
        match &*w {
            Storage::Cuda(w) => self.fwd(s, l, w, wl),
            _ => candle_core::bail!("frozen linear: weight and input on different devices"),
        }
    }

    fn bwd(&self, _x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        // d(x W^T)/dx = grad @ W; W is a constant, so this product builds no
        // graph reaching a variable and no weight gradient exists.
        Ok(Some(grad.matmul(&self.w)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::qwen3::ops::testing::{assert_close, finite_diff_check};
    use candle_core::{DType, Device};

    fn randn(shape: &[usize], seed: u64) -> Tensor {
        crate::model::qwen3::ops::testing::randn(shape, seed)
    }

    #[test]
    fn frozen_matches_trainable_forward() {
        let w = randn(&[5, 3], 1);
        let x = randn(&[2, 4, 3], 2);
        let frozen = Linear::new("f", LinearBase::Frozen(w.clone()));
        let train = Linear::new("t", LinearBase::Trainable(Var::from_tensor(&w).unwrap()));
        let a = frozen.forward(&x, Mode::TRAIN).unwrap();
        let b = train.forward(&x, Mode::TRAIN).unwrap();
        assert_eq!(a.dims(), &[2, 4, 5]);
        assert_close(&a, &b, 1e-6);
        assert_eq!(frozen.shape(), (5, 3));
    }

    #[test]
    fn frozen_gradient_matches_finite_differences() {
        let w = randn(&[4, 3], 3);
        let x = randn(&[2, 3, 3], 4);
        // A non-linear readout so every input element matters differently.
        let probe = randn(&[2, 3, 4], 5);
        finite_diff_check(
            &x,
            |x| (frozen_matmul(x, &w)?.sqr()? * &probe)?.sum_all(),
            1e-3,
        );
    }

    #[test]
    fn frozen_weight_gets_no_gradient() {
        let w = randn(&[4, 3], 6);
        let x = Var::from_tensor(&randn(&[2, 3], 7)).unwrap();
        let lin = Linear::new("f", LinearBase::Frozen(w.clone()));
        let y = lin.forward(x.as_tensor(), Mode::TRAIN).unwrap();
        let grads = y.sum_all().unwrap().backward().unwrap();
        // Only the input has a gradient: nothing of the weight's shape exists.
        assert!(grads.get(x.as_tensor()).is_some());
        assert!(grads.get(&w).is_none());
        for id in grads.get_ids() {
            assert_ne!(grads.get_id(*id).unwrap().dims(), &[4, 3]);
        }
        // And it equals grad @ W = ones [2,4] @ W.
        let expect = Tensor::ones((2, 4), DType::F64, &Device::Cpu)
            .unwrap()
            .matmul(&w)
            .unwrap();
        assert_close(grads.get(x.as_tensor()).unwrap(), &expect, 1e-6);
    }
}
