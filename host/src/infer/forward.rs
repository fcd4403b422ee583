//! The inference forward pass: the training network's weights, run without
//! autograd, over a *ragged* batch with a KV cache per sequence.
//!
//! Every new token of every sequence in a step (a whole prompt chunk for a
//! sequence in prefill, one token for one in decode) is one row of a single
//! `[tokens, hidden]` matrix, so the projections and the MLP (nearly all of
//! the work) are one matrix product per weight with no padding at all; only
//! attention runs per sequence, against that sequence's own cache. Prefill
//! and decode mix freely in one step, which is what continuous batching
//! needs.
//!
//! Fused candle-nn kernels (rms-norm, rope, softmax) replace the
//! differentiable ops of [`crate::model::qwen3::ops`]; the results agree
//! with [`Qwen3::forward`] to float rounding (tested).

use std::ops::Range;

use candle_core::{DType, Device, Result, Tensor};

use super::adapter::LoadedAdapter;
use super::cache::SeqCache;
use crate::model::linear::{Linear, Mode};
use crate::model::qwen3::{Attention, DecoderLayer, Qwen3, RmsNorm};

/// Which adapters a forward pass applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachedAdapters {
    /// Ignore adapters attached to the model's linears (serving: adapters are
    /// chosen per sequence through [`Step::adapter`]).
    Off,
    /// Apply the adapters attached to the linears (the policy being trained).
    On,
}

/// One sequence's share of a step.
pub struct Step<'a> {
    pub cache: &'a mut SeqCache,
    /// The new tokens, at positions `cache.len() ..`.
    pub tokens: &'a [u32],
    /// A separately loaded adapter for this sequence.
    pub adapter: Option<&'a LoadedAdapter>,
}

/// Which logits a step returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// The last new token of each sequence: `[steps, vocab]`.
    Last,
    /// Every new token: `[total new tokens, vocab]`, sequences in order.
    All,
}

/// Rotary tables for positions `0 .. len`, `[len, head_dim / 2]`.
struct Rope {
    cos: Tensor,
    sin: Tensor,
}

impl Rope {
    /// transformers' default rope, computed as [`crate::model::qwen3::ops::rope_tables`]
    /// does (angles in f32) so both paths see the same values.
    fn new(len: usize, head_dim: usize, theta: f64, dtype: DType, device: &Device) -> Result<Self> {
        let half = head_dim / 2;
        let inv_freq: Vec<f32> = (0..half)
            .map(|i| (1.0 / theta.powf((2 * i) as f64 / head_dim as f64)) as f32)
            .collect();
        let mut cos = Vec::with_capacity(len * half);
        let mut sin = Vec::with_capacity(len * half);
        for p in 0..len {
            for f in &inv_freq {
                let angle = p as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        Ok(Rope {
            cos: Tensor::from_vec(cos, (len, half), device)?.to_dtype(dtype)?,
            sin: Tensor::from_vec(sin, (len, half), device)?.to_dtype(dtype)?,
        })
    }

    fn len(&self) -> usize {
        self.cos.dims()[0]
    }
}

/// Runs a [`Qwen3`] for generation.
pub struct Decoder<'m> {
    model: &'m Qwen3,
    attached: AttachedAdapters,
    rope: Rope,
}

impl<'m> Decoder<'m> {
    /// A decoder for sequences of at most `max_len` positions.
    pub fn new(model: &'m Qwen3, attached: AttachedAdapters, max_len: usize) -> Result<Self> {
        let c = model.config();
        let rope = Rope::new(
            max_len.max(1),
            c.head_dim(),
            c.rope_theta(),
            model.dtype(),
            model.device(),
        )?;
        Ok(Decoder {
            model,
            attached,
            rope,
        })
    }

    pub fn model(&self) -> &Qwen3 {
        self.model
    }

    /// The longest sequence this decoder can run.
    pub fn max_len(&self) -> usize {
        self.rope.len()
    }

    /// A fresh cache for one sequence.
    pub fn new_cache(&self) -> SeqCache {
        SeqCache::new(self.model.layers().len())
    }

