//! A session on the GPU: per layer, the raw window ring, the compressed rows and the
//! compressor frontiers (the device twin of `dsv4_model::SessionState`), plus the scratch
//! vectors one token's pass writes. Compressed rows are preallocated for `capacity` tokens.

use dsv4_model::config::LayerKind;
use dsv4_model::ModelConfig;

use super::GpuModel;
use crate::buffer::DeviceBuffer;
use crate::device::Gpu;
use crate::error::{CudaError, Result};

/// Values and scores of a compressor's pending windows (empty slots score -inf).
pub(super) struct Frontier {
    pub kv: DeviceBuffer<f32>,
    pub score: DeviceBuffer<f32>,
}

impl Frontier {
    fn new(gpu: &Gpu, kind: LayerKind, dim: usize) -> Result<Frontier> {
        let ratio = kind.ratio() as usize;
        let slots = if kind == LayerKind::Csa { 2 * ratio } else { ratio };
        let n = slots * kind.compressor_lanes() * dim;
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

/// Per-token intermediates, sized for the largest layer.
pub(super) struct Scratch {
    pub m: DeviceBuffer<f32>,
    pub mix: DeviceBuffer<f32>,
    pub x: DeviceBuffer<f32>,
    pub qr: DeviceBuffer<f32>,
    pub q: DeviceBuffer<f32>,
    pub kv: DeviceBuffer<f32>,
    pub ckv: DeviceBuffer<f32>,
    pub csc: DeviceBuffer<f32>,
    pub iq: DeviceBuffer<f32>,
    pub iw: DeviceBuffer<f32>,
    pub iscore: DeviceBuffer<f32>,
    pub mask: DeviceBuffer<u8>,
    pub att: DeviceBuffer<f32>,
    pub o: DeviceBuffer<f32>,
    pub z: DeviceBuffer<f32>,
    pub y: DeviceBuffer<f32>,
    pub rlog: DeviceBuffer<f32>,
    pub sel: DeviceBuffer<i32>,
    pub wts: DeviceBuffer<f32>,
    pub g: DeviceBuffer<f32>,
    pub u: DeviceBuffer<f32>,
    pub h: DeviceBuffer<f32>,
    pub parts: DeviceBuffer<f32>,
    pub logits: DeviceBuffer<f32>,
}

/// One session's state on the GPU.
pub struct GpuState {
    pub(super) pos: u64,
    pub(super) capacity: u64,
    /// The HC streams of the token in flight (`hc × n_embd`).
    pub(super) streams: DeviceBuffer<f32>,
    pub(super) layers: Vec<LayerState>,
    pub(super) s: Scratch,
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

fn scratch(gpu: &Gpu, c: &ModelConfig, capacity: u64) -> Result<Scratch> {
    let most_rows = c.layer_kinds.iter().map(|&k| comp_rows(k, capacity)).max().unwrap_or(0);
    let z = |n: usize| gpu.alloc_zeros::<f32>(n);
    Ok(Scratch {
        m: z(c.hc_mix().max(c.hc_count))?,
        mix: z(c.hc_mix())?,
        x: z(c.n_embd)?,
        qr: z(c.q_lora_rank)?,
        q: z(c.n_head * c.head_dim)?,
        kv: z(c.head_dim)?,
        ckv: z(2 * c.head_dim.max(c.indexer_head_dim))?,
        csc: z(2 * c.head_dim.max(c.indexer_head_dim))?,
        iq: z(c.indexer_heads * c.indexer_head_dim)?,
        iw: z(c.indexer_heads)?,
        iscore: z(most_rows)?,
        mask: gpu.alloc_zeros::<u8>(most_rows)?,
        att: z(c.n_head * (c.sliding_window + most_rows))?,
        o: z(c.n_head * c.head_dim)?,
        z: z(c.o_groups * c.o_lora_rank)?,
        y: z(c.n_embd)?,
        rlog: z(c.n_expert)?,
        sel: gpu.alloc_zeros::<i32>(c.n_expert_used)?,
        wts: z(c.n_expert_used)?,
        g: z(c.expert_ffn)?,
        u: z(c.expert_ffn)?,
        h: z(c.expert_ffn)?,
        parts: z((c.n_expert_used + 1) * c.n_embd)?,
        logits: z(c.vocab_size)?,
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
        Ok(GpuState {
            pos: 0,
            capacity,
            streams: gpu.alloc_zeros(c.hc_count * c.n_embd)?,
            layers,
            s: scratch(gpu, c, capacity)?,
        })
    }
}
