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
    let strs = |key: &str| -> anyhow::Result<Vec<String>> {
        let v = f.get(key).with_context(|| format!("the model has no `{key}`"))?;
        let items = v.as_str_array().with_context(|| format!("`{key}` is not an array of strings"))?;
        Ok(items.into_iter().map(str::to_owned).collect())
    };
    let tokens = strs("tokenizer.ggml.tokens")?;
    let merges = strs("tokenizer.ggml.merges")?;
    let types: Vec<i32> = match f.get("tokenizer.ggml.token_type") {
        Some(v) => v
            .as_i64_array()
            .context("`tokenizer.ggml.token_type` is not an integer array")?
            .into_iter()
            .map(|t| t as i32)
            .collect(),
        None => vec![1; tokens.len()],
    };
    Ok(Tokenizer::from_vocab(&tokens, &merges, &types)?)
}
