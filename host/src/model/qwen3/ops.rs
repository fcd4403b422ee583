//! The network's non-linear building blocks, written only with candle ops
//! that have a backward pass (candle-nn's fused softmax / rms-norm / rope
//! have none and would silently cut the gradient).
//!
//! Norms and softmax compute in f32 whatever the model dtype (like
//! transformers), or in f64 when given f64 (finite-difference tests).

use candle_core::backend::BackendStorage;
use std::sync::Mutex;

use candle_core::{
    CpuStorage, CudaStorage, CustomOp1, D, DType, Device, Layout, MetalStorage, Result, Shape,
    Storage, Tensor,
};

/// f32 for half types and f32, f64 for f64.
fn compute_dtype(dtype: DType) -> DType {
    if dtype == DType::F64 {
        DType::F64
    } else {
        DType::F32
    }
}

/// Qwen3RMSNorm: `w * (x / sqrt(mean(x^2) + eps))` over the last dim, the
/// normalisation in f32 and the scale in the input dtype (as transformers).
///
/// A constant weight (frozen base) is applied with an explicit backward
/// pass: through a plain broadcast multiply candle would also compute and
/// keep an activation-sized gradient for the broadcast weight.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let c = x.to_dtype(compute_dtype(x.dtype()))?;
    let inv = (c.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?.recip()?;
    let normed = c.broadcast_mul(&inv)?.to_dtype(x.dtype())?;
    if weight.track_op() {
        return normed.broadcast_mul(weight);
    }
    let w = weight.clone();
    let y = normed.detach().broadcast_mul(&w)?;
    with_backward(y, &normed, "norm-scale", move |_, _, g| g.broadcast_mul(&w))
}

/// Rotary `cos`/`sin` tables `[b, 1, s, head_dim]` for positions `[b, s]`
/// (u32), as transformers' default rope: `inv_freq[i] = theta^(-2i/d)`,
/// angles `pos * inv_freq` in f32, duplicated over both halves.
pub fn rope_tables(
    positions: &Tensor,
    head_dim: usize,
    theta: f64,
    dtype: DType,
) -> Result<(Tensor, Tensor)> {
    let half = head_dim / 2;
    let inv_freq: Vec<f32> = (0..half)
        .map(|i| (1.0 / theta.powf((2 * i) as f64 / head_dim as f64)) as f32)
        .collect();
    let inv_freq = Tensor::from_vec(inv_freq, (1, 1, half), positions.device())?;
    let freqs = positions
        .to_dtype(DType::F32)?
        .unsqueeze(2)?
        .broadcast_mul(&inv_freq)?;
    let emb = Tensor::cat(&[&freqs, &freqs], 2)?.unsqueeze(1)?;
    Ok((emb.cos()?.to_dtype(dtype)?, emb.sin()?.to_dtype(dtype)?))
}

/// `x * cos + rotate_half(x) * sin` for `x` `[b, heads, s, d]`.
///
/// The backward pass is given explicitly ([`with_backward`]): written with
/// plain ops, candle would also compute (and keep until the end of the
/// backward pass) gradients for the broadcast `cos`/`sin` constants.
pub fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let y = rope_value(&x.detach(), cos, sin)?;
    let (cos, sin) = (cos.clone(), sin.clone());
    with_backward(y, x, "rope", move |_x, _y, g| {
        // rotate_half is R x = [-x2, x1]; its transpose maps z to [z2, -z1].
        let gs = g.broadcast_mul(&sin)?;
        let d = gs.dim(D::Minus1)?;
        let (z1, z2) = (
            gs.narrow(D::Minus1, 0, d / 2)?,
            gs.narrow(D::Minus1, d / 2, d - d / 2)?,
        );
        g.broadcast_mul(&cos)? + Tensor::cat(&[&z2, &z1.neg()?], D::Minus1)?
    })
}

