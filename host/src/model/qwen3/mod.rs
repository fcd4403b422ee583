//! Trainable dense Qwen3 in candle.
//!
//! candle-transformers' Qwen3 is inference-only, and several fused candle-nn
//! ops have no backward pass, so the network is built here from
//! differentiable candle ops ([`ops`]) and two custom ops with tested
//! backward passes: the frozen linear ([`crate::model::linear`]) and the
//! per-layer gradient checkpoint ([`checkpoint`]). Modules follow the
//! transformers names, so every weight and LoRA target has its HF path.
//!
//! Gradients: call [`Qwen3::backward`] instead of `loss.backward()`. With
//! gradient checkpointing the layer parameters' gradients are produced inside
//! the recomputation and reach the `GradStore` only through it (or through
//! [`Qwen3::take_checkpoint_grads`] for callers that run backward themselves).

pub mod attention;
pub mod checkpoint;
pub mod config;
pub mod layer;
pub mod mlp;
pub mod ops;
pub mod weights;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, TensorId, Var};

pub use attention::{Attention, LayerCtx, RmsNorm};
pub use checkpoint::CheckpointGrads;
pub use config::Qwen3Config;
pub use layer::DecoderLayer;
pub use mlp::Mlp;
pub use weights::WeightFiles;

use crate::model::linear::{Linear, LinearBase, Mode};
use crate::model::quant::QuantizedWeight;
use ops::{AttnMask, log_softmax_gather, rope_tables};

/// `log_softmax` over the last dimension, `x - max - log(sum(exp(x - max)))`
/// with the (detached) maximum subtracted first, from differentiable ops.
fn log_softmax_last(x: &Tensor) -> candle_core::Result<Tensor> {
    let z = x.broadcast_sub(&x.max_keepdim(candle_core::D::Minus1)?.detach())?;
    let lse = z.exp()?.sum_keepdim(candle_core::D::Minus1)?.log()?;
    z.broadcast_sub(&lse)
}

/// What trains in the base model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrainMode {
    /// Every weight is a variable (full fine-tuning).
    Full,
    /// Base weights are constants; only adapters attached later train.
    Frozen,
}

/// Storage of the frozen decoder linears (embeddings, norms and lm_head stay dense).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quant {
    None,
    Nf4,
    Int8,
}

#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Dtype of the weights and activations (norms and softmax run in f32).
    pub dtype: DType,
    pub train: TrainMode,
    pub quantization: Quant,
    /// Recompute each decoder layer in the backward pass instead of keeping
    /// its activations.
    pub gradient_checkpointing: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            dtype: DType::F32,
            train: TrainMode::Frozen,
            quantization: Quant::None,
            gradient_checkpointing: false,
        }
    }
}

/// One batch as the network sees it.
#[derive(Debug, Clone)]
pub struct ModelInput {
    /// `[b, s]` u32 token ids.
    pub ids: Tensor,
    /// `[b, s]` u32 rotary positions (restarting at 0 per packed sequence).
    pub positions: Tensor,
    /// `[b, s]` u32: 0 = padding, k > 0 = packed sequence k. Token `i` sees
    /// token `j` iff `j <= i && segments[i] == segments[j] != 0`.
    pub segments: Tensor,
}

impl ModelInput {
    /// Right-padded batch of one sequence per row (pad id 0, segment 0).
    pub fn from_rows(rows: &[Vec<u32>], device: &Device) -> candle_core::Result<Self> {
        let s = rows.iter().map(Vec::len).max().unwrap_or(0);
        let (mut ids, mut pos, mut seg) = (Vec::new(), Vec::new(), Vec::new());
        for row in rows {
            for i in 0..s {
                ids.push(row.get(i).copied().unwrap_or(0));
                pos.push(if i < row.len() { i as u32 } else { 0 });
                seg.push(u32::from(i < row.len()));
            }
        }
        let shape = (rows.len(), s);
        Ok(ModelInput {
            ids: Tensor::from_vec(ids, shape, device)?,
            positions: Tensor::from_vec(pos, shape, device)?,
            segments: Tensor::from_vec(seg, shape, device)?,
        })
    }
}

