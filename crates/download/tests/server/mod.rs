//! A small HTTP/1.1 server on 127.0.0.1 that imitates what the downloader
//! meets on Hugging Face: `/{repo}/resolve/main/{file}` answers either with the
//! bytes or with a 302 to a CDN path, and carries `X-Linked-Etag` (sha256) and
//! `X-Linked-Size` like the Hub. Knobs make it misbehave on purpose.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use sha2::{Digest, Sha256};

pub const REPO: &str = "antirez/deepseek-v4-gguf";

/// Deterministic pseudo-random bytes (splitmix64), so every run serves the same file.
pub fn synth_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut s = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        out.extend_from_slice(&z.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn sha256_hex(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeMode {
    Honor,
    /// Always answer 200 with the whole file.
    Ignore,
    /// Answer 206 starting at half the requested offset (consistent headers,
    /// wrong piece).
    WrongStart,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShaHeader {
    /// `X-Linked-Etag` and `ETag` with the true sha256 (the Hub's LFS reply).
    Linked,
    /// Only `ETag` with the sha256.
    EtagOnly,
    /// No checksum header at all.
    None,
    /// `X-Linked-Etag` with this value instead of the truth.
    Value(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Redirect {
    /// Serve bytes from the resolve URL itself.
    None,
    /// 302 to a relative `/cdn/<file>?sig=...` on the same server.
    Relative,
    /// 302 to `<base>/cdn/<file>?sig=...` (another server = another origin).
    To(String),
}

#[derive(Clone, Debug)]
pub struct Config {
    pub range: RangeMode,
    pub sha: ShaHeader,
    pub redirect: Redirect,
    /// Close the connection after this many body bytes, for the next `n` GETs.
    pub drop_after: Option<(u64, u32)>,
    /// Required `Authorization: Bearer <token>` on resolve URLs (401 otherwise).
    pub token: Option<String>,
    /// Accept, read the request, then never answer.
    pub stall: bool,
    /// Answer HEAD with 405.
    pub no_head: bool,
    /// `X-Linked-Size` to announce instead of the real size.
    pub fake_size: Option<u64>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            range: RangeMode::Honor,
            sha: ShaHeader::Linked,
            redirect: Redirect::None,
            drop_after: None,
            token: None,
            stall: false,
            no_head: false,
            fake_size: None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Logged {
    pub method: String,
    pub path: String,
    pub range: Option<String>,
    pub auth: Option<String>,
    pub status: u16,
}

pub struct Server {
    pub base: String,
    pub config: Arc<Mutex<Config>>,
    pub log: Arc<Mutex<Vec<Logged>>>,
    files: Arc<Mutex<HashMap<String, Vec<u8>>>>,
}

impl Server {
    pub fn start(config: Config) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let base = format!("http://{}", listener.local_addr().unwrap());
        let config = Arc::new(Mutex::new(config));
        let log = Arc::new(Mutex::new(Vec::new()));
        let files = Arc::new(Mutex::new(HashMap::new()));
        let (c, l, f) = (config.clone(), log.clone(), files.clone());
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (c, l, f) = (c.clone(), l.clone(), f.clone());
                thread::spawn(move || {
                    let _ = handle(stream, &c, &l, &f);
                });
            }
        });
        Server {
            base,
            config,
            log,
            files,
        }
    }

    pub fn add_file(&self, name: &str, bytes: Vec<u8>) {
        self.files.lock().unwrap().insert(name.to_string(), bytes);
    }

    pub fn set(&self, f: impl FnOnce(&mut Config)) {
        f(&mut self.config.lock().unwrap());
    }

    pub fn log(&self) -> Vec<Logged> {
        self.log.lock().unwrap().clone()
    }

    pub fn gets(&self) -> Vec<Logged> {
        self.log()
            .into_iter()
            .filter(|r| r.method == "GET")
            .collect()
    }

    pub fn clear_log(&self) {
        self.log.lock().unwrap().clear();
    }
}

fn handle(
    mut s: TcpStream,
    config: &Mutex<Config>,
    log: &Mutex<Vec<Logged>>,
    files: &Mutex<HashMap<String, Vec<u8>>>,
) -> std::io::Result<()> {
    // Bound every wait so a confused client can never hang the test.
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut req = Vec::new();
    let mut b = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut b)?;
        if n == 0 || req.len() > 64 * 1024 {
            return Ok(());
        }
        req.extend_from_slice(&b[..n]);
    }
    let text = String::from_utf8_lossy(&req).to_string();
    let mut lines = text.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let method = first.next().unwrap_or("").to_string();
    let path = first.next().unwrap_or("").to_string();
    let mut headers = HashMap::new();
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let cfg = config.lock().unwrap().clone();
    let mut entry = Logged {
        method: method.clone(),
        path: path.clone(),
        range: headers.get("range").cloned(),
        auth: headers.get("authorization").cloned(),
        status: 0,
    };
    if cfg.stall {
        log.lock().unwrap().push(entry);
        thread::sleep(Duration::from_secs(5));
        return Ok(());
    }
    let path_only = path.split('?').next().unwrap_or("");
    let resolve_prefix = format!("/{REPO}/resolve/main/");
    let (name, is_resolve) = if let Some(n) = path_only.strip_prefix(&resolve_prefix) {
        (n.to_string(), true)
    } else if let Some(n) = path_only.strip_prefix("/cdn/") {
        (n.to_string(), false)
    } else {
        (String::new(), false)
    };
    let body = files.lock().unwrap().get(&name).cloned();

    let mut extra: Vec<(String, String)> = Vec::new();
    let respond = |s: &mut TcpStream, status: u16, extra: &[(String, String)], len: u64| {
        let reason = match status {
            200 => "OK",
            206 => "Partial Content",
            302 => "Found",
            401 => "Unauthorized",
            404 => "Not Found",
            405 => "Method Not Allowed",
            416 => "Range Not Satisfiable",
            _ => "Other",
        };
        let mut h =
            format!("HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Length: {len}\r\n");
        for (k, v) in extra {
            h.push_str(&format!("{k}: {v}\r\n"));
        }
        h.push_str("\r\n");
        s.write_all(h.as_bytes())
    };

    if is_resolve {
        if let Some(tok) = &cfg.token {
            if entry.auth.as_deref() != Some(&format!("Bearer {tok}")) {
                entry.status = 401;
                log.lock().unwrap().push(entry);
                return respond(&mut s, 401, &[], 0);
            }
        }
    }
    let Some(body) = body else {
        entry.status = 404;
        log.lock().unwrap().push(entry);
        return respond(
            &mut s,
            404,
            &[("X-Error-Code".into(), "EntryNotFound".into())],
            0,
        );
    };
    if is_resolve {
        let sha = sha256_hex(&body);
        let size = cfg.fake_size.unwrap_or(body.len() as u64).to_string();
        match &cfg.sha {
            ShaHeader::Linked => {
                extra.push(("X-Linked-Etag".into(), format!("\"{sha}\"")));
                extra.push(("ETag".into(), format!("\"{sha}\"")));
                extra.push(("X-Linked-Size".into(), size));
            }
            ShaHeader::EtagOnly => extra.push(("ETag".into(), format!("\"{sha}\""))),
            ShaHeader::None => {}
            ShaHeader::Value(v) => {
                extra.push(("X-Linked-Etag".into(), format!("\"{v}\"")));
                extra.push(("X-Linked-Size".into(), size));
            }
        }
        let target = match &cfg.redirect {
            Redirect::None => None,
            Redirect::Relative => Some(format!("/cdn/{name}?sig=abc")),
            Redirect::To(b) => Some(format!("{b}/cdn/{name}?sig=abc")),
        };
        if let Some(t) = target {
            extra.push(("Location".into(), t));
            entry.status = 302;
            log.lock().unwrap().push(entry);
            return respond(&mut s, 302, &extra, 0);
        }
    } else {
        // The CDN has its own ETag format, deliberately 64 hex digits that are
        // not the sha256, to prove the client does not trust it.
        extra.push(("ETag".into(), format!("\"{}\"", "c".repeat(64))));
    }
    if method == "HEAD" && cfg.no_head {
        entry.status = 405;
        log.lock().unwrap().push(entry);
        return respond(&mut s, 405, &[], 0);
    }

    let len = body.len() as u64;
    let mut start = 0u64;
    let mut status = 200;
    if let Some(r) = entry.range.as_deref() {
        let from: Option<u64> = r
            .strip_prefix("bytes=")
            .and_then(|x| x.split('-').next())
            .and_then(|x| x.parse().ok());
        if let (Some(from), RangeMode::Honor | RangeMode::WrongStart) = (from, cfg.range) {
            if from >= len {
                entry.status = 416;
                log.lock().unwrap().push(entry);
                extra.push(("Content-Range".into(), format!("bytes */{len}")));
                return respond(&mut s, 416, &extra, 0);
            }
            start = if cfg.range == RangeMode::WrongStart {
                from / 2
            } else {
                from
            };
            status = 206;
            extra.push((
                "Content-Range".into(),
                format!("bytes {start}-{}/{len}", len - 1),
            ));
        }
    }
    extra.push(("Accept-Ranges".into(), "bytes".into()));
    let slice = &body[start as usize..];
    entry.status = status;
    respond(&mut s, status, &extra, slice.len() as u64)?;
    if method == "HEAD" {
        log.lock().unwrap().push(entry);
        return Ok(());
    }
    let cut = {
        let mut c = config.lock().unwrap();
        match &mut c.drop_after {
            Some((n, left)) if *left > 0 => {
                *left -= 1;
                Some(*n)
            }
            _ => None,
        }
    };
    log.lock().unwrap().push(entry);
    match cut {
        Some(n) => {
            let n = (n as usize).min(slice.len());
            s.write_all(&slice[..n])?;
            s.flush()?;
            s.shutdown(Shutdown::Both)?;
        }
        None => {
            for chunk in slice.chunks(64 * 1024) {
                s.write_all(chunk)?;
            }
        }
    }
    Ok(())
}
