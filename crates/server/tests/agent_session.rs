//! A scripted coding-agent session against the real engine (tiny model, CPU): a long system
//! prompt with tools, a growing conversation of tool calls and results, a title side request
//! and a sub-agent every few turns, one regenerate and one server restart with the disk cache.
//!
//! Target (issue: sessions): after the first request, every turn of the main conversation
//! prefills only its new tokens. `new` = tokens of the rendered prompt after its common
//! prefix with the previous turn's (the previous answer as re-sent, the tool call, the tool
//! result). Allowed on top: 1 token (the previous prompt's last token, recomputed for its
//! logits: checkpoints sit one token before a prompt's end) and the previous answer's length
//! (the session holds the answer as sampled; when its re-sent text does not match in full,
//! it is replayed from the prompt's end, and sampled tokens can outnumber the canonical ones
//! `new` counts). With `DSV4_BENCH_OUT=file.csv` the per-request numbers are written there
//! (bench/agent-session-*.csv).

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{tok, TestServer};
use dsv4_chat::{ApiRequest, PromptEncoder, Protocol, RequestConverter};
use dsv4_engine::DiskCache;
use dsv4_model::{Model, Numerics};
use dsv4_server::{EngineOptions, ModelBackend};
use serde_json::{json, Value};

const CTX: usize = 16384;

fn model() -> Arc<Model> {
    common::tiny_model(5)
}

async fn start(kv: &std::path::Path) -> TestServer {
    let m = model();
    let disk = Arc::new(DiskCache::open(kv, 4 << 30, &m, Numerics::Official).unwrap());
    let opts = EngineOptions { ctx: CTX, numerics: Numerics::Official, loop_guard: true, sessions: 4, max_active: 4, prefill_chunk: 512 };
    let backend = ModelBackend::new(dsv4_engine::Runner::cpu(m), tok(), opts, Some(disk), Box::new(|_| {}));
    let trace = std::env::var_os("DSV4_TRACE_OUT").map(std::path::PathBuf::from);
    let cfg = dsv4_server::ServerConfig { ctx: CTX, trace, ..common::config() };
    TestServer::start(Box::new(backend), cfg, Arc::new(Mutex::new(Vec::new())), Duration::ZERO).await
}

