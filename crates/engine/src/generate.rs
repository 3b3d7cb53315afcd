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
use crate::runner::{Runner, State};
use dsv4_model::{Checkpoint, Next, Numerics, Want};
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
            prefill_chunk: crate::runner::CPU_PREFILL_PIECE,
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
    /// The model failed to run (device errors, a state from another device).
    #[error("{0}")]
    Model(String),
    #[error("invalid sampling parameters: {0}")]
    Params(String),
    #[error("the prompt has {prompt} tokens but the context holds {ctx}")]
    Context { prompt: usize, ctx: usize },
    #[error("cancelled")]
    Cancelled,
}

/// A model state together with the tokens it has consumed, and checkpoints to rewind to.
pub struct Session {
    /// `None` until the first token (and after a reset): no device memory is held then.
    pub(crate) state: Option<State>,
    pub tokens: Vec<u32>,
    /// The logits after the last consumed token, when known: the row, or its reduction for
    /// the draw the last job would have made next.
    pub(crate) last_logits: Option<Next>,
    /// Oldest first; every checkpoint's position is at most `tokens.len()`.
    checkpoints: Vec<Checkpoint>,
    /// A checkpoint is wanted at `tokens.len()` (an answer ended here), taken only when the
    /// state is about to move on: a session that never continues from here never pays for it,
    /// and one that rewinds below here has no use for it.
    checkpoint_due: bool,
    disk: Option<Arc<DiskCache>>,
}

/// A checkpoint is taken every this many tokens (a multiple of every compression ratio, though
/// checkpoints work at any position) and where each prompt ends, since regenerating or editing
/// the last turn rewinds there.
pub const CHECKPOINT_INTERVAL: usize = 1024;
/// Checkpoints kept per session, newest first to survive (a Flash checkpoint is ~20 MB).
pub const MAX_CHECKPOINTS: usize = 16;

impl Default for Session {
    fn default() -> Session {
        Session::new()
    }
}

impl Session {
    pub fn new() -> Session {
        Session { state: None, tokens: Vec::new(), last_logits: None, checkpoints: Vec::new(), checkpoint_due: false, disk: None }
    }

    /// The state, made on first use. Every caller is about to feed it tokens, so a checkpoint
    /// due at its position is taken first.
    pub(crate) fn state_mut(&mut self, runner: &Runner) -> Result<&mut State, GenError> {
        if self.state.is_none() {
            self.state = Some(runner.new_state().map_err(GenError::Model)?);
        }
        if std::mem::take(&mut self.checkpoint_due) {
            self.take_checkpoint(runner);
        }
        Ok(self.state.as_mut().expect("just set"))
    }

    /// Asks for a checkpoint where the session stands (the end of an answer, where the next
    /// turn's prompt diverges if it is edited); [`state_mut`](Self::state_mut) takes it.
    pub(crate) fn checkpoint_here(&mut self) {
        self.checkpoint_due = self.state.is_some();
    }

    /// An independent copy (a side conversation sharing this one's prefix). A copy the device
    /// cannot make starts empty.
    pub fn fork(&self, runner: &Runner) -> Session {
        match self.state.as_ref().map(|s| runner.copy(s)) {
            Some(Ok(state)) => Session {
                state: Some(state),
                tokens: self.tokens.clone(),
                last_logits: self.last_logits.clone(),
                checkpoints: self.checkpoints.clone(),
                checkpoint_due: self.checkpoint_due,
                disk: self.disk.clone(),
            },
            _ => Session { disk: self.disk.clone(), ..Session::new() },
        }
    }

    /// Restores from and saves to this disk cache from now on.
    pub fn attach_disk(&mut self, disk: Arc<DiskCache>) {
        self.disk = Some(disk);
    }

    /// The disk cache attached, if any.
    pub fn disk(&self) -> Option<&Arc<DiskCache>> {
        self.disk.as_ref()
    }

    pub(crate) fn take_checkpoint(&mut self, runner: &Runner) {
        if self.checkpoints.last().is_some_and(|c| c.pos as usize == self.tokens.len()) {
            return;
        }
        let Some(Ok(c)) = self.state.as_ref().map(|s| runner.checkpoint(s)) else { return };
        self.checkpoints.push(c);
        if self.checkpoints.len() > MAX_CHECKPOINTS {
            self.checkpoints.remove(0);
        }
    }

