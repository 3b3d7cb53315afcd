//! The decode step: one token from each of up to [`MAX_STEP_BATCH`] sessions through every
//! layer together (continuous batching), with launches that are the same at every position,
//! so a step of a given batch size is captured once as a CUDA graph and replayed.
//!
//! What changes from step to step lives in [`StepBatch`]: the token ids and positions
//! (`step`: the ids, then the positions) and a table of the sessions' buffer addresses (per
//! layer: raw window, compressed rows and frontier, indexer rows and frontier; per session: the
//! attention and indexer scratch), both uploaded before the step. The `*_step` kernels take
//! token b from blockIdx.y, its position from the positions and its session's buffers from the
//! table, and derive the rest from the position (ring slot, raw and compressed row counts,
//! whether a window ends and which row it writes, whether the indexer masks). Launch grids are
//! fixed (the indexer's stride over however many rows exist).
//!
//! Weight products read each dense matrix once per 16 tokens of the step (the several-token
//! kernels), and each routed expert once per (token, pick) slot (`quant/experts.rs`) or, where
//! the step's tokens are expected to share experts, once per 4 of its picks (grouped on the
//! device after the routing, `group_picks` in `model/moe.cu`). Every
//! product gives each token the bits of its one-token product: the same per-sub-block
//! arithmetic, and the warps per row group (which fix the order of sums) chosen as for one
//! token (`Matvec::slot_split`, `ExpertSlots::per_token`), so a session's logits are the same
//! bits whichever other sessions share its step.
//!
//! Launches per layer as for one token: q, KV and indexer-query RoPE in one kernel; both
//! compressors in one; every output group in one launch; routed gate and up in one launch over
//! a gate-then-up stack, the shared expert's gate and up in another; the routed and shared
//! SwiGLU together; the expert sum fused with the HC write-back; under the official numerics
//! one activation quantization per input and format, shared by every matrix reading it. The
//! HC mixing projections (a few rows of hc·n_embd floats) run as column slices over many
//! blocks (`hc_proj`), their sums finished inside `hc_pre`.
//!
//! Three parts of a layer run on a second stream, as branches of the graph beside the main
//! path's one-block kernels (which leave most of the GPU idle): the HC Sinkhorn of each
//! read-out, the compressors with the indexer's weights, and the shared expert (its gate and
//! up beside the routing and the routed gate and up, its down beside the routed down).
//!
//! A graph bakes in the model's weights, the batch scratch and the table's addresses (never
//! the sessions'), so it stays valid as sessions come and go; restores and uploads change
//! buffer contents and positions only, which the graph reads afresh each replay.

use std::cell::Cell;
use std::sync::Arc;

use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
use cudarc::driver::CudaStream;
use dsv4_gguf::GgmlType;
use dsv4_model::config::LayerKind;
use dsv4_model::{Next, Numerics, Reduced, Want};

use super::forward::{attend_split_smem, att_splits, ATT_MERGE_THREADS, ATT_SPLIT_HEADS, ATT_SPLIT_THREADS, BLOCK, TOPK_THREADS};
use super::state::{act_stride, comp_rows, GpuState, CHUNK};
use super::step_batch::{group_table, pick_words, StepBatch, StepGraph, GROUP_NT, ROUTED_NT, PICK_CAP, HC_PARTS, LAYER_ENTRIES, MAX_STEP_BATCH, T_ATT, T_COMP, T_COMP_KV, T_IDX, T_IDX_KV, T_ISCORE, T_MASK, T_RAW};
use super::weights::{Hc, Layer, Route, ROUTE_THREADS};
use super::{Arg, Decode, DenseProducts, ExpertReads, GpuModel};
use crate::buffer::DeviceBuffer;
use crate::error::{CudaError, Result};
use crate::launch::Queue;
use crate::quant::matvec::act_bytes;
use crate::quant::{DeviceMatrix, ExpertSlots, Grouped, Matvec, MmqIo};
use Arg::{F, I, L, P};

/// Most blocks of the launches that stride over the indexer's rows (their count grows with
/// the position; the grid may not).
const MAX_STRIDE_BLOCKS: usize = 1024;

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

/// What a part of the activation scratch holds: `rows` input rows from `x` (`xs` f32 apart)
/// quantized over `cols` columns in format `fmt`, from row `row0` of the scratch on (each
/// lane of the step has rows of its own, so a branch never overwrites what a product on the
/// other stream reads). Valid while the input is not rewritten, so each use keeps its own
/// `Acts` for one group of products of the same inputs.
#[derive(Clone, Copy)]
struct Acts {
    have: Option<(u64, usize, usize, usize, Fmt)>,
    row0: usize,
}

/// A grouped product of the step (several tokens), where every token picks each of the
/// `per_token` matrices once: pick j reads input row j / x_div and writes output row
/// (j % y_mod) · y_mul + j / y_mod; the one-token step's launch over a token's `per_token`
/// slots gives the split the grouped launch keeps.
#[derive(Clone, Copy)]
struct Group {
    picks: usize,
    x_div: usize,
    y_mod: usize,
    y_mul: usize,
    per_token: usize,
}

/// A grouping table on the device ([`Grouped`]): its address, entries, picks per entry, and
/// the entries expected busy (0: all).
#[derive(Clone, Copy)]
struct Table {
    addr: u64,
    slots: usize,
    nt: usize,
    busy: usize,
}

/// Share of its picks' expert reads a step must be expected to save before it groups the
/// routed picks by expert (`ExpertReads::Auto`): grouping costs a launch on the critical path
/// and a grid for the worst case. Flash (6 of 256 experts) groups from 6 tokens. Since entries
/// of one and two picks take their own bodies (v19), 6 H200 layers measured grouping 1-2%
/// slower at 2 and 4 tokens and 4, 7, 9, 6, 12 and 13% faster at 6, 8, 12, 16, 24 and 32
/// (bench/README.md, "v19"); until then it lost below ~27.
const GROUP_MIN_SAVING: f64 = 0.05;

/// Fewest sessions whose step runs the dense Q8_0 products on the tensor cores
/// (`DenseProducts::TensorCores`): on 6 H100 layers the step measured faster with them at 2,
/// 4 and 8 sessions (1.80 → 1.70, 2.28 → 2.11, 3.46 → 2.96 ms), though at 2 to 4 tokens the
/// kernel alone loses to the CUDA cores on the smaller matrices (bench/README.md, v18).
const MMQ_MIN_TOKENS: usize = 2;

/// One step's fixed facts (the batch, its size and numerics) and one of its two lanes: the
/// stream its launches go to. The side stream's lane runs branches of the layer beside the
/// main one (a fork waits for the main stream's work so far; a join makes the main stream wait
/// for the branch), captured as branches of the step's graph.
struct Step<'a> {
    b: &'a StepBatch,
    n: usize,
    num: Numerics,
    /// Most compressed rows an indexer layer of these sessions can have (0: none beyond
    /// what the indexer keeps, so it never runs).
    most: usize,
    stream: &'a Arc<CudaStream>,
    /// The lane's next launch follows a fork or join: it waits on two streams' work, so it
    /// goes plain where an overlapping launch would name one kernel (`launch.rs`).
    plain: Cell<bool>,
    /// The lane's first row of the activation scratch.
    acts0: usize,
}

