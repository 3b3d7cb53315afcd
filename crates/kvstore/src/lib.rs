//! `dsv4-kvstore`: the on-disk checkpoint store for session state.
//!
//! DeepSeek V4's KV cache is small enough that a long shared prefix (an agent's system
//! prompt and tool schemas) is cheaper to read back from disk than to prefill again, across
//! requests and server restarts. This crate stores such checkpoints as opaque payloads (the
//! caller's serialised session state) keyed by the exact token prefix they hold and the model
//! they belong to.
//!
//! # File format (version 1)
//!
//! One checkpoint per file; all integers little-endian.
//!
//! | Offset | Size | Field |
//! |---|---|---|
//! | 0 | 8 | magic `DSV4KVC\0` |
//! | 8 | 4 | format version (`1`) |
//! | 12 | 4 | flags, must be 0 (reserved for optional features) |
//! | 16 | 32 | model fingerprint (caller-provided, e.g. SHA-256 of the GGUF header) |
//! | 48 | 8 | creation time, Unix seconds (informational) |
//! | 56 | 4 | `n` = token count (> 0) |
//! | 60 | 4 | `e` = extension entry count |
//! | 64 | 8 | extension section byte length |
//! | 72 | 8 | payload byte length |
//! | 80 | 4·n | token ids (u32) of the prefix the state holds |
//! | … | | `e` extension entries, sorted by key: u32 key length (1..=4096), u64 value length, key (UTF-8), value |
//! | … | | payload (opaque: the caller's session state bytes) |
//! | end−32 | 32 | SHA-256 of every preceding byte |
//!
//! The header lengths must add up to the file length exactly, so truncation and trailing
//! garbage are caught before the checksum is even computed.
//!
//! # Directory layout
//!
//! * `<fingerprint hex>-<token count, 8 hex>-<prefix hash hex>.dsv4kv`: published
//!   checkpoints. The prefix hash is SHA-256 over a domain tag, the fingerprint and the token
//!   ids, so the name *is* the identity of (model, prefix): lookup matches by hashing the
//!   prompt, without opening files, and "same prefix" is "same name".
//! * `.tmp-<pid>-<seq>-<id>.part`: a checkpoint being written. Its writer holds an exclusive
//!   `flock` on it until it is published; a temp file that can be locked belongs to a dead
//!   writer and is removed (at open).
//! * `usage.idx`: hit counts and last-use times (text, one line per checkpoint). It is only a
//!   cache of usage: missing or corrupt, it is rebuilt from the files (hits 0, last use =
//!   file mtime). Hits are kept here rather than in the checkpoint header so that a hit never
//!   rewrites a checkpoint in place.
//! * `.lock`: the directory lock (`flock`), held briefly to publish, evict, remove and update
//!   usage.
//!
//! Other files are left alone; a `*.dsv4kv` file whose name or contents are invalid is
//! reported as a warning and removed.
//!
//! # Policies
//!
//! * **Dedup.** A save whose (fingerprint, tokens) already has a file is a no-op: it does not
//!   read the payload, touch the file or its usage. Two writers racing on the same prefix both
//!   write temp files, the first to publish wins and the second discards its temp.
//! * **Extensions of an existing prefix** are stored as independent, self-contained files.
//!   Deltas against a parent file would save space but make a checkpoint depend on another
//!   file surviving eviction and corruption, and the payload is one opaque state (compressor
//!   frontiers included), not a per-token log. Write storms are bounded instead by the
//!   caller saving at aligned points ([`aligned_save_point`]) and by
//!   [`Options::min_extension_tokens`]: a save that extends the longest existing prefix of the
//!   same model by fewer tokens than that is skipped.
//! * **Eviction.** After each publish and at open, while the checkpoints exceed the budget, the
//!   lowest-scoring one is removed (the one just written is never chosen). See [`score`]:
//!   recency, decayed hit count and tokens held per byte, so a small prompt prefix that keeps
//!   getting hit outlives a stream of large one-off checkpoints, and a one-off is evicted
//!   oldest-first. A checkpoint larger than the whole budget is not written at all.
//! * **Concurrency.** Several stores (threads or processes) may share a directory: writes go
//!   to unique temp files and are published by `rename` under the directory lock after an
//!   existence check; readers never lock and tolerate files vanishing between listing and
//!   opening (an open file stays readable after another process unlinks it).
//! * **Crash safety.** Temp file is fsynced before the rename and the directory after it, so
//!   a published name always refers to complete, durable contents. A crash leaves at most a
//!   temp file, which the next open removes.
//! * **Bad files.** Loading verifies magic, version, flags, lengths, checksum, fingerprint and
//!   that the tokens hash to the name. Any failure → a [`Warning`], the file is removed, and
//!   the caller gets an error (or, via [`KvStore::lookup_load`], the next-best checkpoint).
//!   Open checks every header cheaply (everything but the payload checksum).

