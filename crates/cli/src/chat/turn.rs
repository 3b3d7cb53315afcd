//! One conversation turn: render the whole conversation officially, reuse what the live
//! session already holds, stream the answer (reasoning apart from content), and keep the
//! transcript for the next turn.

use super::diag::Trace;
use super::{Args, Loaded};
use dsv4_chat::deepseek_recipe::stream::InferenceFinishReason;
use dsv4_chat::deepseek_recipe_core::conversation::Conversation;
use dsv4_chat::deepseek_recipe_core::messages::InputMessage;
use dsv4_chat::deepseek_recipe_core::prompt::Prompt;
use dsv4_chat::{ChatEvent, StreamParser, ThinkingMode};
use dsv4_engine::{Finish, GenError, Generation, GenerationParams, Session};
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

pub struct Chat<'a> {
    loaded: &'a Loaded,
    pub messages: Vec<InputMessage>,
    pub mode: ThinkingMode,
    pub gen: GenerationParams,
    pub session: Session,
    pub ctx: usize,
    system: String,
}

impl<'a> Chat<'a> {
    pub fn new(loaded: &'a Loaded, a: &Args, mode: ThinkingMode, gen: GenerationParams) -> Chat<'a> {
        let mut session = Session::new();
        if let Some(d) = &loaded.disk {
            session.attach_disk(d.clone());
        }
        Chat {
            session,
            loaded,
            messages: Vec::new(),
            mode,
            gen,
            ctx: a.ctx,
            system: a.system.clone(),
        }
    }

    pub fn conversation(&self) -> Conversation {
        let mut messages = Vec::new();
        if !self.system.is_empty() {
            messages.push(InputMessage::System { content: Prompt::plain(self.system.clone()), image_sources: vec![], tools: None });
        }
        messages.extend(self.messages.iter().cloned());
        Conversation { messages, ..Conversation::default() }
    }

    /// A new context size drops the live session; the transcript is kept and re-prefilled.
    pub fn set_ctx(&mut self, ctx: usize) {
        self.ctx = ctx;
        self.session.reset();
    }

    /// Forgets the transcript and the live session.
    pub fn reset(&mut self) {
        self.messages.clear();
        self.session.reset();
    }

    /// Runs one user turn. On Ctrl+C before any token the turn is rolled back; after, the
    /// partial answer is kept.
    pub fn turn(&mut self, user: &str, trace: &mut Trace, cancel: &AtomicBool) -> anyhow::Result<Finish> {
        cancel.store(false, Ordering::Relaxed);
        self.messages.push(InputMessage::User { content: Prompt::plain(user), image_sources: vec![] });
        let mut conv = self.conversation();
        let mode = self.loaded.encoder.effective_mode(self.mode);
        if mode != self.mode {
            eprintln!("note: think-max needs a context of at least {} tokens; using high", dsv4_chat::THINK_MAX_MIN_CONTEXT);
        }
        mode.apply(&mut conv);
        let prompt = match self.loaded.encoder.encode(&conv, mode) {
            Ok(p) => p,
            Err(e) => {
                self.messages.pop();
                return Err(e.into());
            }
        };
        trace.prompt(&prompt.prompt, prompt.token_ids.len());
        let ids = prompt.token_ids;
        let runner = &self.loaded.runner;
        let tok = &self.loaded.tok;
        let bar = prefill_bar(ids.len());
        let t0 = Instant::now();
        let started = Generation::start(runner, tok, &mut self.session, &ids, self.gen.clone(), self.ctx, cancel, &mut |done, total| {
            if let Some(b) = &bar {
                b.set_length(total as u64);
                b.set_position(done as u64);
            }
        });
        if let Some(b) = &bar {
            b.finish_and_clear();
        }
        let mut g = match started {
            Ok(g) => g,
            Err(e) => {
                self.messages.pop();
                if matches!(e, GenError::Cancelled) {
                    eprintln!("\n[cancelled]");
                    return Ok(Finish::Cancelled);
                }
                return Err(e.into());
            }
        };
        let prefill = g.prefill;
        trace.cache(&prefill);
        if let Some(d) = &self.loaded.disk {
            for w in d.take_warnings() {
                eprintln!("kv cache: {w}");
            }
        }
        let prefill_s = t0.elapsed().as_secs_f64();

        let options = dsv4_chat::parsing_options_for(&conv, Vec::new());
        let mut parser = StreamParser::new(tok.clone(), options);
        let mut out = Display::new();
        let (mut content, mut reasoning) = (String::new(), String::new());
        let t1 = Instant::now();
        let finish = loop {
            let step = g.next(parser.in_dsml_syntax(), cancel)?;
            if let Some(t) = step.token {
                for ev in parser.push_token(t)? {
                    out.event(&ev, &mut content, &mut reasoning);
                }
            }
            if let Some(f) = step.finish {
                let reason = if f == Finish::Length { InferenceFinishReason::Length } else { InferenceFinishReason::Stop };
                for ev in parser.finish(reason)? {
                    out.event(&ev, &mut content, &mut reasoning);
                }
                break f;
            }
        };
        out.end();
        let n = g.generated().len();
        let gen_s = t1.elapsed().as_secs_f64();
        trace.generated(&content, &reasoning, n, &format!("{finish:?}"));
        if finish == Finish::Cancelled && n == 0 {
            self.messages.pop();
            eprintln!("[cancelled]");
            return Ok(finish);
        }
        self.messages.push(InputMessage::Assistant {
            content,
            reasoning_content: (!reasoning.is_empty()).then_some(reasoning),
            tool_calls: None,
            prefix: false,
        });
        eprintln!(
            "[prompt {} tokens ({} reused{}), prefill {:.1} t/s; generated {} tokens, {:.1} t/s; {}]",
            ids.len(),
            prefill.reused,
            if prefill.from_disk > 0 { format!(", {} from disk", prefill.from_disk) } else { String::new() },
            prefill.prefilled as f64 / prefill_s.max(1e-9),
            n,
            n as f64 / gen_s.max(1e-9),
            match finish {
                Finish::Eos => "end of turn",
                Finish::Length => "token limit",
                Finish::Stop => "stop string",
                Finish::Loop => "stopped a verbatim loop",
                Finish::Cancelled => "cancelled",
            }
        );
        Ok(finish)
    }
}

fn prefill_bar(total: usize) -> Option<indicatif::ProgressBar> {
    if total < 256 || !std::io::stderr().is_terminal() {
        return None;
    }
    let b = indicatif::ProgressBar::new(total as u64);
    b.set_style(
        indicatif::ProgressStyle::with_template("prefill {bar:30} {pos}/{len} tokens, {per_sec}, ETA {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    Some(b)
}

/// Writes the answer as it streams: reasoning dimmed on a terminal (plain when piped),
/// content as is, tool calls as one line each.
struct Display {
    tty: bool,
    in_reasoning: bool,
    out: std::io::Stdout,
}

const DIM: &str = "\x1b[2m";
const RESET: &str = "\x1b[0m";

impl Display {
    fn new() -> Display {
        Display { tty: std::io::stdout().is_terminal(), in_reasoning: false, out: std::io::stdout() }
    }

    fn event(&mut self, ev: &ChatEvent, content: &mut String, reasoning: &mut String) {
        let mut o = self.out.lock();
        match ev {
            ChatEvent::Reasoning(t) => {
                if !self.in_reasoning && self.tty {
                    let _ = write!(o, "{DIM}");
                }
                self.in_reasoning = true;
                reasoning.push_str(t);
                let _ = write!(o, "{t}");
            }
            ChatEvent::Content(t) => {
                if self.in_reasoning {
                    let _ = writeln!(o, "{}", if self.tty { RESET } else { "" });
                    self.in_reasoning = false;
                }
                content.push_str(t);
                let _ = write!(o, "{t}");
            }
            ChatEvent::ToolCallStart { name, .. } => {
                let _ = write!(o, "\n[tool call {name}(");
            }
            ChatEvent::ToolCallArguments { delta, .. } => {
                let _ = write!(o, "{delta}");
            }
            ChatEvent::ToolCallEnd { .. } => {
                let _ = writeln!(o, ")]");
            }
            ChatEvent::Finish(_) => {}
        }
        let _ = o.flush();
    }

    fn end(&mut self) {
        let mut o = self.out.lock();
        if self.in_reasoning && self.tty {
            let _ = write!(o, "{RESET}");
        }
        let _ = writeln!(o);
        let _ = o.flush();
    }
}
