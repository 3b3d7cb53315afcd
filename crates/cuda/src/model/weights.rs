//! Upload of a model's weights: every matrix in its GGUF layout (a [`DeviceMatrix`]), every
//! small vector (norms, HC parameters, biases, RoPE frequencies) as f32.

use std::sync::Arc;

use dsv4_gguf::GgmlType;
use dsv4_model::config::LayerKind;
use dsv4_model::weights::{CompressorWeights, HcWeights, Mat, Router};
use dsv4_model::Model;

use super::{GpuModel, Kernels};
use crate::buffer::DeviceBuffer;
use crate::device::Gpu;
use crate::error::{CudaError, Result};
use crate::quant::{DeviceMatrix, Matmul, Matvec};

pub(super) struct Hc {
    pub proj: DeviceMatrix,
    /// The buffer `proj` views (from its start), for `hc_proj`'s raw float rows.
    pub proj_buf: Arc<DeviceBuffer<u8>>,
    pub scale: DeviceBuffer<f32>,
    pub base: DeviceBuffer<f32>,
}

pub(super) struct Compressor {
    pub ape: DeviceBuffer<f32>,
    pub kv: DeviceMatrix,
    pub gate: DeviceMatrix,
    pub norm: DeviceBuffer<f32>,
}

pub(super) struct Indexer {
    pub q_b: DeviceMatrix,
    pub proj: DeviceMatrix,
    pub comp: Compressor,
}

pub(super) enum Route {
    /// `tid2eid` on the device (for the route kernel) and on the host (to pick matrices
    /// without reading anything back).
    Hash { dev: DeviceBuffer<i32>, host: Vec<u32> },
    Scored { bias: DeviceBuffer<f32> },
}

pub(super) struct Layer {
    pub kind: LayerKind,
    pub clamp: f32,
    /// RoPE frequencies of this layer's rotation, one per pair.
    pub freqs: DeviceBuffer<f32>,
    pub hc_attn: Hc,
    pub hc_ffn: Hc,
    pub attn_norm: DeviceBuffer<f32>,
    pub q_a: DeviceMatrix,
    pub q_a_norm: DeviceBuffer<f32>,
    pub q_b: DeviceMatrix,
    pub kv: DeviceMatrix,
    pub kv_norm: DeviceBuffer<f32>,
    pub sinks: DeviceBuffer<f32>,
    /// `attn_output_a`, one matrix per output group.
    pub out_a: Vec<DeviceMatrix>,
    pub out_b: DeviceMatrix,
    pub comp: Option<Compressor>,
    pub indexer: Option<Indexer>,
    pub ffn_norm: DeviceBuffer<f32>,
    pub gate_inp: DeviceMatrix,
    pub route: Route,
    /// Every gate expert then every up expert, views of one buffer (`gate` and `up` are its
    /// halves), when their shapes allow: the decode step multiplies both in one launch.
    pub gate_up: Option<Vec<DeviceMatrix>>,
    /// Per expert.
    pub gate: Vec<DeviceMatrix>,
    pub up: Vec<DeviceMatrix>,
    pub down: Vec<DeviceMatrix>,
    /// The shared expert's gate then up matrix, views of one buffer (`gate_sh` and `up_sh`),
    /// when their shapes allow: the decode step multiplies both in one launch.
    pub gate_up_sh: Option<Vec<DeviceMatrix>>,
    pub gate_sh: DeviceMatrix,
    pub up_sh: DeviceMatrix,
    pub down_sh: DeviceMatrix,
}

pub(super) struct Globals {
    /// The token embedding table's bytes (F16 or F32 rows of `n_embd`).
    pub embd: DeviceBuffer<u8>,
    pub embd_f16: bool,
    pub out_hc: Hc,
    pub out_norm: DeviceBuffer<f32>,
    pub output: DeviceMatrix,
}

fn mat(gpu: &Gpu, m: &Mat) -> Result<DeviceMatrix> {
    DeviceMatrix::upload(gpu, m.ty, m.rows, m.cols, m.bytes())
}

/// A stacked tensor split into `n` matrices of equal height: views into one upload when each
/// piece starts 16-byte aligned (the kernels' requirement), else one upload per piece.
fn split(gpu: &Gpu, m: &Mat, n: usize) -> Result<Vec<DeviceMatrix>> {
    if n == 0 || !m.rows.is_multiple_of(n) {
        return Err(CudaError::Shape(format!("{} rows do not split into {n} equal parts", m.rows)));
    }
    let rows = m.rows / n;
    let bytes = rows * m.row_bytes();
    if bytes.is_multiple_of(16) {
        let buf = Arc::new(gpu.upload(m.bytes())?);
        (0..n).map(|i| DeviceMatrix::view(buf.clone(), i * bytes, m.ty, rows, m.cols)).collect()
    } else {
        (0..n).map(|i| mat(gpu, &m.rows(i * rows, rows))).collect()
    }
}

