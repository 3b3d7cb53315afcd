//! The forward pass: a batch of tokens through every layer, layer by layer.
//!
//! Per layer, all per-token work (HC mixing, norms, projections, MoE) runs in parallel over
//! the batch, while the few steps that depend on earlier tokens (raw-window push, compressor,
//! indexer and attention) run in token order. Every per-token value is computed by the same
//! code whatever the batch, so prefilling in any chunking and decoding token by token give
//! bit-identical states and logits.

use crate::attention::attend_head;
use crate::compressor;
use crate::config::{LayerKind, ModelConfig};
use crate::indexer;
use crate::moe;
use crate::numerics::Numerics;
use crate::ops::{hc, norm, rope::Rope};
use crate::state::{LayerState, SessionState};
use crate::weights::{CompressorWeights, HcWeights, LayerWeights, Mat, Weights};
use rayon::prelude::*;

pub struct Forward<'a> {
    pub cfg: &'a ModelConfig,
    pub w: &'a Weights,
    pub ropes: &'a [Rope],
    pub numerics: Numerics,
}

/// Per-token values carried from the parallel projection step to the ordered attention step.
struct TokenProj {
    q: Vec<f32>,
    kv: Vec<f32>,
    comp: Option<(Vec<f32>, Vec<f32>)>,
    index_comp: Option<(Vec<f32>, Vec<f32>)>,
    index_q: Option<(Vec<f32>, Vec<f32>)>,
}

impl<'a> Forward<'a> {
    pub(crate) fn mv(&self, m: &Mat, x: &[f32]) -> Vec<f32> {
        let mut out = vec![0f32; m.rows];
        m.matvec(x, &mut out, self.numerics);
        out
    }

    /// Runs `tokens` (at positions `state.pos ..`) and returns the logits after each token
    /// whose index `want_logits` accepts, in order, each `vocab_size` long.
    pub fn run(&self, state: &mut SessionState, tokens: &[u32], want_logits: impl Fn(usize) -> bool + Sync) -> Vec<Vec<f32>> {
        let (logits, _) = self.run_hidden(state, tokens, want_logits, false);
        logits
    }

