//! The attention sublayer of one chunk: the projections of every token at once, then the
//! steps that read what earlier tokens left in the state (raw-window push, compressors,
//! indexer, attention), for a chunk of several tokens in a few launches (`attn_chunk.rs`),
//! otherwise token by token in order, then the output projection of every token.
//!
//! The raw window is a ring of `sliding_window` rows and a chunk may be longer than the
//! window (the test model's is 8), so each token's KV row enters the ring just before its own
//! attention, never earlier.

use super::attn_chunk::ChunkInputs;
use super::forward::{attend_smem, Pass, ATTEND_THREADS, BLOCK, TOPK_THREADS};
use super::forward::MATMUL_MIN_TOKENS;
use super::state::{act_stride, comp_rows, Frontier, GpuState, Scratch};
use crate::quant::{matmul, Matvec};
use dsv4_model::Numerics;
use super::weights::Layer;
use super::{Arg, GpuModel};
use crate::error::Result;
use dsv4_model::config::LayerKind;
use Arg::{F, I, L, P};

impl GpuModel {
    /// Pushes one token's compressor inputs; writes the pooled row to `row` when `pos` ends a
    /// window.
    #[allow(clippy::too_many_arguments)]
    fn comp_push(&self, f: &Frontier, kv: u64, sc: u64, ape: u64, kind: LayerKind, width: usize, pos: u64, row: u64, norm: u64, freqs: u64) -> Result<()> {
        let n_pairs = self.cfg.rope_dim / 2;
        let args = [
            P(self.ptr(&f.kv)),
            P(self.ptr(&f.score)),
            P(kv),
            P(sc),
            P(ape),
            I(kind.ratio() as i32),
            I(width as i32),
            I((kind == LayerKind::Csa) as i32),
            L(pos as i64),
            P(row),
            P(norm),
            F(self.cfg.rms_eps),
            P(freqs),
            I(n_pairs as i32),
        ];
        self.launch("comp_push", (1, 1), BLOCK, 0, &args)
    }

