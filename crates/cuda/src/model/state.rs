//! A session on the GPU: per layer, the raw window ring, the compressed rows and the
//! compressor frontiers (the device twin of `dsv4_model::SessionState`), plus the per-token
//! attention scratch its decode steps address. Compressed rows are preallocated for
//! `capacity` tokens. The vectors one prefill chunk's pass writes ([`Scratch`]) belong to the
//! model, one set for every session: chunks run one at a time on the model's stream.

use dsv4_model::config::LayerKind;
use dsv4_model::ModelConfig;

use super::forward::att_split_floats;
use super::GpuModel;
use crate::buffer::DeviceBuffer;
use crate::quant::matmul::FLOAT_PART_FLOATS;
use crate::device::Gpu;
use crate::error::{CudaError, Result};

/// Values and scores of a compressor's pending windows (empty slots score -inf).
pub(super) struct Frontier {
    pub kv: DeviceBuffer<f32>,
    pub score: DeviceBuffer<f32>,
}

impl Frontier {
    fn new(gpu: &Gpu, kind: LayerKind, dim: usize) -> Result<Frontier> {
        // The host frontier's layout, so checkpoints copy it verbatim.
        let n = dsv4_model::state::Frontier::values(kind, dim);
        Ok(Frontier { kv: gpu.alloc_zeros(n)?, score: gpu.upload(&vec![f32::NEG_INFINITY; n])? })
    }
}

pub(super) struct LayerState {
    /// `window × head_dim`; the row of position p is at `p % window`.
    pub raw: DeviceBuffer<f32>,
    /// Compressed rows (`capacity / ratio` × head_dim) and their frontier.
    pub comp: Option<(DeviceBuffer<f32>, Frontier)>,
    /// The indexer's key rows (`capacity / 4` × indexer_head_dim) and their frontier.
    pub index: Option<(DeviceBuffer<f32>, Frontier)>,
}

/// Tokens one pass over the layers carries: every per-token intermediate below holds this
/// many, one after another. Each weight matrix is read once per chunk, so a long chunk turns
/// prefill's products into matrix products (`quant/matmul.cu` under the official numerics;
/// the plain path runs them [`MAX_BATCH`](crate::MAX_BATCH) tokens at a time), and a MoE
/// layer's routed experts, which a chunk of a few hundred tokens touches nearly all of, are
/// decoded once per chunk (wide tiles, `ffn.rs`): 1,024 tokens (the engine's prefill piece on
/// the GPU, `Runner::prefill_piece`) made a 6-layer prompt 1.25x faster than 512 on an H100.
/// Longer chunks lengthen the scheduler step a newcomer's first token waits for. The scratch
/// is about 1.2 GB on the Flash shapes (the largest parts: the chunk's logits, 530 MB, and
/// the gathered expert rows, `used` per token), plus each token's indexer scores and mask over
/// the context's compressed rows, held once per model.
pub const CHUNK: usize = 1024;

