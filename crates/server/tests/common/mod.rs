//! Test harness: the real server on a loopback port, driven by a scripted or real backend.

#![allow(dead_code)]

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use dsv4_server::scripted::{JobRecord, ScriptedBackend};
use dsv4_server::{Backend, Loaded, ServerConfig};
use dsv4_tokenizer::Tokenizer;
use serde_json::Value;

pub fn tok() -> Arc<Tokenizer> {
    static TOK: OnceLock<Arc<Tokenizer>> = OnceLock::new();
    TOK.get_or_init(|| Arc::new(Tokenizer::bundled().expect("bundled tokenizer"))).clone()
}

/// Token ids of `text`, control-token strings (`</think>`, `｜DSML｜`) as their tokens.
pub fn ids(text: &str) -> Vec<u32> {
    tok().encode_with_special(text)
}

/// The tiny synthetic model with `seed`, written once into the target directory and shared
/// by every test process.
pub fn tiny_model(seed: u64) -> Arc<dsv4_model::Model> {
    static MODELS: Mutex<Vec<(u64, Arc<dsv4_model::Model>)>> = Mutex::new(Vec::new());
    let mut models = MODELS.lock().unwrap();
    if let Some((_, m)) = models.iter().find(|(s, _)| *s == seed) {
        return m.clone();
    }
    let spec = dsv4_synth::SynthSpec { preset: dsv4_synth::Preset::Tiny, mix: dsv4_model::ExpertMix::Q2, seed };
    let path = dsv4_synth::cached_model(std::path::Path::new(env!("CARGO_TARGET_TMPDIR")), &spec).unwrap();
    let m = Arc::new(dsv4_model::Model::load(&path).unwrap());
    models.push((seed, m.clone()));
    m
}

pub struct TestServer {
    pub url: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<Result<(), String>>>,
    pub records: Arc<Mutex<Vec<JobRecord>>>,
}

pub fn config() -> ServerConfig {
    ServerConfig { ctx: 4096, ..ServerConfig::default() }
}

impl TestServer {
    pub async fn scripted(backend: ScriptedBackend, cfg: ServerConfig) -> TestServer {
        let records = backend.records();
        Self::start(Box::new(backend), cfg, records, Duration::ZERO).await
    }

    pub async fn start(backend: Box<dyn Backend>, cfg: ServerConfig, records: Arc<Mutex<Vec<JobRecord>>>, load_delay: Duration) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let tokenizer = tok();
        let load = move || {
            std::thread::sleep(load_delay);
            Ok(Loaded { backend, tokenizer })
        };
        let handle = tokio::spawn(dsv4_server::serve(listener, cfg, load, async {
            let _ = rx.await;
        }));
        let s = TestServer { url, shutdown: Some(tx), handle: Some(handle), records };
        if load_delay.is_zero() {
            s.wait_ready().await;
        }
        s
    }

    pub async fn wait_ready(&self) {
        let t = Instant::now();
        loop {
            if let Ok(r) = reqwest::get(format!("{}/health", self.url)).await {
                if r.status() == 200 {
                    return;
                }
            }
            assert!(t.elapsed() < Duration::from_secs(20), "server not ready");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = reqwest::Client::new().post(format!("{}{path}", self.url)).json(body).send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}")))
    }

    /// A streamed response's SSE events as (event name, data), comments dropped.
    pub async fn stream(&self, path: &str, body: &Value) -> Vec<(Option<String>, String)> {
        let r = reqwest::Client::new().post(format!("{}{path}", self.url)).json(body).send().await.unwrap();
        assert_eq!(r.status(), 200, "streaming request failed");
        assert_eq!(r.headers()["content-type"], "text/event-stream");
        parse_sse(&r.text().await.unwrap())
    }

    pub async fn metric(&self, name: &str) -> f64 {
        let text = reqwest::get(format!("{}/metrics", self.url)).await.unwrap().text().await.unwrap();
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.rsplit_once(' '))
            .filter(|(k, _)| *k == name)
            .map(|(_, v)| v.parse::<f64>().unwrap())
            .sum()
    }

    pub fn jobs(&self) -> Vec<JobRecord> {
        self.records.lock().unwrap().clone()
    }

    /// Waits until `n` jobs have finished (records are written when a job ends).
    pub async fn wait_jobs(&self, n: usize, within: Duration) -> Vec<JobRecord> {
        let t = Instant::now();
        loop {
            let j = self.jobs();
            if j.len() >= n {
                return j;
            }
            assert!(t.elapsed() < within, "only {} of {n} jobs ended within {within:?}", j.len());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn stop(mut self) -> Result<(), String> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.handle.take().unwrap().await.unwrap()
    }
}

pub fn parse_sse(text: &str) -> Vec<(Option<String>, String)> {
    let mut out = Vec::new();
    for block in text.split("\n\n") {
        let mut event = None;
        let mut data = Vec::new();
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("event:") {
                event = Some(v.trim().to_owned());
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push(v.strip_prefix(' ').unwrap_or(v).to_owned());
            }
        }
        if !data.is_empty() {
            out.push((event, data.join("\n")));
        }
    }
    out
}
