//! What the server asks of an inference engine: take a prompt, say what it cost, then
//! sample tokens one at a time while the caller decides, token by token, whether the next
//! one is DSML syntax (sampled greedily) and whether to stop.
//!
//! The server never sees tensors. [`crate::ModelBackend`] is the real engine; tests use
//! [`crate::scripted::ScriptedBackend`] when they need a specific output (thinking, DSML tool
//! calls, malformed markup) that a random-weight model would never produce.

use std::sync::atomic::AtomicBool;

use std::sync::Arc;

use dsv4_chat::EncodedPrompt;
use dsv4_engine::SamplingParams;

/// One generation request, already rendered and tokenized.
#[derive(Clone, Debug)]
pub struct GenJob {
    pub prompt: Vec<u32>,
    /// The rendered text behind `prompt` (chat protocols). A live session whose decoded
    /// tokens are a prefix of this text is reused even when the canonical tokenization of
    /// that text differs from what the model sampled (a re-sent answer or tool call).
    pub text: Option<Arc<EncodedPrompt>>,
    /// At least 1; the context limit also ends generation.
    pub max_tokens: usize,
    pub sampling: SamplingParams,
}

/// Where the prompt's reused tokens came from, for usage fields and `/metrics`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheSource {
    /// A resident session already held a prefix of the prompt.
    Live,
    /// A disk checkpoint was restored.
    Disk,
    /// Nothing reused.
    Miss(MissReason),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MissReason {
    /// No session held anything (first request, or after eviction).
    Cold,
    /// The best session diverged from the prompt at its first token.
    Mismatch,
}

impl CacheSource {
    /// Label value for `/metrics` (`hit` sources and miss reasons share one label).
    pub fn label(self) -> &'static str {
        match self {
            CacheSource::Live => "live",
            CacheSource::Disk => "disk",
            CacheSource::Miss(MissReason::Cold) => "cold",
            CacheSource::Miss(MissReason::Mismatch) => "mismatch",
        }
    }
}

/// What the prompt cost; reported once, before the first token.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PromptReport {
    pub prompt_tokens: usize,
    /// Tokens not prefilled (live session or disk).
    pub cached_tokens: usize,
    pub source: CacheSource,
    pub prefill_seconds: f64,
}

/// The caller's verdict after each sampled token.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Next {
    /// Sample the next token by argmax (it is DSML syntax).
    pub greedy: bool,
    /// Generate nothing more.
    pub stop: bool,
}

/// How a generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// The model ended its turn (EOS).
    Eos,
    /// `max_tokens` or the context limit.
    Length,
    /// The caller said stop.
    Stopped,
    /// The loop guard cut an endless verbatim repetition.
    Loop,
    /// The cancel flag was raised (client gone, shutdown).
    Cancelled,
}

/// An inference engine as the server's single worker thread drives it.
pub trait Backend: Send + 'static {
    /// Runs one job: syncs a session to `job.prompt` (reusing what it can), calls `ready`
    /// once, then for each sampled token calls `token`, whose answer steers the next sample.
    /// `cancel` is checked between prefill chunks and between tokens; a cancelled job returns
    /// `Ok(End::Cancelled)`, possibly before `ready`.
    fn generate(
        &mut self,
        job: &GenJob,
        cancel: &AtomicBool,
        ready: &mut dyn FnMut(&PromptReport),
        token: &mut dyn FnMut(u32) -> Next,
    ) -> Result<End, String>;

    /// Called once when the server stops, after the last job: persist what is worth keeping.
    fn shutdown(&mut self) {}

    /// (files, bytes) in the disk KV cache, when there is one.
    fn disk_usage(&self) -> Option<(u64, u64)> {
        None
    }
}
