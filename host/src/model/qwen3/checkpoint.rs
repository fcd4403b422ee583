//! Per-layer gradient checkpointing (candle has none).
//!
//! The forward pass runs a layer on a detached copy of its input and keeps
//! only the output: the layer's activations are freed at once. The output is
//! tied back into the graph by a custom op over `(output, input)` that is the
//! identity on `output`. Its backward pass recomputes the layer from a fresh
//! variable copy of the input, backpropagates `sum(out * grad)` through that
//! small graph, returns the input's gradient to the outer backward pass and
//! deposits the layer's parameter gradients in a [`CheckpointGrads`]
//! collector, because a custom op can only return gradients for its own
//! arguments. After `loss.backward()` the caller merges the collector into
//! the `GradStore` ([`CheckpointGrads::merge_into`]; `Qwen3::backward` does
//! both).
//!
//! Recomputation must see the same function as the forward pass: anything
//! random inside a layer (LoRA dropout) has to draw the same mask again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, TensorId, Var};

use super::attention::LayerCtx;
use super::layer::DecoderLayer;
use super::ops::with_backward;
use crate::model::linear::Mode;

/// Parameter gradients produced inside checkpointed backward passes, keyed by
/// variable, accumulated over layers (and over calls until taken).
#[derive(Clone, Default)]
pub struct CheckpointGrads(Arc<Mutex<HashMap<TensorId, (Var, Tensor)>>>);

impl CheckpointGrads {
    fn add(&self, var: &Var, grad: Tensor) -> Result<()> {
        let mut map = self.0.lock().expect("checkpoint grads lock");
        match map.get_mut(&var.as_tensor().id()) {
            Some((_, sum)) => *sum = (&*sum + grad)?,
            None => {
                map.insert(var.as_tensor().id(), (var.clone(), grad));
            }
        }
        Ok(())
    }

    /// Removes and returns everything collected so far.
    pub fn take(&self) -> HashMap<TensorId, (Var, Tensor)> {
        std::mem::take(&mut *self.0.lock().expect("checkpoint grads lock"))
    }

    /// Moves the collected gradients into `grads`, adding to any gradient the
    /// variable already has there.
    pub fn merge_into(&self, grads: &mut GradStore) -> Result<()> {
        for (_, (var, g)) in self.take() {
            let sum = match grads.remove(var.as_tensor()) {
                Some(prev) => (prev + g)?,
                None => g,
            };
            grads.insert(var.as_tensor(), sum);
        }
        Ok(())
    }
}

/// Runs `layer` on `x` without keeping its activations; see the module docs.
///
/// `anchor` is a variable that keeps the op in the backward graph when `x`
/// itself needs no gradient (the embedding output of a frozen model): the
/// layer's LoRA factors still need theirs.
pub fn checkpointed(
    layer: &Arc<DecoderLayer>,
    x: &Tensor,
    ctx: &Arc<LayerCtx>,
    mode: Mode,
    grads: &CheckpointGrads,
    anchor: &Var,
) -> Result<Tensor> {
    let (layer2, ctx) = (layer.clone(), ctx.clone());
    let f = move |x: &Tensor| layer2.forward(x, &ctx, mode);
    recompute(x, layer.vars(), grads, anchor, "checkpointed-layer", f)
}

