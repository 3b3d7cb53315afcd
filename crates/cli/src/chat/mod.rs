//! `dsv4 chat`: one-shot (`-p`) or an interactive REPL on a live session, with the official
//! prompt rendering, streaming display (reasoning dimmed on a terminal) and diagnostics.

mod diag;
mod repl;
mod turn;

use anyhow::{bail, Context};
use dsv4_chat::ThinkingMode;
use dsv4_engine::{GenerationParams, LoopGuard, MemoryPlan, SamplingParams};
use dsv4_gguf::GgufFile;
use dsv4_model::{Model, Numerics};
use dsv4_tokenizer::Tokenizer;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(clap::Args, Clone)]
pub struct Args {
    #[command(flatten)]
    pub source: crate::demo::ModelSource,
    #[command(flatten)]
    pub device: crate::device::DeviceArgs,
    /// One-shot: answer this prompt and exit.
    #[arg(short, long)]
    pub prompt: Option<String>,
    /// One-shot from a file.
    #[arg(long)]
    pub prompt_file: Option<PathBuf>,
    /// System prompt ("" for none).
    #[arg(long = "system", default_value = "")]
    pub system: String,
    /// Thinking (the default).
    #[arg(long)]
    pub think: bool,
    /// Maximum reasoning effort (only when the context is large enough; see --ctx).
    #[arg(long)]
    pub think_max: bool,
    /// No thinking.
    #[arg(long)]
    pub nothink: bool,
    /// Context size in tokens.
    #[arg(short, long, default_value_t = 32768)]
    pub ctx: usize,
    /// Maximum tokens per answer.
    #[arg(short = 'n', long, default_value_t = 8192)]
    pub tokens: usize,
    /// Temperature (0 = greedy).
    #[arg(long, default_value_t = 1.0)]
    pub temp: f32,
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    #[arg(long, default_value_t = 0.05)]
    pub min_p: f32,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Disable the guard that stops endless verbatim loops.
    #[arg(long)]
    pub no_loop_guard: bool,
    /// Compute what transformers computes in float32.
    #[arg(long)]
    pub plain_numerics: bool,
    /// Tokenize the prompt exactly as written (special tokens recognised), print ids and
    /// pieces, and exit.
    #[arg(long)]
    pub dump_tokens: bool,
    /// Greedy continuation with the top-k log-probabilities of each step, as JSON in the shape
    /// of the official test vectors.
    #[arg(long)]
    pub dump_logprobs: Option<PathBuf>,
    #[arg(long, default_value_t = 20)]
    pub logprobs_top_k: usize,
    /// Append rendered prompts, cache decisions and generated text (JSON lines) to this file.
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// Keep long prompts' states in this directory and restore them in later runs.
    #[arg(long)]
    pub kv_disk_dir: Option<PathBuf>,
    /// Disk budget of the KV cache directory, in MiB.
    #[arg(long, default_value_t = 16384)]
    pub kv_disk_space_mb: u64,
}

impl Args {
    fn thinking(&self) -> anyhow::Result<ThinkingMode> {
        match (self.think, self.think_max, self.nothink) {
            (_, false, false) => Ok(ThinkingMode::High),
            (false, true, false) => Ok(ThinkingMode::Max),
            (false, false, true) => Ok(ThinkingMode::NonThink),
            _ => bail!("choose one of --think, --think-max, --nothink"),
        }
    }

    fn one_shot_prompt(&self) -> anyhow::Result<Option<String>> {
        match (&self.prompt, &self.prompt_file) {
            (Some(_), Some(_)) => bail!("give either -p or --prompt-file, not both"),
            (Some(p), None) => Ok(Some(p.clone())),
            (None, Some(f)) => Ok(Some(std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?)),
            (None, None) => Ok(None),
        }
    }

