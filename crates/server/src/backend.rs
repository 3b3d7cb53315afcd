//! What the server asks of an inference engine: take several jobs at once and advance them
//! together, step by step; for each job say what its prompt cost, then hand over sampled
//! tokens one at a time while the caller decides, token by token, whether the next one is
//! DSML syntax (sampled greedily) and whether to stop.
//!
//! The server never sees tensors. [`crate::ModelBackend`] is the real engine; tests use
//! [`crate::scripted::ScriptedBackend`] when they need a specific output (thinking, DSML tool
//! calls, malformed markup) that a random-weight model would never produce.

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

/// What a step reports about a job: `Ready` once, any number of `Token`s, then `End` or
/// `Failed`.
#[derive(Clone, Debug, PartialEq)]
pub enum Progress {
    Ready(PromptReport),
    /// Answered with the [`Next`] verdict.
    Token(u32),
    End(End),
    Failed(String),
}

/// An inference engine as the server's single worker thread drives it: jobs are admitted
/// while there is room, then every admitted job advances with each [`step`](Backend::step).
pub trait Backend: Send + 'static {
    /// Whether another job can be admitted now (`--max-active`, free sessions).
    fn has_room(&self) -> bool;

    /// Starts `job` under `id` (unique among running jobs). An error refuses the job; nothing
    /// was computed then.
    fn admit(&mut self, id: u64, job: &GenJob) -> Result<(), String>;

    /// Jobs admitted and not yet ended.
    fn active(&self) -> usize;

    /// Advances every admitted job by one step (a prefill share or one token each).
    /// `progress` hears each job's events in order and answers its `Token`s.
    fn step(&mut self, progress: &mut dyn FnMut(u64, Progress) -> Next);

    /// Drops a job from the batch at once (client gone, shutdown). Unknown ids are ignored.
    fn cancel(&mut self, id: u64);

    /// Called once when the server stops, after the last job: persist what is worth keeping.
    fn shutdown(&mut self) {}

    /// (files, bytes) in the disk KV cache, when there is one.
    fn disk_usage(&self) -> Option<(u64, u64)> {
        None
    }
}