    pub(super) fn attention(&self, st: &GpuState, s: &Scratch, il: usize, p: &Pass) -> Result<()> {
        let c = &self.cfg;
        let lw: &Layer = &self.layers[il];
        let ls = &st.layers[il];
        let (n, pos0, num) = (p.n(), p.pos0, p.num);
        let (e, d, nh, n_pairs, ql) = (c.n_embd, c.head_dim, c.n_head, c.rope_dim / 2, c.q_lora_rank);
        let (hce, ms) = (c.hc_count * c.n_embd, c.hc_mix().max(c.hc_count));
        let sp = self.ptr(&s.streams);
        let (x, qr, q, mix, m, kv) = (self.ptr(&s.x), self.ptr(&s.qr), self.ptr(&s.q), self.ptr(&s.mix), self.ptr(&s.m), self.ptr(&s.kv));
        let freqs = self.ptr(&lw.freqs);
        let f4 = |a: u64, floats: usize| a + (floats * 4) as u64;

        // Every token's projections.
        self.mm(s, num, &lw.hc_attn.proj, sp, hce, n, m, ms)?;
        self.hc_pre(&lw.hc_attn, sp, m, 1, &lw.attn_norm, x, mix, false, n)?;
        self.mm(s, num, &lw.q_a, x, e, n, qr, ql)?;
        self.norm_rope(qr, qr, self.ptr(&lw.q_a_norm), 1, ql, true, 0, 0, pos0, n, ql)?;
        self.mm(s, num, &lw.q_b, qr, ql, n, q, nh * d)?;
        self.norm_rope(q, q, 0, nh, d, true, freqs, n_pairs, pos0, n, nh * d)?;
        self.mm(s, num, &lw.kv, x, e, n, kv, d)?;
        let width = lw.kind.compressor_lanes() * d;
        let (ckv, csc) = (self.ptr(&s.ckv), self.ptr(&s.csc));
        if let Some(cw) = &lw.comp {
            self.mm(s, num, &cw.kv, x, e, n, ckv, width)?;
            self.mm(s, num, &cw.gate, x, e, n, csc, width)?;
        }
        let ratio = lw.kind.ratio() as u64;
        let (id, ih) = (c.indexer_head_dim, c.indexer_heads);
        let iwidth = lw.kind.compressor_lanes() * id;
        let (ikv, isc, iq, iwp) = (self.ptr(&s.ikv), self.ptr(&s.isc), self.ptr(&s.iq), self.ptr(&s.iw));
        // The indexer scores once some token of the chunk sees more rows than it keeps.
        let last_rows = (pos0 + n as u64).checked_div(ratio).unwrap_or(0) as usize;
        let scoring = lw.indexer.is_some() && last_rows > c.indexer_top_k;
        if let Some(iw) = &lw.indexer {
            self.mm(s, num, &iw.comp.kv, x, e, n, ikv, iwidth)?;
            self.mm(s, num, &iw.comp.gate, x, e, n, isc, iwidth)?;
            if scoring {
                self.mm(s, num, &iw.q_b, qr, ql, n, iq, ih * id)?;
                self.norm_rope(iq, iq, 0, ih, id, false, freqs, n_pairs, pos0, n, ih * id)?;
                if p.official() {
                    self.index_round(iq, n * ih)?;
                }
                self.mm(s, num, &iw.proj, x, e, n, iwp, ih)?;
            }
        }

        let window = c.sliding_window;
        let o = self.ptr(&s.o);
        if self.chunk_attention_fits(st, il, p) {
            let xin = ChunkInputs { q, kv, ckv, csc, ikv, isc, iq, iw: iwp, o };
            self.attention_chunk(st, s, il, p, &xin, scoring)?;
        } else {
            for t in 0..n {
                let pos = pos0 + t as u64;
                // This token's KV row enters the ring.
                let slot = self.ptr(&ls.raw) + ((pos % window as u64) as usize * d * 4) as u64;
                self.norm_rope(f4(kv, t * d), slot, self.ptr(&lw.kv_norm), 1, d, true, freqs, n_pairs, pos, 1, d)?;
                if p.official() {
                    self.kv_round(slot)?;
                }
                // Compressors: a row emitted by this token is visible to it.
                let n_comp = (pos + 1).checked_div(ratio).unwrap_or(0) as usize;
                let emits = ratio != 0 && pos % ratio == ratio - 1;
                if let (Some(cw), Some((rows, f))) = (&lw.comp, &ls.comp) {
                    let row = if emits { self.ptr(rows) + ((n_comp - 1) * d * 4) as u64 } else { 0 };
                    self.comp_push(f, f4(ckv, t * width), f4(csc, t * width), self.ptr(&cw.ape), lw.kind, width, pos, row, self.ptr(&cw.norm), freqs)?;
                    if emits && p.official() {
                        self.kv_round(row)?;
                    }
                }
                let mut mask = 0u64;
                if let (Some(iw), Some((rows, f))) = (&lw.indexer, &ls.index) {
                    let row = if emits { self.ptr(rows) + ((n_comp - 1) * id * 4) as u64 } else { 0 };
                    self.comp_push(f, f4(ikv, t * iwidth), f4(isc, t * iwidth), self.ptr(&iw.comp.ape), lw.kind, iwidth, pos, row, self.ptr(&iw.comp.norm), freqs)?;
                    if emits && p.official() {
                        self.index_round(row, 1)?;
                    }
                    if n_comp > c.indexer_top_k {
                        let score = self.ptr(&st.iscore);
                        let scale = 1.0 / ((id * ih) as f32).sqrt();
                        let fp4 = self.index_fp4(p.official());
                        let args = [P(f4(iq, t * ih * id)), P(f4(iwp, t * ih)), F(scale), P(self.ptr(rows)), I(n_comp as i32), I(ih as i32), I(id as i32), P(score), I(fp4 as i32)];
                        self.launch("index_scores", (self.index_blocks(n_comp, fp4, false), 1), BLOCK, 0, &args)?;
                        mask = self.ptr(&st.mask);
                        let args = [P(score), I(n_comp as i32), I(c.indexer_top_k as i32), P(mask)];
                        self.launch("topk_mask", (1, 1), TOPK_THREADS, 0, &args)?;
                    }
                }
                debug_assert!(n_comp <= comp_rows(lw.kind, st.capacity));

                let n_raw = (pos + 1).min(window as u64) as usize;
                let comp = ls.comp.as_ref().map_or(0, |(rows, _)| self.ptr(rows));
                let args = [
                    P(f4(q, t * nh * d)),
                    P(self.ptr(&ls.raw)),
                    I(window as i32),
                    L(pos as i64),
                    I(n_raw as i32),
                    P(comp),
                    I(n_comp as i32),
                    P(mask),
                    I((window + c.indexer_top_k) as i32),
                    P(self.ptr(&lw.sinks)),
                    P(self.ptr(&st.att)),
                    P(f4(o, t * nh * d)),
                    I(d as i32),
                    P(freqs),
                    I(n_pairs as i32),
                ];
                self.launch("attend", (nh, 1), ATTEND_THREADS, attend_smem(d, window + c.indexer_top_k), &args)?;
            }
        }

        // Grouped low-rank output: each group of heads through its own slice of out_a.
        let (r, groups) = (c.o_lora_rank, c.o_groups);
        let z = self.ptr(&s.z);
        self.out_groups(s, lw, num, o, n, z)?;
        let y = self.ptr(&s.y);
        self.mm(s, num, &lw.out_b, z, groups * r, n, y, e)?;
        self.hc_post(sp, y, mix, n)
    }

