//! Request conversion: Chat Completions, Responses and Messages bodies to a conversation
//! plus inference settings, by the recipe crate's own adapters.

use std::sync::Arc;

use deepseek_recipe::anthropic::MessagesRequest;
use deepseek_recipe::openai::{ChatCompletionRequest, ResponsesRequest};
use deepseek_recipe::request::{
    ConversationRequest, OutputConstraint, ProtocolRequest, DEFAULT_MAX_TOKENS_UPPER_BOUND,
};
use deepseek_recipe::stream::ParsingOptions;
use deepseek_recipe_core::conversation::{Conversation, ResponseFormat};
use deepseek_recipe_core::tools::{ToolChoice, ToolDefinition};
use dsv4_tokenizer::Tokenizer;

use crate::models::ModelCatalog;
use crate::render::ThinkingMode;
use crate::stream::StreamParser;
use crate::ChatError;

/// The three request protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// OpenAI `POST /v1/chat/completions`.
    ChatCompletions,
    /// OpenAI `POST /v1/responses`.
    Responses,
    /// Anthropic `POST /v1/messages`.
    Messages,
}

/// A deserialized request of one of the protocols (the recipe crate's schema types).
#[derive(Debug)]
pub enum ApiRequest {
    ChatCompletions(ChatCompletionRequest),
    Responses(ResponsesRequest),
    Messages(MessagesRequest),
}

impl ApiRequest {
    /// Deserialize a request body. Unknown fields are ignored (the crate's schemas say so);
    /// malformed or mistyped fields are [`ChatError::InvalidJson`].
    pub fn from_json(protocol: Protocol, body: &[u8]) -> Result<ApiRequest, ChatError> {
        let err = |e: serde_json::Error| ChatError::InvalidJson(e.to_string());
        Ok(match protocol {
            Protocol::ChatCompletions => {
                ApiRequest::ChatCompletions(serde_json::from_slice(body).map_err(err)?)
            }
            Protocol::Responses => {
                ApiRequest::Responses(serde_json::from_slice(body).map_err(err)?)
            }
            Protocol::Messages => ApiRequest::Messages(serde_json::from_slice(body).map_err(err)?),
        })
    }

    pub fn protocol(&self) -> Protocol {
        match self {
            ApiRequest::ChatCompletions(_) => Protocol::ChatCompletions,
            ApiRequest::Responses(_) => Protocol::Responses,
            ApiRequest::Messages(_) => Protocol::Messages,
        }
    }

    /// The `model` field as the client sent it.
    pub fn model(&self) -> &str {
        match self {
            ApiRequest::ChatCompletions(r) => &r.model,
            ApiRequest::Responses(r) => &r.model,
            ApiRequest::Messages(r) => &r.model,
        }
    }
}

/// What the sampler and the generation loop need from a request, flattened from the
/// recipe crate's `InferenceOptions` and `ParsingOptions`.
#[derive(Debug, Clone, PartialEq)]
pub struct InferenceSettings {
    /// Requested output limit; `None` when the request sets none (then
    /// [`ConvertedRequest::resolve_max_tokens`] supplies the official default).
    pub max_tokens: Option<u32>,
    /// 1.0 in thinking mode whatever the client asked (the official API ignores it there);
    /// otherwise the requested value, default 1.0.
    pub temperature: f32,
    /// The official V4 rule: thinking with tools 0.95, thinking without tools 1.0,
    /// non-thinking the requested value (default 1.0).
    pub top_p: f32,
    pub seed: Option<u64>,
    pub logprobs: bool,
    pub top_logprobs: Option<u8>,
    /// Stop sequences. The stream parser matches them (in answer content and JSON output
    /// only, never in reasoning or tool-call markup) and ends the output there.
    pub stop: Vec<String>,
    /// What constrained decoding would enforce (tool-call block, JSON, JSON Schema, regex);
    /// whether the engine enforces it is its own decision.
    pub output_constraint: Option<OutputConstraint>,
    /// Thinking mode and reasoning effort as resolved from the request and model name.
    pub thinking: ThinkingMode,
}

/// A converted request: the recipe crate's result plus our flattened settings.
#[derive(Debug)]
pub struct ConvertedRequest {
    pub protocol: Protocol,
    /// The model name as the client sent it (to echo back).
    pub model: String,
    /// The recipe crate's conversion result: conversation, options, and the response
    /// options its protocol chunk generators need (`ChatCompletionRequest::chunk_generator`
    /// and friends take `&request`).
    pub request: ConversationRequest,
    pub settings: InferenceSettings,
}