/// Two stacked tensors of `n` equal matrices each (the gate and up experts) uploaded into one
/// buffer, `a`'s matrices then `b`'s, as 2n views; None when the shapes differ or a piece
/// would not start 16-byte aligned.
fn split_pair(gpu: &Gpu, a: &Mat, b: &Mat, n: usize) -> Result<Option<Vec<DeviceMatrix>>> {
    if n == 0 || (a.ty, a.rows, a.cols) != (b.ty, b.rows, b.cols) || !a.rows.is_multiple_of(n) {
        return Ok(None);
    }
    let rows = a.rows / n;
    let bytes = rows * a.row_bytes();
    let (ab, bb) = (a.bytes(), b.bytes());
    if !bytes.is_multiple_of(16) || ab.len() != n * bytes || bb.len() != n * bytes {
        return Ok(None);
    }
    let mut buf = gpu.alloc_zeros::<u8>(2 * n * bytes)?;
    let s = gpu.stream();
    s.memcpy_htod(ab, &mut buf.cuda_slice_mut().slice_mut(..n * bytes))?;
    s.memcpy_htod(bb, &mut buf.cuda_slice_mut().slice_mut(n * bytes..2 * n * bytes))?;
    gpu.synchronize()?;
    let buf = Arc::new(buf);
    (0..2 * n).map(|i| DeviceMatrix::view(buf.clone(), i * bytes, a.ty, rows, a.cols)).collect::<Result<_>>().map(Some)
}

fn hc(gpu: &Gpu, w: &HcWeights) -> Result<Hc> {
    let m = &w.proj;
    let proj_buf = Arc::new(gpu.upload(m.bytes())?);
    let proj = DeviceMatrix::view(proj_buf.clone(), 0, m.ty, m.rows, m.cols)?;
    Ok(Hc { proj, proj_buf, scale: gpu.upload(&w.scale)?, base: gpu.upload(&w.base)? })
}

fn compressor(gpu: &Gpu, w: &CompressorWeights) -> Result<Compressor> {
    Ok(Compressor { ape: gpu.upload(&w.ape)?, kv: mat(gpu, &w.kv)?, gate: mat(gpu, &w.gate)?, norm: gpu.upload(&w.norm)? })
}

/// Most experts `route` takes (its shared order table), the most an expert pick list holds (its
/// `chosen`), and its block: ROUTE_MAX_EXPERTS, ROUTE_MAX_USED and ROUTE_THREADS in moe.cu.
pub(super) const ROUTE_MAX_EXPERTS: usize = 512;
pub(super) const ROUTE_MAX_USED: usize = 64;
pub(super) const ROUTE_THREADS: usize = 256;

/// Limits of the single-token kernels (`MAX_HC` in ops.cu; at most 512 experts, 64 per token,
/// in moe.cu).
fn check_geometry(model: &Model) -> Result<()> {
    let c = &model.cfg;
    let bad = |why: String| Err(CudaError::Shape(why));
    if c.hc_count == 0 || c.hc_count > 16 {
        return bad(format!("{} HC streams (the kernels take 1..=16)", c.hc_count));
    }
    if c.n_expert_used == 0 || c.n_expert_used > c.n_expert.min(ROUTE_MAX_USED) {
        return bad(format!("{} of {} experts used", c.n_expert_used, c.n_expert));
    }
    // route ranks every expert in a shared table of ROUTE_MAX_EXPERTS (moe.cu).
    if c.n_expert > ROUTE_MAX_EXPERTS {
        return bad(format!("{} experts (the router takes up to {ROUTE_MAX_EXPERTS})", c.n_expert));
    }
    if c.rope_dim > c.head_dim.min(c.indexer_head_dim) || !c.rope_dim.is_multiple_of(2) {
        return bad(format!("rope_dim {}", c.rope_dim));
    }
    // attend keeps a head's partial outputs in registers, 32 columns per lane step.
    if !c.head_dim.is_multiple_of(32) || c.head_dim > 512 {
        return bad(format!("head_dim {} (attend takes multiples of 32 up to 512)", c.head_dim));
    }
    // Sub-vectors handed to the matvec kernels must stay 16-byte aligned.
    let g_in = c.heads_per_group() * c.head_dim;
    if [g_in, c.o_lora_rank, c.n_embd].iter().any(|n| !n.is_multiple_of(4)) {
        return bad("output groups and widths must be multiples of 4 values".into());
    }
    Ok(())
}

