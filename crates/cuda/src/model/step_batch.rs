//! The decode step's memory (`model/step.rs` runs the launches): the scratch of up to
//! [`MAX_STEP_BATCH`] tokens, the pointer table through which the `*_step` kernels reach each
//! session's buffers, the grouping tables of the grouped products, and the captured graphs.

use std::collections::HashMap;

use cudarc::driver::{CudaGraph, PinnedHostSlice};
use dsv4_model::ModelConfig;

use super::forward::BLOCK;
use super::state::{act_stride, GpuState};
use super::GpuModel;
use crate::buffer::DeviceBuffer;
use crate::device::Gpu;
use crate::error::Result;

/// Most sessions one decode step carries; more are split over several steps.
pub const MAX_STEP_BATCH: usize = 64;

/// Most kept tokens a session's reduced logits carry (`model/pick.cu`); a larger kept set
/// comes as the whole row. Min-p 0.05 at temperature 1 keeps the tokens within 3 nats of the
/// best: a handful, rarely hundreds.
pub const PICK_CAP: usize = 2048;

/// Words of the reductions of a step of `n` sessions: a 4-word header each, then `PICK_CAP`
/// (token, logit) pairs each.
pub(super) fn pick_words(n: usize) -> usize {
    n * (4 + 2 * PICK_CAP)
}

/// Column slices of `hc_proj` (a fixed count: the slices' sums are added in order, so the
/// count is part of the arithmetic).
pub(super) const HC_PARTS: usize = 16;

/// Table entries per layer (each a run of one address per token of the step).
pub(super) const T_RAW: usize = 0;
pub(super) const T_COMP: usize = 1;
pub(super) const T_COMP_KV: usize = 2;
pub(super) const T_COMP_SC: usize = 3;
pub(super) const T_IDX: usize = 4;
pub(super) const T_IDX_KV: usize = 5;
pub(super) const T_IDX_SC: usize = 6;
pub(super) const LAYER_ENTRIES: usize = 7;
/// Per-session entries after the layers'.
pub(super) const T_ISCORE: usize = 0;
pub(super) const T_MASK: usize = 1;
pub(super) const T_ATT: usize = 2;
pub(super) const SESSION_ENTRIES: usize = 3;

/// A captured decode step and its kernel count.
pub(super) struct StepGraph {
    pub(super) graph: CudaGraph,
    pub(super) kernels: u64,
}

/// Which graph: batch size, official numerics, most indexer rows (the grid of its strided launches).
pub(super) type GraphKey = (usize, bool, usize);

/// The decode step's buffers, for up to [`MAX_STEP_BATCH`] tokens (token t's vectors follow
/// token t - 1's), and its captured graphs.
pub(super) struct StepBatch {
    /// Token ids, then positions (`MAX_STEP_BATCH` each; a step of n uses the first n of both,
    /// its positions at `n`).
    pub(super) step: DeviceBuffer<i32>,
    /// Session addresses (see the T_ constants): entry k of layer l for token b at
    /// `(l · LAYER_ENTRIES + k) · n + b`, session entries after every layer's.
    pub(super) table: DeviceBuffer<u64>,
    /// What `table` holds now.
    pub(super) uploaded: Vec<u64>,
    /// Expert ids of the slot launches: zeros (a dense matrix for every token), j % 2 (the
    /// shared expert's gate-up pair), j % o_groups (the output groups).
    pub(super) zeros: DeviceBuffer<i32>,
    pub(super) pairs: DeviceBuffer<i32>,
    pub(super) groups: DeviceBuffer<i32>,
    pub(super) streams: DeviceBuffer<f32>,
    pub(super) m: DeviceBuffer<f32>,
    pub(super) mix: DeviceBuffer<f32>,
    pub(super) x: DeviceBuffer<f32>,
    pub(super) qr: DeviceBuffer<f32>,
    pub(super) q: DeviceBuffer<f32>,
    pub(super) kv: DeviceBuffer<f32>,
    pub(super) ckv: DeviceBuffer<f32>,
    pub(super) csc: DeviceBuffer<f32>,
    pub(super) ikv: DeviceBuffer<f32>,
    pub(super) isc: DeviceBuffer<f32>,
    pub(super) iq: DeviceBuffer<f32>,
    pub(super) iw: DeviceBuffer<f32>,
    pub(super) o: DeviceBuffer<f32>,
    pub(super) z: DeviceBuffer<f32>,
    pub(super) y: DeviceBuffer<f32>,
    pub(super) rlog: DeviceBuffer<f32>,
    pub(super) sel: DeviceBuffer<i32>,
    pub(super) wts: DeviceBuffer<f32>,
    pub(super) sel_gu: DeviceBuffer<i32>,
    /// The routed picks grouped by expert (`group_picks` in `model/moe.cu`): entries of
    /// [`ROUTED_NT`] picks for the down projections (or separate gate and up), and for the
    /// stacked gate-up pair; room for every pick to be its own entry.
    pub(super) routed: DeviceBuffer<i32>,
    pub(super) routed_gu: DeviceBuffer<i32>,
    pub(super) gu: DeviceBuffer<f32>,
    pub(super) hs: DeviceBuffer<f32>,
    /// `(used + 1) × MAX_STEP_BATCH × n_embd`: part p of token t at `(p · MAX_STEP_BATCH + t)
    /// · n_embd`.
    pub(super) parts: DeviceBuffer<f32>,
    pub(super) acts: DeviceBuffer<u8>,
    pub(super) logits: DeviceBuffer<f32>,
    /// The HC read-out's partial sums of squares: of the state (per `hc_proj` slice) and of
    /// the read-out (per `hc_out_step` block), per token.
    pub(super) ss: DeviceBuffer<f64>,
    pub(super) xss: DeviceBuffer<f64>,
    /// The logits of a step on their way to the host (page-locked, `MAX_STEP_BATCH` rows).
    pub(super) host: PinnedHostSlice<f32>,
    /// Each session's want of the step (3 words: mode, 1 / T, ln min_p; `model/pick.cu`).
    pub(super) wants: DeviceBuffer<u32>,
    /// The step's reductions of its logits ([`pick_words`]), and their page-locked copy.
    pub(super) picks: DeviceBuffer<u32>,
    pub(super) picks_host: PinnedHostSlice<u32>,
    /// Grouping tables of the grouped products by (matrices per token, tokens): every token
    /// picks every matrix, so a table depends on those two counts only; made on first use
    /// and kept (graphs bake in their addresses).
    pub(super) tables: HashMap<(usize, usize), DeviceBuffer<i32>>,
    pub(super) graphs: HashMap<GraphKey, StepGraph>,
}

