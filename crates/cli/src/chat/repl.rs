//! The interactive REPL: line editing and history (rustyline), slash commands, and Ctrl+C
//! that stops the current answer and returns to the prompt.

use super::diag::Trace;
use super::turn::Chat;
use super::{Args, Loaded};
use dsv4_chat::ThinkingMode;
use dsv4_engine::GenerationParams;
use rustyline::error::ReadlineError;
use std::process::ExitCode;

const HELP: &str = "\
commands:
  /help          this help
  /think         think before answering (default)
  /think-max     maximum reasoning effort (needs a large --ctx)
  /nothink       answer directly
  /ctx N         new context size (the conversation is kept and re-prefilled)
  /read FILE     send the file's contents as the next message
  /reset         forget the conversation
  /quit, /exit   leave (Ctrl+D too); Ctrl+C stops an answer";

pub fn run(loaded: &Loaded, a: &Args, mode: ThinkingMode, gen: GenerationParams, trace: &mut Trace) -> anyhow::Result<ExitCode> {
    let mut chat = Chat::new(loaded, a, mode, gen);
    let mut ed = rustyline::DefaultEditor::new()?;
    let history = dsv4_download::default_data_dir().map(|d| d.join("chat_history"));
    if let Some(h) = &history {
        let _ = ed.load_history(h);
    }
    eprintln!("dsv4 chat: type a message, /help for commands, Ctrl+D to quit.");
    loop {
        let line = match ed.readline("dsv4> ") {
            Ok(l) => l,
            Err(ReadlineError::Interrupted) => {
                eprintln!("(Ctrl+D or /quit to leave)");
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        };
        crate::install_sigint();
        let line = line.trim_end().to_string();
        if line.trim().is_empty() {
            continue;
        }
        let _ = ed.add_history_entry(line.as_str());
        if let Some(h) = &history {
            if let Some(dir) = h.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            let _ = ed.save_history(h);
        }
        let message = match command(&mut chat, &line) {
            Command::Quit => break,
            Command::Handled => continue,
            Command::Send(m) => m,
        };
        if let Err(e) = chat.turn(&message, trace, &crate::CANCEL) {
            eprintln!("error: {e:#}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

enum Command {
    Quit,
    Handled,
    Send(String),
}

fn command(chat: &mut Chat, line: &str) -> Command {
    if !line.starts_with('/') {
        return Command::Send(line.to_string());
    }
    let (cmd, arg) = line.split_once(' ').map(|(c, a)| (c, a.trim())).unwrap_or((line, ""));
    match cmd {
        "/quit" | "/exit" => return Command::Quit,
        "/help" => eprintln!("{HELP}"),
        "/think" => {
            chat.mode = ThinkingMode::High;
            eprintln!("thinking: high");
        }
        "/think-max" => {
            chat.mode = ThinkingMode::Max;
            if chat.ctx < dsv4_chat::THINK_MAX_MIN_CONTEXT as usize {
                eprintln!("thinking: max requested, but the context ({}) is below {}: high will be used", chat.ctx, dsv4_chat::THINK_MAX_MIN_CONTEXT);
            } else {
                eprintln!("thinking: max");
            }
        }
        "/nothink" => {
            chat.mode = ThinkingMode::NonThink;
            eprintln!("thinking: off");
        }
        "/ctx" => match arg.parse::<usize>() {
            Ok(n) if n >= 16 => {
                chat.set_ctx(n);
                eprintln!("context: {n} tokens (the conversation will be re-prefilled)");
            }
            _ => eprintln!("usage: /ctx N (N >= 16)"),
        },
        "/read" => match std::fs::read_to_string(arg) {
            Ok(text) => return Command::Send(text),
            Err(e) => eprintln!("cannot read {arg:?}: {e}"),
        },
        "/reset" => {
            chat.reset();
            eprintln!("conversation forgotten");
        }
        other => eprintln!("unknown command {other} (/help lists them)"),
    }
    Command::Handled
}