impl<'a> Step<'a> {
    fn new(b: &'a StepBatch, n: usize, num: Numerics, most: usize, stream: &'a Arc<CudaStream>) -> Self {
        Step { b, n, num, most, stream, plain: Cell::new(false), acts0: 0 }
    }

    /// The lane's part of the activation scratch, holding nothing yet.
    fn acts(&self) -> Acts {
        Acts { have: None, row0: self.acts0 }
    }

    /// Where the lane's next launch goes (taking the mark a fork or join left).
    fn q(&self) -> Queue<'a> {
        Queue { stream: self.stream, overlap: !self.plain.replace(false) }
    }

    /// Address of table entry `k` of layer `il` (a run of n addresses).
    fn layer_tab(&self, m: &GpuModel, il: usize, k: usize) -> u64 {
        m.ptr(&self.b.table) + (((il * LAYER_ENTRIES + k) * self.n) * 8) as u64
    }

    fn session_tab(&self, m: &GpuModel, k: usize) -> u64 {
        m.ptr(&self.b.table) + (((m.layers.len() * LAYER_ENTRIES + k) * self.n) * 8) as u64
    }

    fn official(&self) -> bool {
        self.num == Numerics::Official
    }

    /// The positions (after the n token ids).
    fn pos(&self, m: &GpuModel) -> u64 {
        m.ptr(&self.b.step) + (self.n * 4) as u64
    }
}

impl GpuModel {
    /// Whether the step path can run this model and state: stacked experts, the step's
    /// quantized rows within the scratch, and a position the kernels' 32-bit counts take.
    pub(super) fn step_ok(&self, st: &GpuState) -> bool {
        let c = &self.cfg;
        self.experts_stacked && c.n_expert_used < CHUNK && c.o_groups <= CHUNK && st.pos < i32::MAX as u64
    }

    /// Kernels of the captured decode step for `n` sessions under `num` (None before its
    /// first graph step).
    pub fn graph_kernels(&self, n: usize, num: Numerics) -> Option<u64> {
        let b = self.batch.lock().ok()?;
        b.graphs.iter().find(|(k, _)| k.0 == n && k.1 == (num == Numerics::Official)).map(|(_, g)| g.kernels)
    }

