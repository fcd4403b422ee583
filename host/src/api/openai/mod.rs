//! The OpenAI-compatible routes under `/v1` (chat completions, completions,
//! models), served by the engines in [`crate::app::ServedModels`], and the
//! routes that load and unload them under `/api/inference`.
//!
//! Request fields map one to one onto [`SamplingParams`] (OpenAI's names,
//! plus vLLM's `top_k`, `min_p`, `repetition_penalty`, `stop_token_ids`,
//! `ignore_eos` and `chat_template_kwargs`). A stream owns its
//! [`crate::infer::Generation`]: when the client goes away axum drops the
//! body, the generation with it, and the engine frees the slot.

pub mod chat;
pub mod completions;
pub mod error;
pub mod manage;
pub mod types;

use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::{get, post};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::AppState;
use crate::infer::{Engine, Event, FinishReason, Generation, PositionLogprobs, SamplingParams};
pub use error::OpenAiError;
use types::{ModelCard, ModelList, SamplingFields};

/// The `/v1` routes (nested under `/v1` by [`super::router`]).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/chat/completions", post(chat::chat_completions))
        .route("/completions", post(completions::completions))
        .route("/models", get(list_models))
}

/// Served models and adapters, as OpenAI lists models (an adapter's
/// `parent` is its base, as vLLM does).
#[utoipa::path(get, path = "/v1/models", tag = "openai",
    responses((status = 200, body = ModelList)))]
pub async fn list_models(State(state): State<AppState>) -> Json<ModelList> {
    let created = now();
    let mut data = Vec::new();
    for engine in state.app().served().list() {
        data.push(ModelCard {
            id: engine.name().to_string(),
            object: "model".into(),
            created,
            owned_by: "tuner".into(),
            root: engine.name().to_string(),
            parent: None,
            max_model_len: engine.context_len(),
        });
        for adapter in engine.adapters() {
            data.push(ModelCard {
                id: adapter.name.clone(),
                object: "model".into(),
                created,
                owned_by: "tuner".into(),
                root: adapter.dir.display().to_string(),
                parent: Some(engine.name().to_string()),
                max_model_len: engine.context_len(),
            });
        }
    }
    Json(ModelList {
        object: "list".into(),
        data,
    })
}

/// Seconds since the epoch.
pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A fresh response id: `prefix` and 24 hex digits.
pub(crate) fn response_id(prefix: &str) -> String {
    format!("{prefix}-{:024x}", rand::random::<u128>() >> 32)
}

/// The body as JSON; a malformed one is a 400 naming where it broke.
pub(crate) fn body_json(body: &Bytes) -> Result<Value, OpenAiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        OpenAiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "invalid_request_error",
            format!("the request body is not valid JSON: {e}"),
        )
    })?;
    if !value.is_object() {
        return Err(OpenAiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "the request body must be a JSON object",
        ));
    }
    Ok(value)
}

/// Reads `T` from the body; the error's `param` is the path of the field
/// at fault (`messages[0].role`).
pub(crate) fn parse<T: DeserializeOwned>(value: &Value) -> Result<T, OpenAiError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().to_string();
        // serde reports a missing field at its parent.
        let param = match message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split_once('`'))
        {
            Some((field, _)) if path == "." => field.to_string(),
            Some((field, _)) => format!("{path}.{field}"),
            None => path,
        };
        let message = format!("{param}: {message}");
        OpenAiError::invalid(param, message)
    })
}

/// What both routes resolved before submitting.
pub(crate) struct Target {
    pub engine: Engine,
    pub adapter: Option<String>,
}

pub(crate) fn target(state: &AppState, model: &str) -> Result<Target, OpenAiError> {
    let t = state
        .app()
        .served()
        .resolve(model)
        .ok_or_else(|| OpenAiError::model_not_found(model))?;
    Ok(Target {
        engine: t.engine,
        adapter: t.adapter,
    })
}

