//! Prompt rendering and encoding for DeepSeek V4 through the official encoder.

use std::borrow::Cow;
use std::ops::Range;
use std::sync::Arc;

use deepseek_recipe_core::conversation::{Conversation, ReasoningEffort};
use deepseek_recipe_encoding::dsv4::DeepseekV4Encoding;
use deepseek_recipe_encoding::{PromptEncoding, TokenizerEncoder};
use dsv4_tokenizer::Tokenizer;

use crate::tokenizer::RecipeTokenizer;
use crate::ChatError;

/// Smallest context (tokens) at which Think Max is honoured: 384 Ki tokens.
///
/// The DeepSeek V4 model card recommends a context window of at least 384K tokens for the
/// Think Max mode (SERVER.md §1.2; ds4's `DS4_THINK_MAX_MIN_CONTEXT` is the same 393216).
/// Below it a Max request is served as [`ThinkingMode::High`]. Configure it with
/// [`PromptEncoder::with_think_max_min_context`].
pub const THINK_MAX_MIN_CONTEXT: u32 = 393_216;

/// How the next assistant turn thinks, as the V4 encoder renders it.
///
/// The V4 encoder of `deepseek-recipe-encoding` 0.2.0 renders (thinking mode only) a
/// reasoning-effort paragraph right after BOS:
///
/// | mode | conversation fields | prompt |
/// | --- | --- | --- |
/// | `NonThink` | `thinking_mode = false` | ends `<｜Assistant｜></think>` |
/// | `Low` | thinking, effort `Low` | ends `<｜Assistant｜><think>`, no effort paragraph |
/// | `High` | thinking, effort `None`/`High`/`Xhigh` | + "Reasoning Effort: Absolute maximum …" |
/// | `Max` | thinking, effort `Max` | + "Reasoning Effort: Beyond maximum …" |
///
/// Note for readers of SERVER.md: the older `encoding_dsv4.py` rendered *no* paragraph for
/// plain thinking and the "Absolute maximum" one for max; the official crate moved both one
/// step up and added `Low` for the bare prompt. We follow the crate (README decision 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ThinkingMode {
    NonThink,
    Low,
    High,
    Max,
}

impl ThinkingMode {
    /// The mode a conversation's fields select. `None` and `Xhigh` efforts render exactly
    /// like `High`, so they read as `High`.
    pub fn of(conversation: &Conversation) -> ThinkingMode {
        if !conversation.thinking_mode {
            return ThinkingMode::NonThink;
        }
        match conversation.reasoning_effort {
            Some(ReasoningEffort::Low) => ThinkingMode::Low,
            None | Some(ReasoningEffort::High) | Some(ReasoningEffort::Xhigh) => ThinkingMode::High,
            Some(ReasoningEffort::Max) => ThinkingMode::Max,
        }
    }

    /// Set `thinking_mode` and `reasoning_effort` so that [`ThinkingMode::of`] gives
    /// `self`. Nothing else changes: in particular reasoning content of earlier assistant
    /// messages stays, and the encoder decides whether to render it, exactly as the
    /// official encoder does for the same conversation.
    pub fn apply(self, conversation: &mut Conversation) {
        if ThinkingMode::of(conversation) == self {
            return; // keep e.g. an Xhigh effort as the client sent it
        }
        let (thinking, effort) = match self {
            ThinkingMode::NonThink => (false, None),
            ThinkingMode::Low => (true, Some(ReasoningEffort::Low)),
            ThinkingMode::High => (true, Some(ReasoningEffort::High)),
            ThinkingMode::Max => (true, Some(ReasoningEffort::Max)),
        };
        conversation.thinking_mode = thinking;
        conversation.reasoning_effort = effort;
    }

    pub fn is_thinking(self) -> bool {
        self != ThinkingMode::NonThink
    }
}

/// A rendered V4 prompt: the text, the byte ranges of its explicit control tokens, and
/// the token ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedPrompt {
    /// The prompt text exactly as the official encoder renders it.
    pub prompt: String,
    /// Ascending, disjoint byte ranges of `prompt` that are control tokens; everything
    /// else is plain text (even when it spells a control token).
    pub special_ranges: Vec<Range<usize>>,
    /// Token ids: each special range is one id, plain text is BPE without added tokens.
    pub token_ids: Vec<u32>,
    /// The mode the prompt was rendered with (after the Think Max context rule).
    pub mode: ThinkingMode,
    /// True when Max was requested but the context is below the Think Max minimum.
    pub think_max_downgraded: bool,
}

impl EncodedPrompt {
    /// Token ids of the prompt text from byte `from` on (special ranges as their tokens,
    /// the rest plain BPE), or `None` when `from` is not a character boundary or falls
    /// inside a special token.
    ///
    /// A live session that holds the prompt's first `from` bytes under a tokenization of
    /// its own (what the model sampled, which need not be the canonical BPE of its text)
    /// continues with these ids: the model then sees exactly this prompt's text.
    pub fn ids_from(&self, tokenizer: &Arc<Tokenizer>, from: usize) -> Option<Vec<u32>> {
        self.ids_between(tokenizer, from, self.prompt.len())
    }

