//! A backend that plays scripted token sequences instead of running a model, for protocol
//! tests that need a specific output (reasoning, DSML tool calls, malformed markup, stop
//! strings) and for timing tests (slow prefill, slow decode) that must not depend on CPU speed.
//! It honours the same contract as the real engine: cancellation between steps, `Next`
//! verdicts, `max_tokens`, and reports the common prefix with the previous prompt as cached.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::backend::{Backend, CacheSource, End, GenJob, MissReason, Next, PromptReport};

/// What one job did, for assertions.
#[derive(Clone, Debug, Default)]
pub struct JobRecord {
    pub prompt: Vec<u32>,
    pub max_tokens: usize,
    /// Tokens handed to the caller.
    pub emitted: Vec<u32>,
    /// For each emitted token, whether the caller asked for the *next* one greedily.
    pub greedy_after: Vec<bool>,
    pub end: Option<End>,
}

type Responder = Box<dyn FnMut(&GenJob) -> Vec<u32> + Send>;

pub struct ScriptedBackend {
    respond: Responder,
    /// The end reported when a script runs out (EOS by default).
    pub script_end: End,
    pub prefill_delay: Duration,
    pub token_delay: Duration,
    last_prompt: Vec<u32>,
    records: Arc<Mutex<Vec<JobRecord>>>,
    started: Arc<AtomicUsize>,
}

impl ScriptedBackend {
    /// Every job gets the token sequence `respond` returns for it.
    pub fn new(respond: impl FnMut(&GenJob) -> Vec<u32> + Send + 'static) -> ScriptedBackend {
        ScriptedBackend {
            respond: Box::new(respond),
            script_end: End::Eos,
            prefill_delay: Duration::ZERO,
            token_delay: Duration::ZERO,
            last_prompt: Vec::new(),
            records: Arc::new(Mutex::new(Vec::new())),
            started: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The same tokens for every job.
    pub fn fixed(tokens: Vec<u32>) -> ScriptedBackend {
        ScriptedBackend::new(move |_| tokens.clone())
    }

    pub fn with_delays(mut self, prefill: Duration, per_token: Duration) -> ScriptedBackend {
        self.prefill_delay = prefill;
        self.token_delay = per_token;
        self
    }

    /// Jobs the worker has started (records are written only when a job ends).
    pub fn started(&self) -> Arc<AtomicUsize> {
        self.started.clone()
    }

    /// Shared view of the jobs run so far.
    pub fn records(&self) -> Arc<Mutex<Vec<JobRecord>>> {
        self.records.clone()
    }
}

/// Sleeps `d` in short steps; false when cancelled meanwhile.
fn sleep_unless(cancel: &AtomicBool, d: Duration) -> bool {
    let step = Duration::from_millis(5);
    let mut left = d;
    while !left.is_zero() {
        if cancel.load(Ordering::Relaxed) {
            return false;
        }
        let s = left.min(step);
        std::thread::sleep(s);
        left -= s;
    }
    !cancel.load(Ordering::Relaxed)
}

impl Backend for ScriptedBackend {
    fn generate(
        &mut self,
        job: &GenJob,
        cancel: &AtomicBool,
        ready: &mut dyn FnMut(&PromptReport),
        token: &mut dyn FnMut(u32) -> Next,
    ) -> Result<End, String> {
        self.started.fetch_add(1, Ordering::SeqCst);
        let mut rec = JobRecord { prompt: job.prompt.clone(), max_tokens: job.max_tokens, ..JobRecord::default() };
        let result = (|| {
            if !sleep_unless(cancel, self.prefill_delay) {
                return End::Cancelled;
            }
            let common = self.last_prompt.iter().zip(&job.prompt).take_while(|(a, b)| a == b).count().min(job.prompt.len().saturating_sub(1));
            let source = match (common, self.last_prompt.is_empty()) {
                (0, true) => CacheSource::Miss(MissReason::Cold),
                (0, false) => CacheSource::Miss(MissReason::Mismatch),
                _ => CacheSource::Live,
            };
            self.last_prompt = job.prompt.clone();
            ready(&PromptReport { prompt_tokens: job.prompt.len(), cached_tokens: common, source, prefill_seconds: self.prefill_delay.as_secs_f64() });
            let script = (self.respond)(job);
            for (i, &t) in script.iter().enumerate() {
                if i == job.max_tokens {
                    return End::Length;
                }
                if !sleep_unless(cancel, self.token_delay) {
                    return End::Cancelled;
                }
                let next = token(t);
                rec.emitted.push(t);
                rec.greedy_after.push(next.greedy);
                if next.stop {
                    return End::Stopped;
                }
            }
            if script.len() > job.max_tokens {
                End::Length
            } else {
                self.script_end
            }
        })();
        rec.end = Some(result);
        self.records.lock().unwrap_or_else(|p| p.into_inner()).push(rec);
        Ok(result)
    }
}
