use anyhow::{bail, Context};
use dsv4_model::{Model, Numerics};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    model: PathBuf,
    /// Comma-separated token ids, e.g. `0,17,42`.
    #[arg(long)]
    tokens: String,
    /// Compute what HF transformers computes in float32 (no FP8/FP4/BF16 emulation, no
    /// quantized activations).
    #[arg(long)]
    plain_numerics: bool,
    /// Little-endian f32 logits, shape [number of tokens, vocabulary]; row i follows token i.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let tokens: Vec<u32> = a
        .tokens
        .split(',')
        .map(|s| s.trim().parse::<u32>().with_context(|| format!("`{s}` is not a token id")))
        .collect::<anyhow::Result<_>>()?;
    if tokens.is_empty() {
        bail!("--tokens is empty");
    }
    let model = Model::load(&a.model).with_context(|| format!("loading {}", a.model.display()))?;
    let numerics = if a.plain_numerics { Numerics::Plain } else { Numerics::Official };
    let mut state = model.new_state();
    let rows = model.forward(&mut state, &tokens, true, numerics)?;
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(&a.out).with_context(|| format!("creating {}", a.out.display()))?,
    );
    let stdout = std::io::stdout();
    let mut so = stdout.lock();
    for (i, row) in rows.iter().enumerate() {
        for v in row {
            out.write_all(&v.to_le_bytes())?;
        }
        let mut idx: Vec<usize> = (0..row.len()).collect();
        idx.sort_by(|&x, &y| row[y].total_cmp(&row[x]));
        let top: Vec<serde_json::Value> =
            idx.iter().take(5).map(|&t| serde_json::json!({"id": t, "logit": row[t]})).collect();
        writeln!(so, "{}", serde_json::json!({"position": i, "token": tokens[i], "top5": top}))?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
