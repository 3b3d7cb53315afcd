//! The multi-token-prediction block (the separate MTP GGUF, `mtp.0.*`): one more decoder layer
//! (window-only attention with its own raw cache, score-routed MoE) that predicts a further
//! token from a token embedding and the main model's final HC state.
//!
//! `S = e_proj · norm_e(embed(t)) + h_proj · norm_h(P[h])` per stream `h`, then the layer,
//! then its own HC head and norm before the shared LM head. Which (token, hidden) pairs to feed
//! it is the caller's choice: ds4 pairs a position's hidden state with that same position's
//! token, the DeepSeek-V3 paper with the next one (ARCH.md §8).

use crate::config::{LayerKind, ModelConfig};
use crate::forward::Forward;
use crate::ops::norm;
use crate::ops::rope::Rope;
use crate::state::LayerState;
use crate::weights::{HcWeights, LayerWeights, Mat};
use rayon::prelude::*;

pub struct MtpWeights {
    pub e_proj: Mat,
    pub h_proj: Mat,
    pub enorm: Vec<f32>,
    pub hnorm: Vec<f32>,
    pub norm: Vec<f32>,
    pub head: HcWeights,
    pub layer: LayerWeights,
}

/// The MTP block's own state: the raw window of its attention.
#[derive(Clone, Debug, PartialEq)]
pub struct MtpState {
    pub pos: u64,
    pub layer: LayerState,
}

impl MtpState {
    pub fn new(cfg: &ModelConfig) -> MtpState {
        MtpState { pos: 0, layer: LayerState::new(cfg, LayerKind::Window) }
    }
}

/// Runs the block on `tokens` paired with `hidden` (one final HC state per token) at positions
/// `state.pos ..`, returning the logits after each.
pub fn forward(f: &Forward, mtp: &MtpWeights, state: &mut MtpState, tokens: &[u32], hidden: &[Vec<f32>]) -> Vec<Vec<f32>> {
    let cfg = f.cfg;
    let e = cfg.n_embd;
    let mut streams: Vec<Vec<f32>> = tokens
        .par_iter()
        .zip(hidden.par_iter())
        .map(|(&t, p)| {
            let mut x = vec![0f32; e];
            f.w.embd.row_f32(t as usize, &mut x);
            norm::rms_norm_inplace(&mut x, &mtp.enorm, cfg.rms_eps);
            let ep = f.mv(&mtp.e_proj, &x);
            let mut s = Vec::with_capacity(cfg.hc_count * e);
            for ph in p.chunks_exact(e) {
                let mut h = ph.to_vec();
                norm::rms_norm_inplace(&mut h, &mtp.hnorm, cfg.rms_eps);
                let hp = f.mv(&mtp.h_proj, &h);
                s.extend(ep.iter().zip(&hp).map(|(a, b)| a + b));
            }
            s
        })
        .collect();
    let rope = Rope::for_layer(cfg, LayerKind::Window);
    let positions: Vec<u64> = (0..tokens.len() as u64).map(|i| state.pos + i).collect();
    f.attention_layer(&mtp.layer, &mut [&mut state.layer], &vec![0; tokens.len()], &rope, &positions, &mut streams);
    let clamp = cfg.swiglu_clamp.last().copied().unwrap_or(10.0);
    f.ffn_layer(&mtp.layer, clamp, tokens, &mut streams);
    state.pos += tokens.len() as u64;
    streams.par_iter().map(|s| f.logits(s, &mtp.head, &mtp.norm)).collect()
}

