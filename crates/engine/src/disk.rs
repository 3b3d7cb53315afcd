//! The disk KV cache as a session sees it: before prefilling, take the longest stored prefix
//! of the prompt when it beats what the live session holds; after prefilling a long prompt,
//! save the state so the next request, or the next run, starts from there.
//!
//! Saves are written by a thread of their own. A Flash state at 25K tokens is ~0.35 GB (the
//! GPU memory plan's KV is 0.86 GiB at 65K), and copying, writing and fsyncing that much took
//! ~2 s on a 2-core VM, while the scheduler that asks for the save serves every other session.
//! A restore that a queued save could serve waits for it; dropping the cache waits for all.

use std::collections::HashMap;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use dsv4_kvstore::{Extensions, Fingerprint, KvStore};
use dsv4_model::{Model, ModelConfig, Numerics, SessionState};
use sha2::{Digest, Sha256};

/// Prompts shorter than this are not worth a file (they prefill in well under a second).
pub const MIN_SAVE_TOKENS: usize = 512;

/// During long prefills and generations the state is saved every this many tokens (a
/// multiple of the checkpoint interval, so prefill chunks end there): a crash or a client
/// that gives up mid-prefill loses at most this much work, and two conversations sharing a
/// long prefix produce the same files instead of near-duplicates.
pub const SAVE_INTERVAL: usize = 8192;

pub struct DiskCache {
    shared: Arc<Shared>,
    interval: usize,
    /// The writer thread's queue (closed and joined on drop, so every queued save lands).
    queue: Option<SyncSender<Save>>,
    writer: Option<JoinHandle<()>>,
}

/// What the caller's thread and the writer share.
struct Shared {
    store: KvStore,
    fingerprint: Fingerprint,
    cfg: ModelConfig,
    /// Token prefixes of stored checkpoints by id (files never change once published).
    prefixes: Mutex<HashMap<String, Arc<Vec<u32>>>>,
    /// Tokens of the saves queued or being written, and a signal when one lands.
    pending: Mutex<Vec<Arc<Vec<u32>>>>,
    landed: Condvar,
    /// Saves the writer could not make.
    failures: Mutex<Vec<String>>,
    /// Set while a [`WriteHold`] lives: the writer starts no save.
    held: Mutex<bool>,
    released: Condvar,
}

/// Keeps a cache's writer from starting a save while it lives (tests of what waits for one).
#[doc(hidden)]
pub struct WriteHold(Arc<Shared>);

impl Drop for WriteHold {
    fn drop(&mut self) {
        *lock(&self.0.held) = false;
        self.0.released.notify_all();
    }
}

/// A state to write, with the tokens it holds.
struct Save {
    state: SessionState,
    tokens: Arc<Vec<u32>>,
}

/// Saves queued beyond the one being written. A save holds a whole state in memory (~0.35 GB
/// for Flash at 25K tokens), so a caller that gets ahead of the disk waits here rather than
/// piling states up.
const QUEUE: usize = 1;

/// What the disk cache did for one prompt, for traces and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DiskEvent {
    pub loaded_tokens: usize,
    pub saved_tokens: usize,
    pub warnings: Vec<String>,
}