    /// One token for each state through the step path (captured or replayed as a graph under
    /// [`Decode::Graph`]); what each state's next draw needs (`wants`) from the logits after
    /// it. The caller checked the tokens, the room left in every state and `step_ok`;
    /// 1..=MAX_STEP_BATCH states.
    pub(super) fn step(&self, states: &mut [&mut GpuState], toks: &[u32], wants: &[Want], num: Numerics) -> Result<Vec<Next>> {
        let (c, n) = (&self.cfg, states.len());
        if n == 0 || n > MAX_STEP_BATCH || toks.len() != n || wants.len() != n {
            return Err(CudaError::Shape(format!(
                "a decode step of {n} states, {} tokens and {} wants (1..={MAX_STEP_BATCH})",
                toks.len(),
                wants.len()
            )));
        }
        let mut guard = self.batch.lock().map_err(|_| CudaError::Shape("the decode batch was poisoned by a panic".into()))?;
        let b = &mut *guard;
        let mut vals: Vec<i32> = toks.iter().map(|&t| t as i32).collect();
        vals.extend(states.iter().map(|s| s.pos as i32));
        self.stream.memcpy_htod(&vals, &mut b.step.cuda_slice_mut().slice_mut(..2 * n))?;
        let want_words: Vec<u32> = wants.iter().flat_map(|&w| want_words(w)).collect();
        self.stream.memcpy_htod(&want_words, &mut b.wants.cuda_slice_mut().slice_mut(..3 * n))?;
        let table = self.table(states);
        if b.uploaded != table {
            self.stream.memcpy_htod(&table, &mut b.table.cuda_slice_mut().slice_mut(..table.len()))?;
            b.uploaded = table;
        }
        // The grouping tables this step's grouped products read.
        for m in [c.o_groups, 2] {
            if let std::collections::hash_map::Entry::Vacant(v) = b.tables.entry((m, n)) {
                v.insert(self.upload_i32(&group_table(m, n, GROUP_NT))?);
            }
        }
        // The indexer's strided launches cover the most rows any of these states can have.
        let most = c
            .layer_kinds
            .iter()
            .filter(|&&k| k == LayerKind::Csa)
            .map(|&k| states.iter().map(|s| comp_rows(k, s.capacity)).max().unwrap_or(0))
            .max()
            .unwrap_or(0);
        let most = if most > c.indexer_top_k { most } else { 0 };
        if self.opts.decode == Decode::Graph {
            let key = (n, num == Numerics::Official, most);
            if !b.graphs.contains_key(&key) {
                let before = self.launch_count();
                self.stream.begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED)?;
                let queued = self.step_kernels(&Step::new(b, n, num, most, &self.stream));
                // Capture always ends, so an error leaves the stream usable.
                let captured = self.stream.end_capture(CUgraphInstantiate_flags(0));
                queued?;
                let graph = captured?.ok_or_else(|| CudaError::Shape("the decode step captured no work".into()))?;
                graph.upload()?;
                b.graphs.insert(key, StepGraph { graph, kernels: self.launch_count() - before });
            }
            if let Some(g) = b.graphs.get(&key) {
                g.graph.launch()?;
            }
        } else {
            self.step_kernels(&Step::new(b, n, num, most, &self.stream))?;
        }
        let out = self.step_results(b, wants)?;
        for st in states.iter_mut() {
            st.pos += 1;
        }
        Ok(out)
    }

    /// The step's results on the host, through page-locked memory (a pageable download of
    /// 32 sessions' logits, 16 MB on Flash, took milliseconds): the reductions' headers, the
    /// kept pairs when a session wants them, the rows asked for whole; then the rows of kept
    /// sets too large for their room.
    fn step_results(&self, b: &mut StepBatch, wants: &[Want]) -> Result<Vec<Next>> {
        let (n, v) = (wants.len(), self.cfg.vocab_size);
        let host = b.host.as_mut_slice()?;
        let picks = b.picks_host.as_mut_slice()?;
        let row = |i: usize| i * v..(i + 1) * v;
        if wants.iter().all(|&w| w == Want::Row) {
            self.stream.memcpy_dtoh(&b.logits.cuda_slice().slice(..n * v), &mut host[..n * v])?;
        } else {
            let words = if wants.iter().any(|w| matches!(w, Want::Kept { .. })) { pick_words(n) } else { 4 * n };
            self.stream.memcpy_dtoh(&b.picks.cuda_slice().slice(..words), &mut picks[..words])?;
            for (i, _) in wants.iter().enumerate().filter(|(_, &w)| w == Want::Row) {
                self.stream.memcpy_dtoh(&b.logits.cuda_slice().slice(row(i)), &mut host[row(i)])?;
            }
        }
        self.stream.synchronize()?;
        let overflow = |i: usize| matches!(wants[i], Want::Kept { .. }) && picks[4 * i + 2] as usize > PICK_CAP;
        if (0..n).any(overflow) {
            for i in (0..n).filter(|&i| overflow(i)) {
                self.stream.memcpy_dtoh(&b.logits.cuda_slice().slice(row(i)), &mut host[row(i)])?;
            }
            self.stream.synchronize()?;
        }
        Ok((0..n)
            .map(|i| {
                if wants[i] == Want::Row || overflow(i) {
                    return Next::Logits(host[row(i)].to_vec());
                }
                // (The kernel writes a count of 0 for every want but the kept set.)
                let h = &picks[4 * i..4 * i + 4];
                let count = h[2] as usize;
                let at = 4 * n + 2 * PICK_CAP * i;
                let kept = picks[at..at + 2 * count].chunks_exact(2).map(|p| (p[0], f32::from_bits(p[1]))).collect();
                Next::Reduced(Reduced { want: wants[i], argmax: h[0], max: f32::from_bits(h[1]), kept })
            })
            .collect())
    }

    /// The step's launches: embedding, every layer, the logits.
    fn step_kernels(&self, s: &Step) -> Result<()> {
        let c = &self.cfg;
        let (b, n) = (s.b, s.n);
        let (e, hcn) = (c.n_embd, c.hc_count);
        let sp = self.ptr(&b.streams);
        let args = [P(self.ptr(&self.w.embd)), I(self.w.embd_f16 as i32), P(self.ptr(&b.step)), I(e as i32), I(hcn as i32), P(sp)];
        self.slaunch(s, "embed", (e.div_ceil(BLOCK), n), BLOCK, 0, &args)?;
        for il in 0..self.layers.len() {
            self.attention_step(s, il)?;
            self.ffn_step(s, il)?;
        }
        let x = self.ptr(&b.x);
        let h = &self.w.out_hc;
        let [mut acts, _] = self.hc_read(s, h, sp, &self.w.out_norm, x, None, [Some(self.w.output.ty()), None])?;
        self.mmb(s, &mut acts, &self.w.output, x, e, self.ptr(&b.logits), c.vocab_size)?;
        // Every session's reduction (its want is read from the step's buffer, so the graph
        // serves any wants).
        let args = [P(self.ptr(&b.logits)), I(c.vocab_size as i32), P(self.ptr(&b.wants)), P(self.ptr(&b.picks)), I(PICK_CAP as i32)];
        self.slaunch(s, "reduce_logits", (n, 1), PICK_THREADS, 0, &args)
    }

    fn attention_step(&self, s: &Step, il: usize) -> Result<()> {
        let c = &self.cfg;
        let lw: &Layer = &self.layers[il];
        let (b, n) = (s.b, s.n);
        let (d, nh, n_pairs, ql) = (c.head_dim, c.n_head, c.rope_dim / 2, c.q_lora_rank);
        let (id, ih, window, top_k) = (c.indexer_head_dim, c.indexer_heads, c.sliding_window, c.indexer_top_k);
        let sp = self.ptr(&b.streams);
        let (x, qr, q, mix, kv) = (self.ptr(&b.x), self.ptr(&b.qr), self.ptr(&b.q), self.ptr(&b.mix), self.ptr(&b.kv));
        let (iq, iwp) = (self.ptr(&b.iq), self.ptr(&b.iw));
        let (freqs, pos, raws) = (self.ptr(&lw.freqs), s.pos(self), s.layer_tab(self, il, T_RAW));
        let ratio = lw.kind.ratio() as usize;

        let [ax, _] = self.hc_read(s, &lw.hc_attn, sp, &lw.attn_norm, x, Some(mix), [Some(lw.q_a.ty()), None])?;
        // The compressors (and the indexer's weights) read x and write only their own rows, which
        // nothing reads before the indexer's scores or the attention: on the side stream, beside
        // the q and KV path (whose one-block kernels leave most of the GPU idle).
        let branch = lw.comp.is_some() || lw.indexer.is_some();
        if branch {
            self.compressors_step(&self.fork(s)?, il)?;
        }
        // Every product of x, then every product of the normed q_a output.
        self.mm_group(s, ax, x, c.n_embd, &[(&lw.q_a, qr, ql), (&lw.kv, kv, d)])?;
        // q_a's output normed, and quantized there for q_b.
        let (qa, fa, qa_acts) = self.fused_acts(s, s.acts0, Some(lw.q_b.ty()), qr, ql, ql, n)?;
        let args = [P(qr), P(qr), P(self.ptr(&lw.q_a_norm)), I(ql as i32), I(1), F(c.rms_eps), P(0), I(0), L(0), L(ql as i64), P(qa), I(fa), L(act_stride(c) as i64)];
        self.slaunch(s, "norm_rope", (1, n), BLOCK, 0, &args)?;
        let mut of_qr: Vec<(&DeviceMatrix, u64, usize)> = vec![(&lw.q_b, q, nh * d)];
        if let Some(iw) = &lw.indexer {
            of_qr.push((&iw.q_b, iq, ih * id));
        }
        self.mm_group(s, qa_acts, qr, ql, &of_qr)?;

        let (iq_arg, iq_blocks) = if lw.indexer.is_some() { (iq, ih) } else { (0, 0) };
        // Under the official numerics the kernel also rounds the KV row as the cache stores
        // it and (heads that fit its blocks) the indexer's query heads, in the blocks that
        // wrote them: no one-block launches between it and the attention.
        let round_iq = s.official() && lw.indexer.is_some() && id <= BLOCK;
        let args = [
            P(q),
            I(nh as i32),
            I(d as i32),
            P(kv),
            P(raws),
            P(self.ptr(&lw.kv_norm)),
            I(window as i32),
            P(iq_arg),
            I(id as i32),
            F(c.rms_eps),
            P(freqs),
            I(n_pairs as i32),
            P(pos),
            I(s.official() as i32 | (round_iq as i32) << 1),
        ];
        self.slaunch(s, "rope_qkv_step", (nh + 1 + iq_blocks, n), BLOCK, if round_iq { id * 4 } else { 0 }, &args)?;
        if s.official() && lw.indexer.is_some() && !round_iq {
            self.index_round(iq, ih * n)?;
        }

        if branch {
            self.join(s)?;
        }

        // The indexer's selection, once more rows can exist than it keeps.
        let mut masks = 0;
        if lw.indexer.is_some() && s.most > 0 {
            let (scores, mt) = (s.session_tab(self, T_ISCORE), s.session_tab(self, T_MASK));
            let scale = 1.0 / ((id * ih) as f32).sqrt();
            let keys = s.layer_tab(self, il, T_IDX);
            let fp4 = self.index_fp4(s.official());
            let args = [P(iq), P(iwp), F(scale), P(keys), I(ratio as i32), I(top_k as i32), I(ih as i32), I(id as i32), P(scores), P(pos), I(fp4 as i32)];
            self.slaunch(s, "index_scores_step", (self.index_blocks(s.most, fp4, true).min(MAX_STRIDE_BLOCKS), n), BLOCK, 0, &args)?;
            let args = [P(scores), I(ratio as i32), I(top_k as i32), P(mt), P(pos)];
            self.slaunch(s, "topk_mask_step", (1, n), TOPK_THREADS, 0, &args)?;
            masks = mt;
        }
        let comps = if lw.comp.is_some() { s.layer_tab(self, il, T_COMP) } else { 0 };
        let (o, parts, splits) = (self.ptr(&b.o), s.session_tab(self, T_ATT), att_splits(c));
        let args = [P(q), P(raws), I(window as i32), P(comps), I(ratio as i32), P(masks), I(top_k as i32), P(parts), I(d as i32), I(nh as i32), I(splits as i32), P(pos)];
        let blocks = nh.div_ceil(ATT_SPLIT_HEADS) * splits;
        self.slaunch(s, "attend_split_step", (blocks, n), ATT_SPLIT_THREADS, attend_split_smem(d, window + top_k), &args)?;
        // The merge quantizes its heads' outputs for a stacked Q8_0 out_a (one activation row
        // per token and group).
        let (g_in, r, groups) = (c.heads_per_group() * d, c.o_lora_rank, c.o_groups);
        let stacked = Matvec::experts_stacked(&lw.out_a);
        let ty = lw.out_a.first().map(|w| w.ty()).filter(|&t| stacked && fmt(t) == Some(Fmt::Q8_0));
        let (oq, _, mut oa) = self.fused_acts(s, s.acts0, ty, o, g_in, g_in, n * groups)?;
        let args = [
            P(parts),
            P(self.ptr(&lw.sinks)),
            P(o),
            I(d as i32),
            I(nh as i32),
            I(splits as i32),
            I(window as i32),
            I(ratio as i32),
            I((masks != 0) as i32),
            I(top_k as i32),
            P(freqs),
            I(n_pairs as i32),
            P(pos),
            P(oq),
            L(act_stride(c) as i64),
            I(c.heads_per_group() as i32),
        ];
        self.slaunch(s, "attend_merge_step", (nh, n), ATT_MERGE_THREADS, 0, &args)?;

        // Grouped low-rank output: group g's heads through its own slice of out_a.
        let z = self.ptr(&b.z);
        if n > 1 && fmt(lw.out_a[0].ty()).is_some() && stacked {
            // Each group's weights read once for every token (entries of 16 tokens).
            let gr = Group { picks: n * groups, x_div: 1, y_mod: 1, y_mul: 0, per_token: groups };
            self.every_token(s, &mut oa, &lw.out_a, gr, o, g_in, z, r)?;
        } else if stacked {
            let sl = ExpertSlots { ids: self.ptr(&b.groups), n: n * groups, x_div: 1, y_mod: 1, y_mul: 0, per_token: groups };
            self.experts_b(s, &mut oa, &lw.out_a, sl, o, g_in, z, r)?;
        } else {
            for (g, wa) in lw.out_a.iter().enumerate() {
                let (xg, zg) = (o + (g * g_in * 4) as u64, z + (g * r * 4) as u64);
                self.mmb(s, &mut s.acts(), wa, xg, nh * d, zg, groups * r)?;
            }
        }
        let y = self.ptr(&b.y);
        self.mmb(s, &mut s.acts(), &lw.out_b, z, groups * r, y, c.n_embd)?;
        // The side stream's HC weights (`hc_read`) before the write-back.
        self.join(s)?;
        let args = [P(sp), P(y), P(mix), I(c.hc_count as i32), I(c.n_embd as i32), I(c.hc_mix() as i32)];
        self.slaunch(s, "hc_post", (c.n_embd.div_ceil(BLOCK), n), BLOCK, 0, &args)
    }

    /// The layer's compressors on lane `s`: their projections of x (and the indexer's head
    /// weights), then each pushes the token into its window and, where a window ends, emits a
    /// compressed row (rounded as the cache stores it under the official numerics).
    fn compressors_step(&self, s: &Step, il: usize) -> Result<()> {
        let c = &self.cfg;
        let lw: &Layer = &self.layers[il];
        let (b, n) = (s.b, s.n);
        let (d, id, ih, n_pairs) = (c.head_dim, c.indexer_head_dim, c.indexer_heads, c.rope_dim / 2);
        let (ckv, csc, ikv, isc, iwp) = (self.ptr(&b.ckv), self.ptr(&b.csc), self.ptr(&b.ikv), self.ptr(&b.isc), self.ptr(&b.iw));
        let (freqs, pos, ratio) = (self.ptr(&lw.freqs), s.pos(self), lw.kind.ratio() as usize);
        let mut of_x: Vec<(&DeviceMatrix, u64, usize)> = Vec::new();
        if let Some(cw) = &lw.comp {
            of_x.extend([(&cw.kv, ckv, 2 * d), (&cw.gate, csc, 2 * d)]);
        }
        if let Some(iw) = &lw.indexer {
            of_x.extend([(&iw.comp.kv, ikv, 2 * id), (&iw.comp.gate, isc, 2 * id), (&iw.proj, iwp, ih)]);
        }
        self.mm_group(s, s.acts(), self.ptr(&b.x), c.n_embd, &of_x)?;

        let width = lw.kind.compressor_lanes() * d;
        let iwidth = lw.kind.compressor_lanes() * id;
        if let Some(cw) = &lw.comp {
            let tab = |k: usize| s.layer_tab(self, il, k);
            // One compressor's arguments, in comp_push_step's order (fkv .. kv_stride).
            let job = |k0: usize, kv: u64, sc: u64, ape: u64, width: usize, rows: usize, norm: u64, stride: usize| {
                [P(tab(k0)), P(tab(k0 + 1)), P(kv), P(sc), P(ape), I(width as i32), P(tab(rows)), P(norm), L(stride as i64)]
            };
            let main = job(T_COMP_KV, ckv, csc, self.ptr(&cw.ape), width, T_COMP, self.ptr(&cw.norm), 2 * d);
            let (second, blocks) = match &lw.indexer {
                Some(iw) => (job(T_IDX_KV, ikv, isc, self.ptr(&iw.comp.ape), iwidth, T_IDX, self.ptr(&iw.comp.norm), 2 * id), 2),
                // Block 1 does not exist; its arguments are never read.
                None => (main, 1),
            };
            let tail = [I(ratio as i32), I((lw.kind.compressor_lanes() == 2) as i32), F(c.rms_eps), P(freqs), I(n_pairs as i32), P(pos)];
            let args: Vec<Arg> = main.into_iter().chain(second).chain(tail).collect();
            self.slaunch(s, "comp_push_step", (blocks, n), BLOCK, 0, &args)?;
            if s.official() {
                self.kv_round_step(s, tab(T_COMP), ratio)?;
                if lw.indexer.is_some() {
                    let args = [P(tab(T_IDX)), I(id as i32), I(ratio as i32), P(pos)];
                    self.slaunch(s, "index_round_step", (1, n), id, id * 4, &args)?;
                }
            }
        }
        Ok(())
    }

    fn ffn_step(&self, s: &Step, il: usize) -> Result<()> {
        let c = &self.cfg;
        let lw: &Layer = &self.layers[il];
        let (b, n) = (s.b, s.n);
        let (e, used, ffn) = (c.n_embd, c.n_expert_used, c.expert_ffn);
        let sp = self.ptr(&b.streams);
        let (x, mix) = (self.ptr(&b.x), self.ptr(&b.mix));
        let f4 = |a: u64, floats: usize| a + (floats * 4) as u64;
        // x quantized as it is made for the routed gate and up (main lane) and the shared
        // expert's (side lane).
        let first_ty = |ws: &[DeviceMatrix]| ws.first().map(|w| w.ty());
        let routed_ty = lw.gate_up.as_deref().map_or_else(|| first_ty(&lw.gate), first_ty);
        let shared_ty = lw.gate_up_sh.as_deref().map_or(Some(lw.gate_sh.ty()), first_ty);
        let [mut ax, sx] = self.hc_read(s, &lw.hc_ffn, sp, &lw.ffn_norm, x, Some(mix), [routed_ty, shared_ty])?;

        let (rlog, sel, wts, sel_gu) = (self.ptr(&b.rlog), self.ptr(&b.sel), self.ptr(&b.wts), self.ptr(&b.sel_gu));
        let gu = self.ptr(&b.gu);
        let picks = |ids: u64, k: usize| ExpertSlots { ids, n: n * k, x_div: k, y_mod: k, y_mul: n, per_token: k };
        // Gate and up rows pick-major (row k · n + t; see swiglu_step): the routed picks', then
        // the shared expert's. The shared expert reads only x: on the side stream, beside the
        // routing (one-block kernels) and the routed products.
        let sh = f4(gu, 2 * used * n * ffn);
        {
            let side = self.fork(s)?;
            let mut a = sx;
            match &lw.gate_up_sh {
                Some(pair) if n > 1 && fmt(pair[0].ty()).is_some() => {
                    let gr = Group { picks: 2 * n, x_div: 2, y_mod: 2, y_mul: n, per_token: 2 };
                    self.every_token(&side, &mut a, pair, gr, x, e, sh, ffn)?
                }
                Some(pair) => self.experts_b(&side, &mut a, pair, picks(self.ptr(&b.pairs), 2), x, e, sh, ffn)?,
                None => {
                    self.mmb(&side, &mut a, &lw.gate_sh, x, e, sh, ffn)?;
                    self.mmb(&side, &mut a, &lw.up_sh, x, e, f4(sh, n * ffn), ffn)?;
                }
            }
        }

        self.mmb(s, &mut ax, &lw.gate_inp, x, e, rlog, c.n_expert)?;
        let (bias, table) = match &lw.route {
            Route::Hash { dev, .. } => (0, self.ptr(dev)),
            Route::Scored { bias } => (self.ptr(bias), 0),
        };
        let gu_ids = if lw.gate_up.is_some() { sel_gu } else { 0 };
        let args = [
            P(rlog),
            I(c.n_expert as i32),
            I(used as i32),
            P(bias),
            P(table),
            P(self.ptr(&b.step)),
            F(c.expert_weights_scale),
            P(sel),
            P(wts),
            P(gu_ids),
        ];
        self.slaunch(s, "route", (n, 1), ROUTE_THREADS, 0, &args)?;
        // The routed picks as slots, one per (token, pick), or grouped by expert on the device
        // (each expert read once for up to ROUTED_NT of its picks) where enough of them are
        // expected to share experts. The grouped kernels take quantized weights only.
        let quantized = |ws: &[DeviceMatrix]| ws.first().is_some_and(|w| fmt(w.ty()).is_some());
        let experts_q = quantized(&lw.down) && lw.gate_up.as_deref().map_or(quantized(&lw.gate) && quantized(&lw.up), quantized);
        let grouping = self.routed_groups(n).filter(|_| experts_q);
        let (routed, routed_gu) = (self.ptr(&b.routed), self.ptr(&b.routed_gu));
        if let Some(busy) = grouping {
            let tab_gu = if lw.gate_up.is_some() { routed_gu } else { 0 };
            let args = [P(sel), I((n * used) as i32), I(used as i32), I(c.n_expert as i32), P(routed), P(tab_gu)];
            self.slaunch(s, "group_picks", (1, 1), GROUP_PICKS_THREADS, (n * used + 2 * c.n_expert + 1) * 4, &args)?;
            let tab = |addr: u64, per: usize| Table { addr, slots: per * n * used, nt: ROUTED_NT, busy: per * busy };
            let gr = |k: usize| Group { picks: n * k, x_div: k, y_mod: k, y_mul: n, per_token: k };
            match &lw.gate_up {
                Some(stack) => self.grouped(s, &mut ax, stack, gr(2 * used), tab(routed_gu, 2), x, e, gu, ffn)?,
                None => {
                    self.grouped(s, &mut ax, &lw.gate, gr(used), tab(routed, 1), x, e, gu, ffn)?;
                    self.grouped(s, &mut ax, &lw.up, gr(used), tab(routed, 1), x, e, f4(gu, used * n * ffn), ffn)?;
                }
            }
        } else {
            match &lw.gate_up {
                Some(stack) => self.experts_b(s, &mut ax, stack, picks(sel_gu, 2 * used), x, e, gu, ffn)?,
                None => {
                    self.experts_b(s, &mut ax, &lw.gate, picks(sel, used), x, e, gu, ffn)?;
                    self.experts_b(s, &mut ax, &lw.up, picks(sel, used), x, e, f4(gu, used * n * ffn), ffn)?;
                }
            }
        }
        self.join(s)?;
        let hs = self.ptr(&b.hs);
        // The SwiGLU quantizes its rows for the down projections as it writes them: routed
        // and shared rows together on the main lane's rows when they share a format, else the
        // shared one into the side lane's rows (the side lane's last reader of them, the shared
        // gate and up, was joined above).
        let ty = lw.down[0].ty();
        let joint = s.official() && fmt(ty).is_some() && fmt(ty) == fmt(lw.down_sh.ty());
        let routed_rows = if joint { (used + 1) * n } else { used * n };
        let hs_sh = f4(hs, n * used * ffn);
        let (qr, fr, mut ah) = self.fused_acts(s, s.acts0, Some(ty), hs, ffn, ffn, routed_rows)?;
        let (qsh, fsh, mut a_sh) = if joint {
            // The shared rows right after the routed ones, in the same rows' run.
            (if fr != 0 { qr + (n * used * act_stride(c)) as u64 } else { 0 }, fr, ah)
        } else {
            self.fused_acts(s, self.side_acts0(), Some(lw.down_sh.ty()), hs_sh, ffn, ffn, n)?
        };
        let args = [P(gu), P(hs), I(ffn as i32), F(lw.clamp), P(wts), I(used as i32), P(qr), I(fr), P(qsh), I(fsh), L(act_stride(c) as i64)];
        self.slaunch(s, "swiglu_step", (ffn.div_ceil(BLOCK), used + 1, n), BLOCK, 0, &args)?;

        // Down projections into the parts (pick k of token t at k · MAX_STEP_BATCH + t, the
        // shared expert's after them); the shared one on the side stream.
        if joint {
            self.quant(s, &mut ah, ty, hs, ffn, ffn, (used + 1) * n)?;
        }
        let parts = self.ptr(&b.parts);
        {
            let side = self.fork(s)?;
            // Quantized together above, or into the side lane's own rows.
            if joint {
                a_sh = ah;
            }
            self.mmb(&side, &mut a_sh, &lw.down_sh, hs_sh, ffn, f4(parts, used * MAX_STEP_BATCH * e), e)?;
        }
        match grouping {
            Some(busy) => {
                let gr = Group { picks: n * used, x_div: 1, y_mod: used, y_mul: MAX_STEP_BATCH, per_token: used };
                let tab = Table { addr: routed, slots: n * used, nt: ROUTED_NT, busy };
                self.grouped(s, &mut ah, &lw.down, gr, tab, hs, ffn, parts, e)?
            }
            None => {
                let down = ExpertSlots { ids: sel, n: n * used, x_div: 1, y_mod: used, y_mul: MAX_STEP_BATCH, per_token: used };
                self.experts_b(s, &mut ah, &lw.down, down, hs, ffn, parts, e)?
            }
        }
        self.join(s)?;
        let args = [P(sp), P(parts), I(used as i32 + 1), I(e as i32), I(MAX_STEP_BATCH as i32), P(mix), I(c.hc_count as i32), I(c.hc_mix() as i32)];
        self.slaunch(s, "sum_post", (e.div_ceil(BLOCK), n), BLOCK, 0, &args)
    }

    /// Whether a step of `n` tokens groups its routed picks by expert, and if so how many
    /// distinct experts its picks are expected to name (routing taken as uniform): the
    /// entries that make a wave of the grouped launches.
    fn routed_groups(&self, n: usize) -> Option<usize> {
        let c = &self.cfg;
        let (e, k) = (c.n_expert as f64, c.n_expert_used as f64);
        let distinct = e * (1.0 - (1.0 - k / e).powi(n as i32));
        let group = match self.opts.experts {
            ExpertReads::Slots => false,
            ExpertReads::Grouped => n > 1,
            ExpertReads::Auto => n > 1 && distinct <= (1.0 - GROUP_MIN_SAVING) * n as f64 * k,
        };
        group.then(|| (distinct.ceil() as usize).max(1))
    }

    /// A lane on the side stream that starts after everything queued on `s`'s stream so far,
    /// with its own rows of the activation scratch (after the main lane's: `step_batch.rs`
    /// sizes the scratch for both).
    fn fork<'a>(&'a self, s: &Step<'a>) -> Result<Step<'a>> {
        self.side.join(s.stream)?;
        Ok(Step { b: s.b, n: s.n, num: s.num, most: s.most, stream: &self.side, plain: Cell::new(true), acts0: self.side_acts0() })
    }

    /// The side lane's first row of the activation scratch.
    fn side_acts0(&self) -> usize {
        MAX_STEP_BATCH * (self.cfg.n_expert_used + 1)
    }

    /// The main lane `s` waits for everything queued on the side stream so far.
    fn join(&self, s: &Step) -> Result<()> {
        s.stream.join(&self.side)?;
        s.plain.set(true);
        Ok(())
    }

    /// `name` on lane `s`.
    fn slaunch(&self, s: &Step, name: &str, grid: impl Grid, block: usize, smem: usize, args: &[Arg]) -> Result<()> {
        self.launch_on(s.q(), name, grid.dims(), block, smem, args)
    }

    /// The HC read-out of the streams `sp` at one site into `out`, normed by `norm`: the
    /// mixing (pre, post, comb) into `mix`, or with None the output head's read-out. Float
    /// mixing matrices (every model so far) take the split path: hc_proj with the state's
    /// squares, then hc_out_step (making the pre weights itself) and hc_norm_step over many
    /// blocks, while hc_mix_step's one warp makes post and comb on the side stream (joined
    /// before the write-back needs them). Others take the one-block-per-token `hc_pre`.
    /// `quants` names the weights of the first products of `out` on the main and the side
    /// lane: the split path's norm quantizes `out` for them as it writes it, and the lanes'
    /// [`Acts`] it returns hold those rows. (The side lane's rows are free here: every
    /// side-lane launch that read them was joined into the main stream before this read-out.)
    #[allow(clippy::too_many_arguments)]
    fn hc_read(&self, s: &Step, h: &Hc, sp: u64, norm: &DeviceBuffer<f32>, out: u64, mix: Option<u64>, quants: [Option<GgmlType>; 2]) -> Result<[Acts; 2]> {
        let c = &self.cfg;
        let b = s.b;
        let m = self.ptr(&b.m);
        let (parts, split) = self.hc_mix(s, h, sp, m)?;
        if !split {
            self.hc_pre(h, sp, m, parts, norm, out, mix.unwrap_or(0), mix.is_none(), s.n)?;
            return Ok([s.acts(), Acts { have: None, row0: self.side_acts0() }]);
        }
        let (hcn, e) = (c.hc_count, c.n_embd);
        let ms = c.hc_mix().max(hcn) * parts;
        let (ss, scale, base) = (self.ptr(&b.ss), self.ptr(&h.scale), self.ptr(&h.base));
        if let Some(mixp) = mix {
            // post and comb on the side stream, joined again before the write-back.
            let side = self.fork(s)?;
            let args = [
                P(m),
                P(ss),
                P(scale),
                P(base),
                P(mixp),
                I(hcn as i32),
                I(e as i32),
                I(c.sinkhorn_iters as i32),
                F(c.hc_eps),
                F(c.rms_eps),
                I(0),
                I(ms as i32),
                I(c.hc_mix() as i32),
                I(parts as i32),
            ];
            self.slaunch(&side, "hc_mix_step", (s.n, 1), 32, 0, &args)?;
        }
        let (qa, fa, main) = self.fused_acts(s, s.acts0, quants[0], out, e, e, s.n)?;
        let (qb, fb, side) = self.fused_acts(s, self.side_acts0(), quants[1], out, e, e, s.n)?;
        let blocks = e.div_ceil(BLOCK);
        let xss = self.ptr(&b.xss);
        let args = [P(sp), P(m), P(ss), P(scale), P(base), P(out), P(xss), I(hcn as i32), I(e as i32), I(ms as i32), I(parts as i32), F(c.rms_eps), F(c.hc_eps)];
        self.slaunch(s, "hc_out_step", (blocks, s.n), BLOCK, 0, &args)?;
        let args = [P(out), P(xss), I(blocks as i32), P(self.ptr(norm)), I(e as i32), F(c.rms_eps), P(qa), I(fa), P(qb), I(fb), L(act_stride(c) as i64)];
        self.slaunch(s, "hc_norm_step", (blocks, s.n), BLOCK, 0, &args)?;
        Ok([main, side])
    }

    /// The HC mixing projection of the streams `sp` into `m` ([`m_stride`] floats per token),
    /// as `hc_pre` takes it: the number of partial sums per value, and whether the state's
    /// sums of squares were left in the batch's `ss` (one per partial). Float matrices (every
    /// model so far) go through `hc_proj`, whose column slices spread the few long rows over
    /// many blocks; others through the matvec.
    fn hc_mix(&self, s: &Step, h: &Hc, sp: u64, m: u64) -> Result<(usize, bool)> {
        let w = &h.proj;
        let ms = self.cfg.hc_mix().max(self.cfg.hc_count);
        if w.rows() > ms {
            return Err(CudaError::Shape(format!("{} HC mixing rows exceed the scratch", w.rows())));
        }
        let f16 = match w.ty() {
            GgmlType::F16 => true,
            GgmlType::F32 => false,
            _ => {
                self.mmb(s, &mut s.acts(), w, sp, w.cols(), m, ms)?;
                return Ok((1, false));
            }
        };
        let cols = w.cols();
        let mut parts = HC_PARTS;
        while parts > 1 && !cols.is_multiple_of(parts) {
            parts /= 2;
        }
        let args = [P(self.ptr(&*h.proj_buf)), I(f16 as i32), P(sp), I(cols as i32), P(m), L((ms * parts) as i64), P(self.ptr(&s.b.ss))];
        self.slaunch(s, "hc_proj", (w.rows(), parts, s.n), BLOCK, 0, &args)?;
        Ok((parts, true))
    }

    /// `kv_round_step` of the ring slot (ratio 0) or of the row a window's end emits, for every
    /// token, its rows from the table run at `rows`.
    fn kv_round_step(&self, s: &Step, rows: u64, ratio: usize) -> Result<()> {
        let c = &self.cfg;
        let args = [P(rows), I(c.head_dim as i32), I(c.rope_dim as i32), I(c.sliding_window as i32), I(ratio as i32), P(s.pos(self))];
        self.slaunch(s, "kv_round_step", (1, s.n), 64, 0, &args)
    }

    /// The official activations of `rows` inputs at `x` (`xs` f32 apart, `cols` wide) for
    /// weights of type `ty`, quantized unless `acts` already holds them (or a run of rows
    /// containing them); their address.
    #[allow(clippy::too_many_arguments)]
    fn quant(&self, s: &Step, acts: &mut Acts, ty: GgmlType, x: u64, xs: usize, cols: usize, rows: usize) -> Result<u64> {
        let (f, base) = self.act_rows(s, acts.row0, ty, cols, rows)?;
        let stride = act_stride(&self.cfg);
        if let Some((hx, hxs, hcols, hrows, hf)) = acts.have {
            let row_bytes = (hxs * 4) as u64;
            if (hxs, hcols, hf) == (xs, cols, f) && x >= hx && (x - hx).is_multiple_of(row_bytes) {
                let k = ((x - hx) / row_bytes) as usize;
                if k + rows <= hrows {
                    return Ok(base + (k * stride) as u64);
                }
            }
        }
        self.quant_acts_on(s.q(), f == Fmt::Q8_0, x, xs, cols, rows, base, stride)?;
        acts.have = Some((x, xs, cols, rows, f));
        Ok(base)
    }

    /// The activation rows from `row0` on for `rows` inputs of `cols` columns quantized for
    /// weights of type `ty`, checked to fit the scratch: their format and address.
    fn act_rows(&self, s: &Step, row0: usize, ty: GgmlType, cols: usize, rows: usize) -> Result<(Fmt, u64)> {
        let f = fmt(ty).ok_or(CudaError::UnsupportedType(ty))?;
        let stride = act_stride(&self.cfg);
        if act_bytes(ty, cols)? > stride || (row0 + rows) * stride > s.b.acts.len() {
            return Err(CudaError::Shape(format!("{rows} rows of {cols} columns exceed the activation scratch")));
        }
        Ok((f, self.ptr(&s.b.acts) + (row0 * stride) as u64))
    }

    /// Activation rows that a launch fills as it writes its output (`rows` rows of `cols`
    /// columns at `x`, `xs` f32 apart), for the products of weights `ty` on the lane whose rows
    /// start at `row0`: the rows' address, the launch's format code (`ACT_Q8_0`, `ACT_Q8_K` in
    /// `dsv4_common.cuh`) and the lane's [`Acts`] holding them. Address and code 0, and
    /// nothing held, where those products take f32 inputs or the columns do not make whole
    /// 256-value slices (the products then quantize their input themselves).
    #[allow(clippy::too_many_arguments)]
    fn fused_acts(&self, s: &Step, row0: usize, ty: Option<GgmlType>, x: u64, xs: usize, cols: usize, rows: usize) -> Result<(u64, i32, Acts)> {
        let Some(ty) = ty.filter(|&t| s.official() && fmt(t).is_some() && cols.is_multiple_of(BLOCK)) else {
            return Ok((0, 0, Acts { have: None, row0 }));
        };
        let (f, base) = self.act_rows(s, row0, ty, cols, rows)?;
        let code = match f {
            Fmt::Q8_0 => 1,
            Fmt::Q8K => 2,
        };
        Ok((base, code, Acts { have: Some((x, xs, cols, rows, f)), row0 }))
    }

    /// `y_t = W x_t` for the step's tokens, inputs `xs` and outputs `ys` f32 apart. One token:
    /// an expert-slot launch over a one-matrix stack. Several tokens:
    /// [`mm_split`](Self::mm_split), float weights included (until v19 they took a slot per
    /// token, each re-reading the matrix: 174 µs for the indexer's 8192 × 1024 F16 at 32
    /// sessions on an H100).
    #[allow(clippy::too_many_arguments)]
    fn mmb(&self, s: &Step, acts: &mut Acts, w: &DeviceMatrix, x: u64, xs: usize, y: u64, ys: usize) -> Result<()> {
        if s.n == 1 {
            let sl = ExpertSlots { ids: self.ptr(&s.b.zeros), n: s.n, x_div: 1, y_mod: 1, y_mul: 0, per_token: 1 };
            return self.experts_b(s, acts, std::slice::from_ref(w), sl, x, xs, y, ys);
        }
        let a = if quantized_acts(s, w) { self.quant(s, acts, w.ty(), x, xs, w.cols(), s.n)? } else { 0 };
        self.mm_split(s, w, (x, xs), (a, act_stride(&self.cfg)), y, ys, 1)
    }

    /// The step's tokens through `w` with the several-token kernels (W read once per 16
    /// tokens), each token getting the bits of its one-token product in a launch of
    /// `per_token` slots (the split of that launch): f32 inputs `x.1` floats apart (plain
    /// numerics, float weights) or quantized ones `a.1` bytes apart (official), outputs `ys`
    /// f32 apart.
    #[allow(clippy::too_many_arguments)]
    fn mm_split(&self, s: &Step, w: &DeviceMatrix, x: (u64, usize), a: (u64, usize), y: u64, ys: usize, per_token: usize) -> Result<()> {
        let official = quantized_acts(s, w);
        let split = self.mv.slot_split(w, official, per_token)?;
        self.counted(s.n.div_ceil(crate::MAX_BATCH) as u64);
        let label = || format!("step matvec {} {}x{} n{}", w.ty(), w.rows(), w.cols(), s.n);
        let (xp, xstride) = if official { a } else { x };
        let tensor = self.tensor_cores(s, w);
        // SAFETY: the inputs are the n tokens' rows in the batch's scratch (f32, or quantized
        // for w's type and checked to fit the activation scratch by `quant`), the outputs n
        // rows of the batch's scratch, sized for MAX_STEP_BATCH tokens of this model, apart
        // from the inputs.
        self.timed(label, || unsafe {
            if tensor {
                self.mv.run_mmq_raw(s.q(), w, xp, xstride, s.n, y, ys, split)
            } else {
                self.mv.run_batch_split_raw(s.q(), w, xp, xstride, official, s.n, y, ys, split)
            }
        })
    }

    /// The grouping table `step` made for `per_token` matrices that each of this step's
    /// tokens picks.
    fn host_table(&self, s: &Step, per_token: usize) -> Result<Table> {
        let t = s.b.tables.get(&(per_token, s.n)).ok_or_else(|| CudaError::Shape(format!("no grouping table for {per_token} matrices")))?;
        Ok(Table { addr: self.ptr(t), slots: t.len() / (2 + GROUP_NT), nt: GROUP_NT, busy: 0 })
    }

    /// The grouped products of `gr` (quantized weights): each matrix read once per entry of
    /// `table`.
    #[allow(clippy::too_many_arguments)]
    fn grouped(&self, s: &Step, acts: &mut Acts, ws: &[DeviceMatrix], gr: Group, table: Table, x: u64, xs: usize, y: u64, ys: usize) -> Result<()> {
        let w = ws.first().ok_or_else(|| CudaError::Shape("an empty expert stack".into()))?;
        let official = s.official();
        let (xp, stride) = if official {
            let rows = gr.picks.div_ceil(gr.x_div);
            (self.quant(s, acts, w.ty(), x, xs, w.cols(), rows)?, act_stride(&self.cfg))
        } else {
            (x, xs)
        };
        let split = self.mv.slot_split(w, official, gr.per_token)?;
        let g = Grouped { table: table.addr, slots: table.slots, busy: table.busy, nt: table.nt, x_div: gr.x_div, y_mod: gr.y_mod, y_mul: gr.y_mul, split };
        self.counted(1);
        let label = || format!("step grouped {} {}x{} x{}", w.ty(), w.rows(), w.cols(), gr.picks);
        // SAFETY: the table's picks (group_table for this many tokens, or group_picks over this
        // step's routing: pick indices below gr.picks) address input rows (f32, or quantized
        // by `quant`, checked to fit) and output rows in the batch's scratch, sized for
        // MAX_STEP_BATCH tokens of this model; outputs are apart from inputs.
        self.timed(label, || unsafe { self.mv.run_grouped_raw(s.q(), ws, g, xp, stride, official, y, ys) })
    }

    /// Whether this step's products of `w` run on the tensor cores: official numerics, Q8_0
    /// weights, enough tokens, and the option on.
    fn tensor_cores(&self, s: &Step, w: &DeviceMatrix) -> bool {
        quantized_acts(s, w) && w.ty() == GgmlType::Q8_0 && self.opts.dense == DenseProducts::TensorCores && s.n >= MMQ_MIN_TOKENS
    }

    /// A [`Group`] where every token picks each matrix of `ws` once: on the tensor cores
    /// ([`DenseProducts::TensorCores`], official Q8_0) one launch of the whole stack, token t of
    /// matrix k being pick t · per_token + k; otherwise [`grouped`](Self::grouped) over the
    /// host's table.
    #[allow(clippy::too_many_arguments)]
    fn every_token(&self, s: &Step, acts: &mut Acts, ws: &[DeviceMatrix], gr: Group, x: u64, xs: usize, y: u64, ys: usize) -> Result<()> {
        let Some(w) = ws.first().filter(|w| self.tensor_cores(s, w)) else {
            return self.grouped(s, acts, ws, gr, self.host_table(s, gr.per_token)?, x, xs, y, ys);
        };
        let (k, a) = (gr.per_token, act_stride(&self.cfg));
        // Pick j = t·k + z reads input row j / x_div and writes output row
        // (j % y_mod)·y_mul + j / y_mod: linear in t and z for these two placements.
        let (x_stride, x_step) = match gr.x_div {
            1 => (k * a, a),
            d if d == k => (a, 0),
            d => return Err(CudaError::Shape(format!("inputs shared by {d} of {k} picks"))),
        };
        let (y_stride, y_step) = match (gr.y_mod, gr.y_mul) {
            (1, 0) => (k * ys, ys),
            (m, mul) if m == k => (ys, mul * ys),
            (m, mul) => return Err(CudaError::Shape(format!("outputs placed by {m} and {mul}"))),
        };
        let xp = self.quant(s, acts, w.ty(), x, xs, w.cols(), gr.picks.div_ceil(gr.x_div))?;
        let split = self.mv.slot_split(w, true, k)?;
        let io = MmqIo { x: xp, x_stride, x_step, y, y_stride, y_step };
        self.counted(1);
        let label = || format!("step mmq {} {}x{} x{}", w.ty(), w.rows(), w.cols(), gr.picks);
        // SAFETY: as `grouped` with the host's table: s.n tokens' input rows in the activation
        // scratch (quantized by `quant`, checked to fit) and output rows in the batch's
        // scratch, sized for MAX_STEP_BATCH tokens of this model, apart from the inputs.
        self.timed(label, || unsafe { self.mv.run_mmq_stack_raw(s.q(), ws, io, s.n, split) })
    }

    /// Products of one input (`xs` f32 per token), each `(W, y, ys)`, grouped so that each
    /// activation format is quantized once (`acts`: what the lane's rows hold already).
    fn mm_group(&self, s: &Step, mut acts: Acts, x: u64, xs: usize, list: &[(&DeviceMatrix, u64, usize)]) -> Result<()> {
        for want in [None, Some(Fmt::Q8_0), Some(Fmt::Q8K)] {
            for &(w, y, ys) in list.iter().filter(|(w, _, _)| fmt(w.ty()) == want) {
                self.mmb(s, &mut acts, w, x, xs, y, ys)?;
            }
        }
        Ok(())
    }

    /// [`Matvec::run_experts_raw`] for the step: input rows at `x`, `xs` f32 apart (quantized
    /// through `acts` under the official numerics), output rows `ys` f32 apart.
    #[allow(clippy::too_many_arguments)]
    fn experts_b(&self, s: &Step, acts: &mut Acts, ws: &[DeviceMatrix], sl: ExpertSlots, x: u64, xs: usize, y: u64, ys: usize) -> Result<()> {
        let w = ws.first().ok_or_else(|| CudaError::Shape("an empty expert stack".into()))?;
        self.counted(1);
        let label = || format!("step slots {} {}x{} x{}", w.ty(), w.rows(), w.cols(), sl.n);
        if !quantized_acts(s, w) {
            // SAFETY: the slots' ids are on the device (routing output or the batch's id
            // tables, sized for MAX_STEP_BATCH tokens), the input and output rows lie in the
            // batch's scratch sized for this model and MAX_STEP_BATCH tokens; outputs are
            // apart from inputs.
            return self.timed(label, || unsafe { self.mv.run_experts_raw(s.q(), ws, sl, x, xs * 4, false, y, ys) });
        }
        let rows = sl.n.div_ceil(sl.x_div);
        let a = self.quant(s, acts, w.ty(), x, xs, w.cols(), rows)?;
        // SAFETY: as above; `a` holds the slots' input rows quantized, act_stride apart.
        self.timed(label, || unsafe { self.mv.run_experts_raw(s.q(), ws, sl, a, act_stride(&self.cfg), true, y, ys) })
    }
}

