//! The download itself: probe, resume from `<file>.part`, stream with a running
//! SHA-256, verify, then fsync and rename into place.
//!
//! Files in the download directory for `<file>`:
//! * `<file>.part`: bytes received so far (locked while a download runs);
//! * `<file>.part.meta`: the checksum and size the `.part` was started for, so a
//!   resume against a changed remote file starts over instead of splicing two
//!   versions together;
//! * `<file>.sha256-mismatch`: a complete download whose checksum was wrong,
//!   set aside so the next attempt starts clean but the bytes can be inspected.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::error::{io_err, DownloadError};
use crate::http::{self, Client, ClientConfig, Follow, Reply};
use crate::progress::{eta, Phase, Progress, RateMeter};
use crate::variant::{valid_file_name, Source, DEFAULT_BASE_URL, DEFAULT_REPO, DEFAULT_REVISION};

const BUF_SIZE: usize = 1 << 20;
const MAX_RETRY_DELAY: Duration = Duration::from_secs(60);

/// How to download. [`DownloadOptions::new`] gives the defaults for the real Hub.
#[derive(Clone)]
pub struct DownloadOptions {
    /// Scheme and host of the Hub, e.g. `https://huggingface.co`. Tests point it
    /// at a local server.
    pub base_url: String,
    /// `owner/name` of the repository.
    pub repo: String,
    /// Branch, tag or commit to fetch from.
    pub revision: String,
    /// Directory the file is written to (created if missing).
    pub dir: PathBuf,
    /// Expected SHA-256 (hex). When set it is the source of truth, and a server
    /// announcing a different one is refused before any byte is fetched.
    pub expected_sha256: Option<String>,
    /// Refuse to download when no checksum is known (none pinned, none
    /// announced). On by default; the Hub always announces one for GGUF files.
    pub require_checksum: bool,
    /// When the final file already exists, hash it and compare instead of
    /// trusting it (costs a full read: about a minute for 80 GiB).
    pub verify_existing: bool,
    /// Hugging Face token, sent as a bearer token to the Hub's origin only
    /// (never to the CDN it redirects to, whose URLs are presigned).
    pub token: Option<String>,
    /// HTTP(S) proxy URL, e.g. from `$HTTPS_PROXY`.
    pub proxy: Option<String>,
    pub connect_timeout: Duration,
    /// Longest silence tolerated while waiting for bytes.
    pub read_timeout: Duration,
    /// How many times a network failure is retried (resuming each time) before
    /// giving up; the `.part` is kept either way.
    pub retries: u32,
    /// First pause between retries; doubles each time, capped at one minute.
    pub retry_delay: Duration,
    /// Minimum time between two progress reports while transferring.
    pub progress_interval: Duration,
    pub user_agent: String,
}

// Written by hand so the token never lands in a log through `{:?}`.
impl std::fmt::Debug for DownloadOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DownloadOptions")
            .field("base_url", &self.base_url)
            .field("repo", &self.repo)
            .field("revision", &self.revision)
            .field("dir", &self.dir)
            .field("expected_sha256", &self.expected_sha256)
            .field("require_checksum", &self.require_checksum)
            .field("verify_existing", &self.verify_existing)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("proxy", &self.proxy)
            .field("connect_timeout", &self.connect_timeout)
            .field("read_timeout", &self.read_timeout)
            .field("retries", &self.retries)
            .field("retry_delay", &self.retry_delay)
            .field("progress_interval", &self.progress_interval)
            .field("user_agent", &self.user_agent)
            .finish()
    }
}

impl DownloadOptions {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        DownloadOptions {
            base_url: DEFAULT_BASE_URL.to_string(),
            repo: DEFAULT_REPO.to_string(),
            revision: DEFAULT_REVISION.to_string(),
            dir: dir.into(),
            expected_sha256: None,
            require_checksum: true,
            verify_existing: false,
            token: None,
            proxy: None,
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(60),
            retries: 5,
            retry_delay: Duration::from_secs(2),
            progress_interval: Duration::from_millis(200),
            user_agent: concat!("dsv4-download/", env!("CARGO_PKG_VERSION")).to_string(),
        }
    }

    fn client(&self) -> Result<Client, DownloadError> {
        Client::new(&ClientConfig {
            connect_timeout: self.connect_timeout,
            read_timeout: self.read_timeout,
            user_agent: &self.user_agent,
            proxy: self.proxy.as_deref(),
            token: self.token.as_deref(),
        })
    }
}

