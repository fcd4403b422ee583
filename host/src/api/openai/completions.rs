//! `POST /v1/completions`: raw text in, text out (no chat template).

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::sse::Event as SseEvent;
use axum::response::{IntoResponse, Response};

use super::OpenAiError;
use super::chat::Header;
use super::types::{
    Completion, CompletionChoice, CompletionFields, LegacyLogprobs, PromptField, SamplingFields,
    Usage,
};
use crate::api::AppState;
use crate::infer::{Event, Generation, GenerationRequest, PositionLogprobs};

/// Continues a prompt. With `stream`, a server-sent event stream of
/// `text_completion` chunks ending in `data: [DONE]`.
#[utoipa::path(post, path = "/v1/completions", tag = "openai",
    request_body = super::types::CompletionRequest,
    responses(
        (status = 200, description = "The completion; with `stream`, `text/event-stream` of the same objects, one delta each", body = Completion),
        (status = 400, description = "Invalid request; `param` names the field", body = super::error::OpenAiErrorBody),
        (status = 404, description = "No served model or adapter has that name", body = super::error::OpenAiErrorBody),
        (status = 429, description = "The model's queue is full", body = super::error::OpenAiErrorBody),
        (status = 503, description = "The model's engine stopped", body = super::error::OpenAiErrorBody)))]
pub async fn completions(State(state): State<AppState>, body: Bytes) -> Response {
    match run(&state, &body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn run(state: &AppState, body: &Bytes) -> Result<Response, OpenAiError> {
    let value = super::body_json(body)?;
    let f: SamplingFields = super::parse(&value)?;
    let c: CompletionFields = super::parse(&value)?;
    if c.echo.unwrap_or(false) {
        return Err(OpenAiError::invalid("echo", "echo is not supported"));
    }
    if c.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(OpenAiError::invalid("suffix", "suffix is not supported"));
    }
    if c.best_of.is_some_and(|b| b > 1) {
        return Err(OpenAiError::invalid("best_of", "best_of is not supported"));
    }
    let n = super::choices(&f)?;
    let target = super::target(state, &f.model)?;
    let engine = target.engine;
    let one = |what: &str| {
        OpenAiError::invalid(
            "prompt",
            format!("prompt must be one {what}; send one request per prompt"),
        )
    };
    let prompt: Vec<u32> = match c.prompt {
        PromptField::Text(t) => encode(&engine, &t)?,
        PromptField::Texts(list) if list.len() == 1 => encode(&engine, &list[0])?,
        PromptField::Texts(_) => return Err(one("string")),
        PromptField::Ids(ids) => ids,
        PromptField::IdLists(mut lists) if lists.len() == 1 => lists.remove(0),
        PromptField::IdLists(_) => return Err(one("list of token ids")),
    };
    let vocab = engine.tokenizer().vocab_size();
    if let Some(bad) = prompt.iter().find(|&&id| id as usize >= vocab) {
        return Err(OpenAiError::invalid(
            "prompt",
            format!("token id {bad} is outside the vocabulary ({vocab} tokens)"),
        ));
    }
    let params = super::sampling_params(&f, prompt.len(), engine.context_len(), c.logprobs)?;
    let request = GenerationRequest {
        prompt,
        params,
        adapter: target.adapter,
        n,
    };
    let generation = super::submit(&engine, request, "logprobs")?;
    let header = Header {
        id: super::response_id("cmpl"),
        created: super::now(),
        model: f.model.clone(),
    };
    if f.stream.unwrap_or(false) {
        let include_usage = f
            .stream_options
            .and_then(|o| o.include_usage)
            .unwrap_or(false);
        let stream = CompletionStream {
            generation,
            header,
            logprobs: c.logprobs.is_some(),
            offsets: vec![0; n],
            include_usage,
            completion_tokens: 0,
            out: VecDeque::new(),
            done: false,
        };
        return Ok(super::sse(stream.into_stream()));
    }
    let prompt_tokens = generation.prompt_tokens;
    let finished = super::collect(generation, n).await?;
    let mut completion_tokens = 0;
    let choices = finished
        .into_iter()
        .enumerate()
        .map(|(index, ch)| {
            completion_tokens += ch.completion_tokens;
            CompletionChoice {
                index,
                logprobs: c.logprobs.map(|_| legacy(&ch.logprobs, &mut 0)),
                text: ch.text,
                finish_reason: Some(
                    ch.finish_reason
                        .map(|r| r.as_str())
                        .unwrap_or("stop")
                        .into(),
                ),
            }
        })
        .collect();
    Ok(Json(Completion {
        id: header.id,
        object: "text_completion".into(),
        created: header.created,
        model: header.model,
        choices,
        usage: Some(Usage::new(prompt_tokens, completion_tokens)),
    })
    .into_response())
}

fn encode(engine: &crate::infer::Engine, text: &str) -> Result<Vec<u32>, OpenAiError> {
    if text.is_empty() {
        return Err(OpenAiError::invalid("prompt", "the prompt is empty"));
    }
    Ok(engine
        .tokenizer()
        .encode(text)
        .map_err(|e| OpenAiError::invalid("prompt", e.to_string()))?
        .ids)
}

/// The legacy logprobs of some positions; `offset` is the character
/// offset of the first in the completion, advanced past them.
fn legacy(positions: &[PositionLogprobs], offset: &mut usize) -> LegacyLogprobs {
    let mut out = LegacyLogprobs::default();
    for p in positions {
        out.tokens.push(p.chosen.text.clone());
        out.token_logprobs.push(p.chosen.logprob);
        out.top_logprobs.push(
            p.top
                .iter()
                .map(|t| (t.text.clone(), t.logprob))
                .collect::<BTreeMap<_, _>>(),
        );
        out.text_offset.push(*offset);
        *offset += p.chosen.text.chars().count();
    }
    out
}

struct CompletionStream {
    generation: Generation,
    header: Header,
    logprobs: bool,
    /// Character offset of the next token, per choice.
    offsets: Vec<usize>,
    include_usage: bool,
    completion_tokens: usize,
    out: VecDeque<String>,
    done: bool,
}

impl CompletionStream {
    fn chunk(&self, choices: Vec<CompletionChoice>, usage: Option<Usage>) -> String {
        serde_json::to_string(&Completion {
            id: self.header.id.clone(),
            object: "text_completion".into(),
            created: self.header.created,
            model: self.header.model.clone(),
            choices,
            usage,
        })
        .expect("chunks serialise")
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
                    let logprobs = if self.logprobs {
                        let positions: Vec<PositionLogprobs> = logprobs.into_iter().collect();
                        Some(legacy(&positions, &mut self.offsets[choice]))
                    } else {
                        None
                    };
                    if text.is_empty() && logprobs.is_none() {
                        continue;
                    }
                    let chunk = self.chunk(
                        vec![CompletionChoice {
                            index: choice,
                            text,
                            logprobs,
                            finish_reason: None,
                        }],
                        None,
                    );
                    self.out.push_back(chunk);
                }
                Some(Event::Finished {
                    choice,
                    reason,
                    text,
                    completion_tokens,
                }) => {
                    self.completion_tokens += completion_tokens;
                    let chunk = self.chunk(
                        vec![CompletionChoice {
                            index: choice,
                            text,
                            logprobs: None,
                            finish_reason: Some(reason.as_str().into()),
                        }],
                        None,
                    );
                    self.out.push_back(chunk);
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