fn rope_value(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let d = x.dim(D::Minus1)?;
    let x1 = x.narrow(D::Minus1, 0, d / 2)?;
    let x2 = x.narrow(D::Minus1, d / 2, d - d / 2)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    x.broadcast_mul(cos)? + rotated.broadcast_mul(sin)?
}

/// Which keys each query may attend to, from `segments` `[b, s]` (u32):
/// query `i` sees key `j` iff `j <= i` and `seg[i] == seg[j] != 0`. This is
/// causal masking, padding (segment 0) and packing (no attention across
/// packed sequences) in one rule.
pub struct AttnMask {
    /// `[b, 1, s, s]`, 1 where allowed, 0 elsewhere.
    pub allowed: Tensor,
    /// `[b, 1, s, s]`, 0 where allowed, -1e9 elsewhere (added to scores).
    pub bias: Tensor,
    /// `[b, 1, s, 1]`, 1 for a query that sees nothing (a padding token):
    /// added to its softmax denominator so its weights are 0, not NaN.
    pub empty: Tensor,
}

impl AttnMask {
    /// Builds the mask in `dtype` (f32, or f64 in tests).
    pub fn new(segments: &Tensor, dtype: DType) -> Result<Self> {
        let (_b, s) = segments.dims2()?;
        let seg_i = segments.unsqueeze(2)?;
        let seg_j = segments.unsqueeze(1)?;
        let same = seg_i.broadcast_eq(&seg_j)?.to_dtype(dtype)?;
        let real = seg_j.ne(0u32)?.to_dtype(dtype)?;
        let causal = causal_mask(s, dtype, segments.device())?;
        let allowed = same.broadcast_mul(&real)?.broadcast_mul(&causal)?;
        let empty = allowed.sum_keepdim(2)?.eq(0.0)?.to_dtype(dtype)?;
        let bias = ((&allowed - 1.0)? * 1e9)?;
        Ok(AttnMask {
            allowed: allowed.unsqueeze(1)?,
            bias: bias.unsqueeze(1)?,
            empty: empty.unsqueeze(1)?,
        })
    }
}

/// `[1, s, s]`: 1 where key <= query.
fn causal_mask(s: usize, dtype: DType, device: &Device) -> Result<Tensor> {
    let idx = Tensor::arange(0u32, s as u32, device)?;
    let keys = idx.reshape((1, s))?.broadcast_as((s, s))?;
    let queries = idx.reshape((s, 1))?.broadcast_as((s, s))?;
    keys.le(&queries)?.to_dtype(dtype)?.unsqueeze(0)
}

/// Softmax over the last dim of `scores` `[b, h, s, s]` restricted to the
/// allowed keys, in f32 (f64 for f64), returned in f32/f64.
///
/// Max-subtracted for stability. The backward pass is the softmax Jacobian
/// `p * (g - sum(g * p))` ([`with_backward`]): through plain ops candle
/// would keep score-sized gradients of the mask and max constants for every
/// layer until the backward pass ends.
pub fn masked_softmax(scores: &Tensor, mask: &AttnMask) -> Result<Tensor> {
    let p = masked_softmax_value(&scores.detach(), mask)?;
    let in_dtype = scores.dtype();
    with_backward(p, scores, "masked-softmax", move |_x, p, g| {
        let gp = (g.to_dtype(p.dtype())? * p)?;
        let dot = gp.sum_keepdim(D::Minus1)?;
        (gp - p.broadcast_mul(&dot)?)?.to_dtype(in_dtype)
    })
}

fn masked_softmax_value(scores: &Tensor, mask: &AttnMask) -> Result<Tensor> {
    let s = scores
        .to_dtype(mask.bias.dtype())?
        .broadcast_add(&mask.bias)?;
    let max = s.max_keepdim(D::Minus1)?;
    let e = s.broadcast_sub(&max)?.exp()?.broadcast_mul(&mask.allowed)?;
    let sum = e.sum_keepdim(D::Minus1)?.broadcast_add(&mask.empty)?;
    e.broadcast_div(&sum)
}

