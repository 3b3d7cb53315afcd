//! DeepSeek V4 tokenizer: the official byte-level BPE (HF `tokenizers` with the
//! pre-tokenizer of the published `tokenizer.json`), built from a GGUF's
//! `tokenizer.ggml.*` arrays. See FORMATS.md §5.
//!
//! Two encoders, on purpose: [`Tokenizer::encode`] never turns text into control
//! tokens (for anything a user or tool wrote), [`Tokenizer::encode_with_special`]
//! matches all added tokens like HF does (for text the engine rendered itself).

mod byte_level;
mod error;
mod gguf;
mod incremental;
mod tokenizer;
mod vocab;

pub use byte_level::{byte_to_char, char_to_byte};
pub use error::TokenizerError;
pub use incremental::IncrementalDecoder;
pub use tokenizer::{
    Specials, Tokenizer, ASSISTANT_TOKEN, BOS_TOKEN, DSML_TOKEN, EOS_TOKEN, PRETOK_CJK,
    PRETOK_DIGITS, PRETOK_MAIN, THINK_END_TOKEN, THINK_TOKEN, USER_TOKEN,
};
pub use vocab::{bundled_tokenizer_json, token_type, VocabData, BUNDLED_TOKENIZER_JSON_SHA256};
