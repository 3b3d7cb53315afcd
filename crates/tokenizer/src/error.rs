//! Errors for building a tokenizer from a vocabulary.

use thiserror::Error;

/// Why a vocabulary was rejected, or why the bundled data could not be read.
///
/// Every check in [`crate::Tokenizer::from_vocab`] reports through this type: a GGUF
/// file is untrusted input, so a malformed vocabulary must be an error, never a panic.
#[derive(Debug, Error)]
pub enum TokenizerError {
    #[error("vocabulary is empty")]
    EmptyVocab,

    #[error("vocabulary has {0} tokens, more than a u32 id can address")]
    VocabTooLarge(usize),

    #[error("tokenizer.ggml.tokens has {tokens} entries but tokenizer.ggml.token_type has {token_types}")]
    LengthMismatch { tokens: usize, token_types: usize },

    #[error("token {id} is the empty string")]
    EmptyToken { id: u32 },

    #[error("token {id} {token:?} duplicates token {first}")]
    DuplicateToken { id: u32, first: u32, token: String },

    #[error("token {id} {token:?} has token type {token_type}; expected 1 (normal), 2 (unknown), 3 (control), 4 (user-defined), 5 (unused) or 6 (byte)")]
    InvalidTokenType {
        id: u32,
        token: String,
        token_type: i32,
    },

    #[error("normal token {id} {token:?} contains {ch:?} (U+{cp:04X}), which is not a GPT-2 byte-level symbol")]
    NotByteLevel {
        id: u32,
        token: String,
        ch: char,
        cp: u32,
    },

    #[error("the byte-level symbol {symbol:?} for byte 0x{byte:02X} is not a normal token; text containing that byte could not be encoded")]
    MissingByteSymbol { byte: u8, symbol: char },

    #[error("merge {rank} {merge:?} is not two non-empty symbols separated by one space")]
    MalformedMerge { rank: usize, merge: String },

    #[error("merge {rank} {merge:?}: {part:?} is not in the vocabulary")]
    MergeOutOfVocab {
        rank: usize,
        merge: String,
        part: String,
    },

    #[error("merge {rank} {merge:?} produces added token {id}; plain text could then encode to a control token")]
    MergeYieldsAddedToken { rank: usize, merge: String, id: u32 },

    #[error("required token {name} ({token:?}) is not in the vocabulary")]
    MissingSpecial {
        name: &'static str,
        token: &'static str,
    },

    #[error("the model's `{key}` {problem}")]
    GgufKey { key: &'static str, problem: &'static str },

    #[error("tokenizers: {0}")]
    Hf(String),

    #[error("bundled vocabulary: {0}")]
    Bundled(String),
}
