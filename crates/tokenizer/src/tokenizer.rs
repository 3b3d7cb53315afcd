//! The official DeepSeek V4 tokenizer, built from GGUF vocabulary arrays.

use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{
    AddedToken, Model, OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer,
    SplitDelimiterBehavior,
};

use crate::byte_level::{byte_to_char, char_to_byte};
use crate::vocab::token_type;
use crate::TokenizerError;

/// tokenizer.json's pre-tokenizer, step 1: runs of Unicode numbers in chunks of ≤ 3.
pub const PRETOK_DIGITS: &str = r"\p{N}{1,3}";
/// Step 2: runs of CJK ideographs U+4E00–U+9FA5, hiragana and katakana.
pub const PRETOK_CJK: &str = "[\u{4e00}-\u{9fa5}\u{3040}-\u{309f}\u{30a0}-\u{30ff}]+";
/// Step 3: the word/punctuation/whitespace splitter. The JSON file holds raw CR/LF
/// characters where this has `\r`/`\n`; the regex engine reads both the same way.
pub const PRETOK_MAIN: &str = concat!(
    r##"[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+"##,
    r"|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+",
    r"| ?[\p{P}\p{S}]+[\r\n]*",
    r"|\s*[\r\n]+",
    r"|\s+(?!\S)",
    r"|\s+",
);

pub const BOS_TOKEN: &str = "<｜begin▁of▁sentence｜>";
pub const EOS_TOKEN: &str = "<｜end▁of▁sentence｜>";
pub const USER_TOKEN: &str = "<｜User｜>";
pub const ASSISTANT_TOKEN: &str = "<｜Assistant｜>";
pub const THINK_TOKEN: &str = "<think>";
pub const THINK_END_TOKEN: &str = "</think>";
pub const DSML_TOKEN: &str = "｜DSML｜";

/// Ids of the tokens the engine's templates insert, resolved by string like ds4 does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Specials {
    pub bos: u32,
    pub eos: u32,
    pub user: u32,
    pub assistant: u32,
    pub think: u32,
    pub think_end: u32,
    pub dsml: u32,
}

/// Byte-level BPE tokenizer identical to HF `tokenizers` with the official
/// `tokenizer.json` (FORMATS.md §5.4–5.7).
///
/// Encoding is done by the `tokenizers` crate itself, configured programmatically
/// from the vocabulary arrays; decoding is done here from a per-id byte table so
/// that it returns raw bytes (a token can end inside a UTF-8 character).
pub struct Tokenizer {
    hf: tokenizers::Tokenizer,
    pieces: Vec<String>,
    types: Vec<i32>,
    /// `bytes[offsets[id]..offsets[id + 1]]` is what token `id` decodes to.
    bytes: Vec<u8>,
    offsets: Vec<u32>,
    /// Token id of each byte's single-symbol token, for the never-taken fallback path.
    byte_ids: [u32; 256],
    specials: Specials,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.pieces.len())
            .field("specials", &self.specials)
            .finish_non_exhaustive()
    }
}

fn is_added(t: i32) -> bool {
    t == token_type::CONTROL || t == token_type::USER_DEFINED
}

fn hf_err(e: impl std::fmt::Display) -> TokenizerError {
    TokenizerError::Hf(e.to_string())
}

