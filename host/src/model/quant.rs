//! Quantised frozen base weights for QLoRA (NF4 with double-quantised scales, int8).
//!
//! Placeholder type so [`crate::model::linear`] compiles; filled in by the
//! quantisation work.

use candle_core::{Result, Tensor};

/// A frozen weight stored in 4 or 8 bits and dequantised on the fly.
pub enum QuantizedWeight {}

impl QuantizedWeight {
    /// `x @ W^T` with the dequantised weight; only the input gets a gradient.
    pub fn forward(&self, _x: &Tensor) -> Result<Tensor> {
        match *self {}
    }
}
