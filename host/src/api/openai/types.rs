//! Request and response bodies of the `/v1` routes, in OpenAI's shapes
//! (with vLLM's extra sampling fields).
//!
//! A request body is read twice from one JSON value: once as
//! [`SamplingFields`] (shared by both routes) and once as the route's own
//! fields; unknown fields are ignored, as OpenAI-compatible servers do.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `stop`: one string or a list.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum StopField {
    One(String),
    Many(Vec<String>),
}

impl StopField {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            StopField::One(s) => vec![s],
            StopField::Many(v) => v,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct StreamOptions {
    /// Send a last chunk with `usage` (and no choices) before `[DONE]`.
    pub include_usage: Option<bool>,
}

/// The fields both `/v1/chat/completions` and `/v1/completions` take.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct SamplingFields {
    /// A served model or adapter (`GET /v1/models`).
    pub model: String,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    /// Choices to generate (default 1).
    pub n: Option<usize>,
    pub stop: Option<StopField>,
    pub seed: Option<i64>,
    /// Default 1.0; 0 is greedy.
    pub temperature: Option<f32>,
    /// Default 1.0.
    pub top_p: Option<f32>,
    /// Default: the rest of the context.
    pub max_tokens: Option<usize>,
    /// The newer name of `max_tokens` (wins when both are given).
    pub max_completion_tokens: Option<usize>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    /// vLLM: keep the `top_k` most likely tokens; 0 or -1 disables.
    pub top_k: Option<i64>,
    /// vLLM.
    pub min_p: Option<f32>,
    /// vLLM (transformers' repetition penalty; 1 disables).
    pub repetition_penalty: Option<f32>,
    /// vLLM: token ids that end a choice.
    pub stop_token_ids: Option<Vec<u32>>,
    /// vLLM: keep going past end tokens.
    pub ignore_eos: Option<bool>,
}

/// A message's `content`: text, or a list of parts (only `text` parts).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ChatMessage {
    /// `system`, `developer` (read as `system`), `user`, `assistant` or `tool`.
    pub role: String,
    pub content: Option<MessageContent>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ResponseFormat {
    /// Only `text` is supported.
    #[serde(rename = "type")]
    pub kind: String,
}

/// vLLM's `chat_template_kwargs` (Qwen3: `enable_thinking`).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct ChatTemplateKwargs {
    pub enable_thinking: Option<bool>,
}

/// The chat-only fields of `POST /v1/chat/completions`.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatFields {
    pub messages: Vec<ChatMessage>,
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<usize>,
    pub response_format: Option<ResponseFormat>,
    pub chat_template_kwargs: Option<ChatTemplateKwargs>,
    pub tools: Option<serde_json::Value>,
}

/// `POST /v1/chat/completions` (documentation of the whole body).
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ChatCompletionRequest {
    #[serde(flatten)]
    pub sampling: SamplingFields,
    pub messages: Vec<ChatMessage>,
    /// Return the chosen tokens' log-probabilities.
    pub logprobs: Option<bool>,
    /// Alternatives per token (with `logprobs`), at most 20.
    pub top_logprobs: Option<usize>,
    pub response_format: Option<ResponseFormat>,
    pub chat_template_kwargs: Option<ChatTemplateKwargs>,
}

/// `prompt`: a string, a list of one string, or token ids.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum PromptField {
    Text(String),
    Texts(Vec<String>),
    Ids(Vec<u32>),
    IdLists(Vec<Vec<u32>>),
}

/// The completion-only fields of `POST /v1/completions`.
#[derive(Debug, Clone, Deserialize)]
pub struct CompletionFields {
    pub prompt: PromptField,
    pub logprobs: Option<usize>,
    pub echo: Option<bool>,
    pub suffix: Option<String>,
    pub best_of: Option<usize>,
}

/// `POST /v1/completions` (documentation of the whole body).
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct CompletionRequest {
    #[serde(flatten)]
    pub sampling: SamplingFields,
    pub prompt: PromptField,
    /// Alternatives per token (legacy shape), at most 20.
    pub logprobs: Option<usize>,
    /// Not supported (400 when true).
    pub echo: Option<bool>,
}

/// Token counts of a request.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
}

impl Usage {
    pub fn new(prompt_tokens: usize, completion_tokens: usize) -> Self {
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TopLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChatTokenLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
    pub top_logprobs: Vec<TopLogprob>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChatLogprobs {
    pub content: Vec<ChatTokenLogprob>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AssistantMessage {
    pub role: String,
    pub content: Option<String>,
    /// Qwen3's thinking (`<think>…</think>`), apart from the answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChatChoice {
    pub index: usize,
    pub message: AssistantMessage,
    pub logprobs: Option<ChatLogprobs>,
    /// `stop` or `length`.
    pub finish_reason: String,
}

/// The answer of a non-streamed `POST /v1/chat/completions`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChatCompletion {
    pub id: String,
    /// `chat.completion`
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChatChoice>,
    pub usage: Usage,
}

#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct Delta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChunkChoice {
    pub index: usize,
    pub delta: Delta,
    pub logprobs: Option<ChatLogprobs>,
    pub finish_reason: Option<String>,
}

/// One event of a streamed `POST /v1/chat/completions` (`data: {chunk}`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChatCompletionChunk {
    pub id: String,
    /// `chat.completion.chunk`
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChunkChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// Log-probabilities of `/v1/completions` (the legacy shape).
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct LegacyLogprobs {
    pub tokens: Vec<String>,
    pub token_logprobs: Vec<f32>,
    pub top_logprobs: Vec<BTreeMap<String, f32>>,
    pub text_offset: Vec<usize>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CompletionChoice {
    pub index: usize,
    pub text: String,
    pub logprobs: Option<LegacyLogprobs>,
    pub finish_reason: Option<String>,
}

/// The answer of `POST /v1/completions`, and each streamed chunk of it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Completion {
    pub id: String,
    /// `text_completion`
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<CompletionChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// A served model or adapter.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModelCard {
    pub id: String,
    /// `model`
    pub object: String,
    pub created: u64,
    /// `tuner`
    pub owned_by: String,
    /// The adapter's folder, or the base model's name.
    pub root: String,
    /// The base model an adapter runs on (absent for a base).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// The model's context length in tokens.
    pub max_model_len: usize,
}

/// `GET /v1/models`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModelList {
    /// `list`
    pub object: String,
    pub data: Vec<ModelCard>,
}