pub mod format;

pub use format::{Extensions, Fingerprint, FormatError, FORMAT_VERSION};

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

const EXT: &str = ".dsv4kv";
const TMP_PREFIX: &str = ".tmp-";
const TMP_SUFFIX: &str = ".part";
const USAGE_FILE: &str = "usage.idx";
const USAGE_TMP_PREFIX: &str = ".usage-";
const USAGE_MAGIC: &str = "dsv4-kvstore usage v1";
const LOCK_FILE: &str = ".lock";
/// Recency half-life: a checkpoint unused for this long counts half as much.
pub const RECENCY_HALF_LIFE_S: f64 = 6.0 * 3600.0;
/// Hits fade slower than recency, so a heavily shared prefix survives a quiet night.
pub const HITS_HALF_LIFE_S: f64 = 24.0 * 3600.0;

#[derive(Debug, thiserror::Error)]
pub enum KvError {
    #[error("I/O error on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("invalid checkpoint {path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("checkpoint {0} vanished (removed by another process)")]
    Vanished(String),
    #[error("no checkpoint with id {0}")]
    NotFound(String),
}

pub type Result<T> = std::result::Result<T, KvError>;

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> KvError + '_ {
    move |source| KvError::Io { path: path.to_path_buf(), source }
}

/// Something the store skipped or cleaned up; the server logs these.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    pub path: PathBuf,
    pub message: String,
}

/// Store options beyond the directory.
#[derive(Clone, Debug)]
pub struct Options {
    /// Total bytes of published checkpoints kept (temp and index files not counted).
    pub budget_bytes: u64,
    /// Skip a save that extends an existing prefix of the same model by fewer tokens.
    /// 0 disables the check.
    pub min_extension_tokens: u32,
}

/// The parsed name of a checkpoint file.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Name {
    fingerprint: Fingerprint,
    tokens: u32,
    hash: [u8; 32],
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

impl Name {
    fn id(&self) -> String {
        format!("{}-{:08x}-{}", hex(&self.fingerprint), self.tokens, hex(&self.hash))
    }
    /// Strict parse of an id (file name without extension); rejects anything else, which
    /// also keeps user-supplied ids from naming paths outside the directory.
    fn parse_id(id: &str) -> Option<Name> {
        let mut parts = id.split('-');
        let (fp, n, h) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || n.len() != 8 || !n.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)) {
            return None;
        }
        let tokens = u32::from_str_radix(n, 16).ok()?;
        if tokens == 0 {
            return None;
        }
        Some(Name { fingerprint: unhex32(fp)?, tokens, hash: unhex32(h)? })
    }
}

/// One published checkpoint as listed (from its name, size and usage index).
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub id: String,
    pub path: PathBuf,
    pub fingerprint: Fingerprint,
    pub tokens: u32,
    pub bytes: u64,
    pub hits: u64,
    /// Milliseconds since the Unix epoch (ms so that saves within one second still order).
    pub last_used_ms: u64,
}

/// The result of [`KvStore::lookup`]: the checkpoint to load.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hit {
    pub id: String,
    pub path: PathBuf,
    pub fingerprint: Fingerprint,
    /// Number of prompt tokens the checkpoint covers (a prefix of the prompt).
    pub tokens: u32,
    pub bytes: u64,
    hash: [u8; 32],
}