impl ConvertedRequest {
    pub fn conversation(&self) -> &Conversation {
        &self.request.conversation
    }

    pub fn tools(&self) -> &[ToolDefinition] {
        &self.request.conversation.tools
    }

    pub fn tool_choice(&self) -> ToolChoice {
        self.request.conversation.tool_choice
    }

    pub fn response_format(&self) -> &ResponseFormat {
        &self.request.conversation.response_format
    }

    /// Whether the client asked for a streamed response.
    pub fn stream(&self) -> bool {
        self.request.stream
    }

    /// The stream parser options conversion chose (thinking start stage, tool-call
    /// parsing, JSON output, stop sequences).
    pub fn parsing_options(&self) -> &ParsingOptions {
        &self.request.parsing_options
    }

    /// A stream parser for this request's output.
    pub fn stream_parser(&self, tokenizer: Arc<Tokenizer>) -> StreamParser {
        StreamParser::new(tokenizer, self.request.parsing_options.clone())
    }

    /// The `max_tokens` to generate with, by the official rule: the requested value, or
    /// 8192 without thinking / 65536 thinking / 131072 Think Max, lowered to what the
    /// context leaves after the prompt and raised to at least 1. A prompt (plus requested
    /// `max_tokens`) that does not fit is a [`ChatError::BadRequest`] with the official
    /// message. Call it after [`crate::PromptEncoder::encode_request`], which may downgrade
    /// Think Max.
    pub fn resolve_max_tokens(
        &self,
        prompt_tokens: usize,
        context_limit: u32,
    ) -> Result<u32, ChatError> {
        let prompt_tokens = u32::try_from(prompt_tokens).unwrap_or(u32::MAX);
        Ok(self
            .request
            .resolve_max_tokens(prompt_tokens, context_limit)?)
    }
}

/// Converts protocol requests with the recipe crate, resolving model names through a
/// [`ModelCatalog`].
#[derive(Debug, Clone)]
pub struct RequestConverter {
    models: ModelCatalog,
    max_tokens_upper_bound: u32,
}

impl RequestConverter {
    pub fn new(models: ModelCatalog) -> Self {
        RequestConverter {
            models,
            max_tokens_upper_bound: DEFAULT_MAX_TOKENS_UPPER_BOUND,
        }
    }

    /// Largest `max_tokens` a request may ask for (default 393216, the crate's and ds4's
    /// default). Chat Completions and Responses reject more; Messages clamps.
    pub fn with_max_tokens_upper_bound(mut self, tokens: u32) -> Self {
        self.max_tokens_upper_bound = tokens;
        self
    }

    pub fn models(&self) -> &ModelCatalog {
        &self.models
    }

    /// Deserialize and convert a request body.
    pub fn convert_json(
        &self,
        protocol: Protocol,
        body: &[u8],
    ) -> Result<ConvertedRequest, ChatError> {
        self.convert(ApiRequest::from_json(protocol, body)?)
    }

    /// Convert a deserialized request.
    pub fn convert(&self, request: ApiRequest) -> Result<ConvertedRequest, ChatError> {
        let protocol = request.protocol();
        let model = request.model().to_owned();
        let options = self
            .models
            .conversion_options(&model)?
            .with_thinking_max_tokens_upper_bound(self.max_tokens_upper_bound)
            .with_non_thinking_max_tokens_upper_bound(self.max_tokens_upper_bound);
        let request = match request {
            ApiRequest::ChatCompletions(r) => r.convert(options)?,
            ApiRequest::Responses(r) => r.convert(options)?,
            ApiRequest::Messages(r) => r.convert(options)?,
        };
        let o = &request.inference_options;
        let settings = InferenceSettings {
            max_tokens: o.max_tokens,
            // The adapters always set both; 1.0 is the documented default regardless.
            temperature: o.temperature.unwrap_or(1.0),
            top_p: o.top_p.unwrap_or(1.0),
            seed: o.seed,
            logprobs: o.logprobs,
            top_logprobs: o.top_logprobs,
            stop: request.parsing_options.stop_sequences.clone(),
            output_constraint: o.output_constraint.clone(),
            thinking: ThinkingMode::of(&request.conversation),
        };
        Ok(ConvertedRequest {
            protocol,
            model,
            request,
            settings,
        })
    }
}

impl Default for RequestConverter {
    fn default() -> Self {
        RequestConverter::new(ModelCatalog::standard())
    }
}
