//! `dsv4 serve`: the HTTP server. Listens at once (`/health` says 503 while the model
//! loads), then serves OpenAI Chat Completions / Completions / Responses and Anthropic
//! Messages until SIGINT or SIGTERM.

use anyhow::{bail, Context};
use dsv4_engine::{DiskCache, MemoryPlan};
use dsv4_gguf::GgufFile;
use dsv4_model::{Model, Numerics};
use dsv4_server::{EngineOptions, Loaded, ModelBackend, ServerConfig};
use dsv4_tokenizer::Tokenizer;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(clap::Args, Clone)]
pub struct Args {
    #[command(flatten)]
    pub source: crate::demo::ModelSource,
    #[command(flatten)]
    pub device: crate::device::DeviceArgs,
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Context size in tokens (prompt plus answer) of every session.
    #[arg(short, long, default_value_t = 32768)]
    pub ctx: usize,
    /// Require this key (Authorization: Bearer KEY, or x-api-key: KEY). Also $DSV4_API_KEY.
    #[arg(long, env = "DSV4_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Allow browsers from any origin (CORS headers on every response).
    #[arg(long)]
    pub cors: bool,
    /// Largest request body, in MiB.
    #[arg(long, default_value_t = 256)]
    pub body_limit_mb: usize,
    /// Live sessions kept in memory (agents' side requests get their own instead of
    /// evicting the main conversation).
    #[arg(long, default_value_t = 4)]
    pub sessions: usize,
    /// Requests generated together in one batch (default: --sessions). Each holds a session,
    /// so --sessions is raised to this; later requests wait in a first-come queue.
    #[arg(long)]
    pub max_active: Option<usize>,
    /// Serve only the known model names instead of any name a client sends.
    #[arg(long)]
    pub strict_model_names: bool,
    /// Append rendered prompts, cache decisions and generated text (JSON lines) to this file.
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// Disable the guard that stops endless verbatim loops.
    #[arg(long)]
    pub no_loop_guard: bool,
    /// Compute what transformers computes in float32.
    #[arg(long)]
    pub plain_numerics: bool,
    /// Keep long prompts' states in this directory and restore them in later requests and runs.
    #[arg(long)]
    pub kv_disk_dir: Option<PathBuf>,
    /// Disk budget of the KV cache directory, in MiB.
    #[arg(long, default_value_t = 16384)]
    pub kv_disk_space_mb: u64,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let path = a.source.path()?;
    if a.ctx < 16 {
        bail!("--ctx {} is too small", a.ctx);
    }
    let host = if a.host == "localhost" { "127.0.0.1".to_owned() } else { a.host.clone() };
    let addr: std::net::SocketAddr =
        format!("{host}:{}", a.port).parse().with_context(|| format!("--host {} --port {} is not an address", a.host, a.port))?;
    let cfg = ServerConfig {
        ctx: a.ctx,
        api_key: a.api_key.clone().filter(|k| !k.is_empty()),
        cors: a.cors,
        body_limit: a.body_limit_mb.max(1) << 20,
        keepalive: Duration::from_secs(1),
        accept_any_model: !a.strict_model_names,
        trace: a.trace.clone(),
        tool_memory: a.kv_disk_dir.as_ref().map(|d| d.join("tool-calls.jsonl")),
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("listening on {addr}"))?;
        eprintln!("dsv4 serve: listening on http://{} (loading {} …)", listener.local_addr()?, path.display());
        let demo = a.source.demo;
        let load = move || load(&a, &path).map_err(|e| format!("{e:#}"));
        dsv4_server::serve(listener, cfg, load, shutdown_signal()).await.map_err(anyhow::Error::msg)?;
        if demo {
            eprintln!("dsv4 serve: stopped");
        }
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

fn load(a: &Args, path: &std::path::Path) -> anyhow::Result<Loaded> {
    let file = Arc::new(GgufFile::open(path).with_context(|| format!("reading {}", path.display()))?);
    let tok = Arc::new(Tokenizer::from_gguf(&file)?);
    let cfg = dsv4_model::ModelConfig::from_metadata(file.metadata())?;
    if a.ctx as u64 > cfg.context_length {
        bail!("--ctx {} is larger than the model's context of {} tokens", a.ctx, cfg.context_length);
    }
    let weights: u64 = file.tensors().iter().map(|t| t.n_bytes()).sum();
    let max_active = a.max_active.unwrap_or(a.sessions).max(1);
    let sessions = a.sessions.max(max_active);
    // Every resident session holds a full state: the plan counts them all.
    let plan = MemoryPlan::cpu(&cfg, weights, a.ctx, dsv4_engine::CPU_PREFILL_PIECE).with_sessions(sessions);
    eprintln!("{}", plan.summary());
    plan.check(dsv4_engine::plan::available_memory()).map_err(anyhow::Error::msg)?;
    let t = std::time::Instant::now();
    crate::progress::load_weights(&file);
    let model = Arc::new(Model::from_file(file)?);
    eprintln!("dsv4 serve: loaded {} ({} layers) in {:.1} s; ready", path.display(), model.cfg.n_layer, t.elapsed().as_secs_f64());
    if a.source.demo {
        eprintln!("demo model: synthetic random weights with the real vocabulary; its text is noise.");
    }
    let numerics = if a.plain_numerics { Numerics::Plain } else { Numerics::Official };
    let disk = match &a.kv_disk_dir {
        Some(dir) => Some(Arc::new(
            DiskCache::open(dir, a.kv_disk_space_mb << 20, &model, numerics).map_err(|e| anyhow::anyhow!("KV cache {}: {e}", dir.display()))?,
        )),
        None => None,
    };
    let runner = a.device.runner(model, a.ctx, sessions)?;
    let opts = EngineOptions { ctx: a.ctx, numerics, loop_guard: !a.no_loop_guard, sessions, max_active, prefill_chunk: runner.prefill_piece() };
    let backend = ModelBackend::new(runner, tok.clone(), opts, disk, Box::new(|line| eprintln!("dsv4 serve: {line}")));
    Ok(Loaded { backend: Box::new(backend), tokenizer: tok })
}

/// SIGINT (Ctrl+C) or SIGTERM (service managers, `docker stop`).
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
    eprintln!("dsv4 serve: shutting down (cancelling in-flight requests, saving sessions)");
}