pub struct Qwen3 {
    config: Qwen3Config,
    /// `[vocab, hidden]`; a variable's tensor under full fine-tuning.
    embed_tokens: Tensor,
    /// Shared with the checkpoint ops of a live graph; adapters are attached
    /// (which needs `&mut`) while no graph is alive.
    layers: Vec<Arc<DecoderLayer>>,
    norm: RmsNorm,
    /// With tied embeddings its base is `embed_tokens` (the same `Var` under
    /// full fine-tuning). Shared like the layers when the head is recomputed.
    lm_head: Arc<Linear>,
    /// HF-named base variables (full fine-tuning), each once.
    base_vars: Vec<(String, Var)>,
    checkpointing: bool,
    checkpoint_grads: CheckpointGrads,
    /// Keeps checkpoint ops in the graph when their input needs no gradient.
    anchor: Var,
    /// With checkpointing, `token_logprobs` computes logits in chunks of
    /// about this many elements (256 MB in f32) and recomputes them in the
    /// backward pass, so the `[b, s, vocab]` logits never exist at once.
    logits_chunk_elems: usize,
    dtype: DType,
    device: Device,
}

impl Qwen3 {
    /// Loads `config.json` and the safetensors weights (single file or
    /// sharded with `model.safetensors.index.json`) from `dir`.
    pub fn load(dir: &Path, device: &Device, opts: &LoadOptions) -> Result<Qwen3> {
        let config = Qwen3Config::from_path(dir)?;
        let files = WeightFiles::open(dir)?;
        Self::from_weights(config, &files, device, opts)
            .with_context(|| format!("loading Qwen3 from {}", dir.display()))
    }