/// `log_softmax(logits)[.., target]` for logits `[b, t, V]` and targets
/// `[b, t]` (u32): `z[target] - log(sum(exp(z)))` with `z = logits - max`,
/// without materialising the full log-softmax. Backward: `g * (onehot -
/// softmax)`, computed only when needed, so nothing vocabulary-sized is kept.
pub fn log_softmax_gather(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let targets = targets
        .to_dtype(DType::U32)?
        .unsqueeze(D::Minus1)?
        .contiguous()?;
    let x = logits.detach();
    let z = x.broadcast_sub(&x.max_keepdim(D::Minus1)?)?;
    let lse = z.exp()?.sum_keepdim(D::Minus1)?.log()?;
    let lp = (z.gather(&targets, D::Minus1)? - lse)?.squeeze(D::Minus1)?;
    with_backward(lp, logits, "log-softmax-gather", move |x, _lp, g| {
        let z = x.broadcast_sub(&x.max_keepdim(D::Minus1)?)?;
        let e = z.exp()?;
        let p = e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?;
        let v = x.dim(D::Minus1)?;
        let vocab = Tensor::arange(0u32, v as u32, x.device())?.reshape((1, 1, v))?;
        let onehot = targets.broadcast_eq(&vocab)?.to_dtype(x.dtype())?;
        (onehot - p)?.broadcast_mul(&g.to_dtype(x.dtype())?.unsqueeze(D::Minus1)?)
    })
}

type BackwardFn = dyn Fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor> + Send + Sync;

/// Makes `value`, computed from `input` without a graph, differentiable with
/// respect to `input` with the given backward pass `bwd(input, value, grad)
/// -> input gradient`.
///
/// This is how the model gets hand-written backward passes without writing
/// kernels: the forward pass runs ordinary (device-agnostic) candle ops on a
/// detached input, and a custom op on `input` whose output is `value` carries
/// `bwd` into the graph. The op hands `value` over once (one copy, as candle
/// cannot adopt another tensor's storage) and keeps no reference to it, so
/// the graph holds the result only once. Returns `value` itself when `input`
/// needs no gradient.
pub fn with_backward<F>(value: Tensor, input: &Tensor, name: &'static str, bwd: F) -> Result<Tensor>
where
    F: Fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor> + Send + Sync + 'static,
{
    if !input.track_op() {
        return Ok(value);
    }
    let value = Mutex::new(Some(value.contiguous()?));
    input.apply_op1(Backward {
        name,
        value,
        bwd: Box::new(bwd),
    })
}

struct Backward {
    name: &'static str,
    /// Taken by the forward pass.
    value: Mutex<Option<Tensor>>,
    bwd: Box<BackwardFn>,
}

impl Backward {
    fn take(&self) -> Result<Tensor> {
        let taken = self
            .value
            .lock()
            .map_err(|_| candle_core::Error::Msg("poisoned".into()))?
            .take();
        taken.ok_or_else(|| candle_core::Error::Msg(format!("{}: forward ran twice", self.name)))
    }
}

fn copy_out<S: BackendStorage>(s: &S, l: &Layout) -> Result<(S, Shape)> {
    if !l.is_contiguous() || l.start_offset() != 0 {
        candle_core::bail!("with_backward: value is not contiguous");
    }
    Ok((s.try_clone(l)?, l.shape().clone()))
}

impl CustomOp1 for Backward {
    fn name(&self) -> &'static str {
        self.name
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        let value = self.take()?;
        let (storage, layout) = value.storage_and_layout();
        match &*storage {
            Storage::Cpu(s) => copy_out(s, layout),
            _ => candle_core::bail!("{}: value and input on different devices", self.name),
        }
    }

    fn cuda_fwd(&self, _: &CudaStorage, _: &Layout) -> Result<(CudaStorage, Shape)> {
        let value = self.take()?;
        let (storage, layout) = value.storage_and_layout();
        match &*storage {
            Storage::Cuda(s) => copy_out(s, layout),
            _ => candle_core::bail!("{}: value and input on different devices", self.name),
        }
    }

    fn metal_fwd(&self, _: &MetalStorage, _: &Layout) -> Result<(MetalStorage, Shape)> {
        let value = self.take()?;
        let (storage, layout) = value.storage_and_layout();
        match &*storage {
            Storage::Metal(s) => copy_out(s, layout),
            _ => candle_core::bail!("{}: value and input on different devices", self.name),
        }
    }

    fn bwd(&self, input: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some((self.bwd)(input, res, grad)?))
    }
}

