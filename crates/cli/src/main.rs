//! `dsv4`: one binary, one subcommand per job.

mod demo;
mod inspect;
mod logits;
mod synth;
mod tokenize;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "dsv4", version, about = "DeepSeek V4 Flash inference engine")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate from the built-in tiny demo model (synthetic weights: the output is noise).
    Demo(demo::Args),
    /// Write a synthetic model in antirez's GGUF layout (random weights, real shapes).
    Synth(synth::Args),
    /// Show a GGUF's metadata and tensors, and check them against the DeepSeek V4 layout.
    Inspect(inspect::Args),
    /// Tokenize standard input with a model's tokenizer; prints the ids as one JSON array.
    Tokenize(tokenize::Args),
    /// Run token ids through the model and write every position's logits.
    Logits(logits::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(a) => demo::run(a),
        Command::Synth(a) => synth::run(a),
        Command::Inspect(a) => inspect::run(a),
        Command::Tokenize(a) => tokenize::run(a),
        Command::Logits(a) => logits::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("dsv4: {e:#}");
            ExitCode::FAILURE
        }
    }
}