/// A verified checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loaded {
    pub id: String,
    pub tokens: Vec<u32>,
    pub extensions: Extensions,
    pub payload: Vec<u8>,
    pub created_unix: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SaveStatus {
    /// A new file was published.
    Written,
    /// A file for this exact prefix already existed; nothing was written.
    AlreadyPresent,
    /// The file alone would exceed the budget.
    SkippedOverBudget,
    /// It would extend an existing prefix by fewer than `min_extension_tokens`.
    SkippedSmallExtension { existing_tokens: u32 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavedInfo {
    pub id: String,
    pub status: SaveStatus,
    /// File size (of the file written or already present; the would-be size when skipped).
    pub bytes: u64,
    /// Ids evicted to make room.
    pub evicted: Vec<String>,
}

/// Totals for `dsv4 kv stats`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub files: u64,
    pub bytes: u64,
    pub budget_bytes: u64,
    /// fingerprint → (files, bytes)
    pub by_fingerprint: BTreeMap<Fingerprint, (u64, u64)>,
    /// Unfinished writes present right now (live writers or crashed ones not yet cleaned).
    pub temp_files: u64,
    pub temp_bytes: u64,
}

/// Eviction priority: higher survives. Expected prefill saved per byte of disk:
/// `(1 + hits·2^(−idle/24h)) · 2^(−idle/6h) · tokens / bytes`, where `idle` is the time since
/// last use (or since the write). Recency dominates for never-hit files (one-offs go oldest
/// first), each hit is evidence of sharing that multiplies the value, and tokens/byte prefers
/// long prefixes without letting size alone decide.
pub fn score(tokens: u32, bytes: u64, hits: u64, idle_s: u64) -> f64 {
    let idle = idle_s as f64;
    let recency = (-idle / RECENCY_HALF_LIFE_S).exp2();
    let eff_hits = hits as f64 * (-idle / HITS_HALF_LIFE_S).exp2();
    (1.0 + eff_hits) * recency * tokens as f64 / bytes.max(1) as f64
}

/// The largest multiple of `align` not above `len` (or `len` when `align` is 0): a save-point
/// schedule under which two conversations sharing a prefix produce identical checkpoints
/// instead of near-duplicates.
pub fn aligned_save_point(len: usize, align: usize) -> usize {
    len.checked_div(align).map_or(len, |q| q * align)
}

fn now_unix() -> u64 {
    now_ms() / 1000
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn is_not_found(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
}

/// Runs `flock` on `f`; `nonblock` returns Ok(false) instead of waiting.
fn flock(f: &File, op: libc::c_int, nonblock: bool) -> io::Result<bool> {
    let op = if nonblock { op | libc::LOCK_NB } else { op };
    loop {
        // SAFETY: flock on a valid open descriptor; no memory is passed.
        let r = unsafe { libc::flock(f.as_raw_fd(), op) };
        if r == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) if nonblock => return Ok(false),
            _ => return Err(e),
        }
    }
}

/// The exclusive directory lock; released when dropped (closing the descriptor). Each
/// acquisition opens the lock file anew, so threads of one process exclude each other too
/// (flock locks belong to the open file description).
struct DirLock {
    _file: File,
}

/// Per-process sequence for temp names (with the pid, unique across processes and threads).
static SEQ: AtomicU64 = AtomicU64::new(0);

type WarnSink = Box<dyn Fn(&Warning) + Send + Sync>;

/// A checkpoint directory.
pub struct KvStore {
    dir: PathBuf,
    opts: Options,
    warnings: Mutex<Vec<Warning>>,
    sink: Option<WarnSink>,
}

impl std::fmt::Debug for KvStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvStore").field("dir", &self.dir).field("opts", &self.opts).finish()
    }
}

/// What checking one file found.
enum Check {
    Ok,
    /// Not a valid checkpoint: remove it.
    Invalid(String),
    /// Disappeared meanwhile.
    Vanished,
}

impl KvStore {
    /// Opens (creating, mode 0700) a checkpoint directory with a byte budget.
    pub fn open(dir: impl AsRef<Path>, budget_bytes: u64) -> Result<KvStore> {
        Self::open_with(dir, Options { budget_bytes, min_extension_tokens: 0 }, None)
    }

