//! One running job as the worker sees it: the output watcher (the official parser tracking
//! DSML syntax, or raw-mode stop strings), the events to its HTTP task, its trace lines and
//! its metrics. The backend reports the job's progress; this turns it into events.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use dsv4_chat::StreamParser;
use dsv4_engine::StopMatcher;
use dsv4_tokenizer::{IncrementalDecoder, Tokenizer};
use tokio::sync::mpsc::UnboundedSender;

use crate::backend::{End, Next, Progress, PromptReport};
use crate::metrics::Metrics;
use crate::worker::{trace_line, Event, Job, OutputMode};

pub(crate) struct Running {
    id: String,
    pub cancel: Arc<AtomicBool>,
    events: UnboundedSender<Event>,
    parser: Option<StreamParser>,
    raw: Option<(IncrementalDecoder<'static>, StopMatcher)>,
    eos: u32,
    first_token: Option<Instant>,
    report: Option<PromptReport>,
    sampled: Vec<u32>,
}

impl Running {
    /// Writes the request's trace line and readies the output watcher.
    pub fn start(job: Job, tok: &Arc<Tokenizer>, trace: &mut Option<std::fs::File>) -> Running {
        let Job { id, gen, output, cancel, events } = job;
        if trace.is_some() {
            let rendered = gen.text.as_ref().map(|t| t.prompt.clone()).unwrap_or_else(|| tok.decode_lossy(&gen.prompt));
            trace_line(trace, serde_json::json!({"event": "request", "id": id, "prompt_tokens": gen.prompt.len(), "max_tokens": gen.max_tokens,
                "temperature": gen.sampling.temperature, "top_p": gen.sampling.top_p, "seed": gen.sampling.seed, "rendered": rendered}));
        }
        let (parser, raw) = match output {
            OutputMode::Parsed(opts) => (Some(StreamParser::new(tok.clone(), opts)), None),
            OutputMode::Raw { stop } => (None, Some((IncrementalDecoder::shared(tok.clone()), StopMatcher::new(&stop)))),
        };
        Running {
            id,
            cancel,
            events,
            parser,
            raw,
            eos: tok.specials().eos,
            first_token: None,
            report: None,
            sampled: Vec::new(),
        }
    }

    /// The client is gone or the server is stopping.
    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed) || self.events.is_closed()
    }

    /// Handles one progress report; `Some(end)` when the job is over (the caller then calls
    /// [`finish`](Self::finish)).
    pub fn progress(&mut self, p: Progress, metrics: &Metrics) -> (Next, Option<Result<End, String>>) {
        match p {
            Progress::Ready(r) => {
                self.report = Some(r);
                metrics.prompt_done(&r);
                let _ = self.events.send(Event::Ready(r));
                (Next::default(), None)
            }
            Progress::Token(t) => (self.token(t), None),
            Progress::End(e) => (Next::default(), Some(Ok(e))),
            Progress::Failed(e) => (Next::default(), Some(Err(e))),
        }
    }

    fn token(&mut self, t: u32) -> Next {
        // The end-of-sentence token ends the answer; it is never output (the recipe's rule:
        // a final token is forwarded only when the answer ran out of length).
        if t == self.eos {
            return Next { greedy: false, stop: true };
        }
        self.sampled.push(t);
        self.first_token.get_or_insert_with(Instant::now);
        let mut next = Next::default();
        let mut text = String::new();
        if let Some(p) = self.parser.as_mut() {
            // Errors (an id outside the vocabulary) end the output; the HTTP side's own
            // parser reports them.
            if p.push_tokens(&[t]).is_err() {
                next.stop = true;
            }
            next.greedy = p.in_dsml_syntax();
            next.stop |= p.output_complete() || p.is_finished();
        }
        if let Some((decoder, stop)) = self.raw.as_mut() {
            let out = stop.push(decoder.push(t).as_bytes());
            text = String::from_utf8_lossy(&out.emit).into_owned();
            next.stop = out.stopped;
        }
        if self.events.send(Event::Token { id: t, text }).is_err() {
            self.cancel.store(true, Ordering::Relaxed);
            next.stop = true;
        }
        next
    }

    /// The job's last events, trace lines and metrics.
    pub fn finish(mut self, result: Result<End, String>, tok: &Tokenizer, metrics: &Metrics, trace: &mut Option<std::fs::File>) {
        let id = &self.id;
        if trace.is_some() {
            // The cache decision: what was reused and from where.
            if let Some(r) = self.report {
                trace_line(trace, serde_json::json!({"event": "cache", "id": id, "prompt_tokens": r.prompt_tokens, "cached_tokens": r.cached_tokens,
                    "source": r.source.label(), "prefill_seconds": r.prefill_seconds}));
            }
            let end = match &result {
                Ok(e) => format!("{e:?}"),
                Err(e) => format!("error: {e}"),
            };
            trace_line(trace, serde_json::json!({"event": "generated", "id": id, "tokens": self.sampled.len(), "end": end, "text": tok.decode_lossy(&self.sampled)}));
        }
        if let Some(t0) = self.first_token {
            metrics.decode_done(self.sampled.len(), t0.elapsed().as_secs_f64());
        }
        // A client that left mid-answer ends the job through a failed send (End::Stopped):
        // that is a cancellation too.
        let result = match result {
            Ok(_) if self.cancel.load(Ordering::Relaxed) => Ok(End::Cancelled),
            other => other,
        };
        match result {
            Ok(End::Cancelled) => {
                metrics.cancelled_running();
                // Heard only when the client is still there, i.e. the server is shutting down.
                let _ = self.events.send(Event::Finish(End::Cancelled));
            }
            Ok(end) => {
                if let Some((mut decoder, mut stop)) = self.raw.take() {
                    // Text held back for a possible stop string or an unfinished character.
                    if end != End::Stopped {
                        let mut tail = stop.push(decoder.finish().as_bytes()).emit;
                        tail.extend(stop.finish());
                        if !tail.is_empty() {
                            let _ = self.events.send(Event::Tail(String::from_utf8_lossy(&tail).into_owned()));
                        }
                    }
                }
                let _ = self.events.send(Event::Finish(end));
            }
            Err(e) => {
                metrics.backend_error();
                let _ = self.events.send(Event::Failed(e));
            }
        }
    }
}
