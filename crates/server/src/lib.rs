//! `dsv4 serve`: the OpenAI-, Anthropic- and Responses-compatible HTTP server.
//!
//! Request conversion, prompt rendering, output parsing and the exact event shapes of each
//! protocol come from DeepSeek's `deepseek-recipe` crates (through `dsv4-chat`); this crate
//! adds the transport: routing, authentication, SSE with keep-alives, cancellation when a
//! client leaves, error shapes, metrics, and a FIFO queue in front of one inference worker
//! ([`worker`]) that runs every admitted request together in a [`Backend`]'s batch.

mod auth;
pub mod backend;
mod chat;
mod completions;
pub mod error;
pub mod metrics;
mod model_backend;
mod replay;
mod routes;
mod running;
pub mod scripted;
mod sse;
pub mod worker;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use dsv4_chat::{ModelCatalog, PromptEncoder, RequestConverter};
use dsv4_tokenizer::Tokenizer;

pub use backend::{Backend, CacheSource, End, GenJob, MissReason, Next, Progress, PromptReport};
pub use model_backend::{EngineOptions, ModelBackend};

use metrics::Metrics;
use worker::Worker;

/// Transport and protocol settings.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Context size in tokens (prompt plus answer).
    pub ctx: usize,
    /// Required as `Authorization: Bearer KEY` or `x-api-key: KEY` when set.
    pub api_key: Option<String>,
    pub cors: bool,
    /// Largest request body accepted, in bytes.
    pub body_limit: usize,
    /// SSE comment interval while nothing else is sent (long prefills).
    pub keepalive: Duration,
    /// Serve any model name (agents send their own preset names) instead of only ours.
    pub accept_any_model: bool,
    /// Append JSON lines per request (rendered prompt, cache decision, generated text).
    pub trace: Option<std::path::PathBuf>,
    /// Where sampled tool-call blocks are kept across restarts (beside the disk KV cache).
    pub tool_memory: Option<std::path::PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            ctx: 32768,
            api_key: None,
            cors: false,
            // A 1M-token transcript is ~4 MB of text; JSON escaping and tool schemas can
            // several-fold that.
            body_limit: 256 << 20,
            keepalive: Duration::from_secs(1),
            accept_any_model: true,
            trace: None,
            tool_memory: None,
        }
    }
}

/// What loading produces: the engine and its tokenizer.
pub struct Loaded {
    pub backend: Box<dyn Backend>,
    pub tokenizer: Arc<Tokenizer>,
}

/// Everything that exists only once the model is loaded.
pub(crate) struct Ready {
    pub tok: Arc<Tokenizer>,
    pub encoder: PromptEncoder,
    pub worker: Worker,
}

pub(crate) struct AppState {
    pub cfg: ServerConfig,
    pub metrics: Arc<Metrics>,
    pub converter: RequestConverter,
    ready: OnceLock<Ready>,
    shutting_down: AtomicBool,
    /// Sampled tool-call blocks by tool-call id, for exact replay.
    pub tools: replay::ToolMemory,
    /// Cancel flags of jobs in flight, raised all at once at shutdown.
    inflight: Mutex<Vec<Weak<AtomicBool>>>,
    next_id: AtomicU64,
}

impl AppState {
    fn new(cfg: ServerConfig) -> AppState {
        let mut catalog = ModelCatalog::standard();
        if cfg.accept_any_model {
            catalog = catalog.accept_any_model(true);
        }
        AppState {
            cfg,
            metrics: Arc::new(Metrics::default()),
            converter: RequestConverter::new(catalog),
            ready: OnceLock::new(),
            shutting_down: AtomicBool::new(false),
            tools: replay::ToolMemory::default(),
            inflight: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
        }
    }

