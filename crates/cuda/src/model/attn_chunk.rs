//! The order-dependent attention steps of a prefill chunk in a few launches per layer
//! (`chunk.cu`), where the per-token path (`attn.rs`) runs several per token: at the
//! prefill rates we aim for, a layer has about 2 µs per token, less than one launch.
//!
//! Per layer: the chunk's KV rows normalised and rotated into their own scratch (the ring
//! keeps the rows from before the chunk, which early tokens still need when the chunk is
//! longer than the window); each compressor's rows completed inside the chunk pooled at once,
//! then its frontier rebuilt as the last token leaves it; the indexer's masks for the tokens
//! that see more rows than it keeps; every token's attention in one launch; the ring updated.
//! Same operations and order per value as the per-token kernels, so the two paths agree bit
//! for bit, except the attention itself under the official numerics: there it runs on the
//! BF16 tensor cores (`attend_chunk_mma`), exact products added in another order, so a prompt
//! prefilled in chunks and the same prompt decoded token by token differ by f32 rounding
//! (`tests/forward.rs` compares both with the CPU).

use super::forward::{Pass, BLOCK, TOPK_THREADS};
use super::state::{mask_stride, Frontier, GpuState, Scratch, CHUNK_ATT_FLOATS};
use super::weights::Layer;
use super::{Arg, GpuModel};
use crate::error::Result;
use dsv4_model::config::LayerKind;
use Arg::{F, I, L, P};

/// The chunk's projections the attention steps read (device addresses, token-major).
pub(super) struct ChunkInputs {
    pub q: u64,
    pub kv: u64,
    pub ckv: u64,
    pub csc: u64,
    pub ikv: u64,
    pub isc: u64,
    pub iq: u64,
    pub iw: u64,
    pub o: u64,
}

/// Query heads one `attend_chunk` block serves: the most of 8, 4, 2, 1 that divide the head
/// count and whose queries and scores (`per_head` floats each), with `shared` more floats
/// (the row ids), fit [`CHUNK_ATT_FLOATS`].
fn heads_per_block(heads: usize, per_head: usize, shared: usize) -> usize {
    [8, 4, 2, 1].into_iter().find(|&g| heads.is_multiple_of(g) && g * per_head + shared <= CHUNK_ATT_FLOATS).unwrap_or(1)
}

/// Rows a token of `attend_chunk` may attend to (its score slots per head), and the ids it
/// lists (as many, where the indexer's mask may apply; none otherwise), for a layer whose
/// last token of the chunk sees `last` compressed rows: the window plus the rows the indexer
/// keeps, or every visible row in a layer without an indexer.
fn chunk_rows_cap(window: usize, last: usize, indexer: Option<usize>) -> (usize, usize) {
    match indexer {
        Some(top_k) => (window + last.min(top_k), window + last.min(top_k)),
        None => (window + last, 0),
    }
}

/// Threads of `attend_chunk_mma` (`ATT_MMA_WARPS` warps in chunk.cu) and the largest head
/// dimension it takes (`ATT_MMA_MAX_D`).
const ATT_MMA_THREADS: usize = 256;
const ATT_MMA_MAX_D: usize = 512;

/// Dynamic shared memory (bytes) of an `attend_chunk_mma` block of `hg` query heads: three
/// BF16 parts of each query (`d / 2 + 8` pairs a row), `ncap` scores a head (rows padded as
/// the kernel pads them), then `ids` row ids.
fn attend_mma_smem(d: usize, hg: usize, ncap: usize, ids: usize) -> usize {
    let (qstride, sstride) = (d / 2 + 8, ncap.next_multiple_of(32) + 16);
    (3 * hg * qstride + hg * sstride + ids) * 4
}

