//! Qwen3 self-attention: q/k/v projections, per-head RMSNorm on q and k,
//! rotary embedding, grouped-query attention and the output projection.

use candle_core::{Result, Tensor};

use super::ops::{AttnMask, apply_rope, masked_softmax, rms_norm};
use crate::model::linear::{Linear, Mode};

/// Per-forward inputs shared by every layer.
pub struct LayerCtx {
    /// Rotary tables `[b, 1, s, head_dim]` in the model dtype.
    pub cos: Tensor,
    pub sin: Tensor,
    pub mask: AttnMask,
}

/// A norm weight: a `Var`'s tensor when it trains, a constant otherwise.
#[derive(Clone)]
pub struct RmsNorm {
    pub weight: Tensor,
    pub eps: f64,
}

impl RmsNorm {
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        rms_norm(x, &self.weight, self.eps)
    }
}

pub struct Attention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub o_proj: Linear,
    pub q_norm: RmsNorm,
    pub k_norm: RmsNorm,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
}

impl Attention {
    /// `x` `[b, s, hidden]` -> `[b, s, hidden]`.
    pub fn forward(&self, x: &Tensor, ctx: &LayerCtx, mode: Mode) -> Result<Tensor> {
        let (b, s, _) = x.dims3()?;
        let (h, kvh, d) = (self.num_heads, self.num_kv_heads, self.head_dim);
        // [b, s, heads, d] -> per-head norm -> [b, heads, s, d] -> rope.
        let heads = |proj: &Linear, n: usize, norm: Option<&RmsNorm>| -> Result<Tensor> {
            let t = proj.forward(x, mode)?.reshape((b, s, n, d))?;
            let t = match norm {
                Some(norm) => norm.forward(&t)?,
                None => t,
            };
            t.transpose(1, 2)?.contiguous()
        };
        let q = apply_rope(
            &heads(&self.q_proj, h, Some(&self.q_norm))?,
            &ctx.cos,
            &ctx.sin,
        )?;
        let k = apply_rope(
            &heads(&self.k_proj, kvh, Some(&self.k_norm))?,
            &ctx.cos,
            &ctx.sin,
        )?;
        let v = heads(&self.v_proj, kvh, None)?;
        let (k, v) = (repeat_kv(&k, h / kvh)?, repeat_kv(&v, h / kvh)?);

        let scores = (q.matmul(&k.t()?)? * (1.0 / (d as f64).sqrt()))?;
        let probs = masked_softmax(&scores, &ctx.mask)?.to_dtype(q.dtype())?;
        let out = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, s, h * d))?;
        self.o_proj.forward(&out, mode)
    }

    pub fn linears_mut(&mut self) -> [&mut Linear; 4] {
        [
            &mut self.q_proj,
            &mut self.k_proj,
            &mut self.v_proj,
            &mut self.o_proj,
        ]
    }

    pub fn linears(&self) -> [&Linear; 4] {
        [&self.q_proj, &self.k_proj, &self.v_proj, &self.o_proj]
    }
}

/// `[b, kv, s, d]` -> `[b, kv * n_rep, s, d]`, query head `i` using kv head
/// `i / n_rep` (transformers' `repeat_kv`); the broadcast's backward sums
/// the gradients of the copies.
fn repeat_kv(x: &Tensor, n_rep: usize) -> Result<Tensor> {
    if n_rep == 1 {
        return Ok(x.clone());
    }
    let (b, kv, s, d) = x.dims4()?;
    x.unsqueeze(2)?
        .broadcast_as((b, kv, n_rep, s, d))?
        .reshape((b, kv * n_rep, s, d))
}
