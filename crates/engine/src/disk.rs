//! The disk KV cache as a session sees it: before prefilling, take the longest stored prefix
//! of the prompt when it beats what the live session holds; after prefilling a long prompt,
//! save the state so the next request, or the next run, starts from there.

use dsv4_kvstore::{Extensions, Fingerprint, KvStore, SaveStatus};
use dsv4_model::{Model, Numerics, SessionState};
use sha2::{Digest, Sha256};

/// Prompts shorter than this are not worth a file (they prefill in well under a second).
pub const MIN_SAVE_TOKENS: usize = 512;

/// During long prefills and generations the state is saved every this many tokens (a
/// multiple of the checkpoint interval, so prefill chunks end there): a crash or a client
/// that gives up mid-prefill loses at most this much work, and two conversations sharing a
/// long prefix produce the same files instead of near-duplicates.
pub const SAVE_INTERVAL: usize = 8192;

pub struct DiskCache {
    store: KvStore,
    fingerprint: Fingerprint,
    interval: usize,
    /// Token prefixes of stored checkpoints by id (files never change once published).
    prefixes: std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<Vec<u32>>>>,
}

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
        Ok(DiskCache { store, fingerprint: h.finalize().into(), interval: SAVE_INTERVAL, prefixes: Default::default() })
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
    /// tokens, so the last prompt token is always computed for its logits).
    pub fn restore(&self, model: &Model, prompt: &[u32], at_least: usize) -> Option<(SessionState, Vec<u32>)> {
        let upto = prompt.len().checked_sub(1)?;
        // Names alone say how long the best prefix is: read nothing unless it beats `at_least`.
        if self.store.lookup(&self.fingerprint, &prompt[..upto])?.tokens as usize <= at_least {
            return None;
        }
        let loaded = self.store.lookup_load(&self.fingerprint, &prompt[..upto])?;
        if loaded.tokens.len() <= at_least {
            return None;
        }
        let state = SessionState::from_bytes(&model.cfg, &loaded.payload).ok()?;
        (state.pos as usize == loaded.tokens.len()).then_some((state, loaded.tokens))
    }

    /// Saves `state`, which holds exactly `tokens`; returns the tokens written (0 when the
    /// store already had them or skipped the save).
    pub fn save(&self, model: &Model, state: &SessionState, tokens: &[u32]) -> usize {
        if tokens.len() < MIN_SAVE_TOKENS {
            return 0;
        }
        let payload = state.to_bytes(&model.cfg);
        match self.store.save(&self.fingerprint, tokens, &payload, &Extensions::new()) {
            Ok(info) if info.status == SaveStatus::Written => tokens.len(),
            _ => 0,
        }
    }

    /// The token prefixes this model's stored checkpoints hold, longer than `longer_than`,
    /// longest first. A caller that knows a prompt's text can find a stored state whose
    /// tokens spell the prompt's beginning under another tokenization (what the model
    /// sampled, re-sent by a client as text) and continue from it.
    pub fn stored_prefixes(&self, longer_than: usize) -> Vec<std::sync::Arc<Vec<u32>>> {
        let Ok(mut entries) = self.store.list() else { return Vec::new() };
        entries.retain(|e| e.fingerprint == self.fingerprint && e.tokens as usize > longer_than);
        let mut cache = self.prefixes.lock().unwrap_or_else(|p| p.into_inner());
        cache.retain(|id, _| entries.iter().any(|e| &e.id == id));
        let mut out = Vec::new();
        for e in &entries {
            if let Some(t) = cache.get(&e.id) {
                out.push(t.clone());
            } else if let Ok(t) = self.store.tokens_of(e) {
                let t = std::sync::Arc::new(t);
                cache.insert(e.id.clone(), t.clone());
                out.push(t);
            }
        }
        out.sort_by_key(|t| std::cmp::Reverse(t.len()));
        out
    }

    /// (files, bytes) the cache directory holds now, all models included.
    pub fn usage(&self) -> Option<(u64, u64)> {
        self.store.stats().ok().map(|s| (s.files, s.bytes))
    }

    pub fn take_warnings(&self) -> Vec<String> {
        self.store.take_warnings().into_iter().map(|w| format!("{}: {}", w.path.display(), w.message)).collect()
    }
}