    fn from_weights(
        config: Qwen3Config,
        files: &WeightFiles,
        device: &Device,
        opts: &LoadOptions,
    ) -> Result<Qwen3> {
        if opts.train == TrainMode::Full && opts.quantization != Quant::None {
            bail!(
                "quantized base weights cannot be fully fine-tuned: use adapters (LoRA) with 4/8-bit loading"
            );
        }
        let mut loader = Loader {
            files,
            device,
            opts,
            vars: Vec::new(),
        };
        let c = &config;
        let (hid, d) = (c.hidden_size, c.head_dim());
        let (q_dim, kv_dim) = (c.num_attention_heads * d, c.num_key_value_heads * d);
        let embed_tokens = loader.param("model.embed_tokens.weight", &[c.vocab_size, hid])?;
        let norm = |l: &mut Loader, name: &str, n: usize| -> Result<RmsNorm> {
            Ok(RmsNorm {
                weight: l.param(&format!("{name}.weight"), &[n])?,
                eps: c.rms_norm_eps,
            })
        };
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let a = format!("{p}.self_attn");
            let m = format!("{p}.mlp");
            let l = &mut loader;
            layers.push(Arc::new(DecoderLayer {
                input_layernorm: norm(l, &format!("{p}.input_layernorm"), hid)?,
                self_attn: Attention {
                    q_proj: l.linear(&format!("{a}.q_proj"), q_dim, hid)?,
                    k_proj: l.linear(&format!("{a}.k_proj"), kv_dim, hid)?,
                    v_proj: l.linear(&format!("{a}.v_proj"), kv_dim, hid)?,
                    o_proj: l.linear(&format!("{a}.o_proj"), hid, q_dim)?,
                    q_norm: norm(l, &format!("{a}.q_norm"), d)?,
                    k_norm: norm(l, &format!("{a}.k_norm"), d)?,
                    num_heads: c.num_attention_heads,
                    num_kv_heads: c.num_key_value_heads,
                    head_dim: d,
                },
                post_attention_layernorm: norm(l, &format!("{p}.post_attention_layernorm"), hid)?,
                mlp: Mlp {
                    gate_proj: l.linear(&format!("{m}.gate_proj"), c.intermediate_size, hid)?,
                    up_proj: l.linear(&format!("{m}.up_proj"), c.intermediate_size, hid)?,
                    down_proj: l.linear(&format!("{m}.down_proj"), hid, c.intermediate_size)?,
                },
            }));
        }
        let norm = norm(&mut loader, "model.norm", hid)?;
        let lm_head = if c.tie_word_embeddings {
            // One weight for both ends; a checkpoint may still carry a copy
            // of lm_head.weight, which transformers ignores too.
            let base = if embed_tokens.is_variable() {
                LinearBase::Trainable(Var::from_tensor(&embed_tokens)?)
            } else {
                LinearBase::Frozen(embed_tokens.clone())
            };
            Linear::new("lm_head", base)
        } else {
            // lm_head stays dense even with quantization (as bitsandbytes).
            let w = loader.param("lm_head.weight", &[c.vocab_size, hid])?;
            let base = if w.is_variable() {
                LinearBase::Trainable(Var::from_tensor(&w)?)
            } else {
                LinearBase::Frozen(w)
            };
            Linear::new("lm_head", base)
        };
        let base_vars = loader.vars;
        Ok(Qwen3 {
            config,
            embed_tokens,
            layers,
            norm,
            lm_head: Arc::new(lm_head),
            base_vars,
            checkpointing: opts.gradient_checkpointing,
            checkpoint_grads: CheckpointGrads::default(),
            anchor: Var::zeros(1, DType::F32, device)?,
            logits_chunk_elems: 1 << 26,
            dtype: opts.dtype,
            device: device.clone(),
        })
    }

    /// Logits `[b, s, vocab]` in f32.
    pub fn forward(&self, input: &ModelInput, mode: Mode) -> candle_core::Result<Tensor> {
        let h = self.hidden_states(input, mode)?;
        self.lm_head.forward(&h, mode)?.to_dtype(DType::F32)
    }

    /// `[b, s-1]`: `log p(ids[t+1] | ids[..=t])` for every position `t`.
    ///
    /// With gradient checkpointing the lm_head and log-softmax run in chunks
    /// of positions that are recomputed in the backward pass (vocabulary-
    /// sized logits are the largest activation of a small model).
    pub fn token_logprobs(&self, input: &ModelInput, mode: Mode) -> candle_core::Result<Tensor> {
        let (b, s) = input.ids.dims2()?;
        if s < 2 {
            candle_core::bail!("token_logprobs needs at least 2 tokens per row, got {s}");
        }
        let h = self.hidden_states(input, mode)?.narrow(1, 0, s - 1)?;
        let targets = input.ids.narrow(1, 1, s - 1)?;
        if !self.checkpointing {
            let logits = self.lm_head.forward(&h, mode)?.to_dtype(DType::F32)?;
            return log_softmax_gather(&logits, &targets);
        }
        let t = s - 1;
        let len = (self.logits_chunk_elems / (b * self.config.vocab_size).max(1)).clamp(1, t);
        let mut parts = Vec::new();
        for start in (0..t).step_by(len) {
            let n = len.min(t - start);
            let (head, targets) = (self.lm_head.clone(), targets.narrow(1, start, n)?);
            let f = move |h: &Tensor| {
                log_softmax_gather(&head.forward(h, mode)?.to_dtype(DType::F32)?, &targets)
            };
            let vars = self.lm_head.vars();
            let hc = h.narrow(1, start, n)?;
            let grads = &self.checkpoint_grads;
            parts.push(checkpoint::recompute(
                &hc,
                vars,
                grads,
                &self.anchor,
                "checkpointed-head",
                f,
            )?);
        }
        Tensor::cat(&parts, 1)
    }

    /// `[n, vocab]` f32: the log-softmax of the next-token distribution at
    /// `positions` (`[n]` u32), indices into the flattened `[b * (s - 1)]`
    /// prediction positions (row-major, as [`Qwen3::token_logprobs`] lays
    /// them out).
    ///
    /// The lm_head and log-softmax run in chunks of positions of about
    /// `logits_chunk_elems` logits each; with gradient checkpointing each
    /// chunk is recomputed in the backward pass, so only the result (which
    /// the caller asked for) is kept.
    pub fn vocab_logprobs(
        &self,
        input: &ModelInput,
        positions: &Tensor,
        mode: Mode,
    ) -> candle_core::Result<Tensor> {
        let (b, s) = input.ids.dims2()?;
        if s < 2 {
            candle_core::bail!("vocab_logprobs needs at least 2 tokens per row, got {s}");
        }
        let vocab = self.config.vocab_size;
        let n = positions.dim(0)?;
        if n == 0 {
            return Tensor::zeros((0, vocab), DType::F32, &self.device);
        }
        let h = self
            .hidden_states(input, mode)?
            .narrow(1, 0, s - 1)?
            .reshape((b * (s - 1), self.config.hidden_size))?
            .index_select(&positions.to_dtype(DType::U32)?, 0)?;
        let len = (self.logits_chunk_elems / vocab.max(1)).clamp(1, n);
        let mut parts = Vec::new();
        for start in (0..n).step_by(len) {
            let hc = h.narrow(0, start, len.min(n - start))?;
            let head = self.lm_head.clone();
            let f =
                move |h: &Tensor| log_softmax_last(&head.forward(h, mode)?.to_dtype(DType::F32)?);
            parts.push(if self.checkpointing {
                let vars = self.lm_head.vars();
                let grads = &self.checkpoint_grads;
                checkpoint::recompute(&hc, vars, grads, &self.anchor, "checkpointed-vocab-head", f)?
            } else {
                f(&hc)?
            });
        }
        Tensor::cat(&parts, 0)
    }

    /// Sets the logits per chunk of [`Qwen3::token_logprobs`] and
    /// [`Qwen3::vocab_logprobs`], so tests can make several chunks.
    #[cfg(test)]
    pub(crate) fn set_logits_chunk_elems(&mut self, elems: usize) {
        self.logits_chunk_elems = elems;
    }

    /// The final normed hidden states `[b, s, hidden]` in the model dtype.
    pub fn hidden_states(&self, input: &ModelInput, mode: Mode) -> candle_core::Result<Tensor> {
        let (b, s) = input.ids.dims2()?;
        for (name, t) in [
            ("positions", &input.positions),
            ("segments", &input.segments),
        ] {
            if t.dims() != [b, s] {
                candle_core::bail!("ModelInput.{name} is {:?}, ids are [{b}, {s}]", t.dims());
            }
        }
        let c = &self.config;
        let ids = input.ids.flatten_all()?;
        let mut x = self
            .embed_tokens
            .index_select(&ids, 0)?
            .reshape((b, s, c.hidden_size))?;
        let (cos, sin) = rope_tables(&input.positions, c.head_dim(), c.rope_theta(), self.dtype)?;
        let mask_dtype = if self.dtype == DType::F64 {
            DType::F64
        } else {
            DType::F32
        };
        let mask = AttnMask::new(&input.segments, mask_dtype)?;
        let ctx = Arc::new(LayerCtx { cos, sin, mask });
        for layer in &self.layers {
            x = if self.checkpointing {
                checkpoint::checkpointed(
                    layer,
                    &x,
                    &ctx,
                    mode,
                    &self.checkpoint_grads,
                    &self.anchor,
                )?
            } else {
                layer.forward(&x, &ctx, mode)?
            };
        }
        self.norm.forward(&x)
    }

    /// `loss.backward()` plus the parameter gradients computed inside
    /// checkpointed layers. Use this rather than `loss.backward()`.
    pub fn backward(&self, loss: &Tensor) -> candle_core::Result<GradStore> {
        let mut grads = loss.backward()?;
        self.checkpoint_grads.merge_into(&mut grads)?;
        Ok(grads)
    }

    /// The gradients checkpointed layers produced since the last call, for a
    /// caller that ran `loss.backward()` itself: add each to the `GradStore`
    /// entry of its variable.
    pub fn take_checkpoint_grads(&self) -> HashMap<TensorId, (Var, Tensor)> {
        self.checkpoint_grads.take()
    }

    /// Every linear, by HF module path, lm_head last; for attaching adapters.
    ///
    /// Panics if a computation graph from an earlier forward pass with
    /// checkpointing is still alive (it shares the layers).
    pub fn linears_mut(&mut self) -> impl Iterator<Item = &mut Linear> {
        self.layers
            .iter_mut()
            .flat_map(|l| {
                Arc::get_mut(l)
                    .expect("no forward graph may be alive while linears are modified")
                    .linears_mut()
            })
            .chain(std::iter::once(Arc::get_mut(&mut self.lm_head).expect(
                "no forward graph may be alive while linears are modified",
            )))
    }

    /// Every linear, by HF module path, lm_head last.
    pub fn linears(&self) -> impl Iterator<Item = &Linear> + Clone {
        self.layers
            .iter()
            .flat_map(|l| l.linears())
            .chain(std::iter::once(&*self.lm_head))
    }

    /// What the optimiser updates: base weights under full fine-tuning (HF
    /// names, the tied embedding once), then LoRA factors under PEFT names
    /// (`base_model.model.<module>.lora_A.weight`).
    pub fn trainable_vars(&self) -> Vec<(String, Var)> {
        let mut vars = self.base_vars.clone();
        for lin in self.linears() {
            if let Some(lora) = &lin.lora {
                vars.push((
                    format!("base_model.model.{}.lora_A.weight", lin.name),
                    lora.a.clone(),
                ));
                vars.push((
                    format!("base_model.model.{}.lora_B.weight", lin.name),
                    lora.b.clone(),
                ));
            }
        }
        vars
    }

    /// Every base weight under its HF name (quantised ones dequantised;
    /// `lm_head.weight` only when untied), e.g. for exporting merged models.
    pub fn named_weights(&self) -> candle_core::Result<Vec<(String, Tensor)>> {
        let mut out = vec![(
            "model.embed_tokens.weight".to_string(),
            self.embed_tokens.detach(),
        )];
        for (i, layer) in self.layers.iter().enumerate() {
            let p = format!("model.layers.{i}");
            for (name, norm) in [
                ("input_layernorm", &layer.input_layernorm),
                ("post_attention_layernorm", &layer.post_attention_layernorm),
                ("self_attn.q_norm", &layer.self_attn.q_norm),
                ("self_attn.k_norm", &layer.self_attn.k_norm),
            ] {
                out.push((format!("{p}.{name}.weight"), norm.weight.detach()));
            }
            for lin in layer.linears() {
                out.push((format!("{}.weight", lin.name), lin.base_weight()?));
            }
        }
        out.push(("model.norm.weight".to_string(), self.norm.weight.detach()));
        if !self.config.tie_word_embeddings {
            out.push(("lm_head.weight".to_string(), self.lm_head.base_weight()?));
        }
        Ok(out)
    }

    pub fn config(&self) -> &Qwen3Config {
        &self.config
    }

    /// The embedding table `[vocab, hidden]` (for the inference forward in
    /// [`crate::infer`], which runs the same weights without autograd).
    pub fn embed_tokens(&self) -> &Tensor {
        &self.embed_tokens
    }

    /// The decoder layers, in order.
    pub fn layers(&self) -> &[Arc<DecoderLayer>] {
        &self.layers
    }

    /// The final norm before the head.
    pub fn final_norm(&self) -> &RmsNorm {
        &self.norm
    }

    /// The output head (tied to the embeddings when the config says so).
    pub fn lm_head(&self) -> &Linear {
        &self.lm_head
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn gradient_checkpointing(&self) -> bool {
        self.checkpointing
    }

    /// Turns per-layer recomputation on or off.
    pub fn set_gradient_checkpointing(&mut self, on: bool) {
        self.checkpointing = on;
    }
}