/// Where a finished download ended up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Downloaded {
    pub path: PathBuf,
    pub bytes: u64,
    /// SHA-256 of the file when it was hashed (always after a transfer; for an
    /// already present file only with `verify_existing`).
    pub sha256: Option<String>,
    /// Whether `sha256` was compared with an expected value and matched.
    pub verified: bool,
    /// Bytes reused from an earlier `.part` (0 for a fresh download).
    pub resumed_from: u64,
    /// The final file was already there; nothing was transferred.
    pub already_present: bool,
}

/// What the server says about a file before downloading it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteInfo {
    pub url: String,
    pub file: String,
    pub size: Option<u64>,
    /// SHA-256 announced by the server (`X-Linked-Etag`, else a sha256 `ETag`).
    pub sha256: Option<String>,
    /// False when the server refused HEAD (405/501); nothing is known then.
    pub probed: bool,
}

/// The URL and local file name `source` maps to under `opts`.
pub fn resolve(source: &Source, opts: &DownloadOptions) -> Result<(String, String), DownloadError> {
    match source {
        Source::Variant(v) => Ok((repo_url(opts, v.file_name())?, v.file_name().to_string())),
        Source::RepoFile(f) => {
            if !valid_file_name(f) {
                return Err(DownloadError::UnknownSource { name: f.clone() });
            }
            Ok((repo_url(opts, f)?, f.clone()))
        }
        Source::Url(u) => {
            let parsed = http::parse_http_url(u)?;
            let name = parsed
                .path_segments()
                .and_then(|mut s| s.next_back())
                .unwrap_or("")
                .to_string();
            if !valid_file_name(&name) {
                return Err(DownloadError::BadUrl {
                    url: u.clone(),
                    reason: "the URL path does not end in a usable file name".into(),
                });
            }
            Ok((u.clone(), name))
        }
    }
}

/// `{base}/{repo}/resolve/{revision}/{file}`, the Hub's download URL.
fn repo_url(opts: &DownloadOptions, file: &str) -> Result<String, DownloadError> {
    let mut u = http::parse_http_url(&opts.base_url)?;
    {
        let mut segs = u.path_segments_mut().map_err(|_| DownloadError::BadUrl {
            url: opts.base_url.clone(),
            reason: "cannot be a base URL".into(),
        })?;
        segs.pop_if_empty();
        for part in opts.repo.split('/').filter(|s| !s.is_empty()) {
            segs.push(part);
        }
        segs.push("resolve").push(&opts.revision).push(file);
    }
    Ok(u.to_string())
}

/// Ask the server for the file's size and checksum (one HEAD; same-origin
/// redirects are followed, the CDN is not contacted).
pub fn remote_info(source: &Source, opts: &DownloadOptions) -> Result<RemoteInfo, DownloadError> {
    let (url, file) = resolve(source, opts)?;
    probe(&opts.client()?, &url, &file)
}

fn probe(client: &Client, url: &str, file: &str) -> Result<RemoteInfo, DownloadError> {
    let reply = client.send("HEAD", url, None, Follow::SameOrigin)?;
    let mut info = RemoteInfo {
        url: url.to_string(),
        file: file.to_string(),
        size: reply.announced.linked_size,
        sha256: reply.announced.sha256(),
        probed: true,
    };
    match reply.status {
        200 => {
            if info.size.is_none() {
                info.size = content_length(&reply.response);
            }
        }
        // Stopped at a redirect to the CDN: the Hub's headers are all we need.
        300..=399 => {}
        // Servers that do not do HEAD: learn nothing, let the GET decide.
        405 | 501 => {
            info.probed = false;
            info.size = None;
            info.sha256 = None;
        }
        s => return Err(status_error(s, &reply, file)),
    }
    Ok(info)
}

