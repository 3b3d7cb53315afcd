//! The decode step: one token through every layer with launches that are the same at every
//! position, so the whole step can be captured once as a CUDA graph and replayed.
//!
//! What changes from token to token lives in `Scratch::step` ([token id, position]), uploaded
//! before each step; the kernels derive the rest from the position (`*_step` kernels: ring
//! slot, raw and compressed row counts, whether a window ends and which row it writes, whether
//! the indexer masks). Launch grids are fixed (the indexer's stride over however many rows
//! exist). Products whose use depends on the position (the indexer's queries) are always run.
//!
//! Fewer launches than the chunk path's single token: q, KV and indexer-query RoPE in one
//! kernel; both compressors of a layer in one; every output group in one expert-style launch;
//! routed gate and up experts in one launch over a gate-then-up stack, the shared expert's
//! gate and up in another; the routed and shared SwiGLU together; the expert sum fused with
//! the HC write-back; under the official numerics, one activation quantization per input
//! vector and format, shared by every matrix reading it. The HC mixing projections (a few
//! rows of hc·n_embd floats) run as column slices over many blocks (`hc_proj`), their sums
//! finished inside `hc_pre`.
//!
//! A graph bakes in every buffer address (the model's weights and the state's buffers) and
//! the numerics, so it belongs to one `GpuState` and is recaptured when the model or the
//! numerics change. Restores and uploads change buffer contents and the position only, which
//! the graph reads afresh each replay.

use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
use cudarc::driver::CudaGraph;
use dsv4_gguf::GgmlType;
use dsv4_model::Numerics;

use super::forward::{attend_smem, ATTEND_THREADS, BLOCK};
use super::state::{act_stride, comp_rows, Frontier, GpuState, CHUNK};
use super::weights::{Hc, Layer};
use super::{Arg, Decode, GpuModel};
use crate::error::{CudaError, Result};
use crate::quant::matvec::act_bytes;
use crate::quant::{DeviceMatrix, ExpertSlots, Matvec};
use Arg::{F, I, L, P};

/// Column slices of `hc_proj` (at most CHUNK: the partial sums use the mixing scratch, which
/// holds CHUNK tokens' values).
const HC_PARTS: usize = 16;

/// Most blocks of the launches that stride over the indexer's rows (their count grows with
/// the position; the grid may not).
const MAX_STRIDE_BLOCKS: usize = 1024;

/// A captured decode step and what it was captured for.
pub(super) struct StepGraph {
    key: (u64, Numerics),
    graph: CudaGraph,
    /// Kernels in the graph.
    pub kernels: u64,
}

// SAFETY: a CUDA graph (and its executable) may be used from any thread as long as calls on
// it are serialised; a StepGraph is reached only through its GpuState, by `&mut` for the
// launch, and is not Sync.
unsafe impl Send for StepGraph {}

/// Activation layouts of the official numerics' quantized products.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fmt {
    Q8_0,
    Q8K,
}

fn fmt(ty: GgmlType) -> Option<Fmt> {
    match ty {
        GgmlType::F32 | GgmlType::F16 => None,
        GgmlType::Q8_0 => Some(Fmt::Q8_0),
        _ => Some(Fmt::Q8K),
    }
}

/// What the activation scratch holds: `rows` input rows from `x` (`xs` f32 apart) quantized
/// over `cols` columns in format `fmt`. Valid while the input is not rewritten, so each use
/// keeps its own `Acts` for one group of products of the same inputs.
#[derive(Default)]
struct Acts {
    have: Option<(u64, usize, usize, usize, Fmt)>,
}

impl GpuModel {
    /// Whether the step path can run this model and state: stacked experts, the step's
    /// quantized rows within the scratch, and a position the kernels' 32-bit counts take.
    pub(super) fn step_ok(&self, st: &GpuState) -> bool {
        let c = &self.cfg;
        self.experts_stacked && c.n_expert_used < CHUNK && c.o_groups <= CHUNK && st.pos < i32::MAX as u64
    }

