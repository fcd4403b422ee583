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

use candle_core::backend::BackendStorage;
use candle_core::backprop::GradStore;
use candle_core::{
    CpuStorage, CudaStorage, CustomOp2, Layout, MetalStorage, Result, Shape, Tensor, TensorId, Var,
};

use super::attention::LayerCtx;
use super::layer::DecoderLayer;
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
    let out = layer.forward(&x.detach(), ctx, mode)?.detach().contiguous()?;
    let x_tracked = x.track_op();
    let arg = if x_tracked { x.clone() } else { x.broadcast_add(&anchor.as_tensor().to_dtype(x.dtype())?)? };
    out.apply_op2(
        &arg,
        Recompute {
            layer: layer.clone(),
            ctx: ctx.clone(),
            mode,
            grads: grads.clone(),
        },
    )
}

struct Recompute {
    layer: Arc<DecoderLayer>,
    ctx: Arc<LayerCtx>,
    mode: Mode,
    grads: CheckpointGrads,
}

fn clone_first<S: BackendStorage>(s: &S, l: &Layout) -> Result<(S, Shape)> {
    if !l.is_contiguous() || l.start_offset() != 0 {
        candle_core::bail!("checkpoint: layer output is not contiguous");
    }
    Ok((s.try_clone(l)?, l.shape().clone()))
}

impl CustomOp2 for Recompute {
    fn name(&self) -> &'static str {
        "checkpointed-layer"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        clone_first(s1, l1)
    }

    fn cuda_fwd(&self, s1: &CudaStorage, l1: &Layout, _: &CudaStorage, _: &Layout) -> Result<(CudaStorage, Shape)> {
        clone_first(s1, l1)
    }

    fn metal_fwd(
        &self,
        s1: &MetalStorage,
        l1: &Layout,
        _: &MetalStorage,
        _: &Layout,
    ) -> Result<(MetalStorage, Shape)> {
        clone_first(s1, l1)
    }

    fn bwd(
        &self,
        _out: &Tensor,
        x: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let x_var = Var::from_tensor(&x.detach())?;
        let out = self.layer.forward(x_var.as_tensor(), &self.ctx, self.mode)?;
        let inner = (out * grad.detach().to_dtype(x.dtype())?)?.sum_all()?.backward()?;
        for var in self.layer.vars() {
            if let Some(g) = inner.get(var.as_tensor()) {
                self.grads.add(&var, g.clone())?;
            }
        }
        // Always returned: candle expects every tracked argument to receive a
        // gradient, and an anchored input is tracked (the anchor's own
        // gradient is never read).
        Ok((None, inner.get(x_var.as_tensor()).cloned()))
    }
}