/// Query heads an `attend_chunk_mma` block serves: 32 (two tiles, each row read once for
/// twice the heads) where they divide the head count and two such blocks fit `optin` bytes,
/// else 16 (the last block's missing heads as zeros; a 32-head block never fits where a
/// 16-head one does not); `None` for head dimensions it does not take or scores too many for
/// shared memory. The block is bound by
/// latency (its rows come from L2 a warp at a time), so two blocks an SM of 16 heads beat
/// one of 32 although each row is read twice as often: at Flash's 512 dimensions and ~640
/// rows a block of 32 heads takes ~190 KB, and 16-head blocks cut the chunk's attention by
/// 20% on an H100 (bench/README.md, v22). A head's sums do not depend on its block.
fn attend_mma_heads(heads: usize, d: usize, ncap: usize, ids: usize, optin: usize) -> Option<usize> {
    if d == 0 || !d.is_multiple_of(16) || d > ATT_MMA_MAX_D {
        return None;
    }
    let fits = |hg: usize, blocks: usize| (hg == 16 || heads.is_multiple_of(hg)) && blocks * attend_mma_smem(d, hg, ncap, ids) <= optin;
    [(32, 2), (16, 1)].into_iter().find(|&(hg, blocks)| fits(hg, blocks)).map(|(hg, _)| hg)
}

/// One launch of the chunk's attention (device addresses; `attend_chunk` in chunk.cu says
/// what each is): `tokens` tokens from position `pos0`, each over at most `ncap` rows, `ids`
/// of them listed when `masks` is given.
pub(super) struct AttendChunk {
    pub q: u64,
    pub kvn: u64,
    pub pos0: u64,
    pub raw: u64,
    pub window: usize,
    pub comp: u64,
    pub ratio: usize,
    pub masks: u64,
    pub mstride: usize,
    pub top_k: usize,
    pub sinks: u64,
    pub out: u64,
    pub heads: usize,
    pub d: usize,
    pub freqs: u64,
    pub n_pairs: usize,
    pub tokens: usize,
    pub ncap: usize,
    pub ids: usize,
}

/// Whether `attend_chunk_mma` takes a token of `heads` × `d` seeing at most `rows` rows
/// (listed when `masked`) on this device.
pub(super) fn attend_mma_fits(m: &GpuModel, heads: usize, d: usize, rows: usize, masked: bool) -> bool {
    attend_mma_heads(heads, d, rows, if masked { rows } else { 0 }, m.k.smem_optin).is_some()
}

impl GpuModel {
    /// Queues `a` on the tensor cores when `mma` allows (the official numerics: every KV row
    /// on the BF16 grid) and the block fits shared memory, else in f32.
    pub(super) fn attend_chunk(&self, a: &AttendChunk, mma: bool) -> Result<()> {
        let (nh, d) = (a.heads, a.d);
        let mut args = vec![
            P(a.q),
            L((nh * d) as i64),
            P(a.kvn),
            L(a.pos0 as i64),
            P(a.raw),
            I(a.window as i32),
            P(a.comp),
            I(a.ratio as i32),
            P(a.masks),
            L(a.mstride as i64),
            I(a.top_k as i32),
            P(a.sinks),
            P(a.out),
            I(d as i32),
            P(a.freqs),
            I(a.n_pairs as i32),
        ];
        match attend_mma_heads(nh, d, a.ncap, a.ids, self.k.smem_optin).filter(|_| mma) {
            Some(hg) => {
                args.extend([I(nh as i32), I(a.ncap as i32), I((hg / 16) as i32)]);
                self.launch("attend_chunk_mma", (nh.div_ceil(hg), a.tokens), ATT_MMA_THREADS, attend_mma_smem(d, hg, a.ncap, a.ids), &args)
            }
            None => {
                // Heads per block: as many as divide the head count and fit the scores in
                // shared memory (each block reads the KV rows once for all of them).
                let hg = heads_per_block(nh, d + a.ncap, a.ids);
                args.extend([I(hg as i32), I(a.ncap as i32)]);
                self.launch("attend_chunk", (nh / hg, a.tokens), BLOCK, (hg * (d + a.ncap) + a.ids) * 4, &args)
            }
        }
    }

