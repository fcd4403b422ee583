//! OpenAI's error body: `{"error": {"message", "type", "param", "code"}}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::infer::SubmitError;

/// An error answered by a `/v1` route.
#[derive(Debug)]
pub struct OpenAiError {
    pub status: StatusCode,
    /// OpenAI's `type`: `invalid_request_error`, `not_found_error`...
    pub kind: &'static str,
    pub code: Option<&'static str>,
    pub param: Option<String>,
    pub message: String,
}

/// The JSON body of every `/v1` error.
#[derive(Serialize, ToSchema)]
pub struct OpenAiErrorBody {
    pub error: OpenAiErrorDetail,
}

/// What went wrong, in OpenAI's shape.
#[derive(Serialize, ToSchema)]
pub struct OpenAiErrorDetail {
    pub message: String,
    /// `invalid_request_error`, `not_found_error`, `rate_limit_exceeded`,
    /// `service_unavailable`, `server_error` or `authentication_error`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The request field at fault (`messages[0].role`), or null.
    pub param: Option<String>,
    /// A stable code (`model_not_found`), or null.
    pub code: Option<String>,
}

impl OpenAiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        OpenAiError {
            status,
            kind,
            code: None,
            param: None,
            message: message.into(),
        }
    }

    /// 400 `invalid_request_error` about `param`.
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message).param(param)
    }

    pub fn param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    pub fn code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    /// 404 for a `model` no served model or adapter has.
    pub fn model_not_found(model: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found_error",
            format!("the model `{model}` does not exist: GET /v1/models lists the served ones"),
        )
        .param("model")
        .code("model_not_found")
    }

    pub fn internal(message: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            message.to_string(),
        )
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "missing or wrong API key: send `Authorization: Bearer <token>`",
        )
        .code("invalid_api_key")
    }

    /// The body of an error sent inside an event stream.
    pub fn body(&self) -> OpenAiErrorBody {
        OpenAiErrorBody {
            error: OpenAiErrorDetail {
                message: self.message.clone(),
                kind: self.kind.to_string(),
                param: self.param.clone(),
                code: self.code.map(str::to_string),
            },
        }
    }
}

impl From<SubmitError> for OpenAiError {
    fn from(e: SubmitError) -> Self {
        let message = e.to_string();
        match e {
            SubmitError::QueueFull { .. } => Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_exceeded",
                message,
            )
            .code("rate_limit_exceeded"),
            SubmitError::UnknownAdapter(name) => Self::model_not_found(&name),
            SubmitError::TooLong { .. } => {
                Self::invalid("max_tokens", message).code("context_length_exceeded")
            }
            SubmitError::EmptyPrompt => Self::invalid("prompt", message),
            SubmitError::TooManyChoices { .. } => Self::invalid("n", message),
            SubmitError::Params(p) => Self::invalid(p.param, p.message),
            SubmitError::Stopped => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                message,
            ),
        }
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        response
    }
}
