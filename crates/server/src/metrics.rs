//! `/metrics` in the Prometheus text format. A handful of counters behind one mutex: the
//! worker updates them once per request and once per answer, never per token.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Mutex, MutexGuard};

use crate::backend::{CacheSource, PromptReport};

#[derive(Default)]
struct Counters {
    /// (endpoint, status) -> count.
    requests: BTreeMap<(&'static str, u16), u64>,
    prompt_tokens: u64,
    cached_tokens: u64,
    prefilled_tokens: u64,
    prefill_seconds: f64,
    generated_tokens: u64,
    decode_seconds: f64,
    /// Label of [`CacheSource`] -> count.
    cache: BTreeMap<&'static str, u64>,
    queue_depth: usize,
    active: usize,
    cancelled_queued: u64,
    cancelled_running: u64,
    backend_errors: u64,
    last_prefill_tps: f64,
    last_decode_tps: f64,
    disk: Option<(u64, u64)>,
}

#[derive(Default)]
pub struct Metrics {
    c: Mutex<Counters>,
}

impl Metrics {
    fn lock(&self) -> MutexGuard<'_, Counters> {
        self.c.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn request(&self, endpoint: &'static str, status: u16) {
        *self.lock().requests.entry((endpoint, status)).or_default() += 1;
    }

    pub fn prompt_done(&self, r: &PromptReport) {
        let mut c = self.lock();
        c.prompt_tokens += r.prompt_tokens as u64;
        c.cached_tokens += r.cached_tokens as u64;
        let prefilled = r.prompt_tokens.saturating_sub(r.cached_tokens);
        c.prefilled_tokens += prefilled as u64;
        c.prefill_seconds += r.prefill_seconds;
        if prefilled > 0 && r.prefill_seconds > 0.0 {
            c.last_prefill_tps = prefilled as f64 / r.prefill_seconds;
        }
        *c.cache.entry(r.source.label()).or_default() += 1;
    }

    pub fn decode_done(&self, tokens: usize, seconds: f64) {
        let mut c = self.lock();
        c.generated_tokens += tokens as u64;
        c.decode_seconds += seconds;
        if tokens > 1 && seconds > 0.0 {
            c.last_decode_tps = tokens as f64 / seconds;
        }
    }

    pub fn set_queue_depth(&self, n: usize) {
        self.lock().queue_depth = n;
    }

    /// Jobs in the batch now.
    pub fn set_active(&self, n: usize) {
        self.lock().active = n;
    }

    pub fn set_disk_usage(&self, files: u64, bytes: u64) {
        self.lock().disk = Some((files, bytes));
    }

    pub fn cancelled_before_start(&self) {
        self.lock().cancelled_queued += 1;
    }

    pub fn cancelled_running(&self) {
        self.lock().cancelled_running += 1;
    }

    pub fn backend_error(&self) {
        self.lock().backend_errors += 1;
    }

    pub fn render(&self) -> String {
        let c = self.lock();
        let mut o = String::new();
        let mut metric = |name: &str, kind: &str, help: &str| {
            let _ = writeln!(o, "# HELP dsv4_{name} {help}\n# TYPE dsv4_{name} {kind}");
        };
        metric("requests_total", "counter", "HTTP requests by endpoint and status code.");
        let mut body = String::new();
        for ((endpoint, status), n) in &c.requests {
            let _ = writeln!(body, "dsv4_requests_total{{endpoint=\"{endpoint}\",status=\"{status}\"}} {n}");
        }
        o.push_str(&body);
        let mut scalar = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(o, "# HELP dsv4_{name} {help}\n# TYPE dsv4_{name} {kind}\ndsv4_{name} {value}");
        };
        scalar("prompt_tokens_total", "counter", "Prompt tokens of generation requests.", c.prompt_tokens.to_string());
        scalar("cached_prompt_tokens_total", "counter", "Prompt tokens served from a live session or the disk cache.", c.cached_tokens.to_string());
        scalar("prefilled_tokens_total", "counter", "Prompt tokens computed.", c.prefilled_tokens.to_string());
        scalar("prefill_seconds_total", "counter", "Time spent syncing sessions to prompts.", format!("{:.6}", c.prefill_seconds));
        scalar("generated_tokens_total", "counter", "Tokens sampled.", c.generated_tokens.to_string());
        scalar("decode_seconds_total", "counter", "Time spent sampling, first token to last.", format!("{:.6}", c.decode_seconds));
        scalar("prefill_tokens_per_second", "gauge", "Prefill rate of the last request that prefilled.", format!("{:.3}", c.last_prefill_tps));
        scalar("decode_tokens_per_second", "gauge", "Decode rate of the last answer.", format!("{:.3}", c.last_decode_tps));
        scalar("queue_depth", "gauge", "Requests waiting for a place in the batch.", c.queue_depth.to_string());
        scalar("active_requests", "gauge", "Requests being prefilled or generated together.", c.active.to_string());
        scalar("cancelled_queued_total", "counter", "Requests whose client left before they started.", c.cancelled_queued.to_string());
        scalar("cancelled_running_total", "counter", "Requests cancelled while prefilling or generating.", c.cancelled_running.to_string());
        scalar("backend_errors_total", "counter", "Requests the engine failed.", c.backend_errors.to_string());
        if let Some((files, bytes)) = c.disk {
            scalar("kv_disk_files", "gauge", "Checkpoint files in the disk KV cache.", files.to_string());
            scalar("kv_disk_bytes", "gauge", "Bytes in the disk KV cache.", bytes.to_string());
        }
        let _ = writeln!(
            o,
            "# HELP dsv4_kv_cache_lookups_total Prompt cache outcomes: hits by source (live, disk), misses by reason (cold, mismatch).\n# TYPE dsv4_kv_cache_lookups_total counter"
        );
        for source in [CacheSource::Live, CacheSource::Disk] {
            let n = c.cache.get(source.label()).copied().unwrap_or(0);
            let _ = writeln!(o, "dsv4_kv_cache_lookups_total{{result=\"hit\",source=\"{}\"}} {n}", source.label());
        }
        for reason in ["cold", "mismatch"] {
            let n = c.cache.get(reason).copied().unwrap_or(0);
            let _ = writeln!(o, "dsv4_kv_cache_lookups_total{{result=\"miss\",reason=\"{reason}\"}} {n}");
        }
        o
    }
}