    /// The grouped low-rank output of `n` tokens: head group g's outputs (`o`) through its own
    /// slice of out_a into `z`'s columns `g·r ..`. Under the official numerics with a
    /// tensor-core type, one quantization of every token's groups (a row each, so group g of
    /// token t is row `t·groups + g`) and one launch for every group; otherwise a product per
    /// group.
    fn out_groups(&self, s: &Scratch, lw: &Layer, num: Numerics, o: u64, n: usize, z: u64) -> Result<()> {
        let c = &self.cfg;
        let (g_in, r, groups) = (c.heads_per_group() * c.head_dim, c.o_lora_rank, c.o_groups);
        let f4 = |a: u64, floats: usize| a + (floats * 4) as u64;
        let wa = &lw.out_a;
        // The config splits the heads evenly (groups · g_in = n_head · head_dim), so the
        // (token, group) rows tile `o` exactly.
        let one_launch = num == Numerics::Official && n >= MATMUL_MIN_TOKENS && matmul::supports(wa[0].ty()) && Matvec::experts_stacked(wa);
        if !one_launch {
            for (g, w) in wa.iter().enumerate() {
                self.mm(s, num, w, f4(o, g * g_in), c.n_head * c.head_dim, n, f4(z, g * r), groups * r)?;
            }
            return Ok(());
        }
        // The activation scratch holds CHUNK × groups rows (state.rs); `quantize` checks.
        let acts = self.quantize(s, &wa[0], o, g_in, n * groups)?;
        let stride = act_stride(c);
        self.counted(1);
        let label = || format!("matmul {} {}x{} x{groups}", wa[0].ty(), wa[0].rows(), wa[0].cols());
        // SAFETY: the activation rows were just written for n · groups rows of `stride`
        // bytes; z holds n rows of groups · r floats; out_a's views are stacked (checked).
        self.timed(label, || unsafe { self.mt.run_groups_raw(wa, acts, groups * stride, stride, n, z, groups * r, r) })
    }
}