/// Intermediates of one chunk, sized for the largest layer. Per-token buffers hold [`CHUNK`]
/// vectors; `iscore` and `mask` hold one row per token ([`mask_stride`] apart) for the chunk
/// path's indexer, sized for the longest-lived state seen so far (`rows`).
pub(super) struct Scratch {
    /// Compressed rows per token `iscore` and `mask` have room for.
    pub rows: usize,
    /// The chunk's token ids (hash routing, embedding).
    pub toks: DeviceBuffer<i32>,
    /// The HC streams of the chunk in flight (`CHUNK × hc × n_embd`).
    pub streams: DeviceBuffer<f32>,
    pub m: DeviceBuffer<f32>,
    pub mix: DeviceBuffer<f32>,
    pub x: DeviceBuffer<f32>,
    pub qr: DeviceBuffer<f32>,
    pub q: DeviceBuffer<f32>,
    pub kv: DeviceBuffer<f32>,
    /// The chunk's KV rows as the ring would hold them (chunk path of the attention).
    pub kvn: DeviceBuffer<f32>,
    /// A compressor frontier being rebuilt (values, scores), the largest of any layer.
    pub fkv: DeviceBuffer<f32>,
    pub fsc: DeviceBuffer<f32>,
    /// Compressor projections and scores.
    pub ckv: DeviceBuffer<f32>,
    pub csc: DeviceBuffer<f32>,
    /// The indexer compressor's.
    pub ikv: DeviceBuffer<f32>,
    pub isc: DeviceBuffer<f32>,
    pub iq: DeviceBuffer<f32>,
    pub iw: DeviceBuffer<f32>,
    pub iscore: DeviceBuffer<f32>,
    pub mask: DeviceBuffer<u8>,
    pub o: DeviceBuffer<f32>,
    pub z: DeviceBuffer<f32>,
    pub y: DeviceBuffer<f32>,
    pub rlog: DeviceBuffer<f32>,
    pub sel: DeviceBuffer<i32>,
    pub wts: DeviceBuffer<f32>,
    /// Expert inputs gathered by expert, and their down projections before the scatter
    /// (`CHUNK × used` rows, as `g`, `u`, `h`: every (token, pick) of a chunk at once).
    pub xg: DeviceBuffer<f32>,
    pub dn: DeviceBuffer<f32>,
    pub g: DeviceBuffer<f32>,
    pub u: DeviceBuffer<f32>,
    pub h: DeviceBuffer<f32>,
    /// `(used + 1) × CHUNK × n_embd`: part p of token t at `(p · CHUNK + t) · n_embd`.
    pub parts: DeviceBuffer<f32>,
    /// Gather/scatter indices of one layer's expert groups, then the tile table of their
    /// grouped products ([`idx_len`]).
    pub idx: DeviceBuffer<i32>,
    /// Quantized activations (official numerics), [`act_stride`] bytes per row, one row per
    /// (token, pick) of a chunk, or per (token, head group) for the output projection.
    pub acts: DeviceBuffer<u8>,
    pub logits: DeviceBuffer<f32>,
    /// Partial sums of the F16 products' column splits (`Matmul::run_f16_mma_raw`).
    pub part: DeviceBuffer<f32>,
}

/// Widest activation vector any matrix of the model takes.
fn max_cols(c: &ModelConfig) -> usize {
    [c.hc_count * c.n_embd, c.n_embd, c.q_lora_rank, c.heads_per_group() * c.head_dim, c.o_groups * c.o_lora_rank, c.expert_ffn]
        .into_iter()
        .max()
        .unwrap_or(0)
}

/// Bytes of one token's quantized activations in [`Scratch::acts`]: the larger of the Q8_0
/// (36 bytes per 32 columns) and Q8_K (292 per 256) sizes of the widest input, 16-byte
/// aligned.
pub(super) fn act_stride(c: &ModelConfig) -> usize {
    let n = max_cols(c);
    (n.div_ceil(32) * 36).max(n.div_ceil(256) * 292).next_multiple_of(16)
}

/// Most floats the chunk path's attention keeps in shared memory (per head: head_dim + the rows
/// it attends, i.e. the window and the indexer's kept rows or every visible compressed row;
/// plus one row id per kept row where the mask applies), under the default 48 KiB less room
/// for the kernel's static reduction slots (dynamic plus static over 48 KiB fails the launch):
/// a block serves as many heads as fit (a layer whose one head does not fit, a ratio-128 layer
/// past ~1.4M tokens on the Flash shapes, falls back to the per-token path).
pub(super) const CHUNK_ATT_FLOATS: usize = 12 * 1024 - 64;

