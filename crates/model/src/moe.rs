//! The mixture-of-experts FFN: a router picks `n_expert_used` of `n_expert` experts per token,
//! each a clamped SwiGLU MLP, and one shared expert always runs.
//!
//! Routing: scores are `sqrt(softplus(logit))`. The first `n_hash_layers` layers ignore them
//! for selection and take the token's fixed experts from `tid2eid`; the others take the top
//! experts of `score + bias` (the bias steers selection only). The selected experts' scores,
//! normalised to sum 1 and scaled by `expert_weights_scale`, weight their outputs.
//!
//! Two places where references differ, both equal in exact arithmetic: the official code and
//! ds4 apply the route weight to the SwiGLU output before the down projection (done here),
//! transformers after it; ds4 floors the weight sum at 2^-14 and transformers adds 1e-20, while
//! the official code divides plainly (done here, guarding only against a zero sum).

use crate::config::ModelConfig;
use crate::numerics::Numerics;
use crate::ops::{softplus, swiglu_clamped};
use crate::weights::{LayerWeights, Mat, Router};

fn mv(m: &Mat, x: &[f32], numerics: Numerics) -> Vec<f32> {
    let mut out = vec![0f32; m.rows];
    m.matvec(x, &mut out, numerics);
    out
}

/// The experts a token goes to, in selection order.
pub fn route(cfg: &ModelConfig, router: &Router, probs: &[f32], token: u32) -> Vec<usize> {
    let used = cfg.n_expert_used;
    match router {
        Router::Hash(table) => {
            let t = token as usize;
            table[t * used..(t + 1) * used].iter().map(|&x| x as usize).collect()
        }
        Router::Scored { bias } => {
            let mut order: Vec<usize> = (0..probs.len()).collect();
            // Stable sort: among equal biased scores the lower expert id wins.
            order.sort_by(|&a, &b| (probs[b] + bias[b]).total_cmp(&(probs[a] + bias[a])));
            order.truncate(used);
            order
        }
    }
}

/// The FFN sublayer's output for one normed input `f`.
pub fn forward(cfg: &ModelConfig, lw: &LayerWeights, f: &[f32], token: u32, clamp: f32, numerics: Numerics) -> Vec<f32> {
    let (e, ffn) = (cfg.n_embd, cfg.expert_ffn);
    let probs: Vec<f32> = mv(&lw.gate_inp, f, numerics).into_iter().map(|l| softplus(l).sqrt()).collect();
    let sel = route(cfg, &lw.router, &probs, token);
    let sum: f32 = sel.iter().map(|&x| probs[x]).sum();
    let mut y = vec![0f32; e];
    let mut h = vec![0f32; ffn];
    let mut down = vec![0f32; e];
    for &x in &sel {
        let wk = cfg.expert_weights_scale * probs[x] / sum.max(f32::MIN_POSITIVE);
        let g = mv(&lw.gate_exps.rows(x * ffn, ffn), f, numerics);
        let u = mv(&lw.up_exps.rows(x * ffn, ffn), f, numerics);
        for ((hv, gv), uv) in h.iter_mut().zip(&g).zip(&u) {
            *hv = swiglu_clamped(*gv, *uv, clamp) * wk;
        }
        lw.down_exps.rows(x * e, e).matvec(&h, &mut down, numerics);
        y.iter_mut().zip(&down).for_each(|(a, b)| *a += b);
    }
    let g = mv(&lw.gate_sh, f, numerics);
    let u = mv(&lw.up_sh, f, numerics);
    for ((hv, gv), uv) in h.iter_mut().zip(&g).zip(&u) {
        *hv = swiglu_clamped(*gv, *uv, clamp);
    }
    lw.down_sh.matvec(&h, &mut down, numerics);
    y.iter_mut().zip(&down).for_each(|(a, b)| *a += b);
    y
}