impl GpuModel {
    /// Uploads `model`'s weights to `gpu` and loads the kernels. Errors (never panics) on a
    /// weight type without a kernel (BF16 matrices) or a geometry the kernels do not take.
    pub fn load(gpu: &Gpu, model: &Model) -> Result<GpuModel> {
        check_geometry(model)?;
        let cfg = model.cfg.clone();
        let w = model.weights();
        let embd_f16 = match w.embd.ty {
            GgmlType::F16 => true,
            GgmlType::F32 => false,
            other => return Err(CudaError::UnsupportedType(other)),
        };
        let globals = Globals {
            embd: gpu.upload(w.embd.bytes())?,
            embd_f16,
            out_hc: hc(gpu, &w.out_hc)?,
            out_norm: gpu.upload(&w.out_norm)?,
            output: mat(gpu, &w.output)?,
        };
        let groups = cfg.o_groups;
        let mut layers = Vec::with_capacity(cfg.n_layer);
        for (il, lw) in w.layers.iter().enumerate() {
            let route = match &lw.router {
                Router::Hash(t) => {
                    let dev: Vec<i32> = t.iter().map(|&x| x as i32).collect();
                    Route::Hash { dev: gpu.upload(&dev)?, host: t.clone() }
                }
                Router::Scored { bias } => Route::Scored { bias: gpu.upload(bias)? },
            };
            let gate_up = split_pair(gpu, &lw.gate_exps, &lw.up_exps, cfg.n_expert)?;
            let (gate, up) = match &gate_up {
                Some(v) => (v[..cfg.n_expert].to_vec(), v[cfg.n_expert..].to_vec()),
                None => (split(gpu, &lw.gate_exps, cfg.n_expert)?, split(gpu, &lw.up_exps, cfg.n_expert)?),
            };
            let gate_up_sh = split_pair(gpu, &lw.gate_sh, &lw.up_sh, 1)?;
            let (gate_sh, up_sh) = match &gate_up_sh {
                Some(v) => (v[0].clone(), v[1].clone()),
                None => (mat(gpu, &lw.gate_sh)?, mat(gpu, &lw.up_sh)?),
            };
            let indexer = match &lw.indexer {
                Some(iw) => Some(Indexer { q_b: mat(gpu, &iw.q_b)?, proj: mat(gpu, &iw.proj)?, comp: compressor(gpu, &iw.compressor)? }),
                None => None,
            };
            layers.push(Layer {
                kind: lw.kind,
                clamp: cfg.swiglu_clamp[il],
                freqs: gpu.upload(model.ropes()[il].freqs())?,
                hc_attn: hc(gpu, &lw.hc_attn)?,
                hc_ffn: hc(gpu, &lw.hc_ffn)?,
                attn_norm: gpu.upload(&lw.attn_norm)?,
                q_a: mat(gpu, &lw.q_a)?,
                q_a_norm: gpu.upload(&lw.q_a_norm)?,
                q_b: mat(gpu, &lw.q_b)?,
                kv: mat(gpu, &lw.kv)?,
                kv_norm: gpu.upload(&lw.kv_norm)?,
                sinks: gpu.upload(&lw.sinks)?,
                // Views of one upload where aligned, so that the decode step can run every group
                // in one launch.
                out_a: split(gpu, &lw.out_a, groups)?,
                out_b: mat(gpu, &lw.out_b)?,
                comp: lw.compressor.as_ref().map(|c| compressor(gpu, c)).transpose()?,
                indexer,
                ffn_norm: gpu.upload(&lw.ffn_norm)?,
                gate_inp: mat(gpu, &lw.gate_inp)?,
                route,
                gate_up,
                gate,
                up,
                down: split(gpu, &lw.down_exps, cfg.n_expert)?,
                gate_up_sh,
                gate_sh,
                up_sh,
                down_sh: mat(gpu, &lw.down_sh)?,
            });
        }
        let experts_stacked = layers.iter().all(|l| [&l.gate, &l.up, &l.down].iter().all(|m| Matvec::experts_stacked(m)));
        let batch = std::sync::Mutex::new(super::step_batch::StepBatch::new(gpu, &cfg)?);
        Ok(GpuModel {
            cfg,
            stream: gpu.stream().clone(),
            side: gpu.stream().fork()?,
            mv: Matvec::new(gpu)?,
            mt: Matmul::new(gpu)?,
            k: Kernels::new(gpu)?,
            w: globals,
            layers,
            opts: Default::default(),
            experts_stacked,
            batch,
            prefill: std::sync::Mutex::new(None),
            staging: std::sync::Mutex::new(None),
            launches: Default::default(),
            prof: std::sync::Mutex::new(None),
        })
    }
}