fn content_length(r: &ureq::Response) -> Option<u64> {
    r.header("content-length")
        .and_then(|v| v.trim().parse().ok())
}

fn status_error(status: u16, reply: &Reply, file: &str) -> DownloadError {
    match status {
        404 | 410 => DownloadError::NotFound {
            file: file.to_string(),
            url: reply.url.clone(),
        },
        // On the CDN a 403 is about the presigned URL, not about the user's rights.
        401 | 403 if reply.same_origin => DownloadError::Unauthorized {
            status,
            url: reply.url.clone(),
        },
        _ => DownloadError::Http {
            status,
            url: reply.url.clone(),
        },
    }
}

fn normalize_sha(v: &str) -> Result<String, DownloadError> {
    let t = v.trim();
    if http::is_sha256_hex(t) {
        Ok(t.to_ascii_lowercase())
    } else {
        Err(DownloadError::BadChecksum {
            value: v.to_string(),
        })
    }
}

/// Decide the checksum to enforce. A pinned value wins, and must agree with
/// what the server announces: a disagreement means the published file changed
/// (or the pin is wrong) and is reported before 80 GiB are fetched.
fn reconcile(
    file: &str,
    url: &str,
    pinned: Option<String>,
    announced: Option<String>,
    require: bool,
) -> Result<Option<String>, DownloadError> {
    match (pinned, announced) {
        (Some(p), Some(a)) if p != a => Err(DownloadError::ChecksumConflict {
            file: file.to_string(),
            pinned: p,
            announced: a,
        }),
        (Some(p), _) => Ok(Some(p)),
        (None, Some(a)) => Ok(Some(a)),
        (None, None) if require => Err(DownloadError::NoChecksum {
            url: url.to_string(),
        }),
        (None, None) => Ok(None),
    }
}

/// Throttles and fills in progress reports.
struct Reporter<'a> {
    cb: &'a mut dyn FnMut(&Progress),
    p: Progress,
    meter: RateMeter,
    interval: Duration,
    last_emit: Instant,
    phase_start: Instant,
}

impl<'a> Reporter<'a> {
    fn new(cb: &'a mut dyn FnMut(&Progress), file: &str, interval: Duration) -> Self {
        let now = Instant::now();
        Reporter {
            cb,
            p: Progress {
                file: file.to_string(),
                phase: Phase::Connecting,
                done: 0,
                total: None,
                resumed_from: 0,
                bytes_per_sec: 0.0,
                eta: None,
                elapsed: Duration::ZERO,
            },
            meter: RateMeter::new(Duration::from_secs(5)),
            interval,
            last_emit: now,
            phase_start: now,
        }
    }

    /// Start a phase; always reported.
    fn phase(&mut self, phase: Phase, done: u64, total: Option<u64>) {
        let now = Instant::now();
        self.p.phase = phase;
        self.p.done = done;
        self.p.total = total;
        self.p.bytes_per_sec = 0.0;
        self.p.eta = None;
        self.meter.reset();
        self.meter.record(now, done);
        self.phase_start = now;
        self.emit(now);
    }

    /// Bytes moved; reported at most every `interval`.
    fn tick(&mut self, done: u64) {
        self.p.done = done;
        let now = Instant::now();
        if now.duration_since(self.last_emit) >= self.interval {
            self.p.bytes_per_sec = self.meter.record(now, done);
            self.p.eta = eta(done, self.p.total, self.p.bytes_per_sec);
            self.emit(now);
        }
    }

    fn emit(&mut self, now: Instant) {
        self.p.elapsed = now.duration_since(self.phase_start);
        self.last_emit = now;
        (self.cb)(&self.p);
    }
}

