//! The forward pass: a batch of tokens through every layer, layer by layer.
//!
//! Per layer, all per-token work (HC mixing, norms, projections, MoE) runs in parallel over
//! the batch, while the few steps that depend on earlier tokens (raw-window push, compressor,
//! indexer and attention) run in token order, each token on its own session's state. Every
//! per-token value is computed by the same code whatever the batch, so prefilling in any
//! chunking, decoding token by token, and decoding several sessions in one batch all give
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
        let owner = vec![0; tokens.len()];
        self.run_sessions(&mut [state], tokens, &owner, want_logits, keep_hidden)
    }

    /// Runs a batch whose token `i` belongs to session `owner[i]` (each session's tokens in
    /// its order, at its own positions): the weights are read once for the whole batch, while
    /// each token attends over its own session's window and rows only.
    pub fn run_sessions(
        &self,
        states: &mut [&mut SessionState],
        tokens: &[u32],
        owner: &[usize],
        want_logits: impl Fn(usize) -> bool + Sync,
        keep_hidden: bool,
    ) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
        let (e, hcn) = (self.cfg.n_embd, self.cfg.hc_count);
        let mut next: Vec<u64> = states.iter().map(|s| s.pos).collect();
        let pos: Vec<u64> = owner
            .iter()
            .map(|&o| {
                next[o] += 1;
                next[o] - 1
            })
            .collect();
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
            let mut layers: Vec<&mut LayerState> = states.iter_mut().map(|s| &mut s.layers[il]).collect();
            self.attention_layer(lw, &mut layers, owner, &self.ropes[il], &pos, &mut streams);
            self.ffn_layer(lw, self.cfg.swiglu_clamp[il], tokens, &mut streams);
        }
        for (s, n) in states.iter_mut().zip(next) {
            s.pos = n;
        }
        let wanted: Vec<&[f32]> = streams.iter().enumerate().filter(|(i, _)| want_logits(*i)).map(|(_, s)| s.as_slice()).collect();
        let logits = if wanted.is_empty() { Vec::new() } else { self.logits_batch(&wanted, &self.w.out_hc, &self.w.out_norm) };
        (logits, if keep_hidden { streams } else { Vec::new() })
    }

    /// `W x` for every token's `x` at once: each weight chunk is read once per batch, and each
    /// output has the bits a separate product would have (so batching never changes results).
    pub(crate) fn mm(&self, m: &Mat, xs: &[Vec<f32>]) -> Vec<Vec<f32>> {
        let flat: Vec<f32> = xs.concat();
        let mut out: Vec<Vec<f32>> = xs.iter().map(|_| vec![0f32; m.rows]).collect();
        let mut views: Vec<&mut [f32]> = out.iter_mut().map(Vec::as_mut_slice).collect();
        m.matmul_into(&flat, &mut views, self.numerics);
        out
    }

    /// HC read-out at one site for every token: the sublayer inputs and the mixings to write
    /// back with.
    fn hc_pre(&self, site: &HcWeights, streams: &[Vec<f32>]) -> (Vec<Vec<f32>>, Vec<hc::HcMix>) {
        let flats: Vec<Vec<f32>> = streams
            .par_iter()
            .map(|s| {
                let mut flat = s.clone();
                norm::rms_norm_plain_inplace(&mut flat, self.cfg.rms_eps);
                flat
            })
            .collect();
        let ms = self.mm(&site.proj, &flats);
        streams
            .par_iter()
            .zip(ms.par_iter())
            .map(|(s, m)| {
                let mix = hc::mix(m, &site.scale, &site.base, self.cfg.hc_count, self.cfg.sinkhorn_iters, self.cfg.hc_eps);
                let mut x = vec![0f32; self.cfg.n_embd];
                hc::read(s, &mix.pre, &mut x);
                (x, mix)
            })
            .unzip()
    }

    pub(crate) fn attention_layer(
        &self,
        lw: &LayerWeights,
        layers: &mut [&mut LayerState],
        owner: &[usize],
        rope: &Rope,
        positions: &[u64],
        streams: &mut [Vec<f32>],
    ) {
        let (xs, mixes) = self.hc_pre(&lw.hc_attn, streams);
        let projs = self.project(lw, rope, &xs, positions);
        let pre: Vec<(hc::HcMix, TokenProj)> = mixes.into_iter().zip(projs).collect();

        // Sessions in parallel (each its own state), a session's tokens in order: a batched
        // decode step's tokens are all from different sessions.
        let mut mine: Vec<Vec<usize>> = vec![Vec::new(); layers.len()];
        for (t, &o) in owner.iter().enumerate() {
            mine[o].push(t);
        }
        let done: Vec<Vec<(usize, Vec<f32>)>> = layers
            .par_iter_mut()
            .zip(mine.par_iter())
            .map(|(ls, ts)| ts.iter().map(|&t| (t, self.attend_token(lw, ls, &pre[t].1, rope, positions[t]))).collect())
            .collect();
        let mut outs: Vec<Vec<f32>> = vec![Vec::new(); pre.len()];
        for (t, o) in done.into_iter().flatten() {
            outs[t] = o;
        }

        let ys = self.output_projection(lw, &outs);
        streams.par_iter_mut().zip(pre.par_iter().zip(ys.par_iter())).for_each(|(s, ((mix, _), y))| {
            hc::write(s, y, mix);
        });
    }

    /// One token's attention at `pos` over its session's layer state: the KV row into the
    /// ring, compressed and indexer rows when a window closes, then every head over the rows
    /// it sees.
    fn attend_token(&self, lw: &LayerWeights, ls: &mut LayerState, p: &TokenProj, rope: &Rope, pos: u64) -> Vec<f32> {
        let cfg = self.cfg;
        let (d, hd) = (cfg.head_dim, cfg.n_head);
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
        o
    }

    /// Everything of the attention sublayer that depends on each token alone, for a batch of
    /// tokens at `positions`.
    fn project(&self, lw: &LayerWeights, rope: &Rope, xs: &[Vec<f32>], positions: &[u64]) -> Vec<TokenProj> {
        let cfg = self.cfg;
        let (d, eps) = (cfg.head_dim, cfg.rms_eps);
        let a: Vec<Vec<f32>> = xs
            .par_iter()
            .map(|x| {
                let mut a = vec![0f32; x.len()];
                norm::rms_norm(x, &lw.attn_norm, eps, &mut a);
                a
            })
            .collect();
        let mut qr = self.mm(&lw.q_a, &a);
        qr.par_iter_mut().for_each(|v| norm::rms_norm_inplace(v, &lw.q_a_norm, eps));
        let mut q = self.mm(&lw.q_b, &qr);
        let mut kv = self.mm(&lw.kv, &a);
        q.par_iter_mut().zip(kv.par_iter_mut()).enumerate().for_each(|(t, (q, kv))| {
            let pos = positions[t];
            for qh in q.chunks_exact_mut(d) {
                norm::rms_norm_plain_inplace(qh, eps);
                rope.apply(qh, pos, false);
            }
            norm::rms_norm_inplace(kv, &lw.kv_norm, eps);
            rope.apply(kv, pos, false);
            self.numerics.store_kv_row(kv, cfg.rope_dim);
        });
        let mut comp = lw.compressor.as_ref().map(|cw| self.compressor_inputs(cw, &a, lw.kind, positions));
        let (mut index_comp, mut index_q) = match &lw.indexer {
            Some(iw) => {
                let kvsc = self.compressor_inputs(&iw.compressor, &a, lw.kind, positions);
                let mut iq = self.mm(&iw.q_b, &qr);
                iq.par_iter_mut().enumerate().for_each(|(t, iq)| {
                    for qh in iq.chunks_exact_mut(cfg.indexer_head_dim) {
                        rope.apply(qh, positions[t], false);
                        self.numerics.indexer_row(qh);
                    }
                });
                let scale = 1.0 / ((cfg.indexer_head_dim * cfg.indexer_heads) as f32).sqrt();
                let mut wts = self.mm(&iw.proj, &a);
                wts.iter_mut().flatten().for_each(|v| *v *= scale);
                (Some(kvsc), Some(iq.into_iter().zip(wts).collect::<Vec<_>>()))
            }
            None => (None, None),
        };
        q.into_iter()
            .zip(kv)
            .enumerate()
            .map(|(t, (q, kv))| TokenProj {
                q,
                kv,
                comp: comp.as_mut().map(|c| std::mem::take(&mut c[t])),
                index_comp: index_comp.as_mut().map(|c| std::mem::take(&mut c[t])),
                index_q: index_q.as_mut().map(|c| std::mem::take(&mut c[t])),
            })
            .collect()
    }

    /// Each token's compressor projection and score (gate logits plus its in-window position
    /// bias).
    fn compressor_inputs(&self, cw: &CompressorWeights, a: &[Vec<f32>], kind: LayerKind, positions: &[u64]) -> Vec<(Vec<f32>, Vec<f32>)> {
        let kv = self.mm(&cw.kv, a);
        let mut sc = self.mm(&cw.gate, a);
        for (t, s) in sc.iter_mut().enumerate() {
            let width = s.len();
            let pm = (positions[t] % kind.ratio() as u64) as usize;
            for (v, b) in s.iter_mut().zip(&cw.ape[pm * width..(pm + 1) * width]) {
                *v += b;
            }
        }
        kv.into_iter().zip(sc).collect()
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
    fn output_projection(&self, lw: &LayerWeights, outs: &[Vec<f32>]) -> Vec<Vec<f32>> {
        let cfg = self.cfg;
        let (g_in, r) = (cfg.heads_per_group() * cfg.head_dim, cfg.o_lora_rank);
        let mut z = vec![vec![0f32; cfg.o_groups * r]; outs.len()];
        for g in 0..cfg.o_groups {
            let slices: Vec<Vec<f32>> = outs.iter().map(|o| o[g * g_in..(g + 1) * g_in].to_vec()).collect();
            let zg = self.mm(&lw.out_a.rows(g * r, r), &slices);
            for (zt, zgt) in z.iter_mut().zip(zg) {
                zt[g * r..(g + 1) * r].copy_from_slice(&zgt);
            }
        }
        self.mm(&lw.out_b, &z)
    }

    pub(crate) fn ffn_layer(&self, lw: &LayerWeights, clamp: f32, tokens: &[u32], streams: &mut [Vec<f32>]) {
        let (xs, mixes) = self.hc_pre(&lw.hc_ffn, streams);
        let fs: Vec<Vec<f32>> = xs
            .par_iter()
            .map(|x| {
                let mut f = vec![0f32; x.len()];
                norm::rms_norm(x, &lw.ffn_norm, self.cfg.rms_eps, &mut f);
                f
            })
            .collect();
        let ys = moe::forward(self, lw, &fs, tokens, clamp);
        streams.par_iter_mut().zip(ys.par_iter().zip(mixes.par_iter())).for_each(|(s, (y, mix))| {
            hc::write(s, y, mix);
        });
    }

    /// An HC head (sigmoid read-out of the streams), final norm and the shared LM head.
    pub(crate) fn logits(&self, s: &[f32], head: &HcWeights, out_norm: &[f32]) -> Vec<f32> {
        self.logits_batch(&[s], head, out_norm).pop().unwrap_or_default()
    }

    /// The logits of several tokens' streams, the output matrix read once for all of them
    /// (it is the largest single read of a decode step; [`mm`](Self::mm) keeps each row's
    /// bits those of a separate product).
    pub(crate) fn logits_batch(&self, streams: &[&[f32]], head: &HcWeights, out_norm: &[f32]) -> Vec<Vec<f32>> {
        let cfg = self.cfg;
        let xs: Vec<Vec<f32>> = streams
            .par_iter()
            .map(|s| {
                let mut flat = s.to_vec();
                norm::rms_norm_plain_inplace(&mut flat, cfg.rms_eps);
                let m = self.mv(&head.proj, &flat);
                let wts = hc::head_weights(&m, head.scale[0], &head.base, cfg.hc_eps);
                let mut v = vec![0f32; cfg.n_embd];
                hc::read(s, &wts, &mut v);
                norm::rms_norm_inplace(&mut v, out_norm, cfg.rms_eps);
                v
            })
            .collect();
        self.mm(&self.w.output, &xs)
    }
}