    /// Opens with options and an optional warning callback (warnings are also kept for
    /// [`KvStore::take_warnings`]). Cleans temp files of dead writers, removes invalid
    /// checkpoints, rebuilds the usage index and evicts down to the budget.
    pub fn open_with(dir: impl AsRef<Path>, opts: Options, sink: Option<WarnSink>) -> Result<KvStore> {
        let dir = dir.as_ref().to_path_buf();
        if !dir.is_dir() {
            // Checkpoints hold conversation state: private to the user.
            fs::DirBuilder::new().recursive(true).mode_0700().create(&dir).map_err(io_err(&dir))?;
        }
        let store = KvStore { dir, opts, warnings: Mutex::new(Vec::new()), sink };
        let _lock = store.lock()?;
        store.clean_temps()?;
        for (id, path) in store.scan()?.0 {
            match store.check_header(&id, &path) {
                Check::Ok | Check::Vanished => {}
                Check::Invalid(reason) => store.discard(&path, None, &reason),
            }
        }
        let now = now_ms();
        let entries = store.entries()?;
        store.evict_locked(entries, None, now)?;
        Ok(store)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn budget_bytes(&self) -> u64 {
        self.opts.budget_bytes
    }

    /// Drains the warnings gathered so far.
    pub fn take_warnings(&self) -> Vec<Warning> {
        std::mem::take(&mut *self.warnings.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn warn(&self, path: &Path, message: String) {
        let w = Warning { path: path.to_path_buf(), message };
        if let Some(s) = &self.sink {
            s(&w);
        }
        let mut v = self.warnings.lock().unwrap_or_else(|p| p.into_inner());
        // Bounded so a server that never drains cannot grow without limit.
        if v.len() < 10_000 {
            v.push(w);
        }
    }

    fn lock(&self) -> Result<DirLock> {
        let p = self.dir.join(LOCK_FILE);
        let f = OpenOptions::new().create(true).truncate(false).write(true).mode(0o600).open(&p).map_err(io_err(&p))?;
        flock(&f, libc::LOCK_EX, false).map_err(io_err(&p))?;
        Ok(DirLock { _file: f })
    }

    /// Lists checkpoint files (id, path) and removes `*.dsv4kv` files with invalid names.
    /// Returns also the (count, bytes) of temp files.
    #[allow(clippy::type_complexity)]
    fn scan(&self) -> Result<(Vec<(String, PathBuf)>, (u64, u64))> {
        let rd = fs::read_dir(&self.dir).map_err(io_err(&self.dir))?;
        let mut out = Vec::new();
        let mut temps = (0, 0);
        for de in rd {
            let de = match de {
                Ok(d) => d,
                Err(e) if is_not_found(&e) => continue,
                Err(e) => return Err(io_err(&self.dir)(e)),
            };
            let name = de.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with(TMP_PREFIX) && name.ends_with(TMP_SUFFIX) {
                temps.0 += 1;
                temps.1 += de.metadata().map(|m| m.len()).unwrap_or(0);
                continue;
            }
            let Some(id) = name.strip_suffix(EXT) else { continue };
            if Name::parse_id(id).is_some() {
                out.push((id.to_string(), de.path()));
            } else {
                self.discard(&de.path(), None, "not a checkpoint name");
            }
        }
        out.sort();
        Ok((out, temps))
    }

    /// Removes temp files whose writer is gone (their flock can be taken). Called under the
    /// directory lock: writers create and lock their temp file under it too, so a temp file is
    /// never seen here between its creation and its writer's lock.
    fn clean_temps(&self) -> Result<()> {
        let rd = fs::read_dir(&self.dir).map_err(io_err(&self.dir))?;
        for de in rd.flatten() {
            let name = de.file_name();
            let Some(name) = name.to_str() else { continue };
            let path = de.path();
            if name.starts_with(USAGE_TMP_PREFIX) {
                // Only written under the directory lock, which we hold: its writer is dead.
                let _ = fs::remove_file(&path);
            } else if name.starts_with(TMP_PREFIX) && name.ends_with(TMP_SUFFIX) {
                let Ok(f) = File::open(&path) else { continue };
                if flock(&f, libc::LOCK_EX, true).unwrap_or(false) {
                    self.warn(&path, "removing unfinished checkpoint left by a dead writer".into());
                    let _ = fs::remove_file(&path);
                }
            }
        }
        Ok(())
    }

    /// Cheap validation: header, lengths, fingerprint and token hash against the name.
    fn check_header(&self, id: &str, path: &Path) -> Check {
        let Some(name) = Name::parse_id(id) else { return Check::Invalid("not a checkpoint name".into()) };
        let mut f = match File::open(path) {
            Ok(f) => f,
            Err(e) if is_not_found(&e) => return Check::Vanished,
            Err(e) => return Check::Invalid(format!("cannot open: {e}")),
        };
        let len = match f.metadata() {
            Ok(m) => m.len(),
            Err(e) => return Check::Invalid(format!("cannot stat: {e}")),
        };
        let mut h = [0u8; format::HEADER_LEN];
        let n = read_up_to(&mut f, &mut h);
        let header = match format::parse_header(&h[..n], len) {
            Ok(h) => h,
            Err(e) => return Check::Invalid(e.to_string()),
        };
        if let Some(r) = name_mismatch(&name, &header.fingerprint, header.token_count) {
            return Check::Invalid(r);
        }
        let mut tok = vec![0u8; header.token_count as usize * 4];
        if let Err(e) = f.read_exact(&mut tok) {
            return Check::Invalid(format!("reading tokens: {e}"));
        }
        if format::prefix_hash(&header.fingerprint, &format::decode_tokens(&tok)) != name.hash {
            return Check::Invalid("tokens do not match the file name".into());
        }
        Check::Ok
    }

    /// Warns and removes an invalid file. With `inode`, removes it only if the name still
    /// refers to the file that was examined (never delete something published since).
    fn discard(&self, path: &Path, inode: Option<(u64, u64)>, reason: &str) {
        if let Some(ino) = inode {
            match fs::symlink_metadata(path) {
                Ok(m) if (m.dev(), m.ino()) == ino => {}
                _ => return,
            }
        }
        self.warn(path, format!("skipping and removing invalid checkpoint: {reason}"));
        if let Err(e) = fs::remove_file(path) {
            if !is_not_found(&e) {
                self.warn(path, format!("could not remove: {e}"));
            }
        }
    }

    // ---------------------------------------------------------------- usage index

    fn read_usage(&self) -> HashMap<String, (u64, u64)> {
        let p = self.dir.join(USAGE_FILE);
        let text = match fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) if is_not_found(&e) => return HashMap::new(),
            Err(e) => {
                self.warn(&p, format!("usage index unreadable, rebuilding: {e}"));
                return HashMap::new();
            }
        };
        let mut lines = text.lines();
        let mut map = HashMap::new();
        let ok = lines.next() == Some(USAGE_MAGIC)
            && lines.all(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                match (f.len(), f.first().and_then(|id| Name::parse_id(id)), f.get(1).and_then(|h| h.parse().ok()), f.get(2).and_then(|t| t.parse().ok())) {
                    (3, Some(_), Some(h), Some(t)) => {
                        map.insert(f[0].to_string(), (h, t));
                        true
                    }
                    _ => false,
                }
            });
        if !ok {
            self.warn(&p, "usage index corrupt, rebuilding from the checkpoint files".into());
            return HashMap::new();
        }
        map
    }