/// Download `source` into `opts.dir` and return the final path.
///
/// Safe to call again after any failure or kill: it resumes from the `.part`
/// when the server allows Range requests and starts over cleanly when not.
/// An already present final file is returned without any network access
/// (unless `opts.verify_existing`).
pub fn download(
    source: impl Into<Source>,
    opts: &DownloadOptions,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Downloaded, DownloadError> {
    let source = source.into();
    let (url, file) = resolve(&source, opts)?;
    let pinned = opts
        .expected_sha256
        .as_deref()
        .map(normalize_sha)
        .transpose()?;
    let dir = &opts.dir;
    fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    let final_path = dir.join(&file);
    let part_path = dir.join(format!("{file}.part"));
    let meta_path = dir.join(format!("{file}.part.meta"));
    let mut rep = Reporter::new(progress, &file, opts.progress_interval);

    if let Ok(m) = fs::metadata(&final_path) {
        if m.is_file() && m.len() > 0 {
            return existing(&final_path, &url, &file, m.len(), pinned, opts, &mut rep);
        }
    }

    let client = opts.client()?;
    rep.phase(Phase::Connecting, 0, None);
    let info = probe(&client, &url, &file)?;
    // When HEAD was refused nothing is announced, so only a pinned value can
    // satisfy `require_checksum`.
    let expected = reconcile(
        &file,
        &url,
        pinned,
        info.sha256.clone(),
        opts.require_checksum,
    )?;
    let mut total = info.size;

    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&part_path)
        .map_err(|e| io_err(&part_path, e))?;
    // Two processes appending to one .part would corrupt it. An advisory lock
    // dies with its process, so a crash leaves no stale lock behind. Where the
    // filesystem cannot lock (some network mounts) we go on without.
    if let Err(fs::TryLockError::WouldBlock) = f.try_lock() {
        return Err(DownloadError::Busy { path: part_path });
    }
    let mut pos = f.metadata().map_err(|e| io_err(&part_path, e))?.len();
    if pos > 0 && !part_is_resumable(&meta_path, expected.as_deref(), total, pos) {
        truncate(&mut f, &part_path)?;
        pos = 0;
    }
    write_meta(&meta_path, expected.as_deref(), total, &url)?;
    if let Some(t) = total {
        let needed = t.saturating_sub(pos);
        if let Some(avail) = available_bytes(dir) {
            if avail < needed {
                if pos == 0 {
                    // Leave no empty .part behind for a download that never started.
                    drop(f);
                    let _ = fs::remove_file(&part_path);
                    let _ = fs::remove_file(&meta_path);
                }
                return Err(DownloadError::DiskFull {
                    path: final_path,
                    needed: Some(needed),
                    available: Some(avail),
                });
            }
        }
    }

    let mut hasher = Sha256::new();
    if pos > 0 {
        rep.phase(Phase::HashingPart, 0, Some(pos));
        hash_prefix(&mut f, &part_path, pos, &mut hasher, &mut rep)?;
    }
    f.seek(SeekFrom::Start(pos))
        .map_err(|e| io_err(&part_path, e))?;
    let mut resumed_from = pos;
    rep.p.resumed_from = pos;
    rep.phase(Phase::Downloading, pos, total);

    let mut attempt = 0;
    let mut delay = opts.retry_delay;
    loop {
        let before = pos;
        let mut t = Transfer {
            client: &client,
            url: &url,
            file: &file,
            part_path: &part_path,
            f: &mut f,
            hasher: &mut hasher,
            pos: &mut pos,
            total: &mut total,
            expected: expected.as_deref(),
            resumed_from: &mut resumed_from,
            rep: &mut rep,
        };
        let result = t.run();
        if pos > before {
            // The budget is for failures in a row: a long download over a flaky
            // link may drop many times, and each attempt that moved bytes forward
            // is progress (bounded by the file size), not a reason to give up.
            attempt = 0;
            delay = opts.retry_delay;
        }
        match result {
            Ok(()) => break,
            Err(e) if e.is_retryable() && attempt < opts.retries => {
                attempt += 1;
                std::thread::sleep(delay);
                delay = (delay * 2).min(MAX_RETRY_DELAY);
            }
            Err(e) => return Err(e),
        }
    }

    let actual = hex(&hasher.finalize());
    if let Some(exp) = &expected {
        if *exp != actual {
            // Keep the bytes for inspection, but out of the way of the next try.
            let kept = dir.join(format!("{file}.sha256-mismatch"));
            fs::rename(&part_path, &kept).map_err(|e| io_err(&kept, e))?;
            drop(f);
            let _ = fs::remove_file(&meta_path);
            return Err(DownloadError::ChecksumMismatch {
                file,
                expected: exp.clone(),
                actual,
                kept,
            });
        }
    }
    // Data must be on disk before the name says the file is complete;
    // otherwise a crash could leave a full-size final file with a hole.
    f.sync_all().map_err(|e| io_err(&part_path, e))?;
    // Rename while still holding the lock, so no other process can grab the
    // .part between the check and the rename.
    fs::rename(&part_path, &final_path).map_err(|e| io_err(&final_path, e))?;
    drop(f);
    sync_dir(dir);
    let _ = fs::remove_file(&meta_path);
    rep.phase(Phase::Done, pos, Some(pos));
    Ok(Downloaded {
        path: final_path,
        bytes: pos,
        sha256: Some(actual),
        verified: expected.is_some(),
        resumed_from,
        already_present: false,
    })
}

