//! The network: the Qwen3 transformer and the layers it is built from.
//!
//! - [`qwen3`]: the model (config, checkpoint loading, forward pass).
//! - [`linear`]: the linear layer every projection goes through, dense or
//!   quantized, with optional LoRA.
//! - [`lora`]: low-rank adapters (PEFT's layout and initialisation).
//! - [`quant`]: NF4 / int8 weight quantization for QLoRA.
//! - [`random_init`]: tiny random checkpoints for demos and tests.
//!
//! Text turns into token ids in [`crate::text`]; training drives the network
//! from [`crate::train`].

pub mod linear;
pub mod lora;
pub mod quant;
pub mod qwen3;
pub mod random_init;
