use anyhow::Context;
use dsv4_gguf::GgufFile;
use dsv4_tokenizer::Tokenizer;
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// The GGUF whose `tokenizer.ggml.*` arrays define the tokenizer.
    #[arg(long)]
    model: PathBuf,
    /// Recognise special-token strings (such as `<｜User｜>`) in the text. Off by default so
    /// that text can never forge a control token.
    #[arg(long)]
    special: bool,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let f = GgufFile::open(&a.model).with_context(|| format!("reading {}", a.model.display()))?;
    let tok = from_gguf(&f)?;
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text).context("standard input is not valid UTF-8")?;
    let ids = if a.special { tok.encode_with_special(&text) } else { tok.encode(&text) };
    println!("{}", serde_json::to_string(&ids)?);
    Ok(ExitCode::SUCCESS)
}

pub fn from_gguf(f: &GgufFile) -> anyhow::Result<Tokenizer> {
    Ok(Tokenizer::from_gguf(f)?)
}