    /// Token ids of the prompt text in bytes `from..to`, encoded on their own (see
    /// [`EncodedPrompt::ids_from`]); `None` when either end is not a character boundary or
    /// falls inside a special token.
    pub fn ids_between(&self, tokenizer: &Arc<Tokenizer>, from: usize, to: usize) -> Option<Vec<u32>> {
        let inside = |at: usize| self.special_ranges.iter().any(|r| r.start < at && at < r.end);
        if from > to || !self.prompt.is_char_boundary(from) || !self.prompt.is_char_boundary(to) || inside(from) || inside(to) {
            return None;
        }
        let ranges: Vec<Range<usize>> = self
            .special_ranges
            .iter()
            .filter(|r| r.start >= from && r.end <= to)
            .map(|r| r.start - from..r.end - from)
            .collect();
        RecipeTokenizer::new(tokenizer.clone()).encode_ids(&self.prompt[from..to], &ranges).ok()
    }
}

/// Renders conversations with the official V4 encoder and encodes them with our tokenizer.
///
/// ```no_run
/// # use std::sync::Arc;
/// # use dsv4_chat::{PromptEncoder, ThinkingMode};
/// # use dsv4_chat::deepseek_recipe_core::{conversation::Conversation, messages::InputMessage, prompt::Prompt};
/// let tokenizer = Arc::new(dsv4_tokenizer::Tokenizer::bundled().unwrap());
/// let encoder = PromptEncoder::new(tokenizer, 1 << 20);
/// let conversation = Conversation {
///     messages: vec![InputMessage::User { content: Prompt::plain("Hi"), image_sources: vec![] }],
///     ..Conversation::default()
/// };
/// let prompt = encoder.encode(&conversation, ThinkingMode::NonThink).unwrap();
/// assert!(prompt.prompt.ends_with("<｜Assistant｜></think>"));
/// ```
#[derive(Clone)]
pub struct PromptEncoder {
    tokenizer: RecipeTokenizer,
    encoding: DeepseekV4Encoding,
    context_size: u32,
    think_max_min_context: u32,
}

impl std::fmt::Debug for PromptEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PromptEncoder")
            .field("context_size", &self.context_size)
            .field("think_max_min_context", &self.think_max_min_context)
            .finish_non_exhaustive()
    }
}

impl PromptEncoder {
    /// `context_size` is the engine's context window in tokens; it decides whether Think
    /// Max is honoured (see [`THINK_MAX_MIN_CONTEXT`]).
    pub fn new(tokenizer: Arc<Tokenizer>, context_size: u32) -> Self {
        // `PromptEncoding::encode` would render again and return only the ids; we render
        // once and run our `TokenizerEncoder` over that same rendering, so the text, the
        // special ranges and the ids always belong together.
        PromptEncoder {
            tokenizer: RecipeTokenizer::new(tokenizer),
            encoding: DeepseekV4Encoding::new(),
            context_size,
            think_max_min_context: THINK_MAX_MIN_CONTEXT,
        }
    }

    /// Change the smallest context at which Think Max is honoured (default
    /// [`THINK_MAX_MIN_CONTEXT`]); 0 always honours it.
    pub fn with_think_max_min_context(mut self, tokens: u32) -> Self {
        self.think_max_min_context = tokens;
        self
    }

    pub fn context_size(&self) -> u32 {
        self.context_size
    }

    pub fn think_max_min_context(&self) -> u32 {
        self.think_max_min_context
    }

    pub fn tokenizer(&self) -> &Arc<Tokenizer> {
        self.tokenizer.tokenizer()
    }

    /// The mode actually rendered for a requested one: Max becomes High when the context
    /// is smaller than the Think Max minimum; everything else is unchanged.
    pub fn effective_mode(&self, requested: ThinkingMode) -> ThinkingMode {
        if requested == ThinkingMode::Max && self.context_size < self.think_max_min_context {
            ThinkingMode::High
        } else {
            requested
        }
    }

    /// Render and encode `conversation` in `mode` (subject to the Think Max rule). The
    /// conversation's own `thinking_mode`/`reasoning_effort` are replaced by `mode`.
    pub fn encode(
        &self,
        conversation: &Conversation,
        mode: ThinkingMode,
    ) -> Result<EncodedPrompt, ChatError> {
        let effective = self.effective_mode(mode);
        let conversation = if ThinkingMode::of(conversation) == effective {
            Cow::Borrowed(conversation)
        } else {
            let mut c = conversation.clone();
            effective.apply(&mut c);
            Cow::Owned(c)
        };
        let rendered = self.encoding.render_conversation(&conversation);
        let token_ids = self
            .tokenizer
            .encode_ids(&rendered.prompt, &rendered.special_ranges)
            .map_err(ChatError::Encode)?;
        Ok(EncodedPrompt {
            prompt: rendered.prompt,
            special_ranges: rendered.special_ranges,
            token_ids,
            mode: effective,
            think_max_downgraded: effective != mode,
        })
    }

    /// Encode in the conversation's own mode (as conversion resolved it), subject to the
    /// Think Max rule.
    pub fn encode_conversation(
        &self,
        conversation: &Conversation,
    ) -> Result<EncodedPrompt, ChatError> {
        self.encode(conversation, ThinkingMode::of(conversation))
    }

    /// Encode a converted request. When Think Max is downgraded, the request's
    /// conversation and settings are updated too, so that the default `max_tokens`
    /// ([`crate::ConvertedRequest::resolve_max_tokens`]) follows the mode actually used.
    pub fn encode_request(
        &self,
        request: &mut crate::ConvertedRequest,
    ) -> Result<EncodedPrompt, ChatError> {
        let encoded = self.encode_conversation(&request.request.conversation)?;
        if encoded.think_max_downgraded {
            encoded.mode.apply(&mut request.request.conversation);
            request.settings.thinking = encoded.mode;
        }
        Ok(encoded)
    }
}