/// `f(x)` without keeping `f`'s intermediate tensors: recomputed in the
/// backward pass, where the gradients of `vars` (everything `f` reads that
/// trains) go to `grads` and the input gradient to the outer graph.
pub fn recompute<F>(
    x: &Tensor,
    vars: Vec<Var>,
    grads: &CheckpointGrads,
    anchor: &Var,
    name: &'static str,
    f: F,
) -> Result<Tensor>
where
    F: Fn(&Tensor) -> Result<Tensor> + Send + Sync + 'static,
{
    let out = f(&x.detach())?.detach();
    let arg = if x.track_op() {
        x.clone()
    } else {
        x.broadcast_add(&anchor.as_tensor().to_dtype(x.dtype())?)?
    };
    let grads = grads.clone();
    with_backward(out, &arg, name, move |x, _out, grad| {
        let x_var = Var::from_tensor(&x.detach())?;
        let out = f(x_var.as_tensor())?;
        let grad = grad.detach().to_dtype(out.dtype())?;
        let inner = (out * grad)?.sum_all()?.backward()?;
        for var in &vars {
            if let Some(g) = inner.get(var.as_tensor()) {
                grads.add(var, g.clone())?;
            }
        }
        // Returned even for an anchored input: candle expects every tracked
        // argument to receive a gradient (the anchor's is never read).
        inner
            .get(x_var.as_tensor())
            .cloned()
            .ok_or_else(|| candle_core::Error::Msg(format!("{name}: no input gradient")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::linear::{Linear, LinearBase};
    use crate::model::qwen3::attention::{Attention, RmsNorm};
    use crate::model::qwen3::mlp::Mlp;
    use crate::model::qwen3::ops::testing::{finite_diff_check, max_abs_diff, randn};
    use crate::model::qwen3::ops::{AttnMask, rope_tables};
    use candle_core::{DType, Device};

    /// A random f64 decoder layer whose every weight is a variable:
    /// hidden 8, 2 query heads sharing 1 kv head of size 4, intermediate 12.
    fn random_layer() -> DecoderLayer {
        let seed = std::cell::Cell::new(10u64);
        let var = |shape: &[usize], scale: f64| {
            seed.set(seed.get() + 1);
            Var::from_tensor(&(randn(shape, seed.get()) * scale).unwrap()).unwrap()
        };
        let lin = |name: &str, o: usize, i: usize| {
            Linear::new(name, LinearBase::Trainable(var(&[o, i], 0.4)))
        };
        // Norm weights near 1, as variables (so they train too).
        let norm = |n: usize| {
            let w = (var(&[n], 0.1).as_tensor() + 1.0).unwrap().detach();
            RmsNorm {
                weight: Var::from_tensor(&w).unwrap().as_tensor().clone(),
                eps: 1e-6,
            }
        };
        DecoderLayer {
            input_layernorm: norm(8),
            self_attn: Attention {
                q_proj: lin("q", 8, 8),
                k_proj: lin("k", 4, 8),
                v_proj: lin("v", 4, 8),
                o_proj: lin("o", 8, 8),
                q_norm: norm(4),
                k_norm: norm(4),
                num_heads: 2,
                num_kv_heads: 1,
                head_dim: 4,
            },
            post_attention_layernorm: norm(8),
            mlp: Mlp {
                gate_proj: lin("g", 12, 8),
                up_proj: lin("u", 12, 8),
                down_proj: lin("d", 8, 12),
            },
        }
    }

    fn ctx() -> Arc<LayerCtx> {
        let dev = Device::Cpu;
        let positions = Tensor::new(&[[0u32, 1, 2, 0], [0, 1, 0, 1]], &dev).unwrap();
        let segments = Tensor::new(&[[1u32, 1, 1, 0], [1, 1, 2, 2]], &dev).unwrap();
        let (cos, sin) = rope_tables(&positions, 4, 1e4, DType::F64).unwrap();
        Arc::new(LayerCtx {
            cos,
            sin,
            mask: AttnMask::new(&segments, DType::F64).unwrap(),
        })
    }

    #[test]
    fn layer_gradient_matches_finite_differences() {
        let (layer, ctx) = (random_layer(), ctx());
        let probe = randn(&[2, 4, 8], 3);
        let mode = Mode {
            training: false,
            adapters: true,
        };
        finite_diff_check(
            &randn(&[2, 4, 8], 4),
            |x| (layer.forward(x, &ctx, mode)? * &probe)?.sum_all(),
            1e-6,
        );
    }

    #[test]
    fn checkpoint_op_gradients() {
        let (layer, ctx) = (Arc::new(random_layer()), ctx());
        let probe = randn(&[2, 4, 8], 5);
        let mode = Mode {
            training: true,
            adapters: true,
        };
        let anchor = Var::zeros(1, DType::F64, &Device::Cpu).unwrap();
        let collected = CheckpointGrads::default();
        // Input gradient (the op's own backward) against finite differences.
        finite_diff_check(
            &randn(&[2, 4, 8], 6),
            |x| (checkpointed(&layer, x, &ctx, mode, &collected, &anchor)? * &probe)?.sum_all(),
            1e-6,
        );
        collected.take();

        // Parameter gradients: collected in the recomputation, equal to
        // those of the plain graph, and only after merging.
        let x = Var::from_tensor(&randn(&[2, 4, 8], 7)).unwrap();
        let plain = (layer.forward(x.as_tensor(), &ctx, mode).unwrap() * &probe)
            .unwrap()
            .sum_all()
            .unwrap();
        let plain = plain.backward().unwrap();
        let ck = (checkpointed(&layer, x.as_tensor(), &ctx, mode, &collected, &anchor).unwrap()
            * &probe)
            .unwrap()
            .sum_all()
            .unwrap();
        let mut grads = ck.backward().unwrap();
        let vars = layer.vars();
        assert_eq!(vars.len(), 4 + 7);
        assert!(vars.iter().all(|v| grads.get(v.as_tensor()).is_none()));
        collected.merge_into(&mut grads).unwrap();
        for v in vars.iter().chain([&x]) {
            let d = max_abs_diff(
                grads.get(v.as_tensor()).unwrap(),
                plain.get(v.as_tensor()).unwrap(),
            );
            assert!(d < 1e-12, "{d}");
        }
        assert!(collected.take().is_empty());
    }

    #[test]
    fn untracked_input_still_reaches_parameters() {
        // A frozen model's embedding output needs no gradient, but the
        // layer's parameters do: the anchor keeps the op in the graph.
        let (layer, ctx) = (Arc::new(random_layer()), ctx());
        let anchor = Var::zeros(1, DType::F64, &Device::Cpu).unwrap();
        let collected = CheckpointGrads::default();
        let x = randn(&[2, 4, 8], 8);
        let loss = checkpointed(&layer, &x, &ctx, Mode::TRAIN, &collected, &anchor)
            .unwrap()
            .sum_all()
            .unwrap();
        let mut grads = loss.backward().unwrap();
        collected.merge_into(&mut grads).unwrap();
        for v in layer.vars() {
            assert!(grads.get(v.as_tensor()).is_some());
        }
    }
}
