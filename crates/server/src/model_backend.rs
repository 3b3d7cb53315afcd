//! The real engine behind the server: the model, resident sessions, the batch scheduler and
//! the disk KV cache.

use std::collections::HashMap;
use std::sync::Arc;

use dsv4_engine::{BatchEvent, DiskCache, Finish, GenerationParams, LoopGuard, Runner, Scheduler, Session, SessionPool, Verdict};
use dsv4_model::Numerics;
use dsv4_chat::EncodedPrompt;
use dsv4_tokenizer::Tokenizer;

use crate::backend::{Backend, CacheSource, End, GenJob, MissReason, Next, Progress, PromptReport};

/// Engine settings that do not change per request.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    pub ctx: usize,
    pub numerics: Numerics,
    /// Stop endless verbatim loops (greedy test vectors turn it off).
    pub loop_guard: bool,
    /// Resident sessions kept in memory.
    pub sessions: usize,
    /// Jobs generating at once (each holds a session, so at most `sessions`).
    pub max_active: usize,
    /// Prompt tokens prefilled per step, shared by the jobs still prefilling.
    pub prefill_chunk: usize,
}

/// What a running job's report needs beyond the engine's prefill stats.
struct Admitted {
    prompt_tokens: usize,
    /// Whether any session was resident when it arrived (a miss is then a mismatch).
    any_resident: bool,
}

pub struct ModelBackend {
    runner: Runner,
    tok: Arc<Tokenizer>,
    opts: EngineOptions,
    sched: Scheduler,
    jobs: HashMap<u64, Admitted>,
    disk: Option<Arc<DiskCache>>,
    /// Log lines for the server's stderr (cache warnings, evictions).
    log: Box<dyn FnMut(String) + Send>,
}

impl ModelBackend {
    pub fn new(
        runner: Runner,
        tok: Arc<Tokenizer>,
        opts: EngineOptions,
        disk: Option<Arc<DiskCache>>,
        log: Box<dyn FnMut(String) + Send>,
    ) -> ModelBackend {
        let pool = SessionPool::new(opts.sessions.max(opts.max_active));
        let sched = Scheduler::new(pool, opts.max_active, opts.prefill_chunk, opts.ctx, tok.specials().eos);
        ModelBackend { runner, tok, opts, sched, jobs: HashMap::new(), disk, log }
    }

    /// The prompt as a resident session can continue it: the longest run of that session's
    /// own tokens whose text starts the rendered prompt, then the rest of the rendered text.
    /// What the model sampled need not be the canonical tokenization of its text, so a
    /// re-sent answer or tool call matches here where a token comparison would not. `None`
    /// when no session reaches further than its token-level common prefix.
    fn align(&self, job: &GenJob) -> Option<Vec<u32>> {
        let text = job.text.as_ref()?;
        let mut best: Option<Vec<u32>> = None;
        let mut best_len = self.sched.pool().sessions().map(|s| s.common_prefix(&job.prompt)).max().unwrap_or(0);
        for s in self.sched.pool().sessions() {
            // A live session can rewind: any matching run of its tokens counts.
            if let Some((n, prompt)) = self.continue_from(text, &s.tokens, best_len, false) {
                best_len = n;
                best = Some(prompt);
            }
        }
        if let Some(disk) = &self.disk {
            // A stored state cannot be cut: only one whose every token matches counts.
            for stored in disk.stored_prefixes(best_len) {
                if let Some((_, prompt)) = self.continue_from(text, &stored, best_len, true) {
                    best = Some(prompt);
                    break;
                }
            }
        }
        best
    }

    /// `held`'s longest run of tokens whose text starts `text`'s rendered prompt, beyond
    /// `beat` tokens, and the prompt that continues it: (tokens reused, prompt ids).
    fn continue_from(&self, text: &EncodedPrompt, held: &[u32], beat: usize, whole: bool) -> Option<(usize, Vec<u32>)> {
        let target = text.prompt.as_bytes();
        // Byte offset after each matching token.
        let mut ends = Vec::new();
        let mut at = 0;
        for &t in held {
            // A table lookup per token (this runs over every held token of every session at
            // each admission, on the worker thread).
            let piece = self.tok.token_bytes(t).unwrap_or("\u{FFFD}".as_bytes());
            if !target[at..].starts_with(piece) {
                break;
            }
            at += piece.len();
            ends.push(at);
        }
        if whole && ends.len() < held.len() {
            return None;
        }
        // The cut must leave a valid rest (a character boundary outside special tokens), and
        // at least one token to compute.
        while let Some(&end) = ends.last() {
            if ends.len() <= beat || end >= target.len() {
                if whole {
                    return None;
                }
                ends.pop();
                continue;
            }
            if let Some(rest) = text.ids_from(&self.tok, end) {
                return Some((ends.len(), held[..ends.len()].iter().copied().chain(rest).collect()));
            }
            if whole {
                return None;
            }
            ends.pop();
        }
        None
    }