    /// Whether layer `il`'s attention for this chunk can take the chunk path: several tokens,
    /// and the last token's scores (window plus visible compressed rows) fit shared memory in
    /// one of the chunk's attention kernels (the tensor-core one only under the official
    /// numerics, where every KV row is on the BF16 grid).
    pub(super) fn chunk_attention_fits(&self, st: &GpuState, il: usize, p: &Pass) -> bool {
        let c = &self.cfg;
        let ratio = self.layers[il].kind.ratio() as u64;
        let last = (p.pos0 + p.n() as u64).checked_div(ratio).unwrap_or(0) as usize;
        let top_k = self.layers[il].indexer.as_ref().map(|_| c.indexer_top_k);
        let (ncap, ids) = chunk_rows_cap(c.sliding_window, last, top_k);
        let scalar = c.head_dim + ncap + ids <= CHUNK_ATT_FLOATS;
        let mma = p.official() && attend_mma_heads(c.n_head, c.head_dim, ncap, ids, self.k.smem_optin).is_some();
        p.n() > 1 && (scalar || mma) && last <= mask_stride(c, st.capacity).max(1)
    }

    /// Pools the compressor rows that windows ending inside the chunk complete into `rows`
    /// (`dim` floats each), then rebuilds the frontier `f` as it stands after the chunk.
    /// Returns the first row written and how many.
    #[allow(clippy::too_many_arguments)]
    fn comp_chunk(&self, s: &Scratch, f: &Frontier, kv: u64, sc: u64, ape: u64, kind: LayerKind, width: usize, p: &Pass, rows: u64, norm: u64, freqs: u64) -> Result<(usize, usize)> {
        let ratio = kind.ratio() as u64;
        let (pos0, p1) = (p.pos0, p.pos0 + p.n() as u64);
        let overlapping = (kind == LayerKind::Csa) as i32;
        let (fkv, fsc) = (self.ptr(&f.kv), self.ptr(&f.score));
        // The first window end at or after pos0, and how many end before p1.
        let pe0 = pos0 / ratio * ratio + ratio - 1;
        let count = if pe0 < p1 { ((p1 - 1 - pe0) / ratio + 1) as usize } else { 0 };
        if count > 0 {
            let args = [
                P(fkv),
                P(fsc),
                P(kv),
                P(sc),
                P(ape),
                I(ratio as i32),
                I(width as i32),
                I(overlapping),
                L(pos0 as i64),
                L(pe0 as i64),
                P(rows),
                P(norm),
                F(self.cfg.rms_eps),
                P(freqs),
                I((self.cfg.rope_dim / 2) as i32),
            ];
            self.launch("comp_chunk", (count, 1), BLOCK, 0, &args)?;
        }
        let len = f.kv.len();
        let (nkv, nsc) = (self.ptr(&s.fkv), self.ptr(&s.fsc));
        let grid = len.div_ceil(BLOCK).min(1024);
        let args = [P(fkv), P(fsc), P(kv), P(sc), P(ape), I(ratio as i32), I(width as i32), I(overlapping), L(pos0 as i64), L(p1 as i64), P(nkv), P(nsc)];
        self.launch("comp_frontier", (grid, 1), BLOCK, 0, &args)?;
        self.launch("copy_f32", (grid, 1), BLOCK, 0, &[P(nkv), P(fkv), L(len as i64)])?;
        self.launch("copy_f32", (grid, 1), BLOCK, 0, &[P(nsc), P(fsc), L(len as i64)])?;
        Ok((((pe0 + 1) / ratio - 1) as usize, count))
    }

