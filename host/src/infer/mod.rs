//! Generation: a KV-cached, batched forward pass over the training
//! network's weights, sampling, and the serving engine behind `tuner chat`,
//! the OpenAI-compatible `/v1` routes and training's `policy.generate`.
//!
//! - [`forward`]: the inference forward pass over a ragged batch (prefill
//!   and decode in one step), per-sequence [`cache`]s, per-sequence
//!   [`adapter`]s sharing one base.
//! - [`params`] / [`sampler`]: what a request may ask (OpenAI's and vLLM's
//!   names) and how the next token is chosen.
//! - [`text_stream`]: ids to text one token at a time, stop strings.
//! - [`reasoning`]: Qwen3's `<think>` block split from the answer.
//! - [`batch`]: one step over every sequence in flight; [`batch::generate`]
//!   runs a fixed set of requests to the end.
//! - [`engine`]: a thread per served model with a bounded queue and
//!   continuous batching; [`model`] loads what it serves.

pub mod adapter;
pub mod batch;
pub mod cache;
pub mod engine;
pub mod forward;
pub mod model;
pub mod params;
pub mod reasoning;
pub mod request;
pub mod sampler;
pub mod text_stream;

#[cfg(test)]
mod tests;

pub use adapter::LoadedAdapter;
pub use batch::{Completion, generate};
pub use engine::{Engine, EngineLoad, EngineOptions, Generation, SubmitError};
pub use forward::{AttachedAdapters, Decoder};
pub use model::{ChatPrompt, ModelOptions, ServedModel};
pub use params::{ParamError, SamplingParams};
pub use reasoning::ReasoningSplitter;
pub use request::{Event, FinishReason, GenerationRequest, PositionLogprobs, TokenProb};