    /// Rewrites the usage index for exactly `entries` (drops ids whose files are gone).
    /// Under the directory lock. Not fsynced: it is a cache, rebuilt if torn by a crash.
    fn write_usage(&self, entries: &[Entry]) -> Result<()> {
        let mut s = String::with_capacity(64 + entries.len() * 160);
        s.push_str(USAGE_MAGIC);
        s.push('\n');
        for e in entries {
            s.push_str(&format!("{} {} {}\n", e.id, e.hits, e.last_used_ms));
        }
        let tmp = self.dir.join(format!("{USAGE_TMP_PREFIX}{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed)));
        fs::write(&tmp, s).map_err(io_err(&tmp))?;
        let dst = self.dir.join(USAGE_FILE);
        fs::rename(&tmp, &dst).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            io_err(&dst)(e)
        })
    }

    /// Current checkpoints with sizes and usage (files that vanish meanwhile are skipped).
    fn entries(&self) -> Result<Vec<Entry>> {
        let usage = self.read_usage();
        let mut out = Vec::new();
        for (id, path) in self.scan()?.0 {
            let Some(name) = Name::parse_id(&id) else { continue };
            let m = match fs::metadata(&path) {
                Ok(m) => m,
                Err(_) => continue,
            };
            let (hits, last) = usage.get(&id).copied().unwrap_or((0, (m.mtime().max(0) as u64) * 1000 + m.mtime_nsec().max(0) as u64 / 1_000_000));
            out.push(Entry {
                id,
                path,
                fingerprint: name.fingerprint,
                tokens: name.tokens,
                bytes: m.len(),
                hits,
                last_used_ms: last,
            });
        }
        Ok(out)
    }

    /// Removes lowest-score checkpoints until within budget, never `protect`; then rewrites
    /// the usage index. Under the directory lock.
    fn evict_locked(&self, mut entries: Vec<Entry>, protect: Option<&str>, now: u64) -> Result<Vec<String>> {
        let mut total: u64 = entries.iter().map(|e| e.bytes).sum();
        let mut evicted = Vec::new();
        if total > self.opts.budget_bytes {
            // Lowest score first; ties: least recently used first.
            entries.sort_by(|a, b| {
                let sa = score(a.tokens, a.bytes, a.hits, now.saturating_sub(a.last_used_ms) / 1000);
                let sb = score(b.tokens, b.bytes, b.hits, now.saturating_sub(b.last_used_ms) / 1000);
                sa.total_cmp(&sb).then(a.last_used_ms.cmp(&b.last_used_ms)).then(a.id.cmp(&b.id))
            });
            let mut keep = Vec::with_capacity(entries.len());
            for e in entries {
                if total > self.opts.budget_bytes && Some(e.id.as_str()) != protect {
                    match fs::remove_file(&e.path) {
                        Ok(()) => {
                            total -= e.bytes;
                            evicted.push(e.id);
                        }
                        Err(err) if is_not_found(&err) => total -= e.bytes,
                        Err(err) => {
                            self.warn(&e.path, format!("could not evict: {err}"));
                            keep.push(e);
                        }
                    }
                } else {
                    keep.push(e);
                }
            }
            entries = keep;
        }
        self.write_usage(&entries)?;
        Ok(evicted)
    }