impl Tokenizer {
    /// Build from `tokenizer.ggml.tokens`, `tokenizer.ggml.merges` and
    /// `tokenizer.ggml.token_type`.
    ///
    /// Tokens of type 3 (control) and 4 (user-defined) become HF added tokens, matched
    /// literally by [`Tokenizer::encode_with_special`]; the rest are BPE vocabulary and
    /// must be GPT-2 byte-level strings. Every inconsistency is an error, because an
    /// unchecked vocabulary makes the `tokenizers` crate silently drop text (a byte
    /// with no symbol token) or misnumber ids (duplicates).
    pub fn from_vocab<T: AsRef<str>, M: AsRef<str>>(
        tokens: &[T],
        merges: &[M],
        token_types: &[i32],
    ) -> Result<Tokenizer, TokenizerError> {
        let n = tokens.len();
        if n == 0 {
            return Err(TokenizerError::EmptyVocab);
        }
        if n >= u32::MAX as usize {
            return Err(TokenizerError::VocabTooLarge(n));
        }
        if token_types.len() != n {
            return Err(TokenizerError::LengthMismatch {
                tokens: n,
                token_types: token_types.len(),
            });
        }

        let mut vocab: Vocab = Vocab::default();
        vocab.reserve(n);
        let mut bytes = Vec::with_capacity(n * 8);
        let mut offsets = Vec::with_capacity(n + 1);
        offsets.push(0u32);
        let mut added = Vec::new();
        for (i, (tok, &ty)) in tokens.iter().zip(token_types).enumerate() {
            let tok = tok.as_ref();
            let id = i as u32;
            if tok.is_empty() {
                return Err(TokenizerError::EmptyToken { id });
            }
            if let Some(&first) = vocab.get(tok) {
                return Err(TokenizerError::DuplicateToken {
                    id,
                    first,
                    token: tok.to_owned(),
                });
            }
            match ty {
                token_type::CONTROL | token_type::USER_DEFINED => {
                    bytes.extend_from_slice(tok.as_bytes());
                    added.push(AddedToken::from(tok.to_owned(), ty == token_type::CONTROL));
                }
                token_type::NORMAL
                | token_type::UNKNOWN
                | token_type::UNUSED
                | token_type::BYTE => {
                    for ch in tok.chars() {
                        match char_to_byte(ch) {
                            Some(b) => bytes.push(b),
                            None => {
                                return Err(TokenizerError::NotByteLevel {
                                    id,
                                    token: tok.to_owned(),
                                    ch,
                                    cp: ch as u32,
                                })
                            }
                        }
                    }
                }
                _ => {
                    return Err(TokenizerError::InvalidTokenType {
                        id,
                        token: tok.to_owned(),
                        token_type: ty,
                    })
                }
            }
            // Bounded by n * (4-byte chars * token length); u32 covers any real vocabulary.
            let end = u32::try_from(bytes.len()).map_err(|_| TokenizerError::VocabTooLarge(n))?;
            offsets.push(end);
            vocab.insert(tok.to_owned(), id);
        }

        // BPE starts from one symbol per byte; the tokenizers crate silently drops a
        // symbol that has no token (no unk, no byte fallback), losing text.
        let mut byte_ids = [0u32; 256];
        for b in 0..=255u8 {
            let symbol = byte_to_char(b);
            let mut buf = [0u8; 4];
            match vocab.get(&*symbol.encode_utf8(&mut buf)) {
                Some(&id) if !is_added(token_types[id as usize]) => byte_ids[b as usize] = id,
                _ => return Err(TokenizerError::MissingByteSymbol { byte: b, symbol }),
            }
        }

        let mut pairs = Vec::with_capacity(merges.len());
        for (rank, m) in merges.iter().enumerate() {
            let m = m.as_ref();
            let malformed = || TokenizerError::MalformedMerge {
                rank,
                merge: m.to_owned(),
            };
            let (a, b) = m.split_once(' ').ok_or_else(malformed)?;
            if a.is_empty() || b.is_empty() || b.contains(' ') {
                return Err(malformed());
            }
            let joined = format!("{a}{b}");
            for part in [a, b, joined.as_str()] {
                if !vocab.contains_key(part) {
                    return Err(TokenizerError::MergeOutOfVocab {
                        rank,
                        merge: m.to_owned(),
                        part: part.to_owned(),
                    });
                }
            }
            // BPE output is byte symbols (checked normal above) and merge results; if no
            // merge result is an added token, `encode` cannot emit one for any text.
            let result_id = vocab[joined.as_str()];
            if is_added(token_types[result_id as usize]) {
                return Err(TokenizerError::MergeYieldsAddedToken {
                    rank,
                    merge: m.to_owned(),
                    id: result_id,
                });
            }
            pairs.push((a.to_owned(), b.to_owned()));
        }

        let lookup = |name: &'static str, token: &'static str| {
            vocab
                .get(token)
                .copied()
                .ok_or(TokenizerError::MissingSpecial { name, token })
        };
        let specials = Specials {
            bos: lookup("BOS", BOS_TOKEN)?,
            eos: lookup("EOS", EOS_TOKEN)?,
            user: lookup("User", USER_TOKEN)?,
            assistant: lookup("Assistant", ASSISTANT_TOKEN)?,
            think: lookup("think", THINK_TOKEN)?,
            think_end: lookup("/think", THINK_END_TOKEN)?,
            dsml: lookup("DSML", DSML_TOKEN)?,
        };

        // The BPE vocabulary holds every id, added tokens included, so that the added
        // vocabulary below finds each added token's existing id instead of appending
        // new ids after the model's. BPE itself never produces an added token: no merge
        // yields one (checked above) and ignore_merges is off, so whole pieces are never
        // looked up directly.
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, pairs)
            .build()
            .map_err(hf_err)?;