    pub fn generation(&self) -> anyhow::Result<GenerationParams> {
        let sampling =
            SamplingParams { temperature: self.temp, top_p: self.top_p, top_k: self.top_k, min_p: self.min_p, seed: self.seed };
        sampling.validate().map_err(anyhow::Error::msg)?;
        Ok(GenerationParams {
            sampling,
            max_tokens: self.tokens,
            stop: Vec::new(),
            loop_guard: (!self.no_loop_guard).then(LoopGuard::default),
            numerics: self.numerics(),
            prefill_chunk: dsv4_engine::CPU_PREFILL_PIECE,
        })
    }

    fn numerics(&self) -> Numerics {
        if self.plain_numerics { Numerics::Plain } else { Numerics::Official }
    }
}

/// What every chat mode needs: the model, its tokenizer and the prompt encoder.
pub struct Loaded {
    pub runner: dsv4_engine::Runner,
    pub tok: Arc<Tokenizer>,
    pub encoder: dsv4_chat::PromptEncoder,
    pub disk: Option<Arc<dsv4_engine::DiskCache>>,
}

pub fn load(a: &Args) -> anyhow::Result<Loaded> {
    let path = a.source.path()?;
    let file = Arc::new(GgufFile::open(&path).with_context(|| format!("reading {}", path.display()))?);
    let tok = Arc::new(crate::tokenize::from_gguf(&file)?);
    let cfg = dsv4_model::ModelConfig::from_metadata(file.metadata())?;
    if a.ctx < 16 || a.ctx as u64 > cfg.context_length {
        bail!("--ctx {} is outside 16..={}", a.ctx, cfg.context_length);
    }
    let weights: u64 = file.tensors().iter().map(|t| t.n_bytes()).sum();
    let plan = MemoryPlan::cpu(&cfg, weights, a.ctx, dsv4_engine::CPU_PREFILL_PIECE);
    eprintln!("{}", plan.summary());
    plan.check(dsv4_engine::plan::available_memory()).map_err(anyhow::Error::msg)?;
    let t = std::time::Instant::now();
    crate::progress::load_weights(&file);
    let model = std::sync::Arc::new(Model::from_file(file)?);
    eprintln!("loaded {} ({} layers) in {:.1} s", path.display(), model.cfg.n_layer, t.elapsed().as_secs_f64());
    if a.source.demo {
        eprintln!("demo model: synthetic random weights with the real vocabulary; its text is noise.");
    }
    let encoder = dsv4_chat::PromptEncoder::new(tok.clone(), a.ctx as u32);
    let disk = match &a.kv_disk_dir {
        Some(dir) => Some(Arc::new(
            dsv4_engine::DiskCache::open(dir, a.kv_disk_space_mb << 20, &model, a.numerics())
                .map_err(|e| anyhow::anyhow!("KV cache {}: {e}", dir.display()))?,
        )),
        None => None,
    };
    let runner = a.device.runner(model, a.ctx, 1)?;
    Ok(Loaded { runner, tok, encoder, disk })
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let mode = a.thinking()?;
    let mut gen = a.generation()?;
    let one_shot = a.one_shot_prompt()?;
    if a.dump_tokens {
        let text = one_shot.context("--dump-tokens needs -p or --prompt-file")?;
        let path = a.source.path()?;
        let file = GgufFile::open(&path).with_context(|| format!("reading {}", path.display()))?;
        diag::dump_tokens(&crate::tokenize::from_gguf(&file)?, &text)?;
        return Ok(ExitCode::SUCCESS);
    }
    let loaded = load(&a)?;
    gen.prefill_chunk = loaded.runner.prefill_piece();
    let mut trace = diag::Trace::open(a.trace.as_deref())?;
    if let Some(out) = &a.dump_logprobs {
        let text = one_shot.context("--dump-logprobs needs -p or --prompt-file")?;
        diag::dump_logprobs(&loaded, &a, mode, &text, out, &mut trace)?;
        return Ok(ExitCode::SUCCESS);
    }
    match one_shot {
        Some(text) => {
            let mut chat = turn::Chat::new(&loaded, &a, mode, gen);
            chat.turn(&text, &mut trace, &crate::CANCEL)?;
            Ok(ExitCode::SUCCESS)
        }
        None => repl::run(&loaded, &a, mode, gen, &mut trace),
    }
}