/// Bytes between the tokens' indexer masks (and floats between their scores) on the chunk
/// path: every compressed row the state can hold, so the chunk path serves the whole context.
/// (Capped at what the attention kept in shared memory before it listed the kept rows, the
/// cap sent ratio-4 layers past ~48K tokens to the per-token path.) At Flash's 1M context
/// this is 256K rows: 1.3 GB of scores and masks for a chunk of 1,024 tokens, beside ~14 GB
/// of KV rows; the memory plan counts it.
pub(super) fn mask_stride(c: &ModelConfig, capacity: u64) -> usize {
    c.layer_kinds.iter().map(|&k| comp_rows(k, capacity)).max().unwrap_or(0)
}

/// Floats of the largest compressor frontier (values or scores).
fn frontier_len(c: &ModelConfig) -> usize {
    let slots = |k: LayerKind| if k == LayerKind::Csa { 2 * k.ratio() as usize } else { k.ratio() as usize };
    c.layer_kinds
        .iter()
        .map(|&k| slots(k) * k.compressor_lanes() * c.head_dim.max(c.indexer_head_dim))
        .max()
        .unwrap_or(0)
}

/// Length of [`Scratch::idx`]: three index lists over `CHUNK × used` rows, then at most one
/// 3-value tile per 16 rows plus one per expert (each expert's last, partial tile).
pub(super) fn idx_len(c: &ModelConfig) -> usize {
    let rows = CHUNK * c.n_expert_used;
    3 * rows + 3 * (rows.div_ceil(16) + c.n_expert)
}

/// One session's state on the GPU.
pub struct GpuState {
    pub(super) pos: u64,
    pub(super) capacity: u64,
    pub(super) layers: Vec<LayerState>,
    /// One token's attention at a time (decode steps and the per-token path): the scores of
    /// every head over the window and the most compressed rows a layer can have, the
    /// indexer's scores and mask over those rows.
    pub(super) att: DeviceBuffer<f32>,
    pub(super) iscore: DeviceBuffer<f32>,
    pub(super) mask: DeviceBuffer<u8>,
}

impl GpuState {
    /// Tokens consumed so far; the next token is at this position.
    pub fn pos(&self) -> u64 {
        self.pos
    }

    /// Most tokens this state can hold.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }
}

/// Compressed rows a layer of `kind` emits over `capacity` tokens.
pub(super) fn comp_rows(kind: LayerKind, capacity: u64) -> usize {
    match kind.ratio() {
        0 => 0,
        r => (capacity / r as u64) as usize,
    }
}

/// Floats of a state's one-token attention scratch (`GpuState::att`): the per-token path's
/// scores of every head over the window and the most compressed rows a layer can have, or the
/// decode step's runs (`att_split_floats`), whichever is more.
fn att_floats(c: &ModelConfig, capacity: u64) -> usize {
    let most_rows = c.layer_kinds.iter().map(|&k| comp_rows(k, capacity)).max().unwrap_or(0);
    (c.n_head * (c.sliding_window + most_rows)).max(att_split_floats(c))
}

/// Device bytes of a state's one-token scratch at `capacity` tokens (`att`, and the indexer's
/// scores and mask over the most compressed rows), beside its KV rows; the memory plan counts
/// them per session.
pub fn state_scratch_bytes(c: &ModelConfig, capacity: u64) -> u64 {
    let most_rows = c.layer_kinds.iter().map(|&k| comp_rows(k, capacity)).max().unwrap_or(0).max(1);
    (att_floats(c, capacity) * 4 + most_rows * 5) as u64
}

