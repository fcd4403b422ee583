//! SwiGLU feed-forward: `down(silu(gate(x)) * up(x))`.

use candle_core::{Result, Tensor};

use crate::model::linear::{Linear, Mode};

pub struct Mlp {
    pub gate_proj: Linear,
    pub up_proj: Linear,
    pub down_proj: Linear,
}

impl Mlp {
    pub fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        // candle's silu has a backward pass (x * sigmoid(x)).
        let gate = self.gate_proj.forward(x, mode)?.silu()?;
        let up = self.up_proj.forward(x, mode)?;
        self.down_proj.forward(&(gate * up)?, mode)
    }

    pub fn linears_mut(&mut self) -> [&mut Linear; 3] {
        [&mut self.gate_proj, &mut self.up_proj, &mut self.down_proj]
    }

    pub fn linears(&self) -> [&Linear; 3] {
        [&self.gate_proj, &self.up_proj, &self.down_proj]
    }
}
