//! Several clients served together: on the real engine (tiny model, CPU) concurrent requests
//! get exactly the answers they get alone; on the scripted backend the batch bound, the
//! first-come queue and cancellation inside a running batch.
//!
//! `DSV4_BENCH_OUT=FILE` also writes the timing of the real-engine run (8 streams at once vs
//! one after another) as CSV: that is the benchmark in `bench/`, not an assertion.

mod common;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{ids, tok, TestServer};
use dsv4_model::Numerics;
use dsv4_server::scripted::ScriptedBackend;
use dsv4_server::{EngineOptions, End, ModelBackend};
use serde_json::{json, Value};

const STREAMS: usize = 8;

async fn engine_server(max_active: usize) -> TestServer {
    let opts = EngineOptions { ctx: 4096, numerics: Numerics::Official, loop_guard: false, sessions: max_active, max_active, prefill_chunk: 512 };
    let backend = ModelBackend::new(dsv4_engine::Runner::cpu(common::tiny_model(5)), tok(), opts, None, Box::new(|_| {}));
    TestServer::start(Box::new(backend), common::config(), Arc::new(Mutex::new(Vec::new())), Duration::ZERO).await
}

/// Request `i`: its own question, greedy or seeded sampling, streamed.
fn request(i: usize, max_tokens: usize) -> Value {
    let mut body = json!({"model": "deepseek-chat", "stream": true, "max_tokens": max_tokens,
        "messages": [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": format!("Question number {i}: {}", "tell me more ".repeat(i * 7))}]});
    if i % 2 == 1 {
        body["temperature"] = json!(0.8);
        body["seed"] = json!(40 + i);
    } else {
        body["temperature"] = json!(0);
    }
    body
}

/// The streamed answer's text.
fn content(events: &[(Option<String>, String)]) -> String {
    events
        .iter()
        .filter(|(_, d)| d != "[DONE]")
        .filter_map(|(_, d)| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| v["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_streams_get_the_answers_they_get_alone() {
    let max_tokens = 48;
    // One after another: each request alone in the batch.
    let s = engine_server(1).await;
    let t = Instant::now();
    let mut alone = Vec::new();
    for i in 0..STREAMS {
        alone.push(content(&s.stream("/v1/chat/completions", &request(i, max_tokens)).await));
    }
    let sequential = t.elapsed();
    s.stop().await.unwrap();

    // All at once on a fresh server that batches them.
    let s = Arc::new(engine_server(STREAMS).await);
    let peak = Arc::new(Mutex::new(0.0f64));
    let t = Instant::now();
    let tasks: Vec<_> = (0..STREAMS)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move { content(&s.stream("/v1/chat/completions", &request(i, max_tokens)).await) })
        })
        .collect();
    let watch = {
        let (s, peak) = (s.clone(), peak.clone());
        tokio::spawn(async move {
            for _ in 0..2000 {
                let a = s.metric("dsv4_active_requests").await;
                {
                    let mut p = peak.lock().unwrap();
                    *p = p.max(a);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let mut together = Vec::new();
    for task in tasks {
        together.push(task.await.unwrap());
    }
    let concurrent = t.elapsed();
    watch.abort();
    let _ = watch.await;
    for i in 0..STREAMS {
        assert!(!alone[i].is_empty(), "request {i} produced no text");
        assert_eq!(together[i], alone[i], "request {i} answered differently when batched");
    }
    let peak = *peak.lock().unwrap();
    assert!(peak >= 4.0, "the requests were not run together (at most {peak} active)");
    if let Ok(path) = std::env::var("DSV4_BENCH_OUT") {
        let csv = format!(
            "streams,max_tokens,sequential_s,concurrent_s,speedup,peak_active\n{STREAMS},{max_tokens},{:.3},{:.3},{:.2},{peak}\n",
            sequential.as_secs_f64(),
            concurrent.as_secs_f64(),
            sequential.as_secs_f64() / concurrent.as_secs_f64()
        );
        std::fs::write(&path, csv).unwrap();
    }
    eprintln!("{STREAMS} streams x {max_tokens} tokens: one after another {sequential:?}, together {concurrent:?}");
    Arc::try_unwrap(s).ok().expect("tasks done").stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn at_most_max_active_run_and_the_rest_wait_their_turn() {
    let script = ids(&"word ".repeat(20));
    let text = tok().decode_lossy(&script);
    let backend = ScriptedBackend::fixed(script.clone()).with_delays(Duration::ZERO, Duration::from_millis(20)).with_max_active(2);
    let started = backend.started();
    let s = Arc::new(TestServer::scripted(backend, common::config()).await);
    let body = json!({"model": "deepseek-chat", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let t = Instant::now();
    let tasks: Vec<_> = (0..3)
        .map(|_| {
            let (s, body) = (s.clone(), body.clone());
            tokio::spawn(async move { content(&s.stream("/v1/chat/completions", &body).await) })
        })
        .collect();
    // Two run together (20 tokens every 20 ms: ~0.4 s each); the third waits for a place.
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(started.load(Ordering::SeqCst), 2, "max_active 2 admitted another job");
    assert_eq!(s.metric("dsv4_queue_depth").await, 1.0);
    assert_eq!(s.metric("dsv4_active_requests").await, 2.0);
    for task in tasks {
        assert_eq!(task.await.unwrap(), text);
    }
    // Together the first two take one job's time; the third follows: about two jobs' time,
    // far less than three (generous bound for a loaded CI machine).
    let took = t.elapsed();
    assert!(took < Duration::from_millis(1150), "three 0.4 s jobs with two at once took {took:?}");
    let jobs = s.jobs();
    assert_eq!(jobs.len(), 3);
    assert!(jobs.iter().all(|j| j.end == Some(End::Eos) && j.emitted == script));
    Arc::try_unwrap(s).ok().expect("tasks done").stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_leaving_drops_its_job_from_the_batch_and_the_others_go_on() {
    let script = ids(&"word ".repeat(400));
    let backend = ScriptedBackend::fixed(script.clone()).with_delays(Duration::ZERO, Duration::from_millis(5)).with_max_active(4);
    let s = Arc::new(TestServer::scripted(backend, common::config()).await);
    let body = json!({"model": "deepseek-chat", "stream": true, "max_tokens": 300, "messages": [{"role": "user", "content": "hi"}]});
    let stay = {
        let (s, body) = (s.clone(), body.clone());
        tokio::spawn(async move { content(&s.stream("/v1/chat/completions", &body).await) })
    };
    // The second client reads a few tokens of its stream, then hangs up.
    let resp = reqwest::Client::new().post(format!("{}/v1/chat/completions", s.url)).json(&body).send().await.unwrap();
    let mut resp = resp;
    let mut seen = String::new();
    while seen.matches("\"content\"").count() < 4 {
        let chunk = resp.chunk().await.unwrap().expect("stream ended early");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    let left = Instant::now();
    drop(resp);
    let t = Instant::now();
    while s.metric("dsv4_cancelled_running_total").await < 1.0 {
        assert!(t.elapsed() < Duration::from_secs(3), "the departed client's job was not cancelled");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(left.elapsed() < Duration::from_secs(1), "cancelled after {:?}", left.elapsed());
    let kept = stay.await.unwrap();
    assert_eq!(kept, tok().decode_lossy(&script[..300]), "the remaining client's answer was cut");
    let jobs = s.wait_jobs(2, Duration::from_secs(5)).await;
    // The job of a client that hangs up ends at the failed send (Stopped) or at the next check
    // between steps (Cancelled); the metric above counts both as cancellations.
    assert!(jobs.iter().any(|j| matches!(j.end, Some(End::Cancelled | End::Stopped))), "{:?}", jobs.iter().map(|j| j.end).collect::<Vec<_>>());
    assert!(jobs.iter().any(|j| j.end == Some(End::Length) && j.emitted.len() == 300));
    Arc::try_unwrap(s).ok().expect("tasks done").stop().await.unwrap();
}
