//! Error responses in each protocol's own shape: OpenAI's `{"error":{message,type,param,code}}`
//! for Chat Completions, Completions, Responses and everything else, Anthropic's
//! `{"type":"error","error":{type,message}}` for Messages, so each SDK raises its own typed
//! exception with our message in it.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use dsv4_chat::ChatError;
use serde_json::{json, Value};

/// Which error shape a route answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    OpenAi,
    Anthropic,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// OpenAI `code` (e.g. `context_length_exceeded`).
    pub code: Option<&'static str>,
    pub param: Option<&'static str>,
    pub flavor: Flavor,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into(), code: None, param: None, flavor: Flavor::OpenAi }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn context_exceeded(message: impl Into<String>) -> ApiError {
        ApiError { code: Some("context_length_exceeded"), param: Some("messages"), ..ApiError::bad_request(message) }
    }

    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    pub fn with_flavor(mut self, flavor: Flavor) -> ApiError {
        self.flavor = flavor;
        self
    }

    /// The `type` field: OpenAI's and Anthropic's names for the same classes of error.
    fn kind(&self) -> &'static str {
        match (self.flavor, self.status.as_u16()) {
            (Flavor::OpenAi, 401) => "authentication_error",
            (Flavor::OpenAi, 404) => "not_found_error",
            (Flavor::OpenAi, 400..=499) => "invalid_request_error",
            (Flavor::OpenAi, 503) => "service_unavailable",
            (Flavor::OpenAi, _) => "server_error",
            (Flavor::Anthropic, 401) => "authentication_error",
            (Flavor::Anthropic, 404) => "not_found_error",
            (Flavor::Anthropic, 413) => "request_too_large",
            (Flavor::Anthropic, 400..=499) => "invalid_request_error",
            (Flavor::Anthropic, 503) => "overloaded_error",
            (Flavor::Anthropic, _) => "api_error",
        }
    }

    /// The JSON body (also used for SSE `error` events).
    pub fn body(&self) -> Value {
        match self.flavor {
            Flavor::OpenAi => json!({"error": {
                "message": self.message,
                "type": self.kind(),
                "param": self.param,
                "code": self.code,
            }}),
            Flavor::Anthropic => json!({"type": "error", "error": {"type": self.kind(), "message": self.message}}),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}

impl From<ChatError> for ApiError {
    fn from(e: ChatError) -> ApiError {
        match e {
            ChatError::InvalidJson(_) | ChatError::BadRequest(_) | ChatError::UnknownModel { .. } | ChatError::Encode(_) => {
                ApiError::bad_request(e.to_string())
            }
            other => ApiError::internal(other.to_string()),
        }
    }
}

fn path_error(e: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = e.path().to_string();
    let inner = e.into_inner();
    if path == "." || path.is_empty() {
        ApiError::bad_request(format!("invalid request body: {inner}"))
    } else {
        ApiError::bad_request(format!("invalid request body: `{path}`: {inner}"))
    }
}

/// Deserializes an already parsed body, naming the offending field like [`parse_json`].
pub fn from_value<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(v).map_err(path_error)
}

/// Deserializes a request body; the error names the offending field's path
/// (`messages[0].role: unknown variant ...`), not just a column number.
pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(path_error)?;
    de.end().map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))?;
    Ok(value)
}
