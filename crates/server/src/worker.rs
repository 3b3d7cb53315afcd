//! The single inference worker: one thread owns the backend and runs jobs strictly first in,
//! first out. HTTP tasks render and tokenize requests themselves and only hand over token
//! ids, so request parsing and I/O never wait on inference, and inference never waits on a
//! slow client (events go through an unbounded channel).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use dsv4_chat::deepseek_recipe::stream::ParsingOptions;
use dsv4_chat::StreamParser;
use dsv4_engine::StopMatcher;
use dsv4_tokenizer::Tokenizer;
use tokio::sync::mpsc::UnboundedSender;

use crate::backend::{Backend, End, GenJob, Next, PromptReport};
use crate::metrics::Metrics;

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
    pub fn spawn(mut backend: Box<dyn Backend>, tok: Arc<Tokenizer>, metrics: Arc<Metrics>, mut trace: Option<std::fs::File>) -> Worker {
        let (tx, rx) = mpsc::channel::<Job>();
        let queued = Arc::new(AtomicUsize::new(0));
        let q = queued.clone();
        let thread = std::thread::Builder::new()
            .name("dsv4-inference".into())
            .spawn(move || {
                for job in rx {
                    q.fetch_sub(1, Ordering::SeqCst);
                    metrics.set_queue_depth(q.load(Ordering::SeqCst));
                    run_job(backend.as_mut(), &tok, &metrics, &mut trace, job);
                    if let Some((files, bytes)) = backend.disk_usage() {
                        metrics.set_disk_usage(files, bytes);
                    }
                }
                backend.shutdown();
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

    /// Jobs waiting (not counting the one running).
    pub fn queue_depth(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }

    /// Stops taking jobs, lets the queue drain (cancelled jobs drain at once) and waits for
    /// the backend's shutdown (which saves resident sessions).
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
fn trace_line(trace: &mut Option<std::fs::File>, v: serde_json::Value) {
    if let Some(f) = trace {
        use std::io::Write;
        let _ = writeln!(f, "{v}");
    }
}

fn run_job(backend: &mut dyn Backend, tok: &Arc<Tokenizer>, metrics: &Metrics, trace: &mut Option<std::fs::File>, job: Job) {
    let Job { id, gen, output, cancel, events } = job;
    if trace.is_some() {
        let rendered = gen.text.as_ref().map(|t| t.prompt.clone()).unwrap_or_else(|| tok.decode_lossy(&gen.prompt));
        trace_line(trace, serde_json::json!({"event": "request", "id": id, "prompt_tokens": gen.prompt.len(), "max_tokens": gen.max_tokens,
            "temperature": gen.sampling.temperature, "top_p": gen.sampling.top_p, "seed": gen.sampling.seed, "rendered": rendered}));
    }
    if cancel.load(Ordering::Relaxed) || events.is_closed() {
        metrics.cancelled_before_start();
        return;
    }
    let mut parser = match &output {
        OutputMode::Parsed(opts) => Some(StreamParser::new(tok.clone(), opts.clone())),
        OutputMode::Raw { .. } => None,
    };
    let mut raw = match &output {
        OutputMode::Raw { stop } => Some((tok.incremental_decoder(), StopMatcher::new(stop))),
        OutputMode::Parsed(_) => None,
    };
    let started = std::time::Instant::now();
    let mut first_token: Option<std::time::Instant> = None;
    let mut generated = 0usize;
    let mut report = None;
    let mut sampled = Vec::new();
    let mut ready = |r: &PromptReport| {
        report = Some(*r);
        metrics.prompt_done(r);
        let _ = events.send(Event::Ready(*r));
    };
    let eos = tok.specials().eos;
    let mut on_token = |t: u32| -> Next {
        // The end-of-sentence token ends the answer; it is never output (the recipe's rule:
        // a final token is forwarded only when the answer ran out of length).
        if t == eos {
            return Next { greedy: false, stop: true };
        }
        generated += 1;
        sampled.push(t);
        first_token.get_or_insert_with(std::time::Instant::now);
        let mut next = Next::default();
        let mut text = String::new();
        if let Some(p) = parser.as_mut() {
            // Errors (an id outside the vocabulary) end the output; the HTTP side's own
            // parser reports them.
            if p.push_tokens(&[t]).is_err() {
                next.stop = true;
            }
            next.greedy = p.in_dsml_syntax();
            next.stop |= p.output_complete() || p.is_finished();
        }
        if let Some((decoder, stop)) = raw.as_mut() {
            let out = stop.push(decoder.push(t).as_bytes());
            text = String::from_utf8_lossy(&out.emit).into_owned();
            next.stop = out.stopped;
        }
        if events.send(Event::Token { id: t, text }).is_err() {
            cancel.store(true, Ordering::Relaxed);
            next.stop = true;
        }
        next
    };
    let result = backend.generate(&gen, &cancel, &mut ready, &mut on_token);
    if trace.is_some() {
        // The cache decision: what was reused and from where.
        if let Some(r) = report {
            trace_line(trace, serde_json::json!({"event": "cache", "id": id, "prompt_tokens": r.prompt_tokens, "cached_tokens": r.cached_tokens,
                "source": r.source.label(), "prefill_seconds": r.prefill_seconds}));
        }
        let end = match &result {
            Ok(e) => format!("{e:?}"),
            Err(e) => format!("error: {e}"),
        };
        trace_line(trace, serde_json::json!({"event": "generated", "id": id, "tokens": sampled.len(), "end": end, "text": tok.decode_lossy(&sampled)}));
    }
    if let Some(t0) = first_token {
        metrics.decode_done(generated, t0.elapsed().as_secs_f64());
    }
    // A client that left mid-answer ends the job through a failed send (End::Stopped): that
    // is a cancellation too.
    let result = match result {
        Ok(_) if cancel.load(Ordering::Relaxed) => Ok(End::Cancelled),
        other => other,
    };
    match result {
        Ok(End::Cancelled) => {
            metrics.cancelled_running(started.elapsed().as_secs_f64());
            // Heard only when the client is still there, i.e. the server is shutting down.
            let _ = events.send(Event::Finish(End::Cancelled));
        }
        Ok(end) => {
            if let Some((mut decoder, mut stop)) = raw.take() {
                // Text held back for a possible stop string or an unfinished character.
                if end != End::Stopped {
                    let mut tail = stop.push(decoder.finish().as_bytes()).emit;
                    tail.extend(stop.finish());
                    if !tail.is_empty() {
                        let _ = events.send(Event::Tail(String::from_utf8_lossy(&tail).into_owned()));
                    }
                }
            }
            let _ = events.send(Event::Finish(end));
        }
        Err(e) => {
            metrics.backend_error();
            let _ = events.send(Event::Failed(e));
        }
    }
}
