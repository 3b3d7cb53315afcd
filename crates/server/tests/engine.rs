//! The server on the real engine (tiny synthetic model): prefix reuse reported in usage,
//! side requests kept apart, deterministic greedy output, and the disk cache across a restart.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{tok, TestServer};
use dsv4_engine::DiskCache;
use dsv4_model::{Model, Numerics};
use dsv4_server::{EngineOptions, ModelBackend};
use serde_json::{json, Value};

fn model() -> Arc<Model> {
    common::tiny_model(3)
}

async fn start(disk: Option<&std::path::Path>) -> TestServer {
    let m = model();
    let disk = disk.map(|d| Arc::new(DiskCache::open(d, 1 << 30, &m, Numerics::Official).unwrap()));
    let opts = EngineOptions { ctx: 4096, numerics: Numerics::Official, loop_guard: false, sessions: 3, max_active: 3, prefill_chunk: 256 };
    let backend = ModelBackend::new(dsv4_engine::Runner::cpu(m), tok(), opts, disk, Box::new(|_| {}));
    TestServer::start(Box::new(backend), common::config(), Arc::new(Mutex::new(Vec::new())), Duration::ZERO).await
}

fn cached(v: &Value) -> u64 {
    v["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn conversation_turns_reuse_the_live_session_and_greedy_is_deterministic() {
    let s = start(None).await;
    let system = "You are a coding agent. ".repeat(40);
    let mut messages = vec![json!({"role": "system", "content": system}), json!({"role": "user", "content": "List the files."})];
    let req = |messages: &Vec<Value>| json!({"model": "deepseek-chat", "temperature": 0, "max_tokens": 12, "messages": messages});
    let (status, first) = s.post("/v1/chat/completions", &req(&messages)).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(cached(&first), 0);
    let p1 = first["usage"]["prompt_tokens"].as_u64().unwrap();
    // Same request again (a retry): identical greedy answer, all but the last token cached.
    let (_, again) = s.post("/v1/chat/completions", &req(&messages)).await;
    assert_eq!(again["choices"][0]["message"]["content"], first["choices"][0]["message"]["content"]);
    assert_eq!(cached(&again), p1 - 1);
    // A title side request in between, then the next turn: the conversation is still live.
    let (status, _) = s.post("/v1/chat/completions", &json!({"model": "deepseek-chat", "max_tokens": 5, "messages": [{"role": "user", "content": "Title for: list files"}]})).await;
    assert_eq!(status, 200);
    messages.push(json!({"role": "assistant", "content": first["choices"][0]["message"]["content"]}));
    messages.push(json!({"role": "user", "content": "Now open the first one."}));
    let (_, second) = s.post("/v1/chat/completions", &req(&messages)).await;
    let p2 = second["usage"]["prompt_tokens"].as_u64().unwrap();
    // The previous prompt is never prefilled again. (How much of the answer is reused depends
    // on whether the random model's answer survives the round trip through JSON: a token
    // that is half a UTF-8 character comes back as U+FFFD.)
    assert!(cached(&second) >= p1 - 1, "next turn re-prefilled: cached {} of {p2} (first prompt {p1})", cached(&second));
    assert!(s.metric("dsv4_kv_cache_lookups_total{result=\"hit\",source=\"live\"}").await >= 2.0);
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn disk_cache_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    // Long enough to be worth a file (engine::disk::MIN_SAVE_TOKENS).
    let content = "Explain the repository layout in detail. ".repeat(90);
    let req = json!({"model": "deepseek-chat", "temperature": 0, "max_tokens": 6, "messages": [{"role": "user", "content": content}]});
    let s = start(Some(dir.path())).await;
    let (status, cold) = s.post("/v1/chat/completions", &req).await;
    assert_eq!(status, 200, "{cold}");
    assert_eq!(cached(&cold), 0);
    s.stop().await.unwrap();
    assert!(std::fs::read_dir(dir.path()).unwrap().count() > 0, "nothing saved to disk");
    // A new server process (fresh memory) restores the prompt from disk.
    let s = start(Some(dir.path())).await;
    let (_, warm) = s.post("/v1/chat/completions", &req).await;
    let prompt = warm["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(cached(&warm) + 1 >= prompt && cached(&warm) > 500, "restored {} of {prompt}", cached(&warm));
    assert_eq!(warm["choices"][0]["message"]["content"], cold["choices"][0]["message"]["content"]);
    assert_eq!(s.metric("dsv4_kv_cache_lookups_total{result=\"hit\",source=\"disk\"}").await, 1.0);
    // The worker refreshes the disk gauges after each job, just after answering it.
    let t = std::time::Instant::now();
    while s.metric("dsv4_kv_disk_bytes").await == 0.0 {
        assert!(t.elapsed() < Duration::from_secs(5), "disk bytes never reported");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(s.metric("dsv4_kv_disk_files").await >= 1.0);
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_holding_the_text_under_other_tokens_is_reused() {
    let s = start(None).await;
    let t = tok();
    let sp = t.specials();
    let words = "Every character of this sentence is its own token in the live session. ".repeat(3);
    // The live session holds the rendered prompt's first part tokenized character by
    // character: the same text as the canonical tokens, none of the same ids.
    let mut charwise = vec![sp.bos, sp.user];
    for c in words.chars() {
        charwise.extend(t.encode(&c.to_string()));
    }
    let (status, r) = s.post("/v1/completions", &json!({"prompt": charwise, "max_tokens": 1, "temperature": 0})).await;
    assert_eq!(status, 200, "{r}");
    let req = json!({"model": "deepseek-chat", "max_tokens": 2, "messages": [{"role": "user", "content": format!("{words} And a question?")}]});
    let (status, r) = s.post("/v1/chat/completions", &req).await;
    assert_eq!(status, 200, "{r}");
    let canonical = t.encode(&words).len() + 2;
    assert!(canonical < charwise.len() / 2);
    let got = cached(&r) as usize;
    assert!(got + 1 >= charwise.len(), "reused {got} tokens; the session held {} tokens of the prompt's text", charwise.len());
    // The prompt the engine ran holds the session's own tokens.
    assert!(r["usage"]["prompt_tokens"].as_u64().unwrap() as usize > charwise.len());
    s.stop().await.unwrap();
}