    // ---------------------------------------------------------------- public API

    /// Saves a checkpoint of `tokens` with `payload`; see [`KvStore::save_reader`].
    pub fn save(&self, fingerprint: &Fingerprint, tokens: &[u32], payload: &[u8], extensions: &Extensions) -> Result<SavedInfo> {
        self.save_reader(fingerprint, tokens, extensions, payload.len() as u64, &mut &payload[..])
    }

    /// Saves a checkpoint, streaming exactly `payload_len` payload bytes from `payload`.
    /// A no-op if this exact prefix is already stored (the reader is not touched).
    pub fn save_reader(
        &self,
        fingerprint: &Fingerprint,
        tokens: &[u32],
        extensions: &Extensions,
        payload_len: u64,
        payload: &mut dyn Read,
    ) -> Result<SavedInfo> {
        if tokens.is_empty() {
            return Err(KvError::InvalidInput("a checkpoint needs at least one token".into()));
        }
        let ntok = u32::try_from(tokens.len()).map_err(|_| KvError::InvalidInput("too many tokens".into()))?;
        if let Some(k) = extensions.keys().find(|k| k.is_empty() || k.len() > format::MAX_EXT_KEY_LEN) {
            return Err(KvError::InvalidInput(format!("extension key of {} bytes (1..=4096 allowed)", k.len())));
        }
        let ext_bytes: u64 = extensions.iter().map(|(k, v)| 12 + k.len() as u64 + v.len() as u64).sum();
        let name = Name { fingerprint: *fingerprint, tokens: ntok, hash: format::prefix_hash(fingerprint, tokens) };
        let id = name.id();
        let final_path = self.dir.join(format!("{id}{EXT}"));
        let bytes = (format::HEADER_LEN + format::CHECKSUM_LEN) as u64 + 4 * ntok as u64 + ext_bytes + payload_len;
        let info = |status| SavedInfo { id: id.clone(), status, bytes, evicted: Vec::new() };

        if let Ok(m) = fs::metadata(&final_path) {
            return Ok(SavedInfo { bytes: m.len(), ..info(SaveStatus::AlreadyPresent) });
        }
        if bytes > self.opts.budget_bytes {
            self.warn(&final_path, format!("not saving: {bytes} bytes exceed the whole budget of {}", self.opts.budget_bytes));
            return Ok(info(SaveStatus::SkippedOverBudget));
        }
        if self.opts.min_extension_tokens > 0 {
            if let Some(h) = self.lookup(fingerprint, tokens) {
                if ntok - h.tokens < self.opts.min_extension_tokens {
                    return Ok(info(SaveStatus::SkippedSmallExtension { existing_tokens: h.tokens }));
                }
            }
        }

        let tmp_path = self.dir.join(format!(
            "{TMP_PREFIX}{}-{}-{id}{TMP_SUFFIX}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        // Create and lock the temp under the directory lock so a concurrent open's cleanup
        // never sees it unlocked (and mistakes it for a dead writer's).
        let tmp = {
            let _lock = self.lock()?;
            let f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp_path).map_err(io_err(&tmp_path))?;
            flock(&f, libc::LOCK_EX, false).map_err(io_err(&tmp_path))?;
            f
        };
        let written = (|| -> io::Result<()> {
            let mut w = BufWriter::with_capacity(8 << 20, &tmp);
            format::write_checkpoint(&mut w, fingerprint, now_unix(), tokens, extensions, payload_len, payload)?;
            w.flush()?;
            drop(w);
            tmp.sync_all()
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp_path);
            return Err(KvError::Io { path: tmp_path, source: e });
        }

        let _lock = self.lock()?;
        if fs::symlink_metadata(&final_path).is_ok() {
            // Another writer published the same prefix while we wrote: keep theirs untouched.
            let _ = fs::remove_file(&tmp_path);
            return Ok(info(SaveStatus::AlreadyPresent));
        }
        if let Err(e) = fs::rename(&tmp_path, &final_path) {
            let _ = fs::remove_file(&tmp_path);
            return Err(io_err(&final_path)(e));
        }
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io_err(&self.dir))?;
        drop(tmp);
        let now = now_ms();
        let mut entries = self.entries()?;
        if let Some(e) = entries.iter_mut().find(|e| e.id == id) {
            e.last_used_ms = now;
        }
        let evicted = self.evict_locked(entries, Some(&id), now)?;
        Ok(SavedInfo { evicted, ..info(SaveStatus::Written) })
    }

