//! `dsv4`: one binary, one subcommand per job.

mod bench;
mod bench_batch;
mod chat;
mod demo;
mod device;
mod download;
mod inspect;
mod kv;
mod logits;
mod progress;
mod serve;
mod synth;
mod test_vectors;
mod tokenize;

use clap::{Parser, Subcommand};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Parser)]
#[command(name = "dsv4", version, about = "DeepSeek V4 Flash inference engine")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Chat with the model: one-shot with -p, otherwise an interactive REPL.
    Chat(chat::Args),
    /// Serve the OpenAI (Chat Completions, Completions, Responses) and Anthropic (Messages)
    /// APIs over HTTP, for coding agents and SDKs.
    Serve(serve::Args),
    /// Write a synthetic model in antirez's GGUF layout (random weights, real shapes).
    Synth(synth::Args),
    /// Show a GGUF's metadata and tensors, and check them against the DeepSeek V4 layout.
    Inspect(inspect::Args),
    /// Tokenize standard input with a model's tokenizer; prints the ids as one JSON array.
    Tokenize(tokenize::Args),
    /// Run token ids through the model and write every position's logits.
    Logits(logits::Args),
    /// Measure prefill and decode speed at growing context; CSV on stdout.
    Bench(bench::Args),
    /// Measure batched serving: aggregate decode rate of N streams together, or the time to
    /// first token of a short request arriving during a long prefill.
    BenchBatch(bench_batch::Args),
    /// Fetch one of antirez's published GGUF files (resumable, checksum-verified).
    Download(download::Args),
    /// Inspect a disk KV cache directory: ls, rm, stats.
    Kv(kv::Args),
    /// Check prompt rendering (and, with a real model, greedy decoding) against the official
    /// DeepSeek V4 Flash test vectors.
    TestVectors(test_vectors::Args),
}

/// Set by Ctrl+C; generation checks it between tokens and prefill between chunks.
pub static CANCEL: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    // Only an atomic swap and _exit: both are async-signal-safe. A second Ctrl+C while
    // nothing noticed the first still ends the process.
    if CANCEL.swap(true, Ordering::Relaxed) {
        unsafe { libc::_exit(130) };
    }
}

/// Makes Ctrl+C stop the work in progress instead of killing the process. Line editors
/// install their own SIGINT handler while they run, so the REPL calls this again after each
/// line it reads.
pub fn install_sigint() {
    // SAFETY: `on_sigint` is async-signal-safe (see above) and lives for the whole process.
    unsafe {
        libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t);
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The server handles SIGINT/SIGTERM itself (graceful shutdown) through tokio.
    if !matches!(cli.command, Command::Serve(_)) {
        install_sigint();
    }
    let result = match cli.command {
        Command::Chat(a) => chat::run(a),
        Command::Serve(a) => serve::run(a),
        Command::Synth(a) => synth::run(a),
        Command::Inspect(a) => inspect::run(a),
        Command::Tokenize(a) => tokenize::run(a),
        Command::Logits(a) => logits::run(a),
        Command::Bench(a) => bench::run(a),
        Command::BenchBatch(a) => bench_batch::run(a),
        Command::Download(a) => download::run(a),
        Command::TestVectors(a) => test_vectors::run(a),
        Command::Kv(a) => kv::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("dsv4: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Today's date (UTC) as YYYY-MM-DD, for benchmark records.
pub fn today() -> String {
    let days = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() / 86400).unwrap_or(0) as i64;
    // Civil-from-days (proleptic Gregorian), valid for any date after 1970.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}
