//! LoRA adapters: `y = W x + scale * B A dropout(x)`.
//!
//! Minimal version so [`crate::model::linear`] compiles; extended by the
//! adapter work (initialisation, targets, PEFT names).

use candle_core::{Result, Tensor, Var};

/// One low-rank adapter on a linear layer.
pub struct Lora {
    /// `[rank, in_features]`.
    pub a: Var,
    /// `[out_features, rank]`, zero at start so training begins at the base model.
    pub b: Var,
    /// `alpha / rank` (or `alpha / sqrt(rank)` with rsLoRA).
    pub scale: f64,
}

impl Lora {
    /// The adapter's contribution for input `x` `[.., in]`.
    pub fn forward(&self, x: &Tensor, _training: bool) -> Result<Tensor> {
        let h = x.broadcast_matmul(&self.a.as_tensor().t()?)?;
        h.broadcast_matmul(&self.b.as_tensor().t()?)? * self.scale
    }
}
