//! A loaded model: geometry, weights bound in the mapped file, and per-layer rotations.

use crate::config::{ConfigError, ModelConfig};
use crate::forward::Forward;
use crate::numerics::Numerics;
use crate::ops::rope::Rope;
use crate::state::SessionState;
use crate::weights::{Weights, WeightsError};
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

    pub fn new_state(&self) -> SessionState {
        SessionState::new(&self.cfg)
    }

    /// Feeds `tokens` to the session and returns the next-token logits after each of them
    /// (`all`) or after the last one only.
    pub fn forward(&self, state: &mut SessionState, tokens: &[u32], all: bool, numerics: Numerics) -> Result<Vec<Vec<f32>>, ForwardError> {
        if let Some(&id) = tokens.iter().find(|&&t| t as usize >= self.cfg.vocab_size) {
            return Err(ForwardError::Token { id, vocab: self.cfg.vocab_size });
        }
        let f = Forward { cfg: &self.cfg, w: &self.weights, ropes: &self.ropes, numerics };
        let last = tokens.len().saturating_sub(1);
        Ok(f.run(state, tokens, |i| all || i == last))
    }
}