fn existing(
    path: &Path,
    url: &str,
    file: &str,
    len: u64,
    pinned: Option<String>,
    opts: &DownloadOptions,
    rep: &mut Reporter<'_>,
) -> Result<Downloaded, DownloadError> {
    let mut out = Downloaded {
        path: path.to_path_buf(),
        bytes: len,
        sha256: None,
        verified: false,
        resumed_from: len,
        already_present: true,
    };
    if opts.verify_existing {
        let expected = match pinned {
            Some(p) => Some(p),
            None => {
                rep.phase(Phase::Connecting, 0, None);
                let info = probe(&opts.client()?, url, file)?;
                reconcile(file, url, None, info.sha256, opts.require_checksum)?
            }
        };
        rep.phase(Phase::Verifying, 0, Some(len));
        let mut f = File::open(path).map_err(|e| io_err(path, e))?;
        let mut hasher = Sha256::new();
        hash_prefix(&mut f, path, len, &mut hasher, rep)?;
        let actual = hex(&hasher.finalize());
        if let Some(exp) = expected {
            if exp != actual {
                return Err(DownloadError::ChecksumMismatch {
                    file: file.to_string(),
                    expected: exp,
                    actual,
                    kept: path.to_path_buf(),
                });
            }
            out.verified = true;
        }
        out.sha256 = Some(actual);
    }
    rep.phase(Phase::Done, len, Some(len));
    Ok(out)
}

/// One GET attempt, appending to the `.part` from `pos`.
struct Transfer<'a, 'r> {
    client: &'a Client,
    url: &'a str,
    file: &'a str,
    part_path: &'a Path,
    f: &'a mut File,
    hasher: &'a mut Sha256,
    pos: &'a mut u64,
    total: &'a mut Option<u64>,
    expected: Option<&'a str>,
    resumed_from: &'a mut u64,
    rep: &'a mut Reporter<'r>,
}

impl Transfer<'_, '_> {
    fn run(&mut self) -> Result<(), DownloadError> {
        let reply = loop {
            let range = (*self.pos > 0).then_some(*self.pos);
            let reply = self.client.send("GET", self.url, range, Follow::All)?;
            if let (Some(exp), Some(now)) = (self.expected, reply.announced.sha256()) {
                // The file was replaced between the probe (or an earlier attempt)
                // and now: the bytes we hold belong to the old one.
                if exp != now {
                    return Err(DownloadError::ChecksumConflict {
                        file: self.file.to_string(),
                        pinned: exp.to_string(),
                        announced: now,
                    });
                }
            }
            let cr = reply
                .response
                .header("content-range")
                .and_then(http::parse_content_range);
            match reply.status {
                200 => {
                    if *self.pos > 0 {
                        // Range ignored: the body is the whole file, so start over.
                        self.restart()?;
                    }
                    if self.total.is_none() {
                        *self.total = content_length(&reply.response);
                    }
                    break reply;
                }
                206 => match cr {
                    Some((Some(start), t)) if start == *self.pos => {
                        if let (Some(t), Some(known)) = (t, *self.total) {
                            if t != known {
                                return Err(DownloadError::Protocol {
                                    url: reply.url,
                                    message: format!(
                                        "file size is now {t} bytes, expected {known}"
                                    ),
                                });
                            }
                        }
                        if self.total.is_none() {
                            *self.total = t;
                        }
                        break reply;
                    }
                    // Some other piece than asked for: start over without Range.
                    _ if *self.pos > 0 => {
                        self.restart()?;
                        continue;
                    }
                    _ => {
                        return Err(DownloadError::Protocol {
                            url: reply.url,
                            message: "partial content for a request without Range".into(),
                        })
                    }
                },
                416 if *self.pos > 0 => {
                    let server_total = cr.and_then(|(_, t)| t).or(*self.total);
                    if server_total == Some(*self.pos) {
                        // The .part already holds the whole file.
                        return Ok(());
                    }
                    self.restart()?;
                    continue;
                }
                s => return Err(status_error(s, &reply, self.file)),
            }
        };
        self.rep.p.total = *self.total;
        self.stream(reply)
    }