fn tools() -> Value {
    json!([
        {"name": "Bash", "description": "Run a shell command in the repository and return its output.",
         "input_schema": {"type": "object", "properties": {"command": {"type": "string"}, "timeout": {"type": "integer"}}, "required": ["command"]}},
        {"name": "Read", "description": "Read a file from the repository.",
         "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}},
        {"name": "Edit", "description": "Replace a string in a file.",
         "input_schema": {"type": "object", "properties": {"path": {"type": "string"}, "old": {"type": "string"}, "new": {"type": "string"}}, "required": ["path", "old", "new"]}}
    ])
}

fn system() -> String {
    let rules: String = (0..60)
        .map(|i| format!("Rule {i}: prefer small, reviewed changes; run the tests after each edit and report what changed in file number {i}.\n"))
        .collect();
    format!("You are a coding agent working in a Rust repository.\n{rules}")
}

fn request(system: &str, messages: &[Value]) -> Value {
    json!({"model": "deepseek-v4-flash", "max_tokens": 12, "stream": true, "system": system, "tools": tools(), "messages": messages})
}

/// The prompt tokens the server renders for `body` (same converter, encoder and tokenizer).
fn rendered(body: &Value) -> Vec<u32> {
    let conv = RequestConverter::default();
    let req = ApiRequest::from_json(Protocol::Messages, body.to_string().as_bytes()).unwrap();
    let mut c = conv.convert(req).unwrap();
    PromptEncoder::new(tok(), CTX as u32).encode_request(&mut c).unwrap().token_ids
}

fn lcp(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

struct Row {
    label: String,
    /// Prompt tokens as the server ran them (its tokenization may reuse sampled tokens).
    prompt: usize,
    cached: usize,
    new_tokens: usize,
    /// Tokens the previous answer was sampled as (the slack above).
    answer_slack: usize,
    ttft_ms: f64,
}

/// What one streamed request returned.
struct Answer {
    thinking: String,
    text: String,
    prompt: usize,
    cached: usize,
    output_tokens: usize,
    ttft_ms: f64,
}

/// Streams one request.
async fn send(s: &TestServer, body: &Value) -> Answer {
    let t = Instant::now();
    let r = reqwest::Client::new().post(format!("{}/v1/messages", s.url)).json(body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let mut resp = r;
    let mut buf = String::new();
    let mut ttft = None;
    while let Some(chunk) = resp.chunk().await.unwrap() {
        buf.push_str(&String::from_utf8_lossy(&chunk));
        if ttft.is_none() && buf.contains("content_block_delta") {
            ttft = Some(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    let events = common::parse_sse(&buf);
    let data: Vec<Value> = events.iter().map(|(_, d)| serde_json::from_str(d).unwrap()).collect();
    let usage = &data[0]["message"]["usage"];
    let cached = usage["cache_read_input_tokens"].as_u64().unwrap() as usize;
    let prompt = cached + usage["input_tokens"].as_u64().unwrap() as usize;
    let output_tokens = data.iter().find(|d| d["type"] == "message_delta").unwrap()["usage"]["output_tokens"].as_u64().unwrap() as usize;
    let mut thinking = String::new();
    let mut text = String::new();
    for d in &data {
        match d["delta"]["type"].as_str() {
            Some("thinking_delta") => thinking += d["delta"]["thinking"].as_str().unwrap(),
            Some("text_delta") => text += d["delta"]["text"].as_str().unwrap(),
            _ => {}
        }
    }
    Answer { thinking, text, prompt, cached, output_tokens, ttft_ms: ttft.unwrap_or(t.elapsed().as_secs_f64() * 1e3) }
}

/// The assistant turn a client sends back: what the model said, plus the tool call the agent
/// "made" (the random model never calls tools itself).
fn assistant_turn(thinking: &str, text: &str, turn: usize) -> Value {
    let mut content = Vec::new();
    if !thinking.is_empty() {
        content.push(json!({"type": "thinking", "thinking": thinking, "signature": "sig"}));
    }
    if !text.is_empty() {
        content.push(json!({"type": "text", "text": text}));
    }
    content.push(json!({"type": "tool_use", "id": format!("toolu_{turn:04}"), "name": "Bash", "input": {"command": format!("cargo test -p crate{turn}")}}));
    json!({"role": "assistant", "content": content})
}

fn tool_result(turn: usize) -> Value {
    let out: String = (0..25).map(|i| format!("test module{turn}::case{i} ... ok\n")).collect();
    json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": format!("toolu_{turn:04}"), "content": out}]})
}

#[tokio::test(flavor = "multi_thread")]
async fn scripted_agent_session_prefills_only_new_tokens() {
    let kv = tempfile::tempdir().unwrap();
    let sys = system();
    let mut s = start(kv.path()).await;
    let mut rows: Vec<Row> = Vec::new();
    let mut messages = vec![json!({"role": "user", "content": "Fix the failing tests in the parser crate."})];
    let mut prev: Option<Vec<u32>> = None;
    let mut prev_answer = 0;
    let mut main_rows = Vec::new();
    for turn in 0..9 {
        if turn == 6 {
            // Restart: the server saves its live sessions; the new one starts with empty memory.
            s.stop().await.unwrap();
            s = start(kv.path()).await;
        }
        let body = request(&sys, &messages);
        let prompt = rendered(&body);
        let a = send(&s, &body).await;
        let new_tokens = prompt.len() - prev.as_ref().map_or(0, |p| lcp(&prompt, p));
        let label = if turn == 6 { "main after restart".to_owned() } else { format!("main turn {turn}") };
        main_rows.push(rows.len());
        rows.push(Row { label, prompt: a.prompt, cached: a.cached, new_tokens, answer_slack: prev_answer, ttft_ms: a.ttft_ms });
        if turn == 4 {
            // Regenerate: the same request again.
            let r = send(&s, &body).await;
            main_rows.push(rows.len());
            rows.push(Row { label: "main regenerate".into(), prompt: r.prompt, cached: r.cached, new_tokens: 0, answer_slack: 0, ttft_ms: r.ttft_ms });
        }
        if turn % 3 == 2 {
            let title = json!({"model": "deepseek-v4-flash", "max_tokens": 8, "stream": true, "system": "Write a 5-word title.",
                "messages": [{"role": "user", "content": "Fix the failing tests in the parser crate."}]});
            let r = send(&s, &title).await;
            rows.push(Row { label: format!("title side request (turn {turn})"), prompt: r.prompt, cached: r.cached, new_tokens: r.prompt, answer_slack: 0, ttft_ms: r.ttft_ms });
            let sub = request(&sys, &[json!({"role": "user", "content": format!("Sub-agent {turn}: find every use of the parser API.")})]);
            let p = rendered(&sub);
            let r = send(&s, &sub).await;
            rows.push(Row { label: format!("sub-agent (turn {turn})"), prompt: r.prompt, cached: r.cached, new_tokens: p.len() - lcp(&p, &prompt), answer_slack: 0, ttft_ms: r.ttft_ms });
        }
        messages.push(assistant_turn(&a.thinking, &a.text, turn));
        messages.push(tool_result(turn));
        prev = Some(prompt);
        prev_answer = a.output_tokens;
    }
    s.stop().await.unwrap();

    let total: usize = rows.iter().map(|r| r.prompt).sum();
    let cached: usize = rows.iter().map(|r| r.cached).sum();
    let cold = rows[0].ttft_ms;
    let hits: Vec<f64> = main_rows[1..].iter().map(|&i| rows[i].ttft_ms).collect();
    if let Ok(path) = std::env::var("DSV4_BENCH_OUT") {
        let mut csv = String::from("request,prompt_tokens,cached_tokens,prefilled_tokens,new_tokens,previous_answer_tokens,ttft_ms\n");
        for r in &rows {
            csv += &format!("{},{},{},{},{},{},{:.1}\n", r.label, r.prompt, r.cached, r.prompt - r.cached, r.new_tokens, r.answer_slack, r.ttft_ms);
        }
        csv += &format!("# all requests: {cached} of {total} prompt tokens from cache ({:.1}%)\n", 100.0 * cached as f64 / total as f64);
        csv += &format!("# ttft cold {cold:.1} ms, main-turn hits median {:.1} ms\n", median(&hits));
        std::fs::write(path, csv).unwrap();
    }
    for &i in &main_rows[1..] {
        let r = &rows[i];
        let prefilled = r.prompt - r.cached;
        assert!(prefilled <= r.new_tokens + 1 + r.answer_slack, "{}: prefilled {prefilled} of {} prompt tokens, {} new", r.label, r.prompt, r.new_tokens);
    }
    // Side requests did not evict the main conversation, and most tokens came from cache.
    assert!(cached as f64 > 0.7 * total as f64, "{cached} of {total} prompt tokens from cache");
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}