    /// One token through the step path (captured or replayed as a graph under
    /// [`Decode::Graph`]); the logits after it.
    pub(super) fn step(&self, st: &mut GpuState, tok: u32, num: Numerics) -> Result<Vec<f32>> {
        let v = self.cfg.vocab_size;
        let vals = [tok as i32, st.pos as i32];
        self.stream.memcpy_htod(&vals, &mut st.s.step.cuda_slice_mut().slice_mut(..2))?;
        if self.opts.decode == Decode::Graph {
            let key = (self.id, num);
            if st.graph.as_ref().is_none_or(|g| g.key != key) {
                st.graph = None;
                let before = self.launch_count();
                self.stream.begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED)?;
                let queued = self.step_kernels(st, num);
                // Capture always ends, so an error leaves the stream usable.
                let captured = self.stream.end_capture(CUgraphInstantiate_flags(0));
                queued?;
                let graph = captured?.ok_or_else(|| CudaError::Shape("the decode step captured no work".into()))?;
                graph.upload()?;
                st.graph = Some(StepGraph { key, graph, kernels: self.launch_count() - before });
            }
            if let Some(g) = &st.graph {
                g.graph.launch()?;
            }
        } else {
            self.step_kernels(st, num)?;
        }
        let mut host = vec![0f32; v];
        self.stream.memcpy_dtoh(&st.s.logits.cuda_slice().slice(..v), &mut host)?;
        self.stream.synchronize()?;
        st.pos += 1;
        Ok(host)
    }

    /// The step's launches: embedding, every layer, the logits.
    fn step_kernels(&self, st: &GpuState, num: Numerics) -> Result<()> {
        let c = &self.cfg;
        let (e, hcn) = (c.n_embd, c.hc_count);
        let s = &st.s;
        let sp = self.ptr(&st.streams);
        let args = [P(self.ptr(&self.w.embd)), I(self.w.embd_f16 as i32), P(self.ptr(&s.step)), I(e as i32), I(hcn as i32), P(sp)];
        self.launch("embed", (e.div_ceil(BLOCK), 1), BLOCK, 0, &args)?;
        for il in 0..self.layers.len() {
            self.attention_step(st, il, num)?;
            self.ffn_step(st, il, num)?;
        }
        let (x, m) = (self.ptr(&s.x), self.ptr(&s.m));
        let h = &self.w.out_hc;
        let parts = self.hc_mix(st, num, h, sp, m)?;
        self.hc_pre(h, sp, m, parts, &self.w.out_norm, x, 0, true, 1)?;
        self.mm1(st, num, &mut Acts::default(), &self.w.output, x, self.ptr(&s.logits))
    }

    fn attention_step(&self, st: &GpuState, il: usize, num: Numerics) -> Result<()> {
        let c = &self.cfg;
        let lw: &Layer = &self.layers[il];
        let ls = &st.layers[il];
        let s = &st.s;
        let official = num == Numerics::Official;
        let (d, nh, n_pairs, ql) = (c.head_dim, c.n_head, c.rope_dim / 2, c.q_lora_rank);
        let (id, ih, window, top_k) = (c.indexer_head_dim, c.indexer_heads, c.sliding_window, c.indexer_top_k);
        let sp = self.ptr(&st.streams);
        let (x, qr, q, mix, m, kv) = (self.ptr(&s.x), self.ptr(&s.qr), self.ptr(&s.q), self.ptr(&s.mix), self.ptr(&s.m), self.ptr(&s.kv));
        let (ckv, csc, ikv, isc, iq, iwp) = (self.ptr(&s.ckv), self.ptr(&s.csc), self.ptr(&s.ikv), self.ptr(&s.isc), self.ptr(&s.iq), self.ptr(&s.iw));
        let (freqs, step, raw) = (self.ptr(&lw.freqs), self.ptr(&s.step), self.ptr(&ls.raw));
        let ratio = lw.kind.ratio() as usize;

        let parts = self.hc_mix(st, num, &lw.hc_attn, sp, m)?;
        self.hc_pre(&lw.hc_attn, sp, m, parts, &lw.attn_norm, x, mix, false, 1)?;
        // Every product of x, then every product of the normed q_a output.
        let mut of_x: Vec<(&DeviceMatrix, u64)> = vec![(&lw.q_a, qr), (&lw.kv, kv)];
        if let Some(cw) = &lw.comp {
            of_x.extend([(&cw.kv, ckv), (&cw.gate, csc)]);
        }
        if let Some(iw) = &lw.indexer {
            of_x.extend([(&iw.comp.kv, ikv), (&iw.comp.gate, isc), (&iw.proj, iwp)]);
        }
        self.mm_group(st, num, x, &of_x)?;
        self.norm_rope(qr, qr, self.ptr(&lw.q_a_norm), 1, ql, true, 0, 0, 0, 1, ql)?;
        let mut of_qr: Vec<(&DeviceMatrix, u64)> = vec![(&lw.q_b, q)];
        if let Some(iw) = &lw.indexer {
            of_qr.push((&iw.q_b, iq));
        }
        self.mm_group(st, num, qr, &of_qr)?;

        let (iq_arg, iq_blocks) = if lw.indexer.is_some() { (iq, ih) } else { (0, 0) };
        let args = [
            P(q),
            I(nh as i32),
            I(d as i32),
            P(kv),
            P(raw),
            P(self.ptr(&lw.kv_norm)),
            I(window as i32),
            P(iq_arg),
            I(id as i32),
            F(c.rms_eps),
            P(freqs),
            I(n_pairs as i32),
            P(step),
        ];
        self.launch("rope_qkv_step", (nh + 1 + iq_blocks, 1), BLOCK, 0, &args)?;
        if official {
            if lw.indexer.is_some() {
                self.index_round(iq, ih)?;
            }
            self.kv_round_step(raw, 0, step)?;
        }

        let width = lw.kind.compressor_lanes() * d;
        let iwidth = lw.kind.compressor_lanes() * id;
        if let (Some(cw), Some((rows, f))) = (&lw.comp, &ls.comp) {
            // One compressor's arguments, in comp_push_step's order (fkv .. norm_w).
            let job = |f: &Frontier, kv: u64, sc: u64, ape: u64, width: usize, rows: u64, norm: u64| {
                [P(self.ptr(&f.kv)), P(self.ptr(&f.score)), P(kv), P(sc), P(ape), I(width as i32), P(rows), P(norm)]
            };
            let main = job(f, ckv, csc, self.ptr(&cw.ape), width, self.ptr(rows), self.ptr(&cw.norm));
            let (second, blocks) = match (&lw.indexer, &ls.index) {
                (Some(iw), Some((irows, fi))) => (job(fi, ikv, isc, self.ptr(&iw.comp.ape), iwidth, self.ptr(irows), self.ptr(&iw.comp.norm)), 2),
                // Block 1 does not exist; its arguments are never read.
                _ => (main, 1),
            };
            let tail = [I(ratio as i32), I((lw.kind.compressor_lanes() == 2) as i32), F(c.rms_eps), P(freqs), I(n_pairs as i32), P(step)];
            let args: Vec<Arg> = main.into_iter().chain(second).chain(tail).collect();
            self.launch("comp_push_step", (blocks, 1), BLOCK, 0, &args)?;
            if official {
                self.kv_round_step(self.ptr(rows), ratio, step)?;
                if let Some((irows, _)) = &ls.index {
                    let args = [P(self.ptr(irows)), I(id as i32), I(ratio as i32), P(step)];
                    self.launch("index_round_step", (1, 1), id, id * 4, &args)?;
                }
            }
        }

        // The indexer's selection, once more rows can exist than it keeps.
        let mut mask = 0;
        if let (Some(_), Some((irows, _))) = (&lw.indexer, &ls.index) {
            let most = comp_rows(lw.kind, st.capacity);
            if most > top_k {
                let (score, mp) = (self.ptr(&s.iscore), self.ptr(&s.mask));
                let scale = 1.0 / ((id * ih) as f32).sqrt();
                let args = [P(iq), P(iwp), F(scale), P(self.ptr(irows)), I(ratio as i32), I(top_k as i32), I(ih as i32), I(id as i32), P(score), P(step)];
                self.launch("index_scores_step", ((most * 32).div_ceil(BLOCK).min(MAX_STRIDE_BLOCKS), 1), BLOCK, 0, &args)?;
                let args = [P(score), I(ratio as i32), I(top_k as i32), P(mp), P(step)];
                self.launch("topk_mask_step", (most.div_ceil(BLOCK).min(MAX_STRIDE_BLOCKS), 1), BLOCK, 0, &args)?;
                mask = mp;
            }
        }
        let comp = ls.comp.as_ref().map_or(0, |(rows, _)| self.ptr(rows));
        let o = self.ptr(&s.o);
        let args = [
            P(q),
            P(raw),
            I(window as i32),
            P(comp),
            I(ratio as i32),
            P(mask),
            I(top_k as i32),
            P(self.ptr(&lw.sinks)),
            P(self.ptr(&s.att)),
            P(o),
            I(d as i32),
            P(freqs),
            I(n_pairs as i32),
            P(step),
        ];
        self.launch("attend_step", (nh, 1), ATTEND_THREADS, attend_smem(d), &args)?;

        // Grouped low-rank output: group g's heads through its own slice of out_a.
        let (g_in, r, groups) = (c.heads_per_group() * d, c.o_lora_rank, c.o_groups);
        let z = self.ptr(&s.z);
        if Matvec::experts_stacked(&lw.out_a) {
            let sl = ExpertSlots { ids: self.ptr(&self.w.iota), n: groups, x_div: 1, y_mod: 1, y_mul: 0 };
            self.experts1(st, num, &mut Acts::default(), &lw.out_a, sl, o, g_in, z, r)?;
        } else {
            for (g, wa) in lw.out_a.iter().enumerate() {
                self.mm1(st, num, &mut Acts::default(), wa, o + (g * g_in * 4) as u64, z + (g * r * 4) as u64)?;
            }
        }
        let y = self.ptr(&s.y);
        self.mm1(st, num, &mut Acts::default(), &lw.out_b, z, y)?;
        self.hc_post(sp, y, mix, 1)
    }

    fn ffn_step(&self, st: &GpuState, il: usize, num: Numerics) -> Result<()> {
        let c = &self.cfg;
        let lw: &Layer = &self.layers[il];
        let s = &st.s;
        let (e, used, ffn) = (c.n_embd, c.n_expert_used, c.expert_ffn);
        let sp = self.ptr(&st.streams);
        let (x, mix, m) = (self.ptr(&s.x), self.ptr(&s.mix), self.ptr(&s.m));
        let f4 = |a: u64, floats: usize| a + (floats * 4) as u64;
        let parts = self.hc_mix(st, num, &lw.hc_ffn, sp, m)?;
        self.hc_pre(&lw.hc_ffn, sp, m, parts, &lw.ffn_norm, x, mix, false, 1)?;

        let mut ax = Acts::default();
        let (rlog, sel, wts, sel_gu) = (self.ptr(&s.rlog), self.ptr(&s.sel), self.ptr(&s.wts), self.ptr(&s.sel_gu));
        self.mm1(st, num, &mut ax, &lw.gate_inp, x, rlog)?;
        let (bias, table) = match &lw.route {
            super::weights::Route::Hash { dev, .. } => (0, self.ptr(dev)),
            super::weights::Route::Scored { bias } => (self.ptr(bias), 0),
        };
        let gu_ids = if lw.gate_up.is_some() { sel_gu } else { 0 };
        let args = [
            P(rlog),
            I(c.n_expert as i32),
            I(used as i32),
            P(bias),
            P(table),
            P(self.ptr(&s.step)),
            F(c.expert_weights_scale),
            P(sel),
            P(wts),
            P(gu_ids),
        ];
        self.launch("route", (1, 1), BLOCK, 0, &args)?;

        // Routed gate and up rows, then the shared expert's, all from x.
        let gu = self.ptr(&s.gu);
        let all = |ids: u64, n: usize| ExpertSlots { ids, n, x_div: n, y_mod: 1, y_mul: 0 };
        match &lw.gate_up {
            Some(stack) => self.experts1(st, num, &mut ax, stack, all(sel_gu, 2 * used), x, e, gu, ffn)?,
            None => {
                self.experts1(st, num, &mut ax, &lw.gate, all(sel, used), x, e, gu, ffn)?;
                self.experts1(st, num, &mut ax, &lw.up, all(sel, used), x, e, f4(gu, used * ffn), ffn)?;
            }
        }
        let sh = f4(gu, 2 * used * ffn);
        match &lw.gate_up_sh {
            Some(pair) => self.experts1(st, num, &mut ax, pair, all(self.ptr(&self.w.iota), 2), x, e, sh, ffn)?,
            None => {
                self.mm1(st, num, &mut ax, &lw.gate_sh, x, sh)?;
                self.mm1(st, num, &mut ax, &lw.up_sh, x, f4(sh, ffn))?;
            }
        }
        let hs = self.ptr(&s.hs);
        let args = [P(gu), P(hs), I(ffn as i32), F(lw.clamp), P(wts), I(used as i32)];
        self.launch("swiglu_step", (ffn.div_ceil(BLOCK), used + 1), BLOCK, 0, &args)?;

        // Down projections into the parts (pick k of the token at k · CHUNK, the shared
        // expert's after them), the routed and shared rows quantized together when they
        // share a format.
        let mut ah = Acts::default();
        let ty = lw.down[0].ty();
        if num == Numerics::Official && fmt(ty).is_some() && fmt(ty) == fmt(lw.down_sh.ty()) {
            self.quant(st, &mut ah, ty, hs, ffn, ffn, used + 1)?;
        }
        let parts = self.ptr(&s.parts);
        let down = ExpertSlots { ids: sel, n: used, x_div: 1, y_mod: used, y_mul: CHUNK };
        self.experts1(st, num, &mut ah, &lw.down, down, hs, ffn, parts, e)?;
        self.mm1(st, num, &mut ah, &lw.down_sh, f4(hs, used * ffn), f4(parts, used * CHUNK * e))?;
        let args = [P(sp), P(parts), I(used as i32 + 1), I(e as i32), I(CHUNK as i32), P(mix), I(c.hc_count as i32)];
        self.launch("sum_post", (e.div_ceil(BLOCK), 1), BLOCK, 0, &args)
    }

    /// The HC mixing projection of the streams `sp` into `m`, as `hc_pre` takes it; the
    /// number of partial sums per value. Float matrices (every model so far) go through
    /// `hc_proj`, whose column slices spread the few long rows over many blocks; others
    /// through the matvec.
    fn hc_mix(&self, st: &GpuState, num: Numerics, h: &Hc, sp: u64, m: u64) -> Result<usize> {
        let w = &h.proj;
        let f16 = match w.ty() {
            GgmlType::F16 => true,
            GgmlType::F32 => false,
            _ => {
                self.mm1(st, num, &mut Acts::default(), w, sp, m)?;
                return Ok(1);
            }
        };
        let cols = w.cols();
        let mut parts = HC_PARTS;
        while parts > 1 && !cols.is_multiple_of(parts) {
            parts /= 2;
        }
        if w.rows() * parts > st.s.m.len() {
            return Err(CudaError::Shape(format!("{} HC mixing rows exceed the scratch", w.rows())));
        }
        let args = [P(self.ptr(&*h.proj_buf)), I(f16 as i32), P(sp), I(cols as i32), P(m)];
        self.launch("hc_proj", (w.rows(), parts), BLOCK, 0, &args)?;
        Ok(parts)
    }

    /// `kv_round_step` of the ring slot (ratio 0) or of the row a window's end emits.
    fn kv_round_step(&self, rows: u64, ratio: usize, step: u64) -> Result<()> {
        let c = &self.cfg;
        let args = [P(rows), I(c.head_dim as i32), I(c.rope_dim as i32), I(c.sliding_window as i32), I(ratio as i32), P(step)];
        self.launch("kv_round_step", (1, 1), 64, 0, &args)
    }

    /// The official activations of `rows` inputs at `x` (`xs` f32 apart, `cols` wide) for
    /// weights of type `ty`, quantized unless `acts` already holds them (or a run of rows
    /// containing them); their address.
    #[allow(clippy::too_many_arguments)]
    fn quant(&self, st: &GpuState, acts: &mut Acts, ty: GgmlType, x: u64, xs: usize, cols: usize, rows: usize) -> Result<u64> {
        let f = fmt(ty).ok_or(CudaError::UnsupportedType(ty))?;
        let stride = act_stride(&self.cfg);
        if act_bytes(ty, cols)? > stride || rows > CHUNK {
            return Err(CudaError::Shape(format!("{rows} rows of {cols} columns exceed the activation scratch")));
        }
        let base = self.ptr(&st.s.acts);
        if let Some((hx, hxs, hcols, hrows, hf)) = acts.have {
            let row_bytes = (hxs * 4) as u64;
            if (hxs, hcols, hf) == (xs, cols, f) && x >= hx && (x - hx).is_multiple_of(row_bytes) {
                let k = ((x - hx) / row_bytes) as usize;
                if k + rows <= hrows {
                    return Ok(base + (k * stride) as u64);
                }
            }
        }
        let (kernel, blk) = if f == Fmt::Q8_0 { ("quant_q8_0", 32) } else { ("quant_q8_k", 256) };
        self.launch(kernel, (cols / blk, rows), blk, 0, &[P(x), L(xs as i64), P(base), L(stride as i64)])?;
        acts.have = Some((x, xs, cols, rows, f));
        Ok(base)
    }

    /// `y = W x` for one token under `num`, the activations through `acts`.
    fn mm1(&self, st: &GpuState, num: Numerics, acts: &mut Acts, w: &DeviceMatrix, x: u64, y: u64) -> Result<()> {
        self.counted(1);
        if num == Numerics::Plain || fmt(w.ty()).is_none() {
            // SAFETY: x and y address the state's scratch (or streams), sized for the model's
            // widths, which `load` checked the matrices against; outputs are apart from inputs.
            return unsafe { self.mv.run_batch_raw(w, x, w.cols(), 1, y, w.rows()) };
        }
        let a = self.quant(st, acts, w.ty(), x, w.cols(), w.cols(), 1)?;
        // SAFETY: as above; `a` holds this input quantized for w's type (checked to fit).
        unsafe { self.mv.run_q_raw(w, a, y) }
    }

    /// Products of one input vector `x`, each `(W, y)`, grouped so that each activation
    /// format is quantized once.
    fn mm_group(&self, st: &GpuState, num: Numerics, x: u64, list: &[(&DeviceMatrix, u64)]) -> Result<()> {
        let mut acts = Acts::default();
        if num == Numerics::Plain {
            return list.iter().try_for_each(|&(w, y)| self.mm1(st, num, &mut acts, w, x, y));
        }
        for want in [None, Some(Fmt::Q8_0), Some(Fmt::Q8K)] {
            for &(w, y) in list.iter().filter(|(w, _)| fmt(w.ty()) == want) {
                self.mm1(st, num, &mut acts, w, x, y)?;
            }
        }
        Ok(())
    }

    /// [`Matvec::run_experts_raw`] for the step: input rows at `x`, `xs` f32 apart (quantized
    /// through `acts` under the official numerics), output rows `ys` f32 apart.
    #[allow(clippy::too_many_arguments)]
    fn experts1(&self, st: &GpuState, num: Numerics, acts: &mut Acts, ws: &[DeviceMatrix], sl: ExpertSlots, x: u64, xs: usize, y: u64, ys: usize) -> Result<()> {
        let w = ws.first().ok_or_else(|| CudaError::Shape("an empty expert stack".into()))?;
        self.counted(1);
        if num == Numerics::Plain || fmt(w.ty()).is_none() {
            // SAFETY: the slots' ids are on the device (routing output or iota), the input
            // and output rows lie in the state's scratch sized for this model; outputs are
            // apart from inputs.
            return unsafe { self.mv.run_experts_raw(ws, sl, x, xs * 4, false, y, ys) };
        }
        let rows = sl.n.div_ceil(sl.x_div);
        let a = self.quant(st, acts, w.ty(), x, xs, w.cols(), rows)?;
        // SAFETY: as above; `a` holds the slots' input rows quantized, act_stride apart.
        unsafe { self.mv.run_experts_raw(ws, sl, a, act_stride(&self.cfg), true, y, ys) }
    }
}