    fn restart(&mut self) -> Result<(), DownloadError> {
        truncate(self.f, self.part_path)?;
        self.hasher.reset();
        *self.pos = 0;
        *self.resumed_from = 0;
        self.rep.p.resumed_from = 0;
        let total = *self.total;
        self.rep.phase(Phase::Downloading, 0, total);
        Ok(())
    }

    fn stream(&mut self, reply: Reply) -> Result<(), DownloadError> {
        let mut body = reply.response.into_reader();
        let mut buf = vec![0u8; BUF_SIZE];
        loop {
            // Fill the buffer before writing: fewer, larger writes, and a read
            // error still leaves every received byte written and hashed.
            let mut filled = 0;
            let mut failure = None;
            while filled < buf.len() {
                match body.read(&mut buf[filled..]) {
                    Ok(0) => break,
                    Ok(n) => {
                        filled += n;
                        self.rep.tick(*self.pos + filled as u64);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
            if let Some(t) = *self.total {
                if *self.pos + filled as u64 > t {
                    // Never write past the announced size: the bytes are not ours.
                    return Err(DownloadError::Protocol {
                        url: reply.url.clone(),
                        message: format!("server sent more than the announced {t} bytes"),
                    });
                }
            }
            if filled > 0 {
                self.f
                    .write_all(&buf[..filled])
                    .map_err(|e| io_err(self.part_path, e))?;
                self.hasher.update(&buf[..filled]);
                *self.pos += filled as u64;
            }
            if let Some(e) = failure {
                return Err(DownloadError::Interrupted {
                    file: self.file.to_string(),
                    done: *self.pos,
                    total: *self.total,
                    message: e.to_string(),
                });
            }
            if filled < buf.len() {
                break; // end of body
            }
        }
        if let Some(t) = *self.total {
            if *self.pos < t {
                return Err(DownloadError::Interrupted {
                    file: self.file.to_string(),
                    done: *self.pos,
                    total: Some(t),
                    message: "connection closed before the end of the file".into(),
                });
            }
        }
        Ok(())
    }
}

fn truncate(f: &mut File, path: &Path) -> Result<(), DownloadError> {
    f.set_len(0).map_err(|e| io_err(path, e))?;
    f.seek(SeekFrom::Start(0)).map_err(|e| io_err(path, e))?;
    Ok(())
}

/// Hash the first `len` bytes of `f` (an earlier `.part`, or a final file).
fn hash_prefix(
    f: &mut File,
    path: &Path,
    len: u64,
    hasher: &mut Sha256,
    rep: &mut Reporter<'_>,
) -> Result<(), DownloadError> {
    f.seek(SeekFrom::Start(0)).map_err(|e| io_err(path, e))?;
    let mut buf = vec![0u8; BUF_SIZE];
    let mut done = 0u64;
    while done < len {
        let want = (len - done).min(BUF_SIZE as u64) as usize;
        let n = f.read(&mut buf[..want]).map_err(|e| io_err(path, e))?;
        if n == 0 {
            return Err(io_err(
                path,
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "file shrank while being read",
                ),
            ));
        }
        hasher.update(&buf[..n]);
        done += n as u64;
        rep.tick(done);
    }
    Ok(())
}

/// Whether an existing `.part` may be continued. Without a sidecar (e.g. a
/// `.part` left by curl in ds4's script) it is resumed on trust; the final
/// checksum is the safety net.
fn part_is_resumable(meta: &Path, expected: Option<&str>, total: Option<u64>, len: u64) -> bool {
    if let Some(t) = total {
        if len > t {
            return false;
        }
    }
    let Ok(text) = fs::read_to_string(meta) else {
        return true;
    };
    for line in text.lines() {
        match line.split_once(' ') {
            Some(("sha256", v)) => {
                if let Some(e) = expected {
                    if v != e {
                        return false;
                    }
                }
            }
            Some(("size", v)) => {
                if let (Ok(s), Some(t)) = (v.parse::<u64>(), total) {
                    if s != t {
                        return false;
                    }
                }
            }
            _ => {}
        }
    }
    true
}

fn write_meta(
    meta: &Path,
    sha: Option<&str>,
    size: Option<u64>,
    url: &str,
) -> Result<(), DownloadError> {
    let mut s = String::new();
    if let Some(h) = sha {
        s.push_str(&format!("sha256 {h}\n"));
    }
    if let Some(n) = size {
        s.push_str(&format!("size {n}\n"));
    }
    s.push_str(&format!("url {url}\n"));
    fs::write(meta, s).map_err(|e| io_err(meta, e))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Flush the rename itself to disk. Best effort: some filesystems refuse to
/// fsync a directory, and the data is already safe by then.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// Free bytes for an unprivileged user in the filesystem holding `dir`.
#[cfg(unix)]
fn available_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs only writes into the struct we pass; `c` is NUL-terminated.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return None;
    }
    #[allow(clippy::unnecessary_cast)] // field widths differ between platforms
    Some((s.f_bavail as u64).saturating_mul(s.f_frsize as u64))
}

#[cfg(not(unix))]
fn available_bytes(_dir: &Path) -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_url_shape() {
        let mut o = DownloadOptions::new("/tmp");
        assert_eq!(
            repo_url(&o, "a b.gguf").unwrap(),
            "https://huggingface.co/antirez/deepseek-v4-gguf/resolve/main/a%20b.gguf"
        );
        o.base_url = "http://127.0.0.1:9/prefix/".into();
        assert_eq!(
            repo_url(&o, "x.gguf").unwrap(),
            "http://127.0.0.1:9/prefix/antirez/deepseek-v4-gguf/resolve/main/x.gguf"
        );
    }

