//! One pre-norm decoder layer: `x + attn(norm(x))`, then `x + mlp(norm(x))`.

use candle_core::{Result, Tensor, Var};

use super::attention::{Attention, LayerCtx, RmsNorm};
use super::mlp::Mlp;
use crate::model::linear::{Linear, Mode};

pub struct DecoderLayer {
    pub input_layernorm: RmsNorm,
    pub self_attn: Attention,
    pub post_attention_layernorm: RmsNorm,
    pub mlp: Mlp,
}

impl DecoderLayer {
    pub fn forward(&self, x: &Tensor, ctx: &LayerCtx, mode: Mode) -> Result<Tensor> {
        let h = (x + self
            .self_attn
            .forward(&self.input_layernorm.forward(x)?, ctx, mode)?)?;
        &h + self
            .mlp
            .forward(&self.post_attention_layernorm.forward(&h)?, mode)?
    }

    pub fn linears(&self) -> impl Iterator<Item = &Linear> + Clone {
        self.self_attn
            .linears()
            .into_iter()
            .chain(self.mlp.linears())
    }

    pub fn linears_mut(&mut self) -> impl Iterator<Item = &mut Linear> {
        self.self_attn
            .linears_mut()
            .into_iter()
            .chain(self.mlp.linears_mut())
    }

    /// Every variable this layer's forward pass reads: the base weights when
    /// they train, norm weights when they train, and LoRA factors. The
    /// checkpoint op hands exactly these their gradients.
    pub fn vars(&self) -> Vec<Var> {
        let mut vars = Vec::new();
        for norm in [
            &self.input_layernorm,
            &self.post_attention_layernorm,
            &self.self_attn.q_norm,
            &self.self_attn.k_norm,
        ] {
            if norm.weight.is_variable() {
                vars.push(Var::from_tensor(&norm.weight).expect("a variable stays a variable"));
            }
        }
        for lin in self.linears() {
            vars.extend(lin.vars());
        }
        vars
    }
}
