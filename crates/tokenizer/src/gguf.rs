//! The tokenizer of a GGUF model file, from its `tokenizer.ggml.*` arrays.

use crate::{Tokenizer, TokenizerError};
use dsv4_gguf::GgufFile;

impl Tokenizer {
    /// Builds the tokenizer from `tokenizer.ggml.tokens`, `.merges` and (optional)
    /// `.token_type`; a missing or mistyped array is an error naming the key.
    pub fn from_gguf(f: &GgufFile) -> Result<Tokenizer, TokenizerError> {
        let strs = |key: &'static str| -> Result<Vec<String>, TokenizerError> {
            let v = f.get(key).ok_or(TokenizerError::GgufKey { key, problem: "is missing" })?;
            let items = v.as_str_array().ok_or(TokenizerError::GgufKey { key, problem: "is not an array of strings" })?;
            Ok(items.into_iter().map(str::to_owned).collect())
        };
        let tokens = strs("tokenizer.ggml.tokens")?;
        let merges = strs("tokenizer.ggml.merges")?;
        let types: Vec<i32> = match f.get("tokenizer.ggml.token_type") {
            Some(v) => v
                .as_i64_array()
                .ok_or(TokenizerError::GgufKey { key: "tokenizer.ggml.token_type", problem: "is not an integer array" })?
                .into_iter()
                .map(|t| i32::try_from(t).unwrap_or(-1))
                .collect(),
            None => vec![1; tokens.len()],
        };
        Tokenizer::from_vocab(&tokens, &merges, &types)
    }
}