    /// The stored checkpoint of model `fingerprint` whose tokens are the longest prefix of
    /// `prompt` (possibly all of it). Matches by name only; [`KvStore::load`] verifies.
    pub fn lookup(&self, fingerprint: &Fingerprint, prompt: &[u32]) -> Option<Hit> {
        self.lookup_below(fingerprint, prompt, u32::MAX)
    }

    /// Like `lookup`, among checkpoints of fewer than `below` tokens.
    fn lookup_below(&self, fingerprint: &Fingerprint, prompt: &[u32], below: u32) -> Option<Hit> {
        let files = match self.scan() {
            Ok((f, _)) => f,
            Err(e) => {
                self.warn(&self.dir, format!("cannot list: {e}"));
                return None;
            }
        };
        let mut cands: Vec<(Name, String, PathBuf)> = files
            .into_iter()
            .filter_map(|(id, p)| Name::parse_id(&id).map(|n| (n, id, p)))
            .filter(|(n, _, _)| n.fingerprint == *fingerprint && (n.tokens as usize) <= prompt.len() && n.tokens < below)
            .collect();
        cands.sort_by_key(|(n, _, _)| n.tokens);
        // One pass over the prompt: the hash of each candidate length is a snapshot of the
        // running hasher, so lookup costs O(prompt) hashing whatever the number of files.
        let mut hasher = format::prefix_hasher(fingerprint);
        let mut done = 0usize;
        let mut best = None;
        for (n, id, path) in cands {
            for t in &prompt[done..n.tokens as usize] {
                sha2::Digest::update(&mut hasher, t.to_le_bytes());
            }
            done = n.tokens as usize;
            let h: [u8; 32] = sha2::Digest::finalize(hasher.clone()).into();
            if h == n.hash {
                let bytes = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                best = Some(Hit { id, path, fingerprint: n.fingerprint, tokens: n.tokens, bytes, hash: n.hash });
            }
        }
        best
    }

    /// Reads and verifies a checkpoint, and counts the hit. An invalid file is removed (with a
    /// warning) and reported as [`KvError::Invalid`]; a vanished one as [`KvError::Vanished`].
    pub fn load(&self, hit: &Hit) -> Result<Loaded> {
        let mut f = match File::open(&hit.path) {
            Ok(f) => f,
            Err(e) if is_not_found(&e) => {
                self.warn(&hit.path, "checkpoint vanished before it could be read".into());
                return Err(KvError::Vanished(hit.id.clone()));
            }
            Err(e) => return Err(io_err(&hit.path)(e)),
        };
        let m = f.metadata().map_err(io_err(&hit.path))?;
        let ino = (m.dev(), m.ino());
        let mut bytes = Vec::new();
        // Capacity from the real size; the header's own counts are not trusted before checks.
        bytes.try_reserve_exact(m.len() as usize).map_err(|e| KvError::InvalidInput(format!("cannot allocate: {e}")))?;
        f.read_to_end(&mut bytes).map_err(io_err(&hit.path))?;
        let invalid = |reason: String| {
            let _lock = self.lock();
            self.discard(&hit.path, Some(ino), &reason);
            KvError::Invalid { path: hit.path.clone(), reason }
        };
        let d = format::decode(bytes).map_err(|e| invalid(e.to_string()))?;
        let name = Name { fingerprint: hit.fingerprint, tokens: hit.tokens, hash: hit.hash };
        if let Some(r) = name_mismatch(&name, &d.header.fingerprint, d.header.token_count) {
            return Err(invalid(r));
        }
        if format::prefix_hash(&d.header.fingerprint, &d.tokens) != hit.hash {
            return Err(invalid("tokens do not match the file name".into()));
        }
        self.touch(&hit.id)?;
        Ok(Loaded { id: hit.id.clone(), tokens: d.tokens, extensions: d.extensions, payload: d.payload, created_unix: d.header.created_unix })
    }