    /// Goes back to the latest checkpoint at or before `pos`; returns the position reached
    /// (0 when no checkpoint helps and the session starts over).
    pub fn rewind(&mut self, runner: &Runner, pos: usize) -> usize {
        self.last_logits = None;
        self.checkpoint_due = false;
        self.checkpoints.retain(|c| c.pos as usize <= pos);
        let restored = match (self.checkpoints.last(), self.state.as_mut()) {
            (Some(c), Some(st)) => runner.restore(st, c).is_ok().then_some(c.pos as usize),
            _ => None,
        };
        match restored {
            Some(p) => {
                self.tokens.truncate(p);
                p
            }
            None => {
                self.reset();
                0
            }
        }
    }

    /// Tokens `prompt` shares with what the session holds.
    pub fn common_prefix(&self, prompt: &[u32]) -> usize {
        self.tokens.iter().zip(prompt).take_while(|(a, b)| a == b).count()
    }

    /// Queues the whole state for the attached disk cache's writer (eviction, shutdown, save
    /// points); returns the tokens queued (0 when there is no cache, the session is short, or
    /// the cache has it).
    pub fn save_to_disk(&self, runner: &Runner) -> usize {
        match (&self.disk, &self.state) {
            (Some(d), Some(st)) => d.save(runner.model(), &self.tokens, || runner.to_host(st).ok()),
            _ => 0,
        }
    }

    /// Prepares the session for `prompt`: rewinds it to what the two share (always leaving
    /// the prompt's last token to compute unless logits that serve the first draw, `want`,
    /// are at hand), then restores a longer stored prefix from the disk cache when there is
    /// one. Returns (tokens the session now shares with the prompt, of those restored from
    /// disk).
    pub(crate) fn sync(&mut self, runner: &Runner, prompt: &[u32], want: Want) -> (usize, usize) {
        let mut common = self.common_prefix(prompt);
        let at_hand = self.last_logits.as_ref().is_some_and(|n| n.serves(want));
        if common < self.tokens.len() || (common == prompt.len() && !at_hand) {
            common = self.rewind(runner, common.min(prompt.len() - 1));
        }
        if let Some(disk) = self.disk.clone() {
            let restored = disk.restore(runner.model(), prompt, common).and_then(|(host, tokens)| Some((runner.from_host(host).ok()?, tokens)));
            if let Some((state, tokens)) = restored {
                self.state = Some(state);
                self.tokens = tokens;
                self.checkpoints.clear();
                self.checkpoint_due = false;
                self.last_logits = None;
                return (self.tokens.len(), self.tokens.len());
            }
        }
        (common, 0)
    }

    /// The logits after the last consumed token when the session holds exactly `prompt_len`
    /// tokens of the prompt (a regenerate of a fully cached prompt).
    pub(crate) fn take_logits_at(&mut self, common: usize, prompt_len: usize) -> Option<Next> {
        self.last_logits.take().filter(|_| common == prompt_len)
    }

    /// How many of `left` prompt tokens the next prefill call takes, at most `chunk`: calls
    /// end at checkpoint positions so checkpoints land exactly on them (every interval, and
    /// just before the prompt's last token, which a regeneration of this prompt replays).
    pub(crate) fn chunk_len(&self, left: usize, chunk: usize) -> usize {
        let pos = self.tokens.len();
        let to_boundary = CHECKPOINT_INTERVAL - pos % CHECKPOINT_INTERVAL;
        let before_last = if left > 1 { left - 1 } else { usize::MAX };
        chunk.max(1).min(to_boundary).min(before_last).min(left)
    }

    /// Records prompt tokens the state has just consumed, `left` prompt tokens still to go:
    /// checkpoints at interval positions and before the prompt's last token, disk saves at
    /// save points and there. Returns the tokens saved to disk (0: none).
    pub(crate) fn consumed_prompt(&mut self, runner: &Runner, chunk: &[u32], left: usize) -> usize {
        self.tokens.extend_from_slice(chunk);
        if self.tokens.len().is_multiple_of(CHECKPOINT_INTERVAL) || left == 1 {
            self.take_checkpoint(runner);
        }
        if self.disk.as_ref().is_some_and(|d| left == 1 || d.is_save_point(self.tokens.len())) {
            return self.save_to_disk(runner);
        }
        0
    }

