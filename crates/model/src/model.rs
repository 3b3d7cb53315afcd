//! A loaded model: geometry, weights bound in the mapped file, and per-layer rotations.

use crate::config::{ConfigError, ModelConfig};
use crate::forward::Forward;
use crate::numerics::Numerics;
use crate::ops::rope::Rope;
use crate::state::SessionState;
use crate::mtp::{self, MtpState, MtpWeights};
use crate::weights::{bind_mtp, Weights, WeightsError};
use dsv4_gguf::{GgufError, GgufFile};
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0}")]
    Gguf(#[from] GgufError),
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Weights(#[from] WeightsError),
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ForwardError {
    #[error("token id {id} is outside the vocabulary (0..{vocab})")]
    Token { id: u32, vocab: usize },
    #[error("the MTP block needs one {expected}-value hidden state per token")]
    Hidden { expected: usize },
    #[error("a batch of {states} session states was given {token_lists} token lists")]
    Batch { states: usize, token_lists: usize },
}

/// One `Vec` per token (logits or hidden states).
pub type Rows = Vec<Vec<f32>>;

/// The loaded MTP block (from its own GGUF).
pub struct Mtp {
    _file: Arc<GgufFile>,
    weights: MtpWeights,
}

pub struct Model {
    pub cfg: ModelConfig,
    pub file: Arc<GgufFile>,
    weights: Weights,
    ropes: Vec<Rope>,
}

impl Model {
    pub fn load(path: &Path) -> Result<Model, LoadError> {
        Model::from_file(Arc::new(GgufFile::open(path)?))
    }

    pub fn from_file(file: Arc<GgufFile>) -> Result<Model, LoadError> {
        let cfg = ModelConfig::from_metadata(file.metadata())?;
        let weights = Weights::bind(&file, &cfg)?;
        let ropes = cfg.layer_kinds.iter().map(|&k| Rope::for_layer(&cfg, k)).collect();
        Ok(Model { cfg, file, weights, ropes })
    }

    /// Loads the separate MTP file for this model.
    pub fn load_mtp(&self, path: &Path) -> Result<Mtp, LoadError> {
        let file = Arc::new(GgufFile::open(path)?);
        let weights = bind_mtp(&file, &self.cfg)?;
        Ok(Mtp { _file: file, weights })
    }

    pub fn new_mtp_state(&self) -> MtpState {
        MtpState::new(&self.cfg)
    }

    /// The bound weights (for backends that upload them elsewhere, such as the GPU runner).
    pub fn weights(&self) -> &Weights {
        &self.weights
    }

    /// Each layer's rotation.
    pub fn ropes(&self) -> &[Rope] {
        &self.ropes
    }

    pub fn new_state(&self) -> SessionState {
        SessionState::new(&self.cfg)
    }

    /// Feeds `tokens` to the session and returns the next-token logits after each of them
    /// (`all`) or after the last one only.
    pub fn forward(&self, state: &mut SessionState, tokens: &[u32], all: bool, numerics: Numerics) -> Result<Vec<Vec<f32>>, ForwardError> {
        Ok(self.forward_hidden(state, tokens, all, numerics, false)?.0)
    }

    /// As [`forward`](Self::forward), also returning each token's final HC state when
    /// `keep_hidden` (the MTP block's input).
    pub fn forward_hidden(
        &self,
        state: &mut SessionState,
        tokens: &[u32],
        all: bool,
        numerics: Numerics,
        keep_hidden: bool,
    ) -> Result<(Rows, Rows), ForwardError> {
        self.check_tokens(tokens)?;
        let last = tokens.len().saturating_sub(1);
        Ok(on_pool(|| self.runner(numerics).run_hidden(state, tokens, |i| all || i == last, keep_hidden)))
    }

    /// One batched step over several sessions: `tokens[i]` are fed to `states[i]`, and each
    /// session gets the logits after its last token (empty for a session given no tokens).
    /// Weights are read once for the whole batch; each session's result is bit-identical to
    /// [`forward`](Self::forward) on it alone, whoever else is in the batch.
    pub fn forward_sessions(&self, states: &mut [&mut SessionState], tokens: &[&[u32]], numerics: Numerics) -> Result<Vec<Vec<f32>>, ForwardError> {
        if states.len() != tokens.len() {
            return Err(ForwardError::Batch { states: states.len(), token_lists: tokens.len() });
        }
        let mut flat = Vec::new();
        let mut owner = Vec::new();
        let mut last = vec![usize::MAX; tokens.len()];
        for (i, t) in tokens.iter().enumerate() {
            self.check_tokens(t)?;
            flat.extend_from_slice(t);
            owner.extend(std::iter::repeat_n(i, t.len()));
            if !t.is_empty() {
                last[i] = flat.len() - 1;
            }
        }
        let (rows, _) = on_pool(|| self.runner(numerics).run_sessions(states, &flat, &owner, |i| last.contains(&i), false));
        // Rows come in token order; a session's last token fixes its place among them.
        let mut order: Vec<usize> = (0..tokens.len()).filter(|&i| last[i] != usize::MAX).collect();
        order.sort_by_key(|&i| last[i]);
        let mut out = vec![Vec::new(); tokens.len()];
        for (i, row) in order.into_iter().zip(rows) {
            out[i] = row;
        }
        Ok(out)
    }

    /// Runs the MTP block on `tokens` paired with `hidden` states; logits after each token.
    pub fn forward_mtp(
        &self,
        mtp: &Mtp,
        state: &mut MtpState,
        tokens: &[u32],
        hidden: &[Vec<f32>],
        numerics: Numerics,
    ) -> Result<Vec<Vec<f32>>, ForwardError> {
        self.check_tokens(tokens)?;
        let expected = self.cfg.hc_count * self.cfg.n_embd;
        if hidden.len() != tokens.len() || hidden.iter().any(|h| h.len() != expected) {
            return Err(ForwardError::Hidden { expected });
        }
        Ok(mtp::forward(&self.runner(numerics), &mtp.weights, state, tokens, hidden))
    }

    fn check_tokens(&self, tokens: &[u32]) -> Result<(), ForwardError> {
        match tokens.iter().find(|&&t| t as usize >= self.cfg.vocab_size) {
            Some(&id) => Err(ForwardError::Token { id, vocab: self.cfg.vocab_size }),
            None => Ok(()),
        }
    }

    fn runner(&self, numerics: Numerics) -> Forward<'_> {
        Forward { cfg: &self.cfg, w: &self.weights, ropes: &self.ropes, numerics }
    }
}

/// Runs `f` on a thread of rayon's pool while the caller waits. A forward pass makes hundreds
/// of parallel calls per token; each one from a thread outside the pool (the engine's, a
/// server's) is a handoff through the kernel (a latch, a futex wake and wait), while inside
/// the pool a join costs a few atomics. On the tiny model's batched decode the handoffs took
/// a quarter of the time. From a pool thread, `f` runs in place.
fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| f())
}