    fn flush_disk_warnings(&mut self) {
        if let Some(d) = &self.disk {
            for w in d.take_warnings() {
                (self.log)(format!("kv cache: {w}"));
            }
        }
    }
}

impl Backend for ModelBackend {
    fn has_room(&self) -> bool {
        self.sched.has_room()
    }

    fn admit(&mut self, id: u64, job: &GenJob) -> Result<(), String> {
        let params = GenerationParams {
            sampling: job.sampling.clone(),
            max_tokens: job.max_tokens.max(1),
            // Stop strings are matched by the caller on parsed output (never inside reasoning
            // or tool-call markup), so the engine does not cut on raw text.
            stop: Vec::new(),
            loop_guard: self.opts.loop_guard.then(LoopGuard::default),
            numerics: self.opts.numerics,
            prefill_chunk: self.opts.prefill_chunk,
        };
        let any_resident = !self.sched.pool().is_empty();
        let aligned = self.align(job);
        let prompt = aligned.as_deref().unwrap_or(&job.prompt);
        if prompt.len() >= self.opts.ctx {
            return Err(format!("the prompt has {} tokens but the context holds {}", prompt.len(), self.opts.ctx));
        }
        let disk = self.disk.clone();
        let new_session = move || {
            let mut s = Session::new();
            if let Some(d) = &disk {
                s.attach_disk(d.clone());
            }
            s
        };
        self.sched.admit(&self.runner, id, prompt, params, &new_session).map_err(|e| e.to_string())?;
        self.jobs.insert(id, Admitted { prompt_tokens: prompt.len(), any_resident });
        self.flush_disk_warnings();
        Ok(())
    }

    fn active(&self) -> usize {
        self.sched.active()
    }

    fn step(&mut self, progress: &mut dyn FnMut(u64, Progress) -> Next) {
        let jobs = &mut self.jobs;
        self.sched.step(&self.runner, &mut |id, ev| {
            let p = match ev {
                BatchEvent::Ready(p) => {
                    let (prompt_tokens, any_resident) = jobs.get(&id).map_or((p.reused + p.prefilled, true), |a| (a.prompt_tokens, a.any_resident));
                    let source = if p.from_disk > 0 {
                        CacheSource::Disk
                    } else if p.reused > 0 {
                        CacheSource::Live
                    } else if any_resident {
                        CacheSource::Miss(MissReason::Mismatch)
                    } else {
                        CacheSource::Miss(MissReason::Cold)
                    };
                    Progress::Ready(PromptReport { prompt_tokens, cached_tokens: p.reused, source, prefill_seconds: p.seconds })
                }
                BatchEvent::Token(t) => Progress::Token(t),
                BatchEvent::Finished(f) => {
                    jobs.remove(&id);
                    Progress::End(match f {
                        Finish::Eos => End::Eos,
                        Finish::Length => End::Length,
                        Finish::Stop => End::Stopped,
                        Finish::Loop => End::Loop,
                        Finish::Cancelled => End::Cancelled,
                    })
                }
                BatchEvent::Failed(e) => {
                    jobs.remove(&id);
                    Progress::Failed(e)
                }
            };
            let next = progress(id, p);
            Verdict { greedy: next.greedy, stop: next.stop }
        });
        self.flush_disk_warnings();
    }

    fn cancel(&mut self, id: u64) {
        self.jobs.remove(&id);
        self.sched.cancel(id);
    }

    fn disk_usage(&self) -> Option<(u64, u64)> {
        self.disk.as_ref().and_then(|d| d.usage())
    }

    fn shutdown(&mut self) {
        let saved = self.sched.save_all(&self.runner);
        if saved > 0 {
            (self.log)(format!("kv cache: saved {saved} tokens of resident sessions at shutdown"));
        }
        self.flush_disk_warnings();
    }
}