    /// The loaded engine, or the 503 a client should retry after.
    pub fn ready(&self) -> Result<&Ready, error::ApiError> {
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err(error::ApiError::unavailable("the server is shutting down"));
        }
        self.ready.get().ok_or_else(|| error::ApiError::unavailable("the model is still loading; retry shortly"))
    }

    /// A cancel flag registered for shutdown; dropping the guard raises it.
    pub fn cancel_guard(&self) -> CancelOnDrop {
        let flag = Arc::new(AtomicBool::new(false));
        let mut v = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        v.retain(|w| w.strong_count() > 0);
        v.push(Arc::downgrade(&flag));
        CancelOnDrop(flag)
    }

    pub fn new_id(&self, prefix: &str) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        format!("{prefix}{:016x}{n:08x}", rand::random::<u64>())
    }

    fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        let v = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        for f in v.iter().filter_map(Weak::upgrade) {
            f.store(true, Ordering::SeqCst);
        }
    }
}

/// Raises its flag when dropped: a request whose response future or SSE stream goes away
/// (client disconnect) cancels its queued or running job.
pub(crate) struct CancelOnDrop(pub Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Runs the server on `listener` until `shutdown` resolves. The model loads in the
/// background (`/health` answers 503 meanwhile); a failed load ends the server with its
/// error. At shutdown, in-flight work is cancelled, connections are drained and the backend
/// saves its state.
pub async fn serve<L, S>(listener: tokio::net::TcpListener, cfg: ServerConfig, load: L, shutdown: S) -> Result<(), String>
where
    L: FnOnce() -> Result<Loaded, String> + Send + 'static,
    S: Future<Output = ()> + Send + 'static,
{
    let state = Arc::new(AppState::new(cfg));
    let app = routes::router(state.clone());
    let (fail_tx, mut fail_rx) = tokio::sync::mpsc::channel::<String>(1);
    let loader_state = state.clone();
    tokio::task::spawn_blocking(move || match load() {
        Ok(l) => {
            let ctx = loader_state.cfg.ctx;
            let trace = match &loader_state.cfg.trace {
                Some(p) => match std::fs::OpenOptions::new().create(true).append(true).open(p) {
                    Ok(f) => Some(f),
                    Err(e) => {
                        let _ = fail_tx.try_send(format!("--trace {}: {e}", p.display()));
                        return;
                    }
                },
                None => None,
            };
            if let Some(p) = &loader_state.cfg.tool_memory {
                match loader_state.tools.load(p, l.tokenizer.vocab_size()) {
                    Ok(0) => {}
                    Ok(n) => eprintln!("dsv4 serve: {}: skipped {n} unreadable tool-call lines", p.display()),
                    Err(e) => eprintln!("dsv4 serve: {}: {e}; tool calls from earlier runs will be re-rendered", p.display()),
                }
            }
            let worker = Worker::spawn(l.backend, l.tokenizer.clone(), loader_state.metrics.clone(), trace);
            let encoder = PromptEncoder::new(l.tokenizer.clone(), ctx as u32);
            let _ = loader_state.ready.set(Ready { tok: l.tokenizer, encoder, worker });
        }
        Err(e) => {
            let _ = fail_tx.try_send(e);
        }
    });
    let failure: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let fail_slot = failure.clone();
    let stop_state = state.clone();
    let stop = async move {
        tokio::select! {
            _ = shutdown => {}
            Some(e) = fail_rx.recv() => {
                *fail_slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
            }
        }
        stop_state.begin_shutdown();
    };
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(stop)
        .await
        .map_err(|e| format!("server: {e}"))?;
    // Joins the worker: the queue drains (everything is cancelled by now) and the backend
    // saves resident sessions.
    let join_state = state.clone();
    let _ = tokio::task::spawn_blocking(move || {
        if let Some(r) = join_state.ready.get() {
            r.worker.stop();
            if let Some(p) = &join_state.cfg.tool_memory {
                if let Err(e) = join_state.tools.save(p) {
                    eprintln!("dsv4 serve: saving {}: {e}", p.display());
                }
            }
        }
    })
    .await;
    let failed = failure.lock().unwrap_or_else(|p| p.into_inner()).take();
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
