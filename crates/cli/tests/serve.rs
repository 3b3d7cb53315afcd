//! `dsv4 serve` as a user starts it: `--demo`, health, one request per protocol, `--trace`,
//! and a clean exit on SIGTERM that saves resident sessions to the disk cache.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One HTTP/1.1 request on a fresh connection; returns (status, body).
fn http(port: u16, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.split_whitespace().nth(1)?.parse().ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
    Some((status, if chunked { dechunk(body) } else { body.to_owned() }))
}

/// The body of a chunked response, de-chunked (enough for small JSON answers).
fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 {
            break;
        }
        out.push_str(&after[..n]);
        rest = &after[n + 2..];
    }
    out
}

#[test]
fn serve_demo_answers_every_protocol_and_exits_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let trace = dir.path().join("trace.jsonl");
    let kv = dir.path().join("kv");
    let mut child = Command::new(env!("CARGO_BIN_EXE_dsv4"))
        .args(["serve", "--demo", "--port", &port.to_string(), "--ctx", "4096", "--trace", trace.to_str().unwrap()])
        .args(["--kv-disk-dir", kv.to_str().unwrap()])
        .env("XDG_CACHE_HOME", dir.path().join("cache"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    loop {
        if let Some((200, _)) = http(port, "GET", "/health", "") {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(60), "server not ready");
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            panic!("server exited with {status}: {err}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let long = "Explain this repository in detail please. ".repeat(80);
    let requests = [
        ("/v1/chat/completions", format!(r#"{{"model":"deepseek-chat","max_tokens":4,"messages":[{{"role":"user","content":"{long}"}}]}}"#), "chat.completion"),
        ("/v1/messages", r#"{"model":"deepseek-v4-flash","max_tokens":4,"messages":[{"role":"user","content":"hi"}]}"#.to_owned(), "\"type\":\"message\""),
        ("/v1/responses", r#"{"model":"deepseek-v4-flash","max_output_tokens":4,"input":"hi"}"#.to_owned(), "\"object\":\"response\""),
        ("/v1/completions", r#"{"prompt":"Once upon a time","max_tokens":4}"#.to_owned(), "text_completion"),
    ];
    for (path, body, marker) in &requests {
        let (status, out) = http(port, "POST", path, body).expect("request failed");
        assert_eq!(status, 200, "{path}: {out}");
        assert!(out.contains(marker), "{path}: {out}");
    }
    let (status, metrics) = http(port, "GET", "/metrics", "").unwrap();
    assert_eq!(status, 200);
    assert!(metrics.contains("dsv4_requests_total{endpoint=\"messages\",status=\"200\"} 1"), "{metrics}");

    unsafe { libc_kill(child.id() as i32, 15) };
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(status.success(), "exit {status}: {err}");
    assert!(err.contains("demo model"), "the banner must say the demo model is noise: {err}");
    // The trace has the rendered prompt, the cache decision and the answer of each request.
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(&trace).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    for event in ["request", "cache", "generated"] {
        assert_eq!(lines.iter().filter(|l| l["event"] == event).count(), 4, "{event} lines in {lines:?}");
    }
    assert!(lines[0]["rendered"].as_str().unwrap().contains("Explain this repository"));
    // The long prompt was saved to the disk cache.
    assert!(std::fs::read_dir(&kv).unwrap().filter_map(Result::ok).any(|e| e.path().extension().is_some_and(|x| x == "dsv4kv")));
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

#[test]
fn backend_cuda_without_a_gpu_is_a_clear_error_and_auto_falls_back() {
    let dir = tempfile::tempdir().unwrap();
    let run = |backend: &str| {
        Command::new(env!("CARGO_BIN_EXE_dsv4"))
            .args(["chat", "--demo", "--backend", backend, "-n", "2", "-p", "hi"])
            .env("XDG_CACHE_HOME", dir.path())
            .output()
            .unwrap()
    };
    let cuda = run("cuda");
    let err = String::from_utf8_lossy(&cuda.stderr);
    if cuda.status.success() {
        eprintln!("SKIPPED: a GPU is present here ({err})");
        return;
    }
    assert!(err.contains("--backend cuda"), "{err}");
    let auto = run("auto");
    assert!(auto.status.success(), "{}", String::from_utf8_lossy(&auto.stderr));
}