// SAFETY: the graphs (and their executables) may be used from any thread as long as calls on
// them are serialised; a StepBatch is reached only through its model's Mutex.
unsafe impl Send for StepBatch {}

/// Floats per token of the HC mixing scratch: every mixing value as HC_PARTS partial sums.
fn m_stride(c: &ModelConfig) -> usize {
    c.hc_mix().max(c.hc_count) * HC_PARTS
}

/// Device bytes of a [`StepBatch`] (the memory plan counts them).
pub fn step_batch_bytes(c: &ModelConfig) -> u64 {
    let (t, d, id, used) = (MAX_STEP_BATCH, c.head_dim, c.indexer_head_dim, c.n_expert_used);
    let floats = c.hc_count * c.n_embd
        + m_stride(c)
        + c.hc_mix()
        + 2 * c.n_embd
        + c.q_lora_rank
        + 2 * c.n_head * d
        + d
        + 4 * d
        + 4 * id
        + c.indexer_heads * (id + 1)
        + c.o_groups * c.o_lora_rank
        + c.n_expert
        + 4 * used
        + 3 * (used + 1) * c.expert_ffn
        + (used + 1) * c.n_embd
        + c.vocab_size;
    let table = c.n_layer * LAYER_ENTRIES + SESSION_ENTRIES;
    let partials = HC_PARTS + c.n_embd.div_ceil(BLOCK);
    // The wants and the reductions: 3 + pick_words(1) words a token; the routed grouping
    // tables 3 · used entries a token.
    let routed = 3 * used * (2 + ROUTED_NT);
    (t * (floats * 4 + (used + 2) * act_stride(c) + table * 8 + (3 + c.o_groups + routed) * 4 + 8 + partials * 8 + (3 + pick_words(1)) * 4)) as u64
}