    /// Layer `il`'s order-dependent attention steps for the whole chunk (see the module
    /// comment); `x` holds the chunk's projections, and `scoring` says whether the indexer
    /// queries and weights were computed (some token sees more rows than it keeps).
    pub(super) fn attention_chunk(&self, st: &GpuState, s: &Scratch, il: usize, p: &Pass, x: &ChunkInputs, scoring: bool) -> Result<()> {
        let c = &self.cfg;
        let lw: &Layer = &self.layers[il];
        let ls = &st.layers[il];
        let (n, pos0) = (p.n(), p.pos0);
        let (d, nh, n_pairs, window) = (c.head_dim, c.n_head, c.rope_dim / 2, c.sliding_window);
        let freqs = self.ptr(&lw.freqs);
        let f4 = |a: u64, floats: usize| a + (floats * 4) as u64;

        // The chunk's KV rows, as the ring would hold them.
        let kvn = self.ptr(&s.kvn);
        self.norm_rope(x.kv, kvn, self.ptr(&lw.kv_norm), 1, d, true, freqs, n_pairs, pos0, n, d)?;
        if p.official() {
            self.launch("kv_round", (n, 1), 64, 0, &[P(kvn), I(d as i32), I(c.rope_dim as i32), L(d as i64)])?;
        }
        let ratio = lw.kind.ratio() as u64;
        let width = lw.kind.compressor_lanes() * d;
        if let (Some(cw), Some((rows, f))) = (&lw.comp, &ls.comp) {
            let (first, count) = self.comp_chunk(s, f, x.ckv, x.csc, self.ptr(&cw.ape), lw.kind, width, p, self.ptr(rows), self.ptr(&cw.norm), freqs)?;
            if count > 0 && p.official() {
                let row = f4(self.ptr(rows), first * d);
                self.launch("kv_round", (count, 1), 64, 0, &[P(row), I(d as i32), I(c.rope_dim as i32), L(d as i64)])?;
            }
        }
        let (id, ih) = (c.indexer_head_dim, c.indexer_heads);
        let mstride = mask_stride(c, st.capacity);
        let mut masks = 0u64;
        if let (Some(iw), Some((rows, f))) = (&lw.indexer, &ls.index) {
            let iwidth = lw.kind.compressor_lanes() * id;
            let (first, count) = self.comp_chunk(s, f, x.ikv, x.isc, self.ptr(&iw.comp.ape), lw.kind, iwidth, p, self.ptr(rows), self.ptr(&iw.comp.norm), freqs)?;
            if count > 0 && p.official() {
                self.index_round(f4(self.ptr(rows), first * id), count)?;
            }
            if scoring {
                // Every token that sees more rows than the indexer keeps: its scores and mask
                // in its own row (the others' rows are left alone and unread).
                masks = self.ptr(&s.mask);
                let score = self.ptr(&s.iscore);
                let scale = 1.0 / ((id * ih) as f32).sqrt();
                let most = ((pos0 + n as u64) / ratio) as usize;
                let fp4 = self.index_fp4(p.official());
                let args = [P(x.iq), P(x.iw), F(scale), P(self.ptr(rows)), L(pos0 as i64), I(ratio as i32), I(c.indexer_top_k as i32), I(ih as i32), I(id as i32), P(score), L(mstride as i64), I(fp4 as i32)];
                self.launch("index_scores_chunk", (self.index_blocks(most, fp4, false), n), BLOCK, 0, &args)?;
                let args = [P(score), L(pos0 as i64), I(ratio as i32), I(c.indexer_top_k as i32), P(masks), L(mstride as i64)];
                self.launch("topk_mask_chunk", (1, n), TOPK_THREADS, 0, &args)?;
            }
        }

        let last = ((pos0 + n as u64) / ratio.max(1)) as usize * (ratio > 0) as usize;
        let top_k = lw.indexer.as_ref().map(|_| c.indexer_top_k);
        let (ncap, ids) = chunk_rows_cap(window, last, top_k);
        let a = AttendChunk {
            q: x.q,
            kvn,
            pos0,
            raw: self.ptr(&ls.raw),
            window,
            comp: ls.comp.as_ref().map_or(0, |(rows, _)| self.ptr(rows)),
            ratio: ratio as usize,
            masks,
            mstride,
            top_k: c.indexer_top_k,
            sinks: self.ptr(&lw.sinks),
            out: x.o,
            heads: nh,
            d,
            freqs,
            n_pairs,
            tokens: n,
            ncap,
            ids: if masks != 0 { ids } else { 0 },
        };
        self.attend_chunk(&a, p.official())?;
        self.launch("ring_push", (n.min(window), 1), BLOCK, 0, &[P(kvn), I(n as i32), L(pos0 as i64), I(window as i32), I(d as i32), P(self.ptr(&ls.raw))])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tensor-core attention's heads a block: 32 only where two such blocks fit an SM's
    /// opt-in shared memory (H100/H200: 232,448 bytes), else 16, and none past it.
    #[test]
    fn tensor_core_attention_heads_a_block() {
        const OPTIN: usize = 232_448;
        // Flash deep in a context (window 128 + 512 indexer rows, listed): ~190 KB at 32 heads.
        assert_eq!(attend_mma_heads(64, 512, 640, 640, OPTIN), Some(16));
        // Flash early on (61 window rows + 15 compressed): 116 KB at 32 heads, two fit; from 97
        // rows (score rows padded to 128) they do not.
        assert_eq!(attend_mma_heads(64, 512, 76, 0, OPTIN), Some(32));
        assert!(2 * attend_mma_smem(512, 32, 76, 0) <= OPTIN);
        assert_eq!(attend_mma_heads(64, 512, 97, 0, OPTIN), Some(16));
        // 128 dimensions, 75 rows: 42 KB at 32 heads.
        assert_eq!(attend_mma_heads(64, 128, 75, 0, OPTIN), Some(32));
        assert!(2 * attend_mma_smem(128, 32, 75, 0) <= OPTIN);
        // 48 heads do not split into 32s; 4 heads make one padded block of 16.
        assert_eq!(attend_mma_heads(48, 128, 75, 0, OPTIN), Some(16));
        assert_eq!(attend_mma_heads(4, 64, 12, 12, OPTIN), Some(16));
        // Dimensions the kernel does not take, and scores past shared memory.
        assert_eq!(attend_mma_heads(64, 520, 75, 0, OPTIN), None);
        assert_eq!(attend_mma_heads(64, 24, 75, 0, OPTIN), None);
        assert_eq!(attend_mma_heads(64, 512, 4096, 4096, OPTIN), None);
        // Ratio-128 layer at 300K tokens (2,471 rows): one 16-head block fits.
        assert_eq!(attend_mma_heads(64, 512, 2471, 0, OPTIN), Some(16));
    }

    /// Dynamic plus static shared memory of attend_chunk (`shf`, 32 floats) stays within the
    /// default 48 KiB for every score count the chunk path admits (an H100 run at 8K tokens
    /// failed its launch when 8 heads x 1536 floats filled the 48 KiB exactly).
    #[test]
    fn attention_blocks_fit_shared_memory() {
        for heads in [1, 2, 4, 6, 8, 64] {
            for per_head in (1..=CHUNK_ATT_FLOATS).step_by(7) {
                for shared in [0, 640, CHUNK_ATT_FLOATS - per_head] {
                    if per_head + shared > CHUNK_ATT_FLOATS {
                        continue; // not admitted (chunk_attention_fits)
                    }
                    let g = heads_per_block(heads, per_head, shared);
                    assert!(heads.is_multiple_of(g));
                    // Dynamic, then the static reduction slots (32 floats, 32 ints).
                    assert!((g * per_head + shared) * 4 + 64 * 4 <= 48 * 1024, "{heads} heads, {per_head} floats each, {shared} shared: {g} per block");
                }
            }
        }
    }
}