    /// Records a sampled token the state has just consumed (checkpoints and disk saves at
    /// their interval positions).
    pub(crate) fn consumed_sample(&mut self, runner: &Runner, t: u32) {
        self.tokens.push(t);
        if self.tokens.len().is_multiple_of(CHECKPOINT_INTERVAL) {
            self.take_checkpoint(runner);
        }
        if self.disk.as_ref().is_some_and(|d| d.is_save_point(self.tokens.len())) {
            self.save_to_disk(runner);
        }
    }

    /// Forgets everything but the disk cache (and frees the device state).
    pub fn reset(&mut self) {
        let disk = self.disk.take();
        *self = Session::new();
        self.disk = disk;
    }
}

/// One step of generation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// The sampled token (absent when the step only reports the end, and for the
    /// end-of-sentence token, which is never part of the answer).
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
    runner: &'a Runner,
    session: &'a mut Session,
    sampler: Sampler,
    stop: StopMatcher,
    decoder: IncrementalDecoder<'a>,
    params: GenerationParams,
    eos: u32,
    ctx: usize,
    generated: Vec<u32>,
    /// Always a whole row: `next` learns whether its draw is greedy only when called.
    logits: Next,
    finished: bool,
    pub prefill: PrefillStats,
}

impl<'a> Generation<'a> {
    /// Syncs `session` to `prompt` (reusing the common prefix when the prompt extends what
    /// the session holds; starting over otherwise) and readies the first sample.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        runner: &'a Runner,
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
        let (common, from_disk) = session.sync(runner, prompt, Want::Row);
        let reused = common;
        let mut saved_to_disk = 0;
        let mut logits = session.take_logits_at(common, prompt.len());
        let todo = &prompt[common..];
        let mut done = 0;
        while done < todo.len() {
            if cancel.load(Ordering::Relaxed) {
                // The session holds exactly what was prefilled so far.
                return Err(GenError::Cancelled);
            }
            let n = session.chunk_len(todo.len() - done, params.prefill_chunk);
            let chunk = &todo[done..done + n];
            logits = Some(Next::Logits(runner.forward(session.state_mut(runner)?, chunk, params.numerics).map_err(GenError::Model)?));
            done += n;
            saved_to_disk = saved_to_disk.max(session.consumed_prompt(runner, chunk, todo.len() - done));
            progress(done, todo.len());
        }
        let prefill =
            PrefillStats { reused, from_disk, prefilled: todo.len(), saved_to_disk, seconds: t0.elapsed().as_secs_f64() };
        Ok(Generation {
            runner,
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
        let t = self.sampler.sample_next(&self.logits, force_greedy).map_err(GenError::Model)?;
        if t == self.eos {
            self.session.last_logits = None;
            // The end-of-sentence token is not part of the answer: nothing to show or parse.
            return Ok(self.end(None, Vec::new(), Finish::Eos));
        }
        let state = self.session.state_mut(self.runner)?;
        self.logits = Next::Logits(self.runner.forward(state, &[t], self.params.numerics).map_err(GenError::Model)?);
        self.session.consumed_sample(self.runner, t);
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
    /// matched in parsed output): the session keeps what it consumed, with a checkpoint due.
    pub fn close(&mut self) {
        if !self.finished {
            self.end(None, Vec::new(), Finish::Stop);
        }
    }

    fn end(&mut self, token: Option<u32>, mut emit: Vec<u8>, finish: Finish) -> Step {
        self.finished = true;
        self.session.checkpoint_here();
        if finish != Finish::Stop {
            let tail = self.decoder.finish();
            emit.extend(self.stop.push(tail.as_bytes()).emit);
            emit.extend(self.stop.finish());
        }
        if finish != Finish::Eos {
            self.session.last_logits = Some(std::mem::replace(&mut self.logits, Next::Logits(Vec::new())));
        }
        Step { token, text: lossy(emit), finish: Some(finish) }
    }
}

/// The decoder only releases whole characters and the stop matcher cuts only at a stop
/// string's first byte, so this never actually replaces anything.
fn lossy(b: Vec<u8>) -> String {
    String::from_utf8(b).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}