/// Maps the shared fields onto the engine's settings. `logprobs` is the
/// number of alternatives asked (None: no logprobs).
pub(crate) fn sampling_params(
    f: &SamplingFields,
    prompt_tokens: usize,
    context_len: usize,
    logprobs: Option<usize>,
) -> Result<SamplingParams, OpenAiError> {
    let defaults = SamplingParams::default();
    let max_new_tokens = match f.max_completion_tokens.or(f.max_tokens) {
        Some(0) => {
            let param = if f.max_completion_tokens.is_some() {
                "max_completion_tokens"
            } else {
                "max_tokens"
            };
            return Err(OpenAiError::invalid(
                param,
                format!("{param} must be at least 1"),
            ));
        }
        Some(n) => n,
        None if prompt_tokens < context_len => context_len - prompt_tokens,
        None => {
            return Err(crate::infer::SubmitError::TooLong {
                prompt_tokens,
                max_new_tokens: 0,
                context_len,
            }
            .into());
        }
    };
    let top_k = match f.top_k {
        None | Some(-1) | Some(0) => 0,
        Some(k) if k > 0 => k as usize,
        Some(k) => {
            return Err(OpenAiError::invalid(
                "top_k",
                format!("top_k must be -1 (off) or at least 0, got {k}"),
            ));
        }
    };
    Ok(SamplingParams {
        max_new_tokens,
        temperature: f.temperature.unwrap_or(defaults.temperature),
        top_p: f.top_p.unwrap_or(defaults.top_p),
        top_k,
        min_p: f.min_p.unwrap_or(defaults.min_p),
        repetition_penalty: f.repetition_penalty.unwrap_or(defaults.repetition_penalty),
        presence_penalty: f.presence_penalty.unwrap_or(defaults.presence_penalty),
        frequency_penalty: f.frequency_penalty.unwrap_or(defaults.frequency_penalty),
        seed: f.seed.map(|s| s as u64),
        stop_token_ids: f.stop_token_ids.clone().unwrap_or_default(),
        stop: f.stop.clone().map(|s| s.into_vec()).unwrap_or_default(),
        ignore_eos: f.ignore_eos.unwrap_or(false),
        logprobs,
    })
}

/// `n`, checked.
pub(crate) fn choices(f: &SamplingFields) -> Result<usize, OpenAiError> {
    match f.n.unwrap_or(1) {
        0 => Err(OpenAiError::invalid("n", "n must be at least 1")),
        n => Ok(n),
    }
}

/// Submits, naming OpenAI's fields in errors.
pub(crate) fn submit(
    engine: &Engine,
    request: crate::infer::GenerationRequest,
    logprobs_param: &'static str,
) -> Result<Generation, OpenAiError> {
    engine.submit(request).map_err(|e| {
        let mut err = OpenAiError::from(e);
        match err.param.as_deref() {
            Some("max_new_tokens") => err.param = Some("max_tokens".into()),
            Some("top_logprobs") => err.param = Some(logprobs_param.into()),
            _ => {}
        }
        err
    })
}

/// One choice, run to its end.
#[derive(Default)]
pub(crate) struct Finished {
    pub text: String,
    pub logprobs: Vec<PositionLogprobs>,
    pub finish_reason: Option<FinishReason>,
    pub completion_tokens: usize,
}

/// Runs a generation to the end (non-streamed answers).
pub(crate) async fn collect(
    mut generation: Generation,
    n: usize,
) -> Result<Vec<Finished>, OpenAiError> {
    let mut out: Vec<Finished> = (0..n).map(|_| Finished::default()).collect();
    while let Some(event) = generation.next().await {
        match event {
            Event::Token {
                choice,
                text,
                logprobs,
                ..
            } => {
                let c = &mut out[choice];
                c.text.push_str(&text);
                c.logprobs.extend(logprobs);
            }
            Event::Finished {
                choice,
                reason,
                text,
                completion_tokens,
            } => {
                let c = &mut out[choice];
                c.text.push_str(&text);
                c.finish_reason = Some(reason);
                c.completion_tokens = completion_tokens;
            }
            Event::Failed { message } => return Err(OpenAiError::internal(message)),
        }
    }
    Ok(out)
}

/// `Some(..)` unless empty.
pub(crate) fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// An event stream with a comment every few seconds: a client that went
/// away is noticed on the next write even while no text is ready (held
/// back for a stop string or a partial character), and the generation the
/// stream owns is then dropped.
pub(crate) fn sse(
    stream: impl futures_util::Stream<
        Item = Result<axum::response::sse::Event, std::convert::Infallible>,
    > + Send
    + 'static,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    axum::response::sse::Sse::new(stream)
        .keep_alive(
            axum::response::sse::KeepAlive::new()
                .interval(std::time::Duration::from_secs(3))
                .text("keep-alive"),
        )
        .into_response()
}
