//! `POST /v1/chat/completions`.

use std::collections::VecDeque;
use std::convert::Infallible;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::sse::Event as SseEvent;
use axum::response::{IntoResponse, Response};

use super::types::{
    AssistantMessage, ChatChoice, ChatCompletion, ChatCompletionChunk, ChatFields, ChatLogprobs,
    ChatMessage, ChatTokenLogprob, ChunkChoice, Delta, MessageContent, SamplingFields, TopLogprob,
    Usage,
};
use super::{OpenAiError, non_empty};
use crate::api::AppState;
use crate::infer::{
    Event, Generation, GenerationRequest, PositionLogprobs, ReasoningSplitter, TokenProb,
};
use crate::sample::Message;

/// Generates the assistant's next turn. With `stream`, the answer is a
/// server-sent event stream of `chat.completion.chunk` objects ending in
/// `data: [DONE]`. Qwen3's thinking comes apart as `reasoning_content`.
#[utoipa::path(post, path = "/v1/chat/completions", tag = "openai",
    request_body = super::types::ChatCompletionRequest,
    responses(
        (status = 200, description = "The completion; with `stream`, `text/event-stream` of `ChatCompletionChunk`s", body = ChatCompletion),
        (status = 400, description = "Invalid request; `param` names the field", body = super::error::OpenAiErrorBody),
        (status = 404, description = "No served model or adapter has that name", body = super::error::OpenAiErrorBody),
        (status = 429, description = "The model's queue is full", body = super::error::OpenAiErrorBody),
        (status = 503, description = "The model's engine stopped", body = super::error::OpenAiErrorBody)))]