    fn touch(&self, id: &str) -> Result<()> {
        let _lock = self.lock()?;
        let mut entries = self.entries()?;
        if let Some(e) = entries.iter_mut().find(|e| e.id == id) {
            e.hits += 1;
            e.last_used_ms = now_ms();
        }
        self.write_usage(&entries)
    }

    /// The token prefix a listed checkpoint holds, read from its header and token section only
    /// (the payload and checksum are verified when it is loaded). Files are immutable once
    /// published, so callers may cache the answer by id.
    pub fn tokens_of(&self, e: &Entry) -> Result<Vec<u32>> {
        let name = Name::parse_id(&e.id).ok_or_else(|| KvError::InvalidInput(format!("{} is not a checkpoint id", e.id)))?;
        let mut f = File::open(&e.path).map_err(|err| if is_not_found(&err) { KvError::Vanished(e.id.clone()) } else { io_err(&e.path)(err) })?;
        let len = f.metadata().map_err(io_err(&e.path))?.len();
        let mut h = vec![0u8; format::HEADER_LEN];
        f.read_exact(&mut h).map_err(io_err(&e.path))?;
        let invalid = |reason: String| KvError::Invalid { path: e.path.clone(), reason };
        let header = format::parse_header(&h, len).map_err(|err| invalid(err.to_string()))?;
        if header.token_count != name.tokens || header.fingerprint != name.fingerprint {
            return Err(invalid("header does not match the file name".into()));
        }
        let mut t = vec![0u8; 4 * header.token_count as usize];
        f.read_exact(&mut t).map_err(io_err(&e.path))?;
        let tokens = format::decode_tokens(&t);
        if format::prefix_hash(&header.fingerprint, &tokens) != name.hash {
            return Err(invalid("tokens do not match the file name".into()));
        }
        Ok(tokens)
    }

    /// Lookup then load, falling back to the next-longest prefix when the best file turns
    /// out invalid or vanishes. None when nothing usable is stored.
    pub fn lookup_load(&self, fingerprint: &Fingerprint, prompt: &[u32]) -> Option<Loaded> {
        let mut below = u32::MAX;
        while let Some(hit) = self.lookup_below(fingerprint, prompt, below) {
            match self.load(&hit) {
                Ok(l) => return Some(l),
                Err(KvError::Io { path, source }) => {
                    self.warn(&path, format!("cannot read checkpoint: {source}"));
                }
                Err(_) => {}
            }
            below = hit.tokens;
        }
        None
    }

    /// All checkpoints (every model), longest first.
    pub fn list(&self) -> Result<Vec<Entry>> {
        let mut e = self.entries()?;
        e.sort_by(|a, b| b.tokens.cmp(&a.tokens).then(a.id.cmp(&b.id)));
        Ok(e)
    }

    /// Removes a checkpoint by id (`dsv4 kv rm`).
    pub fn remove(&self, id: &str) -> Result<()> {
        if Name::parse_id(id).is_none() {
            return Err(KvError::InvalidInput(format!("not a checkpoint id: {id:?}")));
        }
        let _lock = self.lock()?;
        let path = self.dir.join(format!("{id}{EXT}"));
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => return Err(KvError::NotFound(id.to_string())),
            Err(e) => return Err(io_err(&path)(e)),
        }
        let entries = self.entries()?;
        self.write_usage(&entries)
    }

    /// Totals by model (`dsv4 kv stats`).
    pub fn stats(&self) -> Result<Stats> {
        let (_, (temp_files, temp_bytes)) = self.scan()?;
        let mut s = Stats { budget_bytes: self.opts.budget_bytes, temp_files, temp_bytes, ..Stats::default() };
        for e in self.entries()? {
            s.files += 1;
            s.bytes += e.bytes;
            let slot = s.by_fingerprint.entry(e.fingerprint).or_default();
            slot.0 += 1;
            slot.1 += e.bytes;
        }
        Ok(s)
    }
}

fn name_mismatch(name: &Name, fp: &Fingerprint, ntok: u32) -> Option<String> {
    if *fp != name.fingerprint {
        return Some("model fingerprint differs from the file name".into());
    }
    if ntok != name.tokens {
        return Some(format!("holds {ntok} tokens, name says {}", name.tokens));
    }
    None
}

fn read_up_to(f: &mut File, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    n
}

trait DirBuilderExt0700 {
    fn mode_0700(&mut self) -> &mut Self;
}
impl DirBuilderExt0700 for fs::DirBuilder {
    fn mode_0700(&mut self) -> &mut Self {
        std::os::unix::fs::DirBuilderExt::mode(self, 0o700)
    }
}
