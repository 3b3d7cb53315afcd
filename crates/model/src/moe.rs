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
use crate::forward::Forward;
use crate::ops::{softplus, swiglu_clamped};
use crate::weights::{LayerWeights, Router};
use rayon::prelude::*;

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

/// The FFN sublayer's output for each token's normed input. Tokens are grouped by expert so
/// each expert's weights are read once per batch; every product still has the bits of a
/// per-token one, and each token sums its experts in selection order, then the shared expert,
/// so results never depend on the batch.
pub fn forward(fw: &Forward, lw: &LayerWeights, fs: &[Vec<f32>], tokens: &[u32], clamp: f32) -> Vec<Vec<f32>> {
    let cfg = fw.cfg;
    let (e, ffn) = (cfg.n_embd, cfg.expert_ffn);
    let logits = fw.mm(&lw.gate_inp, fs);
    let routes: Vec<(Vec<usize>, Vec<f32>)> = logits
        .par_iter()
        .zip(tokens.par_iter())
        .map(|(l, &tok)| {
            let probs: Vec<f32> = l.iter().map(|&z| softplus(z).sqrt()).collect();
            let sel = route(cfg, &lw.router, &probs, tok);
            let sum: f32 = sel.iter().map(|&x| probs[x]).sum();
            let wk = sel.iter().map(|&x| cfg.expert_weights_scale * probs[x] / sum.max(f32::MIN_POSITIVE)).collect();
            (sel, wk)
        })
        .collect();
    let mut users: Vec<Vec<(usize, usize)>> = vec![Vec::new(); cfg.n_expert];
    for (t, (sel, _)) in routes.iter().enumerate() {
        for (k, &x) in sel.iter().enumerate() {
            users[x].push((t, k));
        }
    }
    // Each expert's tokens together (its weights decoded once for all of them), the experts
    // and the shared expert in parallel: every product is independent, and the sums below
    // run in a fixed order, so the bits do not depend on the scheduling.
    let routed = || -> Vec<(usize, Vec<Vec<f32>>)> {
        users
            .par_iter()
            .enumerate()
            .filter(|(_, us)| !us.is_empty())
            .map(|(x, us)| {
                let fx: Vec<Vec<f32>> = us.iter().map(|&(t, _)| fs[t].clone()).collect();
                let g = fw.mm(&lw.gate_exps.rows(x * ffn, ffn), &fx);
                let u = fw.mm(&lw.up_exps.rows(x * ffn, ffn), &fx);
                let hs: Vec<Vec<f32>> = us
                    .iter()
                    .zip(g.iter().zip(&u))
                    .map(|(&(t, k), (g, u))| {
                        let wk = routes[t].1[k];
                        // The route weight scales the SwiGLU output, before the down projection.
                        g.iter().zip(u).map(|(gv, uv)| swiglu_clamped(*gv, *uv, clamp) * wk).collect()
                    })
                    .collect();
                (x, fw.mm(&lw.down_exps.rows(x * e, e), &hs))
            })
            .collect()
    };
    let shared = || {
        let g = fw.mm(&lw.gate_sh, fs);
        let u = fw.mm(&lw.up_sh, fs);
        let hs: Vec<Vec<f32>> =
            g.iter().zip(&u).map(|(g, u)| g.iter().zip(u).map(|(gv, uv)| swiglu_clamped(*gv, *uv, clamp)).collect()).collect();
        fw.mm(&lw.down_sh, &hs)
    };
    let (per_expert, shared) = rayon::join(routed, shared);
    let mut downs: Vec<Vec<Vec<f32>>> = routes.iter().map(|(sel, _)| vec![Vec::new(); sel.len()]).collect();
    for (x, ds) in per_expert {
        for (&(t, k), d) in users[x].iter().zip(ds) {
            downs[t][k] = d;
        }
    }
    downs
        .into_iter()
        .zip(shared)
        .map(|(routed, sh)| {
            let mut y = vec![0f32; e];
            for d in routed.iter().chain(std::iter::once(&sh)) {
                y.iter_mut().zip(d).for_each(|(a, b)| *a += b);
            }
            y
        })
        .collect()
}