/// A chunk's scratch whose indexer rows cover states of up to `capacity` tokens.
fn scratch(gpu: &Gpu, c: &ModelConfig, capacity: u64) -> Result<Scratch> {
    let rows = mask_stride(c, capacity);
    let z = |n: usize| gpu.alloc_zeros::<f32>(CHUNK * n);
    let (d, id) = (c.head_dim, c.indexer_head_dim);
    Ok(Scratch {
        rows,
        toks: gpu.alloc_zeros::<i32>(CHUNK)?,
        streams: z(c.hc_count * c.n_embd)?,
        m: z(c.hc_mix().max(c.hc_count))?,
        mix: z(c.hc_mix())?,
        x: z(c.n_embd)?,
        qr: z(c.q_lora_rank)?,
        q: z(c.n_head * d)?,
        kv: z(d)?,
        kvn: z(d)?,
        fkv: gpu.alloc_zeros::<f32>(frontier_len(c))?,
        fsc: gpu.alloc_zeros::<f32>(frontier_len(c))?,
        ckv: z(2 * d)?,
        csc: z(2 * d)?,
        ikv: z(2 * id)?,
        isc: z(2 * id)?,
        iq: z(c.indexer_heads * id)?,
        iw: z(c.indexer_heads)?,
        iscore: gpu.alloc_zeros::<f32>(CHUNK * rows.max(1))?,
        mask: gpu.alloc_zeros::<u8>(CHUNK * rows.max(1))?,
        o: z(c.n_head * d)?,
        z: z(c.o_groups * c.o_lora_rank)?,
        y: z(c.n_embd)?,
        rlog: z(c.n_expert)?,
        sel: gpu.alloc_zeros::<i32>(CHUNK * c.n_expert_used)?,
        wts: z(c.n_expert_used)?,
        xg: z(c.n_expert_used * c.n_embd)?,
        dn: z(c.n_expert_used * c.n_embd)?,
        g: z(c.n_expert_used * c.expert_ffn)?,
        u: z(c.n_expert_used * c.expert_ffn)?,
        h: z(c.n_expert_used * c.expert_ffn)?,
        parts: z((c.n_expert_used + 1) * c.n_embd)?,
        idx: gpu.alloc_zeros::<i32>(idx_len(c))?,
        acts: gpu.alloc_zeros::<u8>(CHUNK * c.n_expert_used.max(c.o_groups).max(1) * act_stride(c))?,
        logits: z(c.vocab_size)?,
        part: gpu.alloc_zeros::<f32>(FLOAT_PART_FLOATS)?,
    })
}

impl GpuModel {
    /// A fresh session able to hold `capacity` tokens (prompt and generated together), on the
    /// GPU this model was loaded on.
    pub fn new_state(&self, gpu: &Gpu, capacity: u64) -> Result<GpuState> {
        let c = &self.cfg;
        if capacity == 0 || capacity > c.context_length {
            return Err(CudaError::Shape(format!("capacity {capacity} outside 1..={}", c.context_length)));
        }
        let mut layers = Vec::with_capacity(c.n_layer);
        for &kind in &c.layer_kinds {
            let rows = comp_rows(kind, capacity);
            let comp = match kind {
                LayerKind::Window => None,
                _ => Some((gpu.alloc_zeros(rows * c.head_dim)?, Frontier::new(gpu, kind, c.head_dim)?)),
            };
            let index = match kind {
                LayerKind::Csa => Some((gpu.alloc_zeros(rows * c.indexer_head_dim)?, Frontier::new(gpu, kind, c.indexer_head_dim)?)),
                _ => None,
            };
            layers.push(LayerState { raw: gpu.alloc_zeros(c.sliding_window * c.head_dim)?, comp, index });
        }
        let most_rows = c.layer_kinds.iter().map(|&k| comp_rows(k, capacity)).max().unwrap_or(0);
        let mut prefill = self.prefill.lock().map_err(|_| CudaError::Shape("the prefill scratch was poisoned by a panic".into()))?;
        if prefill.as_ref().is_none_or(|s| s.rows < mask_stride(c, capacity)) {
            // The old scratch goes first: both at once may not fit.
            *prefill = None;
            *prefill = Some(scratch(gpu, c, capacity)?);
        }
        Ok(GpuState {
            pos: 0,
            capacity,
            layers,
            att: gpu.alloc_zeros(att_floats(c, capacity))?,
            iscore: gpu.alloc_zeros(most_rows.max(1))?,
            mask: gpu.alloc_zeros(most_rows.max(1))?,
        })
    }
}