    /// As [`run`](Self::run), also returning each token's final HC state (`hc × n_embd`) when
    /// `keep_hidden`: the MTP block drafts from it.
    pub fn run_hidden(
        &self,
        state: &mut SessionState,
        tokens: &[u32],
        want_logits: impl Fn(usize) -> bool + Sync,
        keep_hidden: bool,
    ) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
        let (e, hcn) = (self.cfg.n_embd, self.cfg.hc_count);
        let pos0 = state.pos;
        // Each token's HC state starts as its embedding copied into every stream.
        let mut streams: Vec<Vec<f32>> = tokens
            .par_iter()
            .map(|&t| {
                let mut x = vec![0f32; e];
                self.w.embd.row_f32(t as usize, &mut x);
                x.repeat(hcn)
            })
            .collect();
        for (il, lw) in self.w.layers.iter().enumerate() {
            self.attention_layer(lw, &mut state.layers[il], &self.ropes[il], pos0, &mut streams);
            self.ffn_layer(lw, self.cfg.swiglu_clamp[il], tokens, &mut streams);
        }
        state.pos += tokens.len() as u64;
        let logits = streams
            .par_iter()
            .enumerate()
            .filter(|(i, _)| want_logits(*i))
            .map(|(_, s)| self.logits(s, &self.w.out_hc, &self.w.out_norm))
            .collect();
        (logits, if keep_hidden { streams } else { Vec::new() })
    }

    /// HC read-out at one site: the sublayer input and the mixing to write back with.
    fn hc_pre(&self, site: &HcWeights, s: &[f32]) -> (Vec<f32>, hc::HcMix) {
        let mut flat = s.to_vec();
        norm::rms_norm_plain_inplace(&mut flat, self.cfg.rms_eps);
        let m = self.mv(&site.proj, &flat);
        let mix = hc::mix(&m, &site.scale, &site.base, self.cfg.hc_count, self.cfg.sinkhorn_iters, self.cfg.hc_eps);
        let mut x = vec![0f32; self.cfg.n_embd];
        hc::read(s, &mix.pre, &mut x);
        (x, mix)
    }

    pub(crate) fn attention_layer(
        &self,
        lw: &LayerWeights,
        ls: &mut LayerState,
        rope: &Rope,
        pos0: u64,
        streams: &mut [Vec<f32>],
    ) {
        let cfg = self.cfg;
        let pre: Vec<(hc::HcMix, TokenProj)> = streams
            .par_iter()
            .enumerate()
            .map(|(t, s)| {
                let (x, mix) = self.hc_pre(&lw.hc_attn, s);
                (mix, self.project(lw, rope, &x, pos0 + t as u64))
            })
            .collect();

        let (d, hd) = (cfg.head_dim, cfg.n_head);
        let mut outs: Vec<Vec<f32>> = Vec::with_capacity(pre.len());
        for (t, (_, p)) in pre.iter().enumerate() {
            let pos = pos0 + t as u64;
            let w = cfg.sliding_window;
            let slot = (pos % w as u64) as usize;
            ls.raw[slot * d..(slot + 1) * d].copy_from_slice(&p.kv);

            if let (Some(f), Some((kv, sc)), Some(cw)) = (ls.compressor.as_mut(), &p.comp, &lw.compressor) {
                if let Some(row) = compressor::push(f, pos, kv, sc) {
                    let row = self.finish_row(row, cw, rope, pos, lw.kind, false);
                    ls.comp_rows.extend_from_slice(&row);
                }
            }
            if let (Some(f), Some((kv, sc)), Some(iw)) = (ls.indexer.as_mut(), &p.index_comp, &lw.indexer) {
                if let Some(row) = compressor::push(f, pos, kv, sc) {
                    let row = self.finish_row(row, &iw.compressor, rope, pos, lw.kind, true);
                    ls.index_rows.extend_from_slice(&row);
                }
            }

            let n_raw = (pos + 1).min(w as u64) as usize;
            let first = pos + 1 - n_raw as u64;
            let n_comp = ls.comp_rows.len() / d;
            let visible: Vec<usize> = match (&p.index_q, lw.kind) {
                (Some((q, wts)), LayerKind::Csa) if n_comp > cfg.indexer_top_k => {
                    indexer::select(q, wts, &ls.index_rows, n_comp, cfg.indexer_top_k)
                }
                _ => (0..n_comp).collect(),
            };
            let raw = &ls.raw;
            let comp = &ls.comp_rows;
            let rows = (0..n_raw)
                .map(move |i| {
                    let s = ((first + i as u64) % w as u64) as usize;
                    &raw[s * d..(s + 1) * d]
                })
                .chain(visible.iter().map(move |&c| &comp[c * d..(c + 1) * d]));
            let mut o = vec![0f32; hd * d];
            o.par_chunks_mut(d).enumerate().for_each(|(h, oh)| {
                attend_head(&p.q[h * d..(h + 1) * d], rows.clone(), lw.sinks[h], oh);
                // Values carry their own key position's rotation; rotating back by the query's
                // position leaves the tail depending on relative position only.
                rope.apply(oh, pos, true);
            });
            outs.push(o);
        }

        streams.par_iter_mut().zip(pre.par_iter().zip(outs.par_iter())).for_each(|(s, ((mix, _), o))| {
            let y = self.output_projection(lw, o);
            hc::write(s, &y, mix);
        });
    }

    /// Everything of the attention sublayer that depends on this token alone.
    fn project(&self, lw: &LayerWeights, rope: &Rope, x: &[f32], pos: u64) -> TokenProj {
        let cfg = self.cfg;
        let (d, eps) = (cfg.head_dim, cfg.rms_eps);
        let mut a = vec![0f32; x.len()];
        norm::rms_norm(x, &lw.attn_norm, eps, &mut a);
        let mut qr = self.mv(&lw.q_a, &a);
        norm::rms_norm_inplace(&mut qr, &lw.q_a_norm, eps);
        let mut q = self.mv(&lw.q_b, &qr);
        for qh in q.chunks_exact_mut(d) {
            norm::rms_norm_plain_inplace(qh, eps);
            rope.apply(qh, pos, false);
        }
        let mut kv = self.mv(&lw.kv, &a);
        norm::rms_norm_inplace(&mut kv, &lw.kv_norm, eps);
        rope.apply(&mut kv, pos, false);
        self.numerics.store_kv_row(&mut kv, cfg.rope_dim);

        let comp = lw.compressor.as_ref().map(|cw| self.compressor_inputs(cw, &a, lw.kind, pos));
        let (index_comp, index_q) = match &lw.indexer {
            Some(iw) => {
                let kvsc = self.compressor_inputs(&iw.compressor, &a, lw.kind, pos);
                let mut iq = self.mv(&iw.q_b, &qr);
                for qh in iq.chunks_exact_mut(cfg.indexer_head_dim) {
                    rope.apply(qh, pos, false);
                    self.numerics.indexer_row(qh);
                }
                let scale = 1.0 / ((cfg.indexer_head_dim * cfg.indexer_heads) as f32).sqrt();
                let wts: Vec<f32> = self.mv(&iw.proj, &a).into_iter().map(|v| v * scale).collect();
                (Some(kvsc), Some((iq, wts)))
            }
            None => (None, None),
        };
        TokenProj { q, kv, comp, index_comp, index_q }
    }

    /// A token's compressor projection and score (gate logits plus its in-window position bias).
    fn compressor_inputs(&self, cw: &CompressorWeights, a: &[f32], kind: LayerKind, pos: u64) -> (Vec<f32>, Vec<f32>) {
        let kv = self.mv(&cw.kv, a);
        let mut sc = self.mv(&cw.gate, a);
        let width = sc.len();
        let pm = (pos % kind.ratio() as u64) as usize;
        for (s, b) in sc.iter_mut().zip(&cw.ape[pm * width..(pm + 1) * width]) {
            *s += b;
        }
        (kv, sc)
    }

    /// Norm, RoPE at the window's first position, and the cache numerics of a pooled row.
    fn finish_row(&self, mut row: Vec<f32>, cw: &CompressorWeights, rope: &Rope, pos: u64, kind: LayerKind, indexer: bool) -> Vec<f32> {
        norm::rms_norm_inplace(&mut row, &cw.norm, self.cfg.rms_eps);
        rope.apply(&mut row, pos + 1 - kind.ratio() as u64, false);
        if indexer {
            self.numerics.indexer_row(&mut row);
        } else {
            self.numerics.store_kv_row(&mut row, self.cfg.rope_dim);
        }
        row
    }

    /// Grouped low-rank output: each group of heads is projected on its own, then all groups
    /// together back to the model width.
    fn output_projection(&self, lw: &LayerWeights, o: &[f32]) -> Vec<f32> {
        let cfg = self.cfg;
        let (g_in, r) = (cfg.heads_per_group() * cfg.head_dim, cfg.o_lora_rank);
        let mut z = vec![0f32; cfg.o_groups * r];
        for (g, zg) in z.chunks_exact_mut(r).enumerate() {
            lw.out_a.rows(g * r, r).matvec(&o[g * g_in..(g + 1) * g_in], zg, self.numerics);
        }
        self.mv(&lw.out_b, &z)
    }

    pub(crate) fn ffn_layer(&self, lw: &LayerWeights, clamp: f32, tokens: &[u32], streams: &mut [Vec<f32>]) {
        streams.par_iter_mut().zip(tokens.par_iter()).for_each(|(s, &tok)| {
            let (x, mix) = self.hc_pre(&lw.hc_ffn, s);
            let mut f = vec![0f32; x.len()];
            norm::rms_norm(&x, &lw.ffn_norm, self.cfg.rms_eps, &mut f);
            let y = moe::forward(self.cfg, lw, &f, tok, clamp, self.numerics);
            hc::write(s, &y, &mix);
        });
    }

    /// An HC head (sigmoid read-out of the streams), final norm and the shared LM head.
    pub(crate) fn logits(&self, s: &[f32], head: &HcWeights, out_norm: &[f32]) -> Vec<f32> {
        let cfg = self.cfg;
        let mut flat = s.to_vec();
        norm::rms_norm_plain_inplace(&mut flat, cfg.rms_eps);
        let m = self.mv(&head.proj, &flat);
        let wts = hc::head_weights(&m, head.scale[0], &head.base, cfg.hc_eps);
        let mut v = vec![0f32; cfg.n_embd];
        hc::read(s, &wts, &mut v);
        norm::rms_norm_inplace(&mut v, out_norm, cfg.rms_eps);
        self.mv(&self.w.output, &v)
    }
}
