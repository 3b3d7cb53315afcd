//! The inference worker: one thread owns the backend and runs the batch. Jobs are admitted
//! first in, first out while the backend has room (`--max-active`, free sessions); every
//! admitted job then advances with each step, so several clients are served together. HTTP
//! tasks render and tokenize requests themselves and only hand over token ids, so request
//! parsing and I/O never wait on inference, and inference never waits on a slow client
//! (events go through an unbounded channel). Between steps the worker takes new jobs and
//! drops cancelled ones, so a client that leaves is out of the batch by the next step.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use dsv4_chat::deepseek_recipe::stream::ParsingOptions;
use dsv4_tokenizer::Tokenizer;
use tokio::sync::mpsc::UnboundedSender;

use crate::backend::{Backend, End, GenJob, Next, PromptReport};
use crate::metrics::Metrics;
use crate::running::Running;

/// How the worker watches the output as it is generated.
pub enum OutputMode {
    /// Chat protocols: the official parser tracks DSML syntax (sampled greedily) and says
    /// when the output is complete (tool-call block closed, stop sequence in content).
    Parsed(ParsingOptions),
    /// Raw completions: text is decoded here and cut at the first stop string.
    Raw { stop: Vec<String> },
}

/// What a job reports back, in order: `Ready`, any number of `Token`s, then exactly one of
/// `Finish` / `Failed` (nothing more after a cancellation).
#[derive(Debug)]
pub enum Event {
    Ready(PromptReport),
    /// A sampled token; `text` is the raw-mode text now safe to show (empty in parsed mode).
    Token { id: u32, text: String },
    /// Raw mode: text held back until the end (a possible stop string, a split character).
    Tail(String),
    Finish(End),
    Failed(String),
}

pub struct Job {
    /// The response id, for the trace.
    pub id: String,
    pub gen: GenJob,
    pub output: OutputMode,
    pub cancel: Arc<AtomicBool>,
    pub events: UnboundedSender<Event>,
}

/// The handle HTTP tasks submit jobs through.
pub struct Worker {
    tx: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    queued: Arc<AtomicUsize>,
}

impl Worker {
    pub fn spawn(backend: Box<dyn Backend>, tok: Arc<Tokenizer>, metrics: Arc<Metrics>, trace: Option<std::fs::File>) -> Worker {
        let (tx, rx) = mpsc::channel::<Job>();
        let queued = Arc::new(AtomicUsize::new(0));
        let mut lp = Loop { backend, tok, metrics, trace, queued: queued.clone(), waiting: VecDeque::new(), running: HashMap::new(), next_id: 0 };
        let thread = std::thread::Builder::new()
            .name("dsv4-inference".into())
            .spawn(move || {
                lp.run(rx);
                lp.backend.shutdown();
            })
            .expect("spawning the inference thread");
        Worker { tx: Mutex::new(Some(tx)), thread: Mutex::new(Some(thread)), queued }
    }

    /// Queues a job; false when the worker has stopped.
    pub fn submit(&self, job: Job, metrics: &Metrics) -> bool {
        let guard = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        let Some(tx) = guard.as_ref() else { return false };
        self.queued.fetch_add(1, Ordering::SeqCst);
        metrics.set_queue_depth(self.queued.load(Ordering::SeqCst));
        if tx.send(job).is_err() {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// Jobs waiting for a place in the batch.
    pub fn queue_depth(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }

    /// Stops taking jobs, lets the queue and the batch drain (cancelled jobs drain at once)
    /// and waits for the backend's shutdown (which saves resident sessions).
    pub fn stop(&self) {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Appends one JSON line to the `--trace` file.
pub(crate) fn trace_line(trace: &mut Option<std::fs::File>, v: serde_json::Value) {
    if let Some(f) = trace {
        use std::io::Write;
        let _ = writeln!(f, "{v}");
    }
}

/// The worker thread's state.
struct Loop {
    backend: Box<dyn Backend>,
    tok: Arc<Tokenizer>,
    metrics: Arc<Metrics>,
    trace: Option<std::fs::File>,
    /// Jobs submitted and not yet admitted (counted by `queued`), oldest first.
    queued: Arc<AtomicUsize>,
    waiting: VecDeque<Job>,
    running: HashMap<u64, Running>,
    next_id: u64,
}

impl Loop {
    fn run(&mut self, rx: mpsc::Receiver<Job>) {
        let mut open = true;
        loop {
            if open && self.waiting.is_empty() && self.running.is_empty() {
                // Nothing to do: sleep until a job comes or the server stops.
                match rx.recv() {
                    Ok(job) => self.waiting.push_back(job),
                    Err(_) => open = false,
                }
            }
            while open {
                match rx.try_recv() {
                    Ok(job) => self.waiting.push_back(job),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => open = false,
                }
            }
            self.drop_cancelled();
            self.admit();
            if self.running.is_empty() {
                if !open && self.waiting.is_empty() {
                    return;
                }
                continue;
            }
            let (backend, running, metrics, tok, trace) = (&mut self.backend, &mut self.running, &self.metrics, &self.tok, &mut self.trace);
            let mut ended = false;
            backend.step(&mut |id, p| {
                let Some(r) = running.get_mut(&id) else { return Next::default() };
                let (next, end) = r.progress(p, metrics);
                if let Some(result) = end {
                    ended = true;
                    if let Some(r) = running.remove(&id) {
                        r.finish(result, tok, metrics, trace);
                    }
                }
                next
            });
            self.metrics.set_active(self.running.len());
            // The disk gauges read the cache directory: after a job ends (its saves are done),
            // not on every step.
            if ended {
                if let Some((files, bytes)) = self.backend.disk_usage() {
                    self.metrics.set_disk_usage(files, bytes);
                }
            }
        }
    }

    /// Waiting jobs whose client left never start; running ones leave the batch now.
    fn drop_cancelled(&mut self) {
        let before = self.waiting.len();
        let metrics = &self.metrics;
        self.waiting.retain(|j| {
            let gone = j.cancel.load(Ordering::Relaxed) || j.events.is_closed();
            if gone {
                metrics.cancelled_before_start();
            }
            !gone
        });
        self.dequeued(before - self.waiting.len());
        let gone: Vec<u64> = self.running.iter().filter(|(_, r)| r.cancelled()).map(|(&id, _)| id).collect();
        for id in gone {
            self.backend.cancel(id);
            if let Some(r) = self.running.remove(&id) {
                r.finish(Ok(End::Cancelled), &self.tok, &self.metrics, &mut self.trace);
            }
        }
    }

    /// Oldest first, while the backend has room.
    fn admit(&mut self) {
        while self.backend.has_room() {
            let Some(job) = self.waiting.pop_front() else { break };
            self.dequeued(1);
            let id = self.next_id;
            self.next_id += 1;
            let gen = job.gen.clone();
            let r = Running::start(job, &self.tok, &mut self.trace);
            match self.backend.admit(id, &gen) {
                Ok(()) => {
                    self.running.insert(id, r);
                }
                Err(e) => r.finish(Err(e), &self.tok, &self.metrics, &mut self.trace),
            }
        }
        self.metrics.set_active(self.running.len());
    }

    fn dequeued(&self, n: usize) {
        if n > 0 {
            self.queued.fetch_sub(n, Ordering::SeqCst);
            self.metrics.set_queue_depth(self.queued.load(Ordering::SeqCst));
        }
    }
}