/// Reads weights and decides, per LoadOptions, what each becomes.
struct Loader<'a> {
    files: &'a WeightFiles,
    device: &'a Device,
    opts: &'a LoadOptions,
    vars: Vec<(String, Var)>,
}

impl Loader<'_> {
    fn load(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.files.load(name, shape, self.opts.dtype, self.device)
    }

    /// A dense parameter: a variable's tensor under full fine-tuning.
    fn param(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self.load(name, shape)?;
        Ok(match self.opts.train {
            TrainMode::Full => {
                let var = Var::from_tensor(&t)?;
                self.vars.push((name.to_string(), var.clone()));
                var.as_tensor().clone()
            }
            TrainMode::Frozen => t,
        })
    }

    /// A decoder linear `[out, in]`, by module path (no `.weight`).
    fn linear(&mut self, module: &str, out_f: usize, in_f: usize) -> Result<Linear> {
        let name = format!("{module}.weight");
        let base = match (self.opts.train, self.opts.quantization) {
            (TrainMode::Full, _) => {
                let t = self.param(&name, &[out_f, in_f])?;
                LinearBase::Trainable(Var::from_tensor(&t)?)
            }
            (TrainMode::Frozen, Quant::None) => {
                LinearBase::Frozen(self.load(&name, &[out_f, in_f])?)
            }
            (TrainMode::Frozen, Quant::Nf4) => {
                LinearBase::Quantized(QuantizedWeight::nf4(&self.load(&name, &[out_f, in_f])?)?)
            }
            (TrainMode::Frozen, Quant::Int8) => {
                LinearBase::Quantized(QuantizedWeight::int8(&self.load(&name, &[out_f, in_f])?)?)
            }
        };
        Ok(Linear::new(module, base))
    }
}

#[cfg(test)]
mod tests;