/// Helpers for the model's tests: seeded tensors, closeness, finite differences.
#[cfg(test)]
pub(crate) mod testing {
    use candle_core::{DType, Device, Result, Tensor, Var};

    /// Seeded standard-normal f64 tensor on the CPU (Box-Muller over a
    /// splitmix64 stream, so tests do not depend on candle's global RNG).
    pub fn randn(shape: &[usize], seed: u64) -> Tensor {
        let n: usize = shape.iter().product();
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(1);
        let mut next = || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
        };
        let v: Vec<f64> = (0..n)
            .map(|_| {
                let (u1, u2) = (next().max(1e-300), next());
                (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
            })
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// Max abs difference.
    pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a.to_dtype(DType::F64).unwrap() - b.to_dtype(DType::F64).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    }

    pub fn assert_close(a: &Tensor, b: &Tensor, tol: f64) {
        assert_eq!(a.dims(), b.dims());
        let d = max_abs_diff(a, b);
        assert!(d <= tol, "max abs diff {d} > {tol}");
    }

    /// Checks the autograd gradient of the scalar `f(x)` at `x` (f64)
    /// against central finite differences, element by element.
    pub fn finite_diff_check(x: &Tensor, f: impl Fn(&Tensor) -> Result<Tensor>, tol: f64) {
        let var = Var::from_tensor(&x.to_dtype(DType::F64).unwrap()).unwrap();
        let y = f(var.as_tensor()).unwrap();
        let grads = y.backward().unwrap();
        let analytic: Vec<f64> = grads
            .get(var.as_tensor())
            .expect("x has a gradient")
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let base: Vec<f64> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        let h = 1e-5;
        let eval = |v: &[f64]| -> f64 {
            let t = Tensor::from_slice(v, x.dims(), &Device::Cpu).unwrap();
            f(&t)
                .unwrap()
                .to_dtype(DType::F64)
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        for i in 0..base.len() {
            let mut plus = base.clone();
            plus[i] += h;
            let mut minus = base.clone();
            minus[i] -= h;
            let numeric = (eval(&plus) - eval(&minus)) / (2.0 * h);
            let err = (numeric - analytic[i]).abs();
            assert!(
                err <= tol * numeric.abs().max(1.0),
                "element {i}: autograd {} vs finite difference {numeric}",
                analytic[i]
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    #[test]
    fn rms_norm_gradient() {
        let w = randn(&[6], 1);
        let probe = randn(&[2, 3, 6], 2);
        let x = randn(&[2, 3, 6], 3);
        // Constant weight (explicit backward) ...
        finite_diff_check(&x, |x| (rms_norm(x, &w, 1e-6)? * &probe)?.sum_all(), 1e-6);
        // ... and trained weight (plain ops), same value.
        let wv = candle_core::Var::from_tensor(&w).unwrap();
        let a = rms_norm(&x, &w, 1e-6).unwrap();
        assert_close(&a, &rms_norm(&x, wv.as_tensor(), 1e-6).unwrap(), 0.0);
        finite_diff_check(&w, |w| (rms_norm(&x, w, 1e-6)? * &probe)?.sum_all(), 1e-6);
    }

    #[test]
    fn rope_matches_rotation_and_gradient() {
        let pos = Tensor::new(&[[0u32, 1, 5]], &Device::Cpu).unwrap();
        let (cos, sin) = rope_tables(&pos, 4, 10_000.0, DType::F64).unwrap();
        // Position 1, pair (x0, x2) rotated by angle 1 (inv_freq[0] = 1).
        let x = Tensor::new(&[1.0f64, 0.0, 0.0, 0.0], &Device::Cpu)
            .unwrap()
            .reshape((1, 1, 1, 4))
            .unwrap();
        let x = x.broadcast_as((1, 1, 3, 4)).unwrap().contiguous().unwrap();
        let y = apply_rope(&x, &cos, &sin).unwrap();
        let row: Vec<f64> = y
            .get(0)
            .unwrap()
            .get(0)
            .unwrap()
            .get(1)
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!(
            (row[0] - 1f64.cos()).abs() < 1e-6 && (row[2] - 1f64.sin()).abs() < 1e-6,
            "{row:?}"
        );
        let probe = randn(&[1, 2, 3, 4], 4);
        let x = randn(&[1, 2, 3, 4], 5);
        finite_diff_check(
            &x,
            |x| (apply_rope(x, &cos, &sin)?.sqr()? * &probe)?.sum_all(),
            1e-6,
        );
    }

    #[test]
    fn mask_rule_and_softmax() {
        // Two packed sequences then padding.
        let seg = Tensor::new(&[[1u32, 1, 2, 2, 0]], &Device::Cpu).unwrap();
        let mask = AttnMask::new(&seg, DType::F64).unwrap();
        let allowed: Vec<Vec<f64>> = mask
            .allowed
            .squeeze(0)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec2()
            .unwrap();
        let expect = [
            [1., 0., 0., 0., 0.],
            [1., 1., 0., 0., 0.],
            [0., 0., 1., 0., 0.],
            [0., 0., 1., 1., 0.],
            [0., 0., 0., 0., 0.],
        ];
        for (r, e) in allowed.iter().zip(expect) {
            assert_eq!(r.as_slice(), e.as_slice());
        }
        let scores = randn(&[1, 2, 5, 5], 6);
        let p = masked_softmax(&scores, &mask).unwrap();
        let p: Vec<f64> = p.flatten_all().unwrap().to_vec1().unwrap();
        assert!(p.iter().all(|v| v.is_finite()));
        // Rows sum to 1, the padding row to 0.
        for (i, row) in p.chunks(5).enumerate() {
            let s: f64 = row.iter().sum();
            let want = if i % 5 == 4 { 0.0 } else { 1.0 };
            assert!((s - want).abs() < 1e-12, "row {i}: {s}");
        }
        let probe = randn(&[1, 2, 5, 5], 7);
        finite_diff_check(
            &scores,
            |s| (masked_softmax(s, &mask)? * &probe)?.sum_all(),
            1e-6,
        );
    }

    #[test]
    fn log_softmax_gather_value_and_gradient() {
        let logits = randn(&[2, 3, 7], 8);
        let targets = Tensor::new(&[[0u32, 6, 3], [1, 1, 2]], &Device::Cpu).unwrap();
        let lp = log_softmax_gather(&logits, &targets).unwrap();
        let l: Vec<Vec<Vec<f64>>> = logits.to_vec3().unwrap();
        let got: Vec<Vec<f64>> = lp.to_vec2().unwrap();
        let t: Vec<Vec<u32>> = targets.to_vec2().unwrap();
        for b in 0..2 {
            for i in 0..3 {
                let lse = l[b][i].iter().map(|v| v.exp()).sum::<f64>().ln();
                assert!((got[b][i] - (l[b][i][t[b][i] as usize] - lse)).abs() < 1e-12);
            }
        }
        finite_diff_check(
            &logits,
            |x| (log_softmax_gather(x, &targets)? * 1.7)?.sum_all(),
            1e-6,
        );
    }
}