/// Whether the step's products of `w` take quantized activations: official numerics and
/// quantized weights (float weights take f32 activations under both numerics).
fn quantized_acts(s: &Step, w: &DeviceMatrix) -> bool {
    s.official() && fmt(w.ty()).is_some()
}

/// A launch grid of one, two or three dimensions.
trait Grid {
    fn dims(self) -> (usize, usize, usize);
}

impl Grid for (usize, usize) {
    fn dims(self) -> (usize, usize, usize) {
        (self.0, self.1, 1)
    }
}

impl Grid for (usize, usize, usize) {
    fn dims(self) -> (usize, usize, usize) {
        self
    }
}

/// Threads of the `group_picks` block (any multiple of 32; its first warp ranks the picks).
pub(super) const GROUP_PICKS_THREADS: usize = 256;

/// Threads of a `reduce_logits` block (`PICK_THREADS` in `model/pick.cu`).
const PICK_THREADS: usize = 1024;

/// A want as `reduce_logits` reads it: mode (0 the row, 1 the argmax, 2 the kept set), then
/// 1 / T and ln min_p as f32 bits.
fn want_words(w: Want) -> [u32; 3] {
    match w {
        Want::Row => [0, 0, 0],
        Want::Argmax => [1, 0, 0],
        Want::Kept { inv_t, floor } => [2, inv_t.to_bits(), floor.to_bits()],
    }
}