        let split = |re: &str| -> Result<PreTokenizerWrapper, TokenizerError> {
            Ok(Split::new(
                SplitPattern::Regex(re.to_owned()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(hf_err)?
            .into())
        };
        let pre = Sequence::new(vec![
            split(PRETOK_DIGITS)?,
            split(PRETOK_CJK)?,
            split(PRETOK_MAIN)?,
            // Only the byte→symbol mapping: no prefix space, no GPT-2 regex of its own.
            ByteLevel::new(false, true, false).into(),
        ]);

        let mut hf = tokenizers::Tokenizer::new(bpe);
        hf.with_pre_tokenizer(Some(pre));
        // One call: each call rebuilds the added-token matchers.
        hf.add_tokens(added.iter().cloned()).map_err(|e| TokenizerError::Hf(e.to_string()))?;
        for (i, t) in added.iter().enumerate() {
            // Guard against the added vocabulary renumbering a token.
            match hf.token_to_id(&t.content) {
                Some(id) if tokens[id as usize].as_ref() == t.content => {}
                other => {
                    return Err(TokenizerError::Hf(format!(
                        "added token #{i} {:?} resolved to id {other:?}",
                        t.content
                    )))
                }
            }
        }

        Ok(Tokenizer {
            hf,
            pieces: tokens.iter().map(|t| t.as_ref().to_owned()).collect(),
            types: token_types.to_vec(),
            bytes,
            offsets,
            byte_ids,
            specials,
        })
    }

    /// Build from the bundled real vocabulary ([`crate::VocabData::bundled`]).
    pub fn bundled() -> Result<Tokenizer, TokenizerError> {
        let v = crate::VocabData::bundled_ref();
        Tokenizer::from_vocab(&v.tokens, &v.merges, &v.token_types)
    }

    /// Encode untrusted text. Added-token strings are **not** recognised: a user who
    /// types `<｜User｜>` or `<think>` gets ordinary BPE pieces, so text can never forge
    /// a control token. Templates insert control tokens by id instead.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        match self.encode_plain(text) {
            Ok(ids) => ids,
            Err(_) => self.encode_bytes_fallback(text),
        }
    }

    /// Encode like HF `Tokenizer.encode(text, add_special_tokens=False)`: every added
    /// token string (control and user-defined) in the text becomes its single id.
    /// Only for text the engine itself rendered.
    pub fn encode_with_special(&self, text: &str) -> Vec<u32> {
        match self.hf.encode_fast(text, false) {
            Ok(enc) => enc.get_ids().to_vec(),
            Err(_) => self.encode_bytes_fallback(text),
        }
    }

    /// HF's pipeline minus the added-vocabulary pass: the same pre-tokenizer and BPE
    /// model, run directly on the whole text (there is no normalizer).
    fn encode_plain(&self, text: &str) -> tokenizers::Result<Vec<u32>> {
        let mut pts = PreTokenizedString::from(text);
        if let Some(pre) = self.hf.get_pre_tokenizer() {
            pre.pre_tokenize(&mut pts)?;
        }
        let model = self.hf.get_model();
        pts.tokenize(|piece| model.tokenize(piece.get()))?;
        let mut ids = Vec::with_capacity(text.len() / 3 + 1);
        for (_, _, toks) in pts.get_splits(OffsetReferential::Original, OffsetType::None) {
            if let Some(toks) = toks {
                ids.extend(toks.iter().map(|t| t.id));
            }
        }
        Ok(ids)
    }

    /// Unreachable in practice: with a validated vocabulary (no unk, no dropout) the
    /// `tokenizers` pipeline has no failing step. If it ever does fail, one token per
    /// byte still decodes to exactly the input, which beats panicking or losing text.
    fn encode_bytes_fallback(&self, text: &str) -> Vec<u32> {
        text.bytes().map(|b| self.byte_ids[b as usize]).collect()
    }

    /// Concatenated raw bytes of the tokens. Added tokens give their literal text.
    /// Out-of-range ids give U+FFFD, visible but never a panic.
    pub fn decode(&self, ids: &[u32]) -> Vec<u8> {
        let mut out = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            out.extend_from_slice(self.token_bytes(id).unwrap_or("\u{FFFD}".as_bytes()));
        }
        out
    }

    /// [`Tokenizer::decode`] as text, invalid UTF-8 replaced by U+FFFD.
    pub fn decode_lossy(&self, ids: &[u32]) -> String {
        String::from_utf8_lossy(&self.decode(ids)).into_owned()
    }

    /// The bytes token `id` decodes to.
    pub fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        let i = id as usize;
        let (start, end) = (*self.offsets.get(i)?, *self.offsets.get(i + 1)?);
        self.bytes.get(start as usize..end as usize)
    }

    /// The token's string as the vocabulary stores it (GPT-2 byte-level form such as
    /// `Ġhello` for normal tokens, literal text for added ones), for display and debugging.
    pub fn token_piece(&self, id: u32) -> Option<&str> {
        self.pieces.get(id as usize).map(String::as_str)
    }

    /// The llama.cpp token type of `id`.
    pub fn token_type(&self, id: u32) -> Option<i32> {
        self.types.get(id as usize).copied()
    }

    /// Whether `id` is an added (control or user-defined) token.
    pub fn is_added(&self, id: u32) -> bool {
        self.token_type(id).is_some_and(is_added)
    }

    /// Id of a vocabulary string (byte-level form for normal tokens).
    pub fn token_to_id(&self, piece: &str) -> Option<u32> {
        self.hf.token_to_id(piece)
    }

    /// The token whose decoded bytes are exactly `bytes`: a normal token through its
    /// byte-level spelling, else an added token spelled literally.
    pub fn token_to_id_bytes(&self, bytes: &[u8]) -> Option<u32> {
        let piece: String = bytes.iter().map(|&b| crate::byte_level::byte_to_char(b)).collect();
        self.hf
            .token_to_id(&piece)
            .filter(|&id| !self.is_added(id))
            .or_else(|| std::str::from_utf8(bytes).ok().and_then(|s| self.hf.token_to_id(s)).filter(|&id| self.is_added(id)))
    }

    pub fn specials(&self) -> Specials {
        self.specials
    }

    pub fn vocab_size(&self) -> usize {
        self.pieces.len()
    }

    /// A streaming decoder over this tokenizer.
    pub fn incremental_decoder(&self) -> crate::IncrementalDecoder<'_> {
        crate::IncrementalDecoder::new(self)
    }
}
