//! A generation request as the engine takes it, and the events it streams back.

use serde::Serialize;

use super::params::SamplingParams;

/// One prompt to continue, `n` times.
#[derive(Debug, Clone)]
pub struct GenerationRequest {
    /// Prompt token ids (a rendered chat, or raw text), at least one.
    pub prompt: Vec<u32>,
    pub params: SamplingParams,
    /// A loaded adapter by name; None runs the base model.
    pub adapter: Option<String>,
    /// Independent completions (choices) of the same prompt; the prompt is
    /// computed once and its cache shared. Choice `i` samples with seed
    /// `seed + i` when a seed is given.
    pub n: usize,
}

impl GenerationRequest {
    /// One completion of `prompt` with `params` on the base model.
    pub fn new(prompt: Vec<u32>, params: SamplingParams) -> Self {
        GenerationRequest {
            prompt,
            params,
            adapter: None,
            n: 1,
        }
    }
}

/// Why a sequence ended, as OpenAI's `finish_reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// An end token or a stop string.
    Stop,
    /// `max_new_tokens` or the model's context length.
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// A token with its log-probability under the model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenProb {
    pub token: u32,
    /// The token's own text (may be part of a multi-byte character, then it
    /// holds U+FFFD; `bytes` has the exact bytes).
    pub text: String,
    /// The token's bytes as the tokenizer maps them.
    pub bytes: Vec<u8>,
    pub logprob: f32,
}

/// Log-probabilities at one generated position: the chosen token and the
/// most likely alternatives (best first). They are the model's own
/// distribution (log-softmax of the logits after the repetition, presence
/// and frequency penalties, before temperature and truncation), as vLLM
/// reports them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PositionLogprobs {
    pub chosen: TokenProb,
    pub top: Vec<TokenProb>,
}

/// What the engine streams for one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A new token of choice `choice`. `text` is the text it completes (often
    /// the token's text; empty while a multi-byte character or a possible
    /// stop string is held back; several tokens' worth once released).
    Token {
        choice: usize,
        token: u32,
        text: String,
        logprobs: Option<PositionLogprobs>,
    },
    /// Choice `choice` ended. `text` is any held-back text released at the
    /// end (never part of a stop string).
    Finished {
        choice: usize,
        reason: FinishReason,
        text: String,
        /// New tokens of this choice (the stop token included when one ended it).
        completion_tokens: usize,
    },
    /// The engine failed on this request (a tensor error); no more events follow.
    Failed { message: String },
}
