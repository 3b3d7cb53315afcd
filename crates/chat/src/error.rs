//! Errors of the conversation layer.

use deepseek_recipe::request::ConversionError;
use thiserror::Error;

/// Why a request could not be converted, a prompt encoded, or output parsed.
///
/// Everything here comes from untrusted input (request bodies, model names, token ids from
/// the sampler), so every failure is a value, never a panic. [`ChatError::BadRequest`] and
/// [`ChatError::UnknownModel`] are the client's fault (HTTP 400); the rest are not.
#[derive(Debug, Error)]
pub enum ChatError {
    /// The body is not valid JSON for the protocol's request schema.
    #[error("invalid request body: {0}")]
    InvalidJson(String),

    /// The recipe crate rejected the request (its message is meant for the client).
    #[error("{0}")]
    BadRequest(String),

    /// The recipe crate failed internally while converting.
    #[error("request conversion failed: {0}")]
    Conversion(String),

    /// The requested model name is not one this server serves.
    #[error("unknown model {model:?}; supported models: {}", supported.join(", "))]
    UnknownModel {
        model: String,
        supported: Vec<String>,
    },

    /// The rendered prompt could not be turned into token ids.
    #[error("prompt encoding failed: {0}")]
    Encode(String),

    /// A generated token id is not in the vocabulary.
    #[error("token id {id} is outside the vocabulary ({vocab_size} tokens)")]
    UnknownToken { id: u32, vocab_size: usize },

    /// The recipe stream processor stopped with an error.
    #[error("output parsing failed: {0}")]
    Stream(String),

    /// Input was pushed after the parser finished or failed.
    #[error("the output parser is closed (finished or failed earlier)")]
    StreamClosed,
}

impl From<ConversionError> for ChatError {
    fn from(e: ConversionError) -> Self {
        match e {
            ConversionError::BadRequest { detail } => ChatError::BadRequest(detail),
            ConversionError::Internal { detail } => ChatError::Conversion(detail),
        }
    }
}