pub async fn chat_completions(State(state): State<AppState>, body: Bytes) -> Response {
    match run(&state, &body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn run(state: &AppState, body: &Bytes) -> Result<Response, OpenAiError> {
    let value = super::body_json(body)?;
    let f: SamplingFields = super::parse(&value)?;
    let chat: ChatFields = super::parse(&value)?;
    if let Some(format) = &chat.response_format
        && format.kind != "text"
    {
        return Err(OpenAiError::invalid(
            "response_format",
            format!(
                "response_format `{}` is not supported; only `text` is",
                format.kind
            ),
        ));
    }
    if chat
        .tools
        .as_ref()
        .is_some_and(|t| !t.is_null() && t.as_array().is_none_or(|a| !a.is_empty()))
    {
        return Err(OpenAiError::invalid("tools", "tools are not supported yet"));
    }
    let logprobs = match (chat.logprobs.unwrap_or(false), chat.top_logprobs) {
        (true, k) => Some(k.unwrap_or(0)),
        (false, Some(_)) => {
            return Err(OpenAiError::invalid(
                "top_logprobs",
                "top_logprobs needs logprobs: true",
            ));
        }
        (false, None) => None,
    };
    let messages = messages(&chat.messages)?;
    let n = super::choices(&f)?;
    let target = super::target(state, &f.model)?;
    let engine = target.engine;
    let enable_thinking = chat.chat_template_kwargs.and_then(|k| k.enable_thinking);
    let prompt = engine
        .chat_prompt(&messages, None, enable_thinking)
        .map_err(|e| OpenAiError::invalid("messages", format!("{e:#}")))?;
    let params = super::sampling_params(&f, prompt.ids.len(), engine.context_len(), logprobs)?;
    let request = GenerationRequest {
        prompt: prompt.ids,
        params,
        adapter: target.adapter,
        n,
    };
    let generation = super::submit(&engine, request, "top_logprobs")?;
    let (id, created) = (super::response_id("chatcmpl"), super::now());
    let model = f.model.clone();
    if f.stream.unwrap_or(false) {
        let include_usage = f
            .stream_options
            .and_then(|o| o.include_usage)
            .unwrap_or(false);
        let stream = ChatStream::new(
            generation,
            Header { id, created, model },
            n,
            prompt.opens_thinking,
            include_usage,
        );
        return Ok(super::sse(stream.into_stream()));
    }
    let prompt_tokens = generation.prompt_tokens;
    let finished = super::collect(generation, n).await?;
    let mut completion_tokens = 0;
    let choices = finished
        .into_iter()
        .enumerate()
        .map(|(index, c)| {
            completion_tokens += c.completion_tokens;
            let split = ReasoningSplitter::split(&c.text, prompt.opens_thinking);
            ChatChoice {
                index,
                message: AssistantMessage {
                    role: "assistant".into(),
                    content: Some(split.content),
                    reasoning_content: non_empty(split.reasoning),
                },
                logprobs: logprobs.map(|_| ChatLogprobs {
                    content: c.logprobs.iter().map(token_logprob).collect(),
                }),
                finish_reason: c
                    .finish_reason
                    .map(|r| r.as_str())
                    .unwrap_or("stop")
                    .to_string(),
            }
        })
        .collect();
    Ok(Json(ChatCompletion {
        id,
        object: "chat.completion".into(),
        created,
        model,
        choices,
        usage: Usage::new(prompt_tokens, completion_tokens),
    })
    .into_response())
}

/// The request's messages as the template takes them.
fn messages(list: &[ChatMessage]) -> Result<Vec<Message>, OpenAiError> {
    if list.is_empty() {
        return Err(OpenAiError::invalid(
            "messages",
            "messages must hold at least one message",
        ));
    }
    list.iter()
        .enumerate()
        .map(|(i, m)| {
            let role = match m.role.as_str() {
                "developer" => "system",
                r @ ("system" | "user" | "assistant" | "tool") => r,
                other => {
                    return Err(OpenAiError::invalid(
                        format!("messages[{i}].role"),
                        format!(
                            "messages[{i}].role `{other}` is not one of system, developer, user, \
                             assistant, tool"
                        ),
                    ));
                }
            };
            let content = match &m.content {
                None => String::new(),
                Some(MessageContent::Text(t)) => t.clone(),
                Some(MessageContent::Parts(parts)) => {
                    let mut texts = Vec::new();
                    for (j, p) in parts.iter().enumerate() {
                        match (p.kind.as_str(), &p.text) {
                            ("text", Some(t)) => texts.push(t.as_str()),
                            ("text", None) => {
                                return Err(OpenAiError::invalid(
                                    format!("messages[{i}].content[{j}].text"),
                                    "a text part needs `text`",
                                ));
                            }
                            (other, _) => {
                                return Err(OpenAiError::invalid(
                                    format!("messages[{i}].content[{j}].type"),
                                    format!("content parts of type `{other}` are not supported; only `text` is"),
                                ));
                            }
                        }
                    }
                    texts.join("\n")
                }
            };
            Ok(Message::new(role, content))
        })
        .collect()
}

fn top(p: &TokenProb) -> TopLogprob {
    TopLogprob {
        token: p.text.clone(),
        logprob: p.logprob,
        bytes: p.bytes.clone(),
    }
}

fn token_logprob(p: &PositionLogprobs) -> ChatTokenLogprob {
    ChatTokenLogprob {
        token: p.chosen.text.clone(),
        logprob: p.chosen.logprob,
        bytes: p.chosen.bytes.clone(),
        top_logprobs: p.top.iter().map(top).collect(),
    }
}

pub(crate) struct Header {
    pub id: String,
    pub created: u64,
    pub model: String,
}

/// A streamed chat answer: owns the generation, so dropping the stream
/// (the client went away) cancels it.
struct ChatStream {
    generation: Generation,
    header: Header,
    splitters: Vec<ReasoningSplitter>,
    /// Logprobs of tokens whose text has not been sent yet, per choice.
    pending_logprobs: Vec<Vec<ChatTokenLogprob>>,
    logprobs: bool,
    include_usage: bool,
    completion_tokens: usize,
    out: VecDeque<String>,
    done: bool,
}

impl ChatStream {
    fn new(
        generation: Generation,
        header: Header,
        n: usize,
        opens_thinking: bool,
        include_usage: bool,
    ) -> Self {
        let mut s = ChatStream {
            generation,
            header,
            splitters: (0..n)
                .map(|_| ReasoningSplitter::new(opens_thinking))
                .collect(),
            pending_logprobs: vec![Vec::new(); n],
            logprobs: false,
            include_usage,
            completion_tokens: 0,
            out: VecDeque::new(),
            done: false,
        };
        for index in 0..n {
            let first = s.chunk(
                vec![ChunkChoice {
                    index,
                    delta: Delta {
                        role: Some("assistant".into()),
                        content: Some(String::new()),
                        reasoning_content: None,
                    },
                    logprobs: None,
                    finish_reason: None,
                }],
                None,
            );
            s.out.push_back(first);
        }
        s
    }

    fn chunk(&self, choices: Vec<ChunkChoice>, usage: Option<Usage>) -> String {
        serde_json::to_string(&ChatCompletionChunk {
            id: self.header.id.clone(),
            object: "chat.completion.chunk".into(),
            created: self.header.created,
            model: self.header.model.clone(),
            choices,
            usage,
        })
        .expect("chunks serialise")
    }

    /// Queues a delta of `choice` (if there is text) with its logprobs.
    fn delta(&mut self, choice: usize, reasoning: String, content: String, finish: Option<&str>) {
        if reasoning.is_empty() && content.is_empty() && finish.is_none() {
            return;
        }
        let logprobs =
            (self.logprobs && !self.pending_logprobs[choice].is_empty()).then(|| ChatLogprobs {
                content: std::mem::take(&mut self.pending_logprobs[choice]),
            });
        let chunk = self.chunk(
            vec![ChunkChoice {
                index: choice,
                delta: Delta {
                    role: None,
                    content: non_empty(content),
                    reasoning_content: non_empty(reasoning),
                },
                logprobs,
                finish_reason: finish.map(str::to_string),
            }],
            None,
        );
        self.out.push_back(chunk);
    }

    async fn next_payload(&mut self) -> Option<String> {
        loop {
            if let Some(p) = self.out.pop_front() {
                return Some(p);
            }
            if self.done {
                return None;
            }
            match self.generation.next().await {
                Some(Event::Token {
                    choice,
                    text,
                    logprobs,
                    ..
                }) => {
                    if let Some(p) = logprobs {
                        self.logprobs = true;
                        self.pending_logprobs[choice].push(token_logprob(&p));
                    }
                    let split = self.splitters[choice].push(&text);
                    self.delta(choice, split.reasoning, split.content, None);
                }
                Some(Event::Finished {
                    choice,
                    reason,
                    text,
                    completion_tokens,
                }) => {
                    self.completion_tokens += completion_tokens;
                    let mut split = self.splitters[choice].push(&text);
                    let rest = self.splitters[choice].finish();
                    split.reasoning.push_str(&rest.reasoning);
                    split.content.push_str(&rest.content);
                    self.delta(choice, split.reasoning, split.content, None);
                    self.delta(choice, String::new(), String::new(), Some(reason.as_str()));
                }
                Some(Event::Failed { message }) => {
                    let body = OpenAiError::internal(message).body();
                    self.out
                        .push_back(serde_json::to_string(&body).expect("errors serialise"));
                    self.out.push_back("[DONE]".into());
                    self.done = true;
                }
                None => {
                    if self.include_usage {
                        let usage =
                            Usage::new(self.generation.prompt_tokens, self.completion_tokens);
                        let chunk = self.chunk(Vec::new(), Some(usage));
                        self.out.push_back(chunk);
                    }
                    self.out.push_back("[DONE]".into());
                    self.done = true;
                }
            }
        }
    }

    fn into_stream(
        self,
    ) -> impl futures_util::Stream<Item = Result<SseEvent, Infallible>> + Send + 'static {
        futures_util::stream::unfold(self, |mut s| async move {
            let payload = s.next_payload().await?;
            Some((Ok(SseEvent::default().data(payload)), s))
        })
    }
}