    /// Feeds each step's tokens, appends them to its cache and returns f32
    /// logits (see [`Logits`]).
    pub fn forward(&self, steps: &mut [Step<'_>], logits: Logits) -> Result<Tensor> {
        let model = self.model;
        if steps.is_empty() {
            candle_core::bail!("a forward step needs at least one sequence");
        }
        let mut spans = Vec::with_capacity(steps.len());
        let mut ids = Vec::new();
        for step in steps.iter() {
            if step.tokens.is_empty() {
                candle_core::bail!("every sequence of a step needs at least one new token");
            }
            let start = step.cache.len();
            if start + step.tokens.len() > self.max_len() {
                candle_core::bail!(
                    "sequence of {} tokens exceeds the decoder's {} positions",
                    start + step.tokens.len(),
                    self.max_len()
                );
            }
            spans.push(ids.len()..ids.len() + step.tokens.len());
            ids.extend_from_slice(step.tokens);
        }
        let groups = adapter_groups(steps, &spans);
        let device = model.device();
        let ids = Tensor::from_vec(ids, spans.last().map_or(0, |s| s.end), device)?;
        let mut x = model.embed_tokens().index_select(&ids, 0)?;
        for (i, layer) in model.layers().iter().enumerate() {
            x = self.layer(layer, i, &x, steps, &spans, &groups)?;
        }
        let (rows, groups) = match logits {
            Logits::All => (x, groups),
            Logits::Last => {
                let last: Vec<u32> = spans.iter().map(|s| (s.end - 1) as u32).collect();
                let n = last.len();
                let last = Tensor::from_vec(last, n, device)?;
                let groups = (0..steps.len())
                    .map(|i| (i..i + 1, steps[i].adapter))
                    .collect::<Vec<_>>();
                (x.index_select(&last, 0)?, merge_groups(groups))
            }
        };
        let h = norm(model.final_norm(), &rows)?;
        self.linear(model.lm_head(), &h, &groups)?
            .to_dtype(DType::F32)
    }

    fn layer(
        &self,
        layer: &DecoderLayer,
        index: usize,
        x: &Tensor,
        steps: &mut [Step<'_>],
        spans: &[Range<usize>],
        groups: &[(Range<usize>, Option<&LoadedAdapter>)],
    ) -> Result<Tensor> {
        let h = norm(&layer.input_layernorm, x)?;
        let attn = self.attention(&layer.self_attn, index, &h, steps, spans, groups)?;
        let x = (x + attn)?;
        let h = norm(&layer.post_attention_layernorm, &x)?;
        let mlp = &layer.mlp;
        let gate = self.linear(&mlp.gate_proj, &h, groups)?.silu()?;
        let up = self.linear(&mlp.up_proj, &h, groups)?;
        let down = self.linear(&mlp.down_proj, &(gate * up)?, groups)?;
        x + down
    }

    fn attention(
        &self,
        attn: &Attention,
        layer: usize,
        x: &Tensor,
        steps: &mut [Step<'_>],
        spans: &[Range<usize>],
        groups: &[(Range<usize>, Option<&LoadedAdapter>)],
    ) -> Result<Tensor> {
        let (h, kvh, d) = (attn.num_heads, attn.num_kv_heads, attn.head_dim);
        let n_rep = h / kvh;
        let q_all = self.linear(&attn.q_proj, x, groups)?;
        let k_all = self.linear(&attn.k_proj, x, groups)?;
        let v_all = self.linear(&attn.v_proj, x, groups)?;
        let scale = 1.0 / (d as f64).sqrt();
        let mut outs = Vec::with_capacity(steps.len());
        for (step, span) in steps.iter_mut().zip(spans) {
            let t = span.len();
            let start = step.cache.len();
            // [t, heads * d] -> [t, heads, d] -> per-head norm -> [1, heads, t, d] -> rope.
            let heads = |all: &Tensor, n: usize, norm_w: Option<&RmsNorm>| -> Result<Tensor> {
                let t3 = all.narrow(0, span.start, t)?.reshape((t, n, d))?;
                let t3 = match norm_w {
                    Some(w) => norm(w, &t3)?,
                    None => t3,
                };
                t3.transpose(0, 1)?.contiguous()
            };
            let cos = self.rope.cos.narrow(0, start, t)?;
            let sin = self.rope.sin.narrow(0, start, t)?;
            let rope = |x: Tensor| -> Result<Tensor> {
                candle_nn::rotary_emb::rope(&x.unsqueeze(0)?, &cos, &sin)?.squeeze(0)
            };
            let q = rope(heads(&q_all, h, Some(&attn.q_norm))?)?;
            let k = rope(heads(&k_all, kvh, Some(&attn.k_norm))?)?;
            let v = heads(&v_all, kvh, None)?;
            let (k, v) = step.cache.append(layer, &k, &v)?;
            let total = start + t;
            // Grouped-query attention without copying the cache: the n_rep
            // query heads of one kv head form one [n_rep * t, d] block.
            let q = q.reshape((kvh, n_rep * t, d))?;
            let scores = (q.matmul(&k.t()?)? * scale)?.to_dtype(DType::F32)?;
            let scores = if t > 1 {
                let mask = causal_bias(t, start, total, x.device())?;
                scores
                    .reshape((kvh, n_rep, t, total))?
                    .broadcast_add(&mask)?
                    .reshape((kvh, n_rep * t, total))?
            } else {
                scores
            };
            let probs = candle_nn::ops::softmax_last_dim(&scores)?.to_dtype(v.dtype())?;
            let out = probs.matmul(&v.contiguous()?)?; // [kvh, n_rep * t, d]
            outs.push(
                out.reshape((h, t, d))?
                    .transpose(0, 1)?
                    .reshape((t, h * d))?,
            );
        }
        let out = if outs.len() == 1 {
            outs.pop().expect("one")
        } else {
            Tensor::cat(&outs, 0)?
        };
        self.linear(&attn.o_proj, &out, groups)
    }

    /// `x W^T` for every row, plus each group's adapter on its rows.
    fn linear(
        &self,
        lin: &Linear,
        x: &Tensor,
        groups: &[(Range<usize>, Option<&LoadedAdapter>)],
    ) -> Result<Tensor> {
        let mode = Mode {
            training: false,
            adapters: self.attached == AttachedAdapters::On,
        };
        let y = lin.forward(x, mode)?;
        let adapted: Vec<_> = groups
            .iter()
            .filter_map(|(rows, a)| Some((rows, a.and_then(|a| a.module(&lin.name))?)))
            .collect();
        if adapted.is_empty() {
            return Ok(y);
        }
        if let [(rows, m)] = adapted.as_slice()
            && rows.len() == x.dim(0)?
        {
            return y + m.delta(x)?;
        }
        // Several adapters (or some rows without one): rebuild row by group.
        let mut parts = Vec::with_capacity(groups.len());
        for (rows, a) in groups {
            let yg = y.narrow(0, rows.start, rows.len())?;
            parts.push(match a.and_then(|a| a.module(&lin.name)) {
                Some(m) => (yg + m.delta(&x.narrow(0, rows.start, rows.len())?)?)?,
                None => yg,
            });
        }
        Tensor::cat(&parts, 0)
    }
}

/// RMS norm over the last dim with the fused kernel (computes in f32).
fn norm(n: &RmsNorm, x: &Tensor) -> Result<Tensor> {
    candle_nn::ops::rms_norm(&x.contiguous()?, &n.weight, n.eps as f32)
}

/// `[t, total]`: 0 where query `i` (at position `start + i`) may see key
/// `j` (`j <= start + i`), -inf elsewhere.
fn causal_bias(t: usize, start: usize, total: usize, device: &Device) -> Result<Tensor> {
    let mask: Vec<f32> = (0..t)
        .flat_map(|i| {
            (0..total).map(move |j| {
                if j <= start + i {
                    0.0
                } else {
                    f32::NEG_INFINITY
                }
            })
        })
        .collect();
    Tensor::from_vec(mask, (t, total), device)
}

/// Rows grouped into runs of consecutive sequences with the same adapter.
fn adapter_groups<'a>(
    steps: &[Step<'a>],
    spans: &[Range<usize>],
) -> Vec<(Range<usize>, Option<&'a LoadedAdapter>)> {
    merge_groups(
        steps
            .iter()
            .zip(spans)
            .map(|(s, span)| (span.clone(), s.adapter))
            .collect(),
    )
}

fn merge_groups<'a>(
    runs: Vec<(Range<usize>, Option<&'a LoadedAdapter>)>,
) -> Vec<(Range<usize>, Option<&'a LoadedAdapter>)> {
    let mut out: Vec<(Range<usize>, Option<&'a LoadedAdapter>)> = Vec::new();
    for (rows, a) in runs {
        match out.last_mut() {
            Some((last, b)) if same_adapter(*b, a) && last.end == rows.start => last.end = rows.end,
            _ => out.push((rows, a)),
        }
    }
    out
}

fn same_adapter(a: Option<&LoadedAdapter>, b: Option<&LoadedAdapter>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => std::ptr::eq(a, b),
        _ => false,
    }
}
