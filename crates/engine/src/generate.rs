//! The generation loop over a live session.
//!
//! A [`Session`] is a model state plus the tokens it has consumed. Starting a generation
//! syncs the session to the new prompt, prefilling only what it does not already hold (a new
//! chat turn costs its own tokens, not the conversation's), then each [`Generation::next`]
//! samples a token, feeds it to the session, and reports text that is safe to show: whole
//! UTF-8 characters, with any stop string and what follows it withheld.

use crate::disk::DiskCache;
use crate::loop_guard::LoopGuard;
use crate::sampler::{Sampler, SamplingParams};
use crate::stop::StopMatcher;
use dsv4_model::{Checkpoint, ForwardError, Model, Numerics, SessionState};
use dsv4_tokenizer::{IncrementalDecoder, Tokenizer};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Clone, Debug)]
pub struct GenerationParams {
    pub sampling: SamplingParams,
    pub max_tokens: usize,
    pub stop: Vec<String>,
    pub loop_guard: Option<LoopGuard>,
    pub numerics: Numerics,
    /// Tokens per prefill call; progress is reported between chunks.
    pub prefill_chunk: usize,
}

impl Default for GenerationParams {
    fn default() -> Self {
        GenerationParams {
            sampling: SamplingParams::default(),
            max_tokens: 4096,
            stop: Vec::new(),
            loop_guard: Some(LoopGuard::default()),
            numerics: Numerics::Official,
            prefill_chunk: 512,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// The model ended its turn.
    Eos,
    /// `max_tokens` or the context was reached.
    Length,
    /// A stop string was generated.
    Stop,
    /// The loop guard saw a verbatim loop.
    Loop,
    Cancelled,
}

#[derive(Debug, thiserror::Error)]
pub enum GenError {
    #[error("{0}")]
    Forward(#[from] ForwardError),
    #[error("invalid sampling parameters: {0}")]
    Params(String),
    #[error("the prompt has {prompt} tokens but the context holds {ctx}")]
    Context { prompt: usize, ctx: usize },
    #[error("cancelled")]
    Cancelled,
}

/// A model state together with the tokens it has consumed, and checkpoints to rewind to.
#[derive(Clone)]
pub struct Session {
    pub state: SessionState,
    pub tokens: Vec<u32>,
    /// Logits after the last consumed token, when known.
    last_logits: Option<Vec<f32>>,
    /// Oldest first; every checkpoint's position is at most `tokens.len()`.
    checkpoints: Vec<Checkpoint>,
    disk: Option<Arc<DiskCache>>,
}

/// A checkpoint is taken every this many tokens (a multiple of every compression ratio, though
/// checkpoints work at any position) and where each prompt ends, since regenerating or editing
/// the last turn rewinds there.
pub const CHECKPOINT_INTERVAL: usize = 1024;
/// Checkpoints kept per session, newest first to survive (a Flash checkpoint is ~20 MB).
pub const MAX_CHECKPOINTS: usize = 16;

impl Session {
    pub fn new(model: &Model) -> Session {
        Session { state: model.new_state(), tokens: Vec::new(), last_logits: None, checkpoints: Vec::new(), disk: None }
    }

    /// Restores from and saves to this disk cache from now on.
    pub fn attach_disk(&mut self, disk: Arc<DiskCache>) {
        self.disk = Some(disk);
    }

    fn take_checkpoint(&mut self) {
        if self.checkpoints.last().is_some_and(|c| c.pos as usize == self.tokens.len()) {
            return;
        }
        self.checkpoints.push(self.state.checkpoint());
        if self.checkpoints.len() > MAX_CHECKPOINTS {
            self.checkpoints.remove(0);
        }
    }

    /// Goes back to the latest checkpoint at or before `pos`; returns the position reached
    /// (0 when no checkpoint helps and the session starts over).
    pub fn rewind(&mut self, model: &Model, pos: usize) -> usize {
        self.last_logits = None;
        self.checkpoints.retain(|c| c.pos as usize <= pos);
        match self.checkpoints.last() {
            Some(c) if self.state.restore(c).is_ok() => {
                self.tokens.truncate(c.pos as usize);
                self.tokens.len()
            }
            _ => {
                self.reset(model);
                0
            }
        }
    }

    /// Tokens `prompt` shares with what the session holds.
    pub fn common_prefix(&self, prompt: &[u32]) -> usize {
        self.tokens.iter().zip(prompt).take_while(|(a, b)| a == b).count()
    }

    /// Saves the whole state to the attached disk cache (eviction, shutdown); returns the
    /// tokens written (0 when there is no cache, the session is short, or it is stored).
    pub fn save_to_disk(&self, model: &Model) -> usize {
        match &self.disk {
            Some(d) => d.save(model, &self.state, &self.tokens),
            None => 0,
        }
    }

    pub fn reset(&mut self, model: &Model) {
        let disk = self.disk.take();
        *self = Session::new(model);
        self.disk = disk;
    }
}

/// One step of generation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// The sampled token (absent when the step only reports the end).
    pub token: Option<u32>,
    /// Text now safe to show.
    pub text: String,
    pub finish: Option<Finish>,
}

/// What a prefill cost, for the end-of-answer stats.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PrefillStats {
    /// Prompt tokens not prefilled: from the live session or the disk cache.
    pub reused: usize,
    /// Of those, restored from the disk cache.
    pub from_disk: usize,
    pub prefilled: usize,
    /// Tokens saved to the disk cache after this prefill (0: none, or already stored).
    pub saved_to_disk: usize,
    pub seconds: f64,
}

pub struct Generation<'a> {
    model: &'a Model,
    session: &'a mut Session,
    sampler: Sampler,
    stop: StopMatcher,
    decoder: IncrementalDecoder<'a>,
    params: GenerationParams,
    eos: u32,
    ctx: usize,
    generated: Vec<u32>,
    logits: Vec<f32>,
    finished: bool,
    pub prefill: PrefillStats,
}