    #[test]
    fn debug_hides_token() {
        let mut o = DownloadOptions::new("/tmp");
        o.token = Some("hf_topsecret".into());
        let d = format!("{o:?}");
        assert!(
            !d.contains("hf_topsecret") && d.contains("<redacted>"),
            "{d}"
        );
    }

    #[test]
    fn reconcile_rules() {
        let a = "a".repeat(64);
        let b = "b".repeat(64);
        assert_eq!(
            reconcile("f", "u", Some(a.clone()), None, true).unwrap(),
            Some(a.clone())
        );
        assert_eq!(
            reconcile("f", "u", None, Some(b.clone()), true).unwrap(),
            Some(b.clone())
        );
        assert!(matches!(
            reconcile("f", "u", Some(a.clone()), Some(b.clone()), true),
            Err(DownloadError::ChecksumConflict { .. })
        ));
        assert!(matches!(
            reconcile("f", "u", None, None, true),
            Err(DownloadError::NoChecksum { .. })
        ));
        assert_eq!(reconcile("f", "u", None, None, false).unwrap(), None);
        assert!(normalize_sha("xyz").is_err());
        assert_eq!(
            normalize_sha(&format!(" {} ", a.to_uppercase())).unwrap(),
            a
        );
    }

    #[test]
    fn url_source_file_name() {
        let o = DownloadOptions::new("/tmp");
        let (u, f) = resolve(&Source::Url("http://h.test/d/m.gguf?x=1".into()), &o).unwrap();
        assert_eq!(
            (u.as_str(), f.as_str()),
            ("http://h.test/d/m.gguf?x=1", "m.gguf")
        );
        assert!(resolve(&Source::Url("http://h.test/".into()), &o).is_err());
        assert!(resolve(&Source::Url("ftp://h.test/a.gguf".into()), &o).is_err());
    }
}
