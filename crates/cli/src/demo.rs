use anyhow::Context;
use dsv4_gguf::GgufFile;
use dsv4_model::{ExpertMix, Model, Numerics};
use dsv4_synth::{Preset, SynthSpec};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// The prompt to continue.
    #[arg(short, long, default_value = "Write a haiku about memory bandwidth.")]
    prompt: String,
    /// Tokens to generate.
    #[arg(short = 'n', long, default_value_t = 24)]
    tokens: usize,
}

/// Where the generated demo model is cached between runs.
fn demo_path() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("dsv4").join("demo-tiny-q2-seed0.gguf")
}

/// The demo model's path, generating it on first use.
pub fn ensure_demo_model() -> anyhow::Result<PathBuf> {
    let path = demo_path();
    if !path.exists() {
        std::fs::create_dir_all(path.parent().unwrap())?;
        eprintln!("generating the tiny demo model at {} …", path.display());
        let spec = SynthSpec { preset: Preset::Tiny, mix: ExpertMix::Q2, seed: 0 };
        dsv4_synth::write_model(&path, &spec)?;
    }
    Ok(path)
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let path = ensure_demo_model()?;
    let file = Arc::new(GgufFile::open(&path).with_context(|| format!("reading {}", path.display()))?);
    let tok = crate::tokenize::from_gguf(&file)?;
    let model = Model::from_file(file)?;
    eprintln!("demo model: synthetic random weights with the real vocabulary; the text below is noise.");
    let sp = tok.specials();
    let mut ids = vec![sp.bos, sp.user];
    ids.extend(tok.encode(&a.prompt));
    ids.extend([sp.assistant, sp.think_end]);
    let mut state = model.new_state();
    let t = Instant::now();
    let mut logits = model.forward(&mut state, &ids, false, Numerics::Official)?.pop().unwrap();
    let prefill = t.elapsed().as_secs_f64();
    let mut dec = dsv4_tokenizer::IncrementalDecoder::new(&tok);
    let t = Instant::now();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for _ in 0..a.tokens {
        let next = argmax(&logits);
        out.write_all(dec.push(next).as_bytes())?;
        out.flush()?;
        logits = model.forward(&mut state, &[next], false, Numerics::Official)?.pop().unwrap();
    }
    out.write_all(dec.finish().as_bytes())?;
    writeln!(out)?;
    let gen = t.elapsed().as_secs_f64();
    eprintln!(
        "prompt {} tokens ({:.0} t/s prefill), generated {} tokens ({:.1} t/s)",
        ids.len(),
        ids.len() as f64 / prefill,
        a.tokens,
        a.tokens as f64 / gen
    );
    Ok(ExitCode::SUCCESS)
}

fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best as u32
}
