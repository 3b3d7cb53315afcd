//! A backend that plays scripted token sequences instead of running a model, for protocol
//! tests that need a specific output (reasoning, DSML tool calls, malformed markup, stop
//! strings) and for timing tests (slow prefill, slow decode) that must not depend on CPU speed.
//! It honours the same contract as the real engine: several jobs advance together (at most
//! `max_active`, 1 unless set), cancellation between steps, `Next` verdicts, `max_tokens`,
//! and the common prefix with the previous prompt reported as cached. Time is simulated per
//! job: a job is ready `prefill_delay` after its admission and emits a token every
//! `token_delay`, whoever else is running.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::backend::{Backend, CacheSource, End, GenJob, MissReason, Next, Progress, PromptReport};

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

/// The longest a step sleeps, so the worker sees cancellations and newcomers promptly.
const STEP: Duration = Duration::from_millis(5);

struct Playing {
    id: u64,
    max_tokens: usize,
    script: Vec<u32>,
    report: PromptReport,
    /// When the next event (ready, then each token) is due.
    due: Instant,
    ready: bool,
    rec: JobRecord,
}

pub struct ScriptedBackend {
    respond: Responder,
    /// The end reported when a script runs out (EOS by default).
    pub script_end: End,
    pub prefill_delay: Duration,
    pub token_delay: Duration,
    pub max_active: usize,
    last_prompt: Vec<u32>,
    playing: Vec<Playing>,
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
            max_active: 1,
            last_prompt: Vec::new(),
            playing: Vec::new(),
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

    /// Jobs run together at most.
    pub fn with_max_active(mut self, n: usize) -> ScriptedBackend {
        self.max_active = n.max(1);
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

impl ScriptedBackend {
    fn record(&self, mut rec: JobRecord, end: End) {
        rec.end = Some(end);
        self.records.lock().unwrap_or_else(|p| p.into_inner()).push(rec);
    }
}

impl Backend for ScriptedBackend {
    fn has_room(&self) -> bool {
        self.playing.len() < self.max_active
    }

    fn admit(&mut self, id: u64, job: &GenJob) -> Result<(), String> {
        self.started.fetch_add(1, Ordering::SeqCst);
        let common = self.last_prompt.iter().zip(&job.prompt).take_while(|(a, b)| a == b).count().min(job.prompt.len().saturating_sub(1));
        let source = match (common, self.last_prompt.is_empty()) {
            (0, true) => CacheSource::Miss(MissReason::Cold),
            (0, false) => CacheSource::Miss(MissReason::Mismatch),
            _ => CacheSource::Live,
        };
        self.last_prompt = job.prompt.clone();
        let report = PromptReport { prompt_tokens: job.prompt.len(), cached_tokens: common, source, prefill_seconds: self.prefill_delay.as_secs_f64() };
        let rec = JobRecord { prompt: job.prompt.clone(), max_tokens: job.max_tokens, ..JobRecord::default() };
        let script = (self.respond)(job);
        self.playing.push(Playing { id, max_tokens: job.max_tokens, script, report, due: Instant::now() + self.prefill_delay, ready: false, rec });
        Ok(())
    }

    fn active(&self) -> usize {
        self.playing.len()
    }

    fn step(&mut self, progress: &mut dyn FnMut(u64, Progress) -> Next) {
        let Some(first_due) = self.playing.iter().map(|p| p.due).min() else { return };
        let now = Instant::now();
        if first_due > now {
            std::thread::sleep((first_due - now).min(STEP));
        }
        let now = Instant::now();
        let mut ended = Vec::new();
        for (k, p) in self.playing.iter_mut().enumerate() {
            if p.due > now {
                continue;
            }
            p.due = now + self.token_delay;
            if !p.ready {
                p.ready = true;
                progress(p.id, Progress::Ready(p.report));
                continue;
            }
            let i = p.rec.emitted.len();
            let end = if i < p.script.len() && i == p.max_tokens {
                Some(End::Length)
            } else if i == p.script.len() {
                Some(self.script_end)
            } else {
                let next = progress(p.id, Progress::Token(p.script[i]));
                p.rec.emitted.push(p.script[i]);
                p.rec.greedy_after.push(next.greedy);
                next.stop.then_some(End::Stopped)
            };
            if let Some(end) = end {
                ended.push((k, end));
            }
        }
        for &(k, end) in ended.iter().rev() {
            let p = self.playing.remove(k);
            // Recorded before the client hears the end, so a test reading records after its
            // response sees this job.
            self.record(p.rec, end);
            progress(p.id, Progress::End(end));
        }
    }

    fn cancel(&mut self, id: u64) {
        if let Some(k) = self.playing.iter().position(|p| p.id == id) {
            let p = self.playing.remove(k);
            self.record(p.rec, End::Cancelled);
        }
    }
}