impl StepBatch {
    pub(super) fn new(gpu: &Gpu, c: &ModelConfig) -> Result<StepBatch> {
        let t = MAX_STEP_BATCH;
        let z = |n: usize| gpu.alloc_zeros::<f32>(t * n);
        let ids = |m: usize| gpu.upload(&(0..m * t).map(|j| (j % m) as i32).collect::<Vec<_>>());
        let (d, id, used, ffn) = (c.head_dim, c.indexer_head_dim, c.n_expert_used, c.expert_ffn);
        let table = t * (c.n_layer * LAYER_ENTRIES + SESSION_ENTRIES);
        Ok(StepBatch {
            step: gpu.alloc_zeros::<i32>(2 * t)?,
            table: gpu.alloc_zeros::<u64>(table)?,
            uploaded: Vec::new(),
            zeros: gpu.alloc_zeros::<i32>(t)?,
            pairs: ids(2)?,
            groups: ids(c.o_groups.max(1))?,
            streams: z(c.hc_count * c.n_embd)?,
            m: z(m_stride(c))?,
            mix: z(c.hc_mix())?,
            x: z(c.n_embd)?,
            qr: z(c.q_lora_rank)?,
            q: z(c.n_head * d)?,
            kv: z(d)?,
            ckv: z(2 * d)?,
            csc: z(2 * d)?,
            ikv: z(2 * id)?,
            isc: z(2 * id)?,
            iq: z(c.indexer_heads * id)?,
            iw: z(c.indexer_heads)?,
            o: z(c.n_head * d)?,
            z: z(c.o_groups * c.o_lora_rank)?,
            y: z(c.n_embd)?,
            rlog: z(c.n_expert)?,
            sel: gpu.alloc_zeros::<i32>(t * used)?,
            wts: z(used)?,
            sel_gu: gpu.alloc_zeros::<i32>(t * 2 * used)?,
            routed: gpu.alloc_zeros::<i32>(t * used * (2 + ROUTED_NT))?,
            routed_gu: gpu.alloc_zeros::<i32>(2 * t * used * (2 + ROUTED_NT))?,
            gu: z(2 * (used + 1) * ffn)?,
            hs: z((used + 1) * ffn)?,
            parts: z((used + 1) * c.n_embd)?,
            // Rows for the main stream's products (the down projections' used + 1 a token at most),
            // then the side stream's (`model/step.rs`, `Step::fork`).
            acts: gpu.alloc_zeros::<u8>(t * (used + 2) * act_stride(c))?,
            logits: z(c.vocab_size)?,
            ss: gpu.alloc_zeros::<f64>(t * HC_PARTS)?,
            xss: gpu.alloc_zeros::<f64>(t * c.n_embd.div_ceil(BLOCK))?,
            // SAFETY: plain page-locked memory (not write-combined: the host reads it); a step
            // reads only the rows its download has just written.
            host: unsafe { gpu.context().alloc_pinned_with_flags::<f32>(t * c.vocab_size, 0)? },
            wants: gpu.alloc_zeros::<u32>(3 * t)?,
            picks: gpu.alloc_zeros::<u32>(pick_words(t))?,
            // SAFETY: as `host`.
            picks_host: unsafe { gpu.context().alloc_pinned_with_flags::<u32>(pick_words(t), 0)? },
            tables: HashMap::new(),
            graphs: HashMap::new(),
        })
    }
}

/// Picks per entry of the grouped products (the output groups and the shared expert's pair:
/// every token picks every matrix).
pub(super) const GROUP_NT: usize = 16;

/// Picks per entry of the routed experts' grouped products (`NT` of `group_picks`).
pub(super) const ROUTED_NT: usize = 4;

/// The grouping table of `n` tokens that each pick all `m` matrices (pick j = t · m + k is
/// matrix k of token t): matrix by matrix, its tokens in order, `nt` picks per entry, as
/// [`Grouped`] takes it ([matrix, count, picks...], unused picks -1).
pub(super) fn group_table(m: usize, n: usize, nt: usize) -> Vec<i32> {
    let mut t = Vec::with_capacity(m * n.div_ceil(nt) * (2 + nt));
    for k in 0..m {
        for t0 in (0..n).step_by(nt) {
            let cnt = nt.min(n - t0);
            t.extend([k as i32, cnt as i32]);
            t.extend((0..nt).map(|i| if i < cnt { ((t0 + i) * m + k) as i32 } else { -1 }));
        }
    }
    t
}


impl GpuModel {
    /// `data` in a new device buffer.
    pub(super) fn upload_i32(&self, data: &[i32]) -> Result<DeviceBuffer<i32>> {
        let slice = self.stream.alloc_zeros::<i32>(crate::buffer::padded_len(data.len(), 4))?;
        let mut buf = DeviceBuffer { slice, len: data.len() };
        self.stream.memcpy_htod(data, &mut buf.view_mut())?;
        Ok(buf)
    }

    /// The sessions' buffer addresses in the table's layout.
    pub(super) fn table(&self, states: &[&mut GpuState]) -> Vec<u64> {
        let n = states.len();
        let layers = self.layers.len();
        let mut t = vec![0u64; n * (layers * LAYER_ENTRIES + SESSION_ENTRIES)];
        for (j, st) in states.iter().enumerate() {
            for (il, ls) in st.layers.iter().enumerate() {
                let mut put = |k: usize, a: u64| t[(il * LAYER_ENTRIES + k) * n + j] = a;
                put(T_RAW, self.ptr(&ls.raw));
                if let Some((rows, f)) = &ls.comp {
                    put(T_COMP, self.ptr(rows));
                    put(T_COMP_KV, self.ptr(&f.kv));
                    put(T_COMP_SC, self.ptr(&f.score));
                }
                if let Some((rows, f)) = &ls.index {
                    put(T_IDX, self.ptr(rows));
                    put(T_IDX_KV, self.ptr(&f.kv));
                    put(T_IDX_SC, self.ptr(&f.score));
                }
            }
            let base = layers * LAYER_ENTRIES;
            t[(base + T_ISCORE) * n + j] = self.ptr(&st.iscore);
            t[(base + T_MASK) * n + j] = self.ptr(&st.mask);
            t[(base + T_ATT) * n + j] = self.ptr(&st.att);
        }
        t
    }
}
