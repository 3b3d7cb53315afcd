//! `dsv4 serve --demo` driven by the official OpenAI and Anthropic Python SDKs
//! (`crates/server/tests/sdk/test_sdks.py`): every endpoint, streaming and not, token
//! accounting, event order and typed errors, as real clients see them.
//!
//! Needs a Python with pinned `openai` and `anthropic` packages, named by `DSV4_TEST_PYTHON`;
//! `scripts/test` installs them into `target/test-venv` and sets it. Without it the test says
//! so and passes, so a plain `cargo nextest run` works offline.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const API_KEY: &str = "sdk-test-key";
const CTX: usize = 4096;

/// The server process, killed when the test ends however it ends.
struct Server {
    child: Child,
    log: PathBuf,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn free_port() -> u16 {
    // The port is free once the listener is dropped; another process could take it before the
    // server binds, which `start` detects and retries.
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `GET /health` status code, or None when nothing answers yet.
fn health(port: u16) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(format!("GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n").as_bytes()).ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    buf.split_whitespace().nth(1)?.parse().ok()
}

fn start(dir: &Path) -> Server {
    let mut last = String::new();
    for attempt in 0..3 {
        let port = free_port();
        let log = dir.join(format!("server-{attempt}.log"));
        let f = File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_dsv4"))
            .args(["serve", "--demo", "--port", &port.to_string(), "--ctx", &CTX.to_string(), "--api-key", API_KEY])
            .env_remove("DSV4_API_KEY")
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .expect("starting dsv4 serve");
        let mut server = Server { child, log, port };
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            if let Some(status) = server.child.try_wait().unwrap() {
                last = format!("dsv4 serve exited ({status}) before it was healthy:\n{}", server.log());
                break;
            }
            if health(port) == Some(200) {
                return server;
            }
            if Instant::now() > deadline {
                panic!("dsv4 serve was not healthy within 180 s:\n{}", server.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if !last.contains("listening on") {
            break;
        }
    }
    panic!("{last}");
}

/// Runs `cmd` with its stdout and stderr in one file; kills it after `limit`.
fn run_logged(mut cmd: Command, log: &Path, limit: Duration) -> (Option<std::process::ExitStatus>, String) {
    let f = File::create(log).unwrap();
    let mut child = cmd.stdin(Stdio::null()).stdout(f.try_clone().unwrap()).stderr(f).spawn().expect("starting the SDK tests");
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    (status, std::fs::read_to_string(log).unwrap_or_default())
}

#[test]
fn official_python_sdks_against_the_demo_server() {
    let Some(python) = std::env::var_os("DSV4_TEST_PYTHON").filter(|p| !p.is_empty()) else {
        eprintln!(
            "SKIPPED: DSV4_TEST_PYTHON is not set (scripts/test sets it to a venv with the pinned openai and anthropic SDKs); \
             the official-SDK protocol tests did not run"
        );
        return;
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../server/tests/sdk/test_sdks.py");
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let mut cmd = Command::new(&python);
    cmd.arg(&script)
        .args(["--base-url", &format!("http://127.0.0.1:{}", server.port), "--api-key", API_KEY, "--ctx", &CTX.to_string()])
        // The SDKs must talk to our server only, whatever the developer's environment says.
        .env_remove("OPENAI_BASE_URL")
        .env_remove("ANTHROPIC_BASE_URL")
        .env_remove("OPENAI_API_KEY")
        .env_remove("ANTHROPIC_API_KEY")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .env("PYTHONUNBUFFERED", "1");
    let (status, out) = run_logged(cmd, &dir.path().join("sdk.log"), Duration::from_secs(600));
    match status {
        Some(s) if s.success() => {
            // The script's summary line, for the test log.
            for line in out.lines().filter(|l| l.starts_with("XPASS") || l.starts_with("known server bugs") || l.contains(" passed, ")) {
                eprintln!("{line}");
            }
        }
        Some(s) => panic!("the SDK tests failed ({s}):\n{out}\n--- server log ---\n{}", server.log()),
        None => panic!("the SDK tests did not finish within 600 s:\n{out}\n--- server log ---\n{}", server.log()),
    }
}
