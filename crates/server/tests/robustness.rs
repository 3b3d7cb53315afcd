//! What a server must survive: bad input, missing keys, clients that leave, long prefills,
//! shutdown while streaming, and hundreds of concurrent mixed requests.

mod common;

use std::time::{Duration, Instant};

use common::{ids, TestServer};
use dsv4_server::scripted::ScriptedBackend;
use dsv4_server::{End, ServerConfig};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn raw(s: &TestServer, path: &str, content_type: &str, body: &[u8]) -> (u16, Value) {
    let r = reqwest::Client::new().post(format!("{}{path}", s.url)).header("content-type", content_type).body(body.to_vec()).send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {text:?}")))
}

fn openai_message(v: &Value) -> &str {
    v["error"]["message"].as_str().unwrap_or_else(|| panic!("not an OpenAI error: {v}"))
}

fn anthropic_message(v: &Value) -> &str {
    assert_eq!(v["type"], "error", "not an Anthropic error: {v}");
    v["error"]["message"].as_str().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_named_4xx_errors_and_the_server_keeps_serving() {
    let cfg = ServerConfig { body_limit: 64 << 10, ..common::config() };
    let s = TestServer::scripted(ScriptedBackend::fixed(ids("fine")), cfg).await;
    let chat = "/v1/chat/completions";
    // (path, body, expected status, a word the message must contain)
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (chat, b"{\"model\": \"m\", \"messages\": [".to_vec(), 400, "EOF"),
        (chat, b"not json at all".to_vec(), 400, "expected"),
        (chat, b"[1, 2]".to_vec(), 400, "invalid"),
        (chat, br#"{"model": "m"}"#.to_vec(), 400, "messages"),
        (chat, br#"{"model": "m", "messages": "hello"}"#.to_vec(), 400, "invalid"),
        (chat, br#"{"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": -5}"#.to_vec(), 400, "max_tokens"),
        (chat, br#"{"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1e30}"#.to_vec(), 400, "max_tokens"),
        (chat, br#"{"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}"#.to_vec(), 400, "temperature"),
        (chat, br#"{"model": "m", "messages": [{"role": "user", "content": "hi"}], "top_p": 7}"#.to_vec(), 400, "top_p"),
        (chat, br#"{"model": "m", "messages": [{"role": "wizard", "content": "hi"}]}"#.to_vec(), 400, "wizard"),
        (chat, br#"{"model": "m", "messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json_object"}}"#.to_vec(), 400, "response_format"),
        (chat, b"{\"model\": \"m\", \"messages\": [{\"role\": \"user\", \"content\": \"\xff\xfe\"}]}".to_vec(), 400, "unicode"),
        (chat, format!("{{\"model\": \"m\", \"messages\": [{{\"role\": \"user\", \"content\": \"{}\"}}]}}", "a".repeat(70 << 10)).into_bytes(), 413, "limit"),
        ("/v1/completions", br#"{"prompt": "hi", "max_tokens": -1}"#.to_vec(), 400, "negative"),
        ("/v1/completions", br#"{"prompt": "hi", "n": 3}"#.to_vec(), 400, "n:"),
        ("/v1/completions", br#"{"prompt": [999999999]}"#.to_vec(), 400, "vocabulary"),
        ("/v1/completions", br#"{"max_tokens": 3}"#.to_vec(), 400, "prompt"),
        ("/v1/responses", br#"{"model": "m"}"#.to_vec(), 400, "input"),
    ];
    for (path, body, status, word) in &cases {
        let (got, v) = raw(&s, path, "application/json", body).await;
        assert_eq!(got, *status, "{path} {:?}: {v}", String::from_utf8_lossy(&body[..body.len().min(120)]));
        let msg = openai_message(&v);
        assert!(msg.to_lowercase().contains(&word.to_lowercase()), "{path}: message {msg:?} does not name {word:?}");
    }
    // Anthropic: its own error shape, including a tool result that answers no call.
    let anthropic: Vec<(Vec<u8>, u16, &str)> = vec![
        (br#"{"model": "m", "max_tokens": 5}"#.to_vec(), 400, "messages"),
        (br#"{"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_nope", "content": "42"}]}]}"#.to_vec(), 400, "toolu_nope"),
        (br#"{"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": 17}]}"#.to_vec(), 400, "invalid"),
    ];
    for (body, status, word) in &anthropic {
        let (got, v) = raw(&s, "/v1/messages", "application/json", body).await;
        assert_eq!(got, *status, "{v}");
        let msg = anthropic_message(&v);
        assert!(msg.to_lowercase().contains(&word.to_lowercase()), "message {msg:?} does not name {word:?}");
    }
    // OpenAI tool result without a matching call.
    let (got, v) = s
        .post(
            "/v1/chat/completions",
            &json!({"model": "m", "messages": [{"role": "user", "content": "hi"}, {"role": "tool", "tool_call_id": "call_missing", "content": "42"}]}),
        )
        .await;
    assert_eq!(got, 400, "{v}");
    assert!(openai_message(&v).contains("tool_calls"), "{v}");
    // Unknown endpoint, unknown fields.
    let r = reqwest::get(format!("{}/v1/nothing", s.url)).await.unwrap();
    assert_eq!(r.status(), 404);
    let (got, v) = s.post("/v1/chat/completions", &json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "frobnicate": {"x": 1}})).await;
    assert_eq!(got, 200, "unknown fields must be ignored: {v}");
    // Nothing above except the last request reached the worker, and the server still works.
    assert_eq!(s.jobs().len(), 1);
    let (got, v) = s.post("/v1/chat/completions", &json!({"model": "deepseek-chat", "messages": [{"role": "user", "content": "hi"}]})).await;
    assert_eq!(got, 200, "{v}");
    assert_eq!(v["choices"][0]["message"]["content"], "fine");
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn api_key_and_cors() {
    let cfg = ServerConfig { api_key: Some("sekrit".into()), cors: true, ..common::config() };
    let s = TestServer::scripted(ScriptedBackend::fixed(ids("ok")), cfg).await;
    let c = reqwest::Client::new();
    let body = json!({"model": "deepseek-chat", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]});
    let r = c.post(format!("{}/v1/chat/completions", s.url)).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["type"], "authentication_error");
    let r = c.post(format!("{}/v1/messages", s.url)).header("x-api-key", "wrong").json(&body).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["type"], "authentication_error");
    let r = c.post(format!("{}/v1/chat/completions", s.url)).bearer_auth("sekrit").json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = c.post(format!("{}/v1/messages", s.url)).header("x-api-key", "sekrit").json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // Health needs no key; CORS headers everywhere, preflight answered without a key.
    let r = c.get(format!("{}/health", s.url)).header("origin", "http://example.com").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    let r = c
        .request(reqwest::Method::OPTIONS, format!("{}/v1/chat/completions", s.url))
        .header("origin", "http://example.com")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization, content-type")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "preflight: {}", r.status());
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    s.stop().await.unwrap();
}

/// Sends a request on a raw socket and returns the open connection.
async fn send(url: &str, path: &str, body: &Value) -> tokio::net::TcpStream {
    let addr = url.trim_start_matches("http://");
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = body.to_string();
    let req = format!("POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    sock.write_all(req.as_bytes()).await.unwrap();
    sock
}

/// Reads until `marker` appears.
async fn read_until(sock: &mut tokio::net::TcpStream, marker: &str) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains(marker) {
        let n = tokio::time::timeout(Duration::from_secs(10), sock.read(&mut buf)).await.expect("no response").unwrap();
        assert!(n > 0, "connection closed before {marker:?}");
        seen.extend_from_slice(&buf[..n]);
    }
}

/// Sends a request, optionally reads until `until`, then drops the connection.
async fn send_and_leave(url: &str, path: &str, body: &Value, until: Option<&str>) {
    let mut sock = send(url, path, body).await;
    if let Some(marker) = until {
        read_until(&mut sock, marker).await;
    }
}

async fn wait_for(what: &str, within: Duration, mut cond: impl AsyncFnMut() -> bool) -> Duration {
    let t = Instant::now();
    while !cond().await {
        assert!(t.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    t.elapsed()
}

#[tokio::test(flavor = "multi_thread")]
async fn disconnects_cancel_running_and_queued_work_within_a_second() {
    use std::sync::atomic::Ordering;
    // A 30 s "prefill": only cancellation can end these jobs in time.
    let backend = ScriptedBackend::fixed(ids("never")).with_delays(Duration::from_secs(30), Duration::ZERO);
    let started = backend.started();
    let s = TestServer::scripted(backend, common::config()).await;
    let chat = json!({"model": "deepseek-chat", "messages": [{"role": "user", "content": "hi"}]});
    let mut stream = chat.clone();
    stream["stream"] = json!(true);
    let running = |n: usize| {
        let started = started.clone();
        async move || started.load(Ordering::SeqCst) >= n
    };
    let cancelled = |n: f64| {
        let s = &s;
        async move || s.metric("dsv4_cancelled_running_total").await >= n
    };

    // Streaming: headers come at once, then the client leaves during the prefill.
    let t = Instant::now();
    let mut sock = send(&s.url, "/v1/chat/completions", &stream).await;
    read_until(&mut sock, "text/event-stream").await;
    assert!(t.elapsed() < Duration::from_secs(2), "SSE headers were not sent at once");
    wait_for("first job started", Duration::from_secs(5), running(1)).await;
    drop(sock);
    let took = wait_for("streaming job cancelled", Duration::from_secs(5), cancelled(1.0)).await;
    assert!(took < Duration::from_secs(1), "streaming job cancelled after {took:?}");

    // Non-streaming: the client leaves while its request is running.
    let sock = send(&s.url, "/v1/chat/completions", &chat).await;
    wait_for("second job started", Duration::from_secs(5), running(2)).await;
    drop(sock);
    let took = wait_for("non-streaming job cancelled", Duration::from_secs(5), cancelled(2.0)).await;
    assert!(took < Duration::from_secs(1), "non-streaming job cancelled after {took:?}");

    // Queued: a running job holds the worker; a second client queues and leaves; then the
    // first leaves too. The queued one never starts.
    let first = send(&s.url, "/v1/chat/completions", &stream).await;
    wait_for("third job started", Duration::from_secs(5), running(3)).await;
    let queued = send(&s.url, "/v1/chat/completions", &chat).await;
    wait_for("fourth job queued", Duration::from_secs(5), async || s.metric("dsv4_queue_depth").await == 1.0).await;
    drop(queued);
    drop(first);
    wait_for("third job cancelled", Duration::from_secs(5), cancelled(3.0)).await;
    wait_for("queued job dropped", Duration::from_secs(5), async || s.metric("dsv4_cancelled_queued_total").await == 1.0).await;
    assert_eq!(started.load(Ordering::SeqCst), 3, "the queued job of a departed client ran");
    assert!(s.jobs().iter().all(|j| j.end == Some(End::Cancelled)));
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_leaving_mid_answer_stops_generation_and_counts_as_cancelled() {
    let backend = ScriptedBackend::fixed(ids(&"word ".repeat(5000))).with_delays(Duration::ZERO, Duration::from_millis(2));
    let s = TestServer::scripted(backend, common::config()).await;
    let body = json!({"model": "deepseek-chat", "stream": true, "max_tokens": 4000, "messages": [{"role": "user", "content": "hi"}]});
    let mut sock = send(&s.url, "/v1/chat/completions", &body).await;
    // Each token is its own event ("word", " "): two words in a row in the raw bytes need two
    // tokens merged into one delta, which happens only now and then. The answer's first word
    // says generation is under way.
    read_until(&mut sock, "\"word").await;
    drop(sock);
    wait_for("cancelled", Duration::from_secs(3), async || s.metric("dsv4_cancelled_running_total").await == 1.0).await;
    let jobs = s.wait_jobs(1, Duration::from_secs(3)).await;
    assert!(matches!(jobs[0].end, Some(End::Stopped | End::Cancelled)), "{:?}", jobs[0].end);
    assert!(jobs[0].emitted.len() < 5000, "generation ran to the end after the client left");
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn keepalive_comments_during_a_long_prefill() {
    let backend = ScriptedBackend::fixed(ids("done")).with_delays(Duration::from_millis(2600), Duration::ZERO);
    let cfg = ServerConfig { keepalive: Duration::from_millis(500), ..common::config() };
    let s = TestServer::scripted(backend, cfg).await;
    let r = reqwest::Client::new()
        .post(format!("{}/v1/messages", s.url))
        .json(&json!({"model": "deepseek-chat", "max_tokens": 5, "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    let text = r.text().await.unwrap();
    let before_data = &text[..text.find("data:").unwrap()];
    assert!(before_data.matches(": keep-alive").count() >= 3, "keep-alives before the first event: {before_data:?}");
    assert!(text.contains("event: message_stop"));
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn health_is_503_while_loading() {
    let backend = ScriptedBackend::fixed(ids("x"));
    let records = backend.records();
    let s = TestServer::start(Box::new(backend), common::config(), records, Duration::from_millis(1500)).await;
    let r = reqwest::get(format!("{}/health", s.url)).await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "loading");
    let (status, v) = s.post("/v1/chat/completions", &json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]})).await;
    assert_eq!(status, 503);
    assert!(openai_message(&v).contains("loading"));
    s.wait_ready().await;
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_cancels_streams_and_returns() {
    let backend = ScriptedBackend::fixed(ids(&"word ".repeat(1000))).with_delays(Duration::ZERO, Duration::from_millis(20));
    let s = TestServer::scripted(backend, common::config()).await;
    let url = s.url.clone();
    let client = tokio::spawn(async move {
        let r = reqwest::Client::new()
            .post(format!("{url}/v1/chat/completions"))
            .json(&json!({"model": "deepseek-chat", "stream": true, "max_tokens": 2000, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        r.text().await.unwrap_or_default()
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    let records = s.records.clone();
    let t = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), s.stop()).await.expect("shutdown hung").unwrap();
    assert!(t.elapsed() < Duration::from_secs(3));
    let body = client.await.unwrap();
    assert!(body.contains("event: error") && body.contains("shutting down"), "stream did not end with a shutdown error: {:?}", &body[body.len().saturating_sub(400)..]);
    let jobs = records.lock().unwrap().clone();
    assert_eq!(jobs[0].end, Some(End::Cancelled));
    assert!(jobs[0].emitted.len() < 1000);
}

#[tokio::test(flavor = "multi_thread")]
async fn load_test_hundreds_of_mixed_connections() {
    let backend = ScriptedBackend::fixed(ids("alpha beta gamma delta epsilon zeta eta theta")).with_delays(Duration::ZERO, Duration::from_micros(200));
    let s = TestServer::scripted(backend, common::config()).await;
    let t = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..300usize {
        let url = s.url.clone();
        tasks.push(tokio::spawn(async move {
            let c = reqwest::Client::new();
            let chat = json!({"model": "deepseek-chat", "max_tokens": 6, "messages": [{"role": "user", "content": format!("hello {i}")}]});
            match i % 5 {
                0 => {
                    let r = c.post(format!("{url}/v1/chat/completions")).json(&chat).send().await.unwrap();
                    assert_eq!(r.status(), 200);
                    let v: Value = r.json().await.unwrap();
                    assert_eq!(v["choices"][0]["finish_reason"], "length");
                    assert_eq!(v["usage"]["completion_tokens"], 6);
                }
                1 => {
                    let mut b = chat.clone();
                    b["stream"] = json!(true);
                    let r = c.post(format!("{url}/v1/chat/completions")).json(&b).send().await.unwrap();
                    let ev = common::parse_sse(&r.text().await.unwrap());
                    assert_eq!(ev.last().unwrap().1, "[DONE]");
                }
                2 => {
                    let mut b = chat.clone();
                    b["stream"] = json!(true);
                    send_and_leave(&url, "/v1/chat/completions", &b, Some("text/event-stream")).await;
                }
                3 => {
                    let r = c.post(format!("{url}/v1/messages")).body("{\"broken").header("content-type", "application/json").send().await.unwrap();
                    assert_eq!(r.status(), 400);
                    assert_eq!(r.json::<Value>().await.unwrap()["type"], "error");
                }
                _ => {
                    let b = json!({"model": "deepseek-chat", "max_tokens": 6, "stream": true, "messages": [{"role": "user", "content": "hi"}]});
                    let r = c.post(format!("{url}/v1/messages")).json(&b).send().await.unwrap();
                    let ev = common::parse_sse(&r.text().await.unwrap());
                    assert_eq!(ev.first().unwrap().0.as_deref(), Some("message_start"));
                    assert_eq!(ev.last().unwrap().0.as_deref(), Some("message_stop"));
                }
            }
        }));
    }
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(60), task).await.expect("a request hung").unwrap();
    }
    assert!(t.elapsed() < Duration::from_secs(60));
    let r = reqwest::get(format!("{}/health", s.url)).await.unwrap();
    assert_eq!(r.status(), 200);
    // Departed clients' jobs drain from the queue (each is dropped or cancelled at once).
    wait_for("queue drained", Duration::from_secs(10), async || s.metric("dsv4_queue_depth").await == 0.0).await;
    // Every well-formed request was answered; departed clients' jobs ended (cancelled or done).
    assert_eq!(s.metric("dsv4_requests_total{endpoint=\"messages\",status=\"400\"}").await, 60.0);
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_clients_do_not_hold_up_others() {
    let backend = ScriptedBackend::fixed(ids(&"tok ".repeat(300)));
    let s = TestServer::scripted(backend, common::config()).await;
    let addr = s.url.trim_start_matches("http://").to_owned();
    // A client that sends half a body and stalls.
    let mut stalled = tokio::net::TcpStream::connect(&addr).await.unwrap();
    stalled
        .write_all(format!("POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{{\"model\":").as_bytes())
        .await
        .unwrap();
    // A streaming client that never reads its answer.
    let body = json!({"model": "deepseek-chat", "stream": true, "max_tokens": 300, "messages": [{"role": "user", "content": "hi"}]});
    let _reader = send(&s.url, "/v1/chat/completions", &body).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Others are served meanwhile, promptly.
    let t = Instant::now();
    for _ in 0..5 {
        let (status, v) = s.post("/v1/chat/completions", &json!({"model": "deepseek-chat", "max_tokens": 3, "messages": [{"role": "user", "content": "hi"}]})).await;
        assert_eq!(status, 200, "{v}");
    }
    assert!(t.elapsed() < Duration::from_secs(5), "served slowly: {:?}", t.elapsed());
    drop(stalled);
    s.stop().await.unwrap();
}