impl DiskCache {
    /// Opens (creating) `dir` with a byte budget. States depend on the exact model file and on
    /// the numerics, so both go into the fingerprint: a checkpoint is never restored into a
    /// different model or arithmetic.
    pub fn open(dir: &std::path::Path, budget_bytes: u64, model: &Model, numerics: Numerics) -> Result<DiskCache, String> {
        let opts = dsv4_kvstore::Options { budget_bytes, min_extension_tokens: MIN_SAVE_TOKENS as u32 / 2 };
        let store = KvStore::open_with(dir, opts, None).map_err(|e| e.to_string())?;
        let mut h = Sha256::new();
        h.update(b"dsv4 session state v1");
        h.update(model.file.header_bytes());
        // The header alone does not tell two seeds or re-quantizations of one layout apart: a
        // sample of every tensor's bytes (both ends) does, for a few MB of reads.
        for t in model.file.tensors() {
            let d = model.file.tensor_data(t);
            h.update(&d[..d.len().min(256)]);
            h.update(&d[d.len().saturating_sub(256)..]);
        }
        h.update([numerics as u8]);
        let shared = Arc::new(Shared {
            store,
            fingerprint: h.finalize().into(),
            cfg: model.cfg.clone(),
            prefixes: Mutex::default(),
            pending: Mutex::default(),
            landed: Condvar::new(),
            failures: Mutex::default(),
            held: Mutex::default(),
            released: Condvar::new(),
        });
        let (queue, jobs) = sync_channel::<Save>(QUEUE);
        let w = shared.clone();
        let writer = std::thread::Builder::new()
            .name("dsv4-kv-writer".into())
            .spawn(move || {
                for job in jobs {
                    let mut held = lock(&w.held);
                    while *held {
                        held = w.released.wait(held).unwrap_or_else(|p| p.into_inner());
                    }
                    drop(held);
                    // A panic must not leave the save pending: `settle` would wait forever.
                    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| w.write(&job))).is_err() {
                        lock(&w.failures).push(format!("saving a state of {} tokens panicked", job.tokens.len()));
                    }
                    let mut pending = lock(&w.pending);
                    if let Some(i) = pending.iter().position(|t| Arc::ptr_eq(t, &job.tokens)) {
                        pending.remove(i);
                    }
                    w.landed.notify_all();
                }
            })
            .map_err(|e| format!("starting the KV cache writer: {e}"))?;
        Ok(DiskCache { shared, interval: SAVE_INTERVAL, queue: Some(queue), writer: Some(writer) })
    }

    /// Changes the save interval (rounded up to a multiple of the checkpoint interval).
    pub fn with_save_interval(mut self, tokens: usize) -> DiskCache {
        let step = crate::generate::CHECKPOINT_INTERVAL;
        self.interval = tokens.max(1).div_ceil(step) * step;
        self
    }

    /// Whether a session that now holds `len` tokens is at a periodic save point.
    pub fn is_save_point(&self, len: usize) -> bool {
        len >= MIN_SAVE_TOKENS && len.is_multiple_of(self.interval)
    }

    /// The stored state holding the longest prefix of `prompt` (at most `prompt.len() - 1`
    /// tokens, so the last prompt token is always computed for its logits). A queued save of
    /// a longer prefix is waited for.
    pub fn restore(&self, model: &Model, prompt: &[u32], at_least: usize) -> Option<(SessionState, Vec<u32>)> {
        let upto = prompt.len().checked_sub(1)?;
        let sh = &self.shared;
        sh.settle(|t| t.len() > at_least && t.len() <= upto && prompt.starts_with(t));
        // Names alone say how long the best prefix is: read nothing unless it beats `at_least`.
        if sh.store.lookup(&sh.fingerprint, &prompt[..upto])?.tokens as usize <= at_least {
            return None;
        }
        let loaded = sh.store.lookup_load(&sh.fingerprint, &prompt[..upto])?;
        if loaded.tokens.len() <= at_least {
            return None;
        }
        let state = SessionState::from_bytes(&model.cfg, &loaded.payload).ok()?;
        (state.pos as usize == loaded.tokens.len()).then_some((state, loaded.tokens))
    }

    /// Queues the state holding exactly `tokens` for the writer, fetched by `state` only when
    /// the cache [`wants`](Self::wants) it; returns the tokens queued (0 when it is not wanted
    /// or not to be had). The store may still skip a save over its whole budget; it says so
    /// in its warnings.
    pub fn save(&self, model: &Model, tokens: &[u32], state: impl FnOnce() -> Option<SessionState>) -> usize {
        let sh = &self.shared;
        if !self.wants(model, tokens) {
            return 0;
        }
        let (Some(queue), Some(state)) = (&self.queue, state()) else { return 0 };
        if state.pos as usize != tokens.len() {
            return 0;
        }
        let tokens = Arc::new(tokens.to_vec());
        lock(&sh.pending).push(tokens.clone());
        match queue.send(Save { state, tokens: tokens.clone() }) {
            Ok(()) => tokens.len(),
            Err(_) => {
                sh.forget(&tokens);
                0
            }
        }
    }

    /// Whether a state holding `tokens` would be saved: long enough, neither stored nor
    /// queued, and not an extension of a stored prefix too short to be worth a file (the
    /// store's own rule, checked here so the state is not fetched for nothing).
    pub fn wants(&self, model: &Model, tokens: &[u32]) -> bool {
        let sh = &self.shared;
        if tokens.len() < MIN_SAVE_TOKENS || model.cfg != sh.cfg || lock(&sh.pending).iter().any(|t| t.as_slice() == tokens) {
            return false;
        }
        let stored = sh.store.lookup(&sh.fingerprint, tokens).map_or(0, |h| h.tokens as usize);
        tokens.len() >= stored + MIN_SAVE_TOKENS / 2
    }

    /// Keeps the writer from starting another save while the hold lives, even past the
    /// cache's own drop (tests of what waits for a save).
    #[doc(hidden)]
    pub fn hold_writes(&self) -> WriteHold {
        *lock(&self.shared.held) = true;
        WriteHold(self.shared.clone())
    }

    /// Waits until every queued save has been written (shutdown, tests).
    pub fn flush(&self) {
        self.shared.settle(|_| true);
    }

    /// The token prefixes this model's stored checkpoints hold, longer than `longer_than`,
    /// longest first. A caller that knows a prompt's text can find a stored state whose
    /// tokens spell the prompt's beginning under another tokenization (what the model
    /// sampled, re-sent by a client as text) and continue from it.
    pub fn stored_prefixes(&self, longer_than: usize) -> Vec<Arc<Vec<u32>>> {
        let sh = &self.shared;
        // Queued saves count: a restore of one waits for it.
        let mut out: Vec<Arc<Vec<u32>>> = lock(&sh.pending).iter().filter(|t| t.len() > longer_than).cloned().collect();
        let Ok(mut entries) = sh.store.list() else { return out };
        entries.retain(|e| e.fingerprint == sh.fingerprint && e.tokens as usize > longer_than);
        let mut cache = lock(&sh.prefixes);
        cache.retain(|id, _| entries.iter().any(|e| &e.id == id));
        for e in &entries {
            if let Some(t) = cache.get(&e.id) {
                out.push(t.clone());
            } else if let Ok(t) = sh.store.tokens_of(e) {
                let t = Arc::new(t);
                cache.insert(e.id.clone(), t.clone());
                out.push(t);
            }
        }
        // Longest first; a queued save that has just landed is listed once.
        out.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        out.dedup();
        out
    }

    /// (files, bytes) the cache directory holds now, all models included.
    pub fn usage(&self) -> Option<(u64, u64)> {
        self.shared.store.stats().ok().map(|s| (s.files, s.bytes))
    }

    pub fn take_warnings(&self) -> Vec<String> {
        let sh = &self.shared;
        let mut out: Vec<String> = std::mem::take(&mut *lock(&sh.failures));
        out.extend(sh.store.take_warnings().into_iter().map(|w| format!("{}: {}", w.path.display(), w.message)));
        out
    }
}

impl Drop for DiskCache {
    /// Every queued save lands before the cache goes (the writer drains its queue, then ends).
    fn drop(&mut self) {
        self.queue = None;
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

impl Shared {
    fn write(&self, job: &Save) {
        let payload = job.state.to_bytes(&self.cfg);
        // A save the store skips (over its budget) is in its own warnings.
        if let Err(e) = self.store.save(&self.fingerprint, &job.tokens, &payload, &Extensions::new()) {
            lock(&self.failures).push(format!("saving a state of {} tokens: {e}", job.tokens.len()));
        }
    }

    /// Waits while a queued save matches `which`.
    fn settle(&self, which: impl Fn(&[u32]) -> bool) {
        let mut pending = lock(&self.pending);
        while pending.iter().any(|t| which(t)) {
            pending = self.landed.wait(pending).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn forget(&self, tokens: &Arc<Vec<u32>>) {
        lock(&self.pending).retain(|t| !Arc::ptr_eq(t, tokens));
        self.landed.notify_all();
    }
}

/// A lock that survives a panic elsewhere (the data are lists a panic cannot leave torn).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
