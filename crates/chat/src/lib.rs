//! The conversation layer of dsv4: everything between an API request and token ids, and
//! between generated token ids and API events. No model inference happens here.
//!
//! DeepSeek's own crates do the work (shared/README.md decision 1): `deepseek-recipe`
//! converts Chat Completions / Responses / Messages requests and parses streamed output,
//! `deepseek-recipe-encoding` renders DeepSeek V4 prompts (tools, DSML, thinking modes,
//! reasoning effort). This crate is a thin facade that
//!
//! * attaches our tokenizer (`dsv4_tokenizer`, built from the GGUF vocabulary) to the
//!   official encoder, so control tokens come only from the template and never from text
//!   ([`PromptEncoder`], [`RecipeTokenizer`]);
//! * maps our model names to the V4 encoder with the right default thinking mode, and
//!   applies the Think Max context rule ([`ModelCatalog`], [`ThinkingMode`],
//!   [`THINK_MAX_MIN_CONTEXT`]);
//! * converts requests and flattens the sampling settings ([`RequestConverter`]);
//! * drives the crate's async stream processor synchronously, token by token, and reports
//!   protocol-neutral events plus the DSML syntax/payload position the sampler needs
//!   ([`StreamParser`], [`OutputPosition`], [`SyncStream`]).
//!
//! The recipe crates are re-exported so callers use exactly the versions this crate does.

mod convert;
mod error;
mod models;
mod position;
mod render;
mod stream;
mod tokenizer;

pub use deepseek_recipe;
pub use deepseek_recipe_core;
pub use deepseek_recipe_encoding;

pub use convert::{ApiRequest, ConvertedRequest, InferenceSettings, Protocol, RequestConverter};
pub use error::ChatError;
pub use models::{ModelCatalog, MODEL_ID, V4_MODEL_VERSION};
pub use position::OutputPosition;
pub use render::{EncodedPrompt, PromptEncoder, ThinkingMode, THINK_MAX_MIN_CONTEXT};
pub use stream::{
    new_tool_call_id, parsing_options_for, tool_call_id_with, ChatEvent, Finish, Passthrough,
    StreamParser, SyncStream, ToolCallIdFn,
};
pub use tokenizer::RecipeTokenizer;
