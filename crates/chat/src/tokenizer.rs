//! Our tokenizer behind the recipe crates' tokenizer traits.
//!
//! The recipe crates ship their own adapters for an HF `tokenizers::Tokenizer` (0.23). We
//! attach `dsv4_tokenizer::Tokenizer` instead, which is built from the GGUF vocabulary and
//! is the one the engine samples with, so that prompt ids and generated ids come from one
//! vocabulary.

use std::ops::Range;
use std::sync::Arc;

use deepseek_recipe::stream::StreamTokenizer;
use deepseek_recipe_encoding::TokenizerEncoder;
use dsv4_tokenizer::Tokenizer;

/// `dsv4_tokenizer::Tokenizer` as the recipe crates' [`TokenizerEncoder`] (prompt encoding)
/// and [`StreamTokenizer`] (output decoding).
#[derive(Debug, Clone)]
pub struct RecipeTokenizer {
    inner: Arc<Tokenizer>,
}

impl RecipeTokenizer {
    pub fn new(tokenizer: Arc<Tokenizer>) -> Self {
        RecipeTokenizer { inner: tokenizer }
    }

    pub fn tokenizer(&self) -> &Arc<Tokenizer> {
        &self.inner
    }

    /// Id of an explicit special token: its spelling must be an added (control or
    /// user-defined) token. A spelling that is missing, or that is an ordinary BPE piece,
    /// is an error rather than a silent fallback to plain text, because a prompt whose
    /// control tokens are not control tokens is a different prompt.
    fn special_id(&self, spelling: &str) -> Result<u32, String> {
        match self.inner.token_to_id(spelling) {
            Some(id) if self.inner.is_added(id) => Ok(id),
            Some(id) => Err(format!(
                "special token {spelling:?} is vocabulary piece {id}, not an added token"
            )),
            None => Err(format!(
                "special token {spelling:?} is not in the vocabulary"
            )),
        }
    }
}

impl TokenizerEncoder for RecipeTokenizer {
    /// Plain spans go through [`Tokenizer::encode`], which never matches added tokens, so
    /// text from users, tools or the model can never become a control token; each special
    /// range becomes the single id of its spelling. This is the contract of the trait and
    /// what the official `PromptTokenizer` does with HF `tokenizers`.
    ///
    /// Unlike the official adapter (which panics), malformed ranges are reported as errors.
    fn encode_ids(&self, text: &str, special_ranges: &[Range<usize>]) -> Result<Vec<u32>, String> {
        let mut ids = Vec::with_capacity(text.len() / 3 + special_ranges.len() + 1);
        let mut pos = 0usize;
        for range in special_ranges {
            if range.start < pos || range.end <= range.start {
                return Err(format!(
                    "special ranges must be ascending, disjoint and non-empty; got {range:?} after byte {pos}"
                ));
            }
            let plain = text.get(pos..range.start).ok_or_else(|| {
                format!(
                    "byte range {pos}..{} is not on character boundaries",
                    range.start
                )
            })?;
            let spelling = text.get(range.clone()).ok_or_else(|| {
                format!("special range {range:?} is out of bounds or not on character boundaries")
            })?;
            ids.extend(self.inner.encode(plain));
            ids.push(self.special_id(spelling)?);
            pos = range.end;
        }
        let tail = text
            .get(pos..)
            .ok_or_else(|| format!("special range end {pos} is out of bounds"))?;
        ids.extend(self.inner.encode(tail));
        Ok(ids)
    }
}

impl StreamTokenizer for RecipeTokenizer {
    /// Raw token bytes, invalid UTF-8 replaced by U+FFFD. A token that ends inside a
    /// character therefore decodes with a trailing U+FFFD, which is how the stream processor
    /// knows to wait for the next token (the trait's first obligation). An id outside the
    /// vocabulary is an error: the sampler produced something impossible.
    fn decode_ids(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, String> {
        let mut bytes = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            if skip_special_tokens && self.inner.is_added(id) {
                continue;
            }
            let b = self.inner.token_bytes(id).ok_or_else(|| {
                format!(
                    "token id {id} is outside the vocabulary ({} tokens)",
                    self.inner.vocab_size()
                )
            })?;
            bytes.extend_from_slice(b);
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.token_piece(id).map(str::to_owned)
    }

    /// Plain encoding, like the prompt encoder would count the same text.
    fn count_tokens(&self, text: &str) -> Option<usize> {
        Some(self.inner.encode(text).len())
    }

    fn is_special_token(&self, id: u32) -> bool {
        self.inner.is_added(id)
    }
}