impl<'a> Generation<'a> {
    /// Syncs `session` to `prompt` (reusing the common prefix when the prompt extends what
    /// the session holds; starting over otherwise) and readies the first sample.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        model: &'a Model,
        tok: &'a Tokenizer,
        session: &'a mut Session,
        prompt: &[u32],
        params: GenerationParams,
        ctx: usize,
        cancel: &AtomicBool,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Generation<'a>, GenError> {
        params.sampling.validate().map_err(GenError::Params)?;
        if prompt.is_empty() || prompt.len() >= ctx {
            return Err(GenError::Context { prompt: prompt.len(), ctx });
        }
        let t0 = std::time::Instant::now();
        let mut common = session.common_prefix(prompt);
        // A prompt that diverges from (or ends inside) what the session holds rewinds it; the
        // last prompt token is always recomputed so its logits are at hand.
        if common < session.tokens.len() || (common == prompt.len() && session.last_logits.is_none()) {
            common = session.rewind(model, common.min(prompt.len() - 1));
        }
        let mut from_disk = 0;
        if let Some(disk) = session.disk.clone() {
            if let Some((state, tokens)) = disk.restore(model, prompt, common) {
                from_disk = tokens.len();
                common = tokens.len();
                session.state = state;
                session.tokens = tokens;
                session.checkpoints.clear();
                session.last_logits = None;
            }
        }
        let reused = common;
        let mut saved_to_disk = 0;
        let mut logits = session.last_logits.take().filter(|_| common == prompt.len());
        let todo = &prompt[common..];
        let mut done = 0;
        while done < todo.len() {
            if cancel.load(Ordering::Relaxed) {
                // The session holds exactly what was prefilled so far.
                return Err(GenError::Cancelled);
            }
            // Chunks end at checkpoint positions so checkpoints land exactly on them: every
            // interval, and just before the prompt's last token (a regeneration of this prompt
            // then replays one token).
            let pos = session.tokens.len();
            let to_boundary = CHECKPOINT_INTERVAL - pos % CHECKPOINT_INTERVAL;
            let before_last = (todo.len() - 1).checked_sub(done).filter(|&k| k > 0).unwrap_or(usize::MAX);
            let n = params.prefill_chunk.max(1).min(to_boundary).min(before_last).min(todo.len() - done);
            let chunk = &todo[done..done + n];
            logits = model.forward(&mut session.state, chunk, false, params.numerics)?.pop();
            session.tokens.extend_from_slice(chunk);
            done += n;
            if session.tokens.len().is_multiple_of(CHECKPOINT_INTERVAL) || done == todo.len() - 1 {
                session.take_checkpoint();
            }
            if let Some(disk) = &session.disk {
                if done == todo.len() - 1 || disk.is_save_point(session.tokens.len()) {
                    saved_to_disk = saved_to_disk.max(disk.save(model, &session.state, &session.tokens));
                }
            }
            progress(done, todo.len());
        }
        let prefill =
            PrefillStats { reused, from_disk, prefilled: todo.len(), saved_to_disk, seconds: t0.elapsed().as_secs_f64() };
        Ok(Generation {
            model,
            sampler: Sampler::new(params.sampling.clone()),
            stop: StopMatcher::new(&params.stop),
            decoder: tok.incremental_decoder(),
            eos: tok.specials().eos,
            ctx,
            generated: Vec::new(),
            logits: logits.expect("a non-empty prompt leaves logits"),
            finished: false,
            session,
            params,
            prefill,
        })
    }

    pub fn generated(&self) -> &[u32] {
        &self.generated
    }

    /// Samples and consumes one token. `force_greedy` decodes this token by argmax (DSML
    /// syntax). After a step with `finish` set, further calls return an empty finished step.
    pub fn next(&mut self, force_greedy: bool, cancel: &AtomicBool) -> Result<Step, GenError> {
        if self.finished {
            return Ok(Step { token: None, text: String::new(), finish: Some(Finish::Cancelled) });
        }
        if cancel.load(Ordering::Relaxed) {
            return Ok(self.end(None, Vec::new(), Finish::Cancelled));
        }
        let t = self.sampler.sample(&self.logits, force_greedy);
        if t == self.eos {
            self.session.last_logits = None;
            return Ok(self.end(Some(t), Vec::new(), Finish::Eos));
        }
        self.logits = self.model.forward(&mut self.session.state, &[t], false, self.params.numerics)?.pop().unwrap();
        self.session.tokens.push(t);
        if self.session.tokens.len().is_multiple_of(CHECKPOINT_INTERVAL) {
            self.session.take_checkpoint();
        }
        if let Some(disk) = &self.session.disk {
            if disk.is_save_point(self.session.tokens.len()) {
                disk.save(self.model, &self.session.state, &self.session.tokens);
            }
        }
        self.generated.push(t);
        let text = self.decoder.push(t);
        let out = self.stop.push(text.as_bytes());
        if out.stopped {
            return Ok(self.end(Some(t), out.emit, Finish::Stop));
        }
        if self.params.loop_guard.as_ref().is_some_and(|g| g.looping(&self.generated)) {
            return Ok(self.end(Some(t), out.emit, Finish::Loop));
        }
        if self.generated.len() >= self.params.max_tokens || self.session.tokens.len() + 1 >= self.ctx {
            return Ok(self.end(Some(t), out.emit, Finish::Length));
        }
        Ok(Step { token: Some(t), text: lossy(out.emit), finish: None })
    }

    /// Ends the answer here on the caller's word (a tool-call block closed, a stop sequence
    /// matched in parsed output): the session keeps what it consumed, with a checkpoint.
    pub fn close(&mut self) {
        if !self.finished {
            self.end(None, Vec::new(), Finish::Stop);
        }
    }

    fn end(&mut self, token: Option<u32>, mut emit: Vec<u8>, finish: Finish) -> Step {
        self.finished = true;
        // The end of an answer is where the next turn's prompt will diverge if it is edited.
        self.session.take_checkpoint();
        if finish != Finish::Stop {
            let tail = self.decoder.finish();
            emit.extend(self.stop.push(tail.as_bytes()).emit);
            emit.extend(self.stop.finish());
        }
        if finish != Finish::Eos {
            self.session.last_logits = Some(std::mem::take(&mut self.logits));
        }
        Step { token, text: lossy(emit), finish: Some(finish) }
    }
}

/// The decoder only releases whole characters and the stop matcher cuts only at a stop
/// string's first byte, so this never actually replaces anything.
fn lossy(b: Vec<u8>) -> String {
    String::from_utf8(b).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}
