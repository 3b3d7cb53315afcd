//! Several tokens' official Q8_0 products on the int8 tensor cores (`mmq.cu`), each token's
//! output the bits of its one-token product with the same split: a drop-in for the
//! several-token CUDA-core kernels of the batched decode step, which pass each token's
//! activations over the decoded weights one dp4a chain at a time.

use dsv4_gguf::GgmlType;

use super::experts::stack_stride;
use super::matvec::{act_bytes, DeviceMatrix, Matvec};
use super::raw::check_rows;
use crate::error::{CudaError, Result};
use crate::launch::{launch_ex, Arg, Queue};
use Arg::{I, L};

/// Shared-memory row pitches of `mmq.cu` (MMQ_WP, MMQ_XP): one 1024-column step of a weight
/// row (1,088 bytes) or of a token's activations (1,152), padded for the banks.
const W_PITCH: usize = 1104;
const X_PITCH: usize = 1168;
/// Most ring buffers a CTA keeps: enough steps in flight to cover the memory latency.
const MAX_STAGES: usize = 4;

/// Where each matrix of a stack takes its `n` tokens' inputs and puts their outputs: matrix
/// z's token t reads quantized activations at `x + z·x_step + t·x_stride` bytes and writes
/// floats from `y + 4·(z·y_step + t·y_stride)`.
#[derive(Clone, Copy, Debug)]
pub struct MmqIo {
    pub x: u64,
    pub x_stride: usize,
    pub x_step: usize,
    pub y: u64,
    pub y_stride: usize,
    pub y_step: usize,
}

impl Matvec {
    /// `y_t = W x_t` for `n` tokens of Q8_0 `w` with the quantized activations of
    /// [`Matvec::run_batch_split_raw`] (`x_stride` bytes apart, 4-byte aligned), each token's
    /// sums in the order of its one-token product split over `split` warps per row group:
    /// the same bits. Outputs `y_stride` f32 apart. Queued on `q`.
    ///
    /// # Safety
    /// As [`Matvec::run_batch_split_raw`], for `n` rows of input and output.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn run_mmq_raw(&self, q: Queue, w: &DeviceMatrix, x: u64, x_stride: usize, n: usize, y: u64, y_stride: usize, split: usize) -> Result<()> {
        let io = MmqIo { x, x_stride, x_step: 0, y, y_stride, y_step: 0 };
        // SAFETY: the caller's promise, for the one matrix.
        unsafe { self.run_mmq_stack_raw(q, std::slice::from_ref(w), io, n, split) }
    }

    /// [`Matvec::run_mmq_raw`] for every matrix of `ws` (Q8_0, stacked in one buffer) in one
    /// launch, inputs and outputs placed by `io`.
    ///
    /// # Safety
    /// Every input and output row `io` addresses must be live device memory of this stream's
    /// context until the queued work completes; outputs must not overlap inputs or each other.
    pub unsafe fn run_mmq_stack_raw(&self, q: Queue, ws: &[DeviceMatrix], io: MmqIo, n: usize, split: usize) -> Result<()> {
        let w = ws.first().ok_or_else(|| CudaError::Shape("an empty matrix stack".into()))?;
        let w_stride = stack_stride(ws).ok_or_else(|| CudaError::Shape("matrices not stacked in one buffer".into()))?;
        if w.ty() != GgmlType::Q8_0 {
            return Err(CudaError::UnsupportedType(w.ty()));
        }
        let row_in = act_bytes(w.ty(), w.cols())?;
        let MmqIo { x, x_stride, x_step, y, y_stride, y_step } = io;
        check_rows(w, n, (x, x_stride, row_in, 4), y_stride)?;
        if !x_step.is_multiple_of(4) {
            return Err(CudaError::Shape(format!("inputs {x_step} bytes apart from matrix to matrix")));
        }
        if ![1, 2, 4, 8].contains(&split) || split > w.cols().div_ceil(1024).max(1) {
            return Err(CudaError::Shape(format!("a split over {split} warps for {} columns", w.cols())));
        }
        if w.rows() == 0 {
            return Ok(());
        }
        let mut args = self.product_args(w, w_stride * ws.len(), (x, x_stride), n, (y, y_stride))?;
        let Some(&Arg::P(wp)) = args.first() else {
            return Err(CudaError::Shape("product arguments without the weights' address".into()));
        };
        // Two row subtiles a tile unless that leaves most SMs without one; two token subtiles
        // a CTA from 17 tokens on, buffers only as deep as the tokens (whole MMA columns).
        let nrs = if w.rows().div_ceil(32) * ws.len() * 2 >= self.sm_count { 2 } else { 1 };
        let ntt = if n > 16 { 2 } else { 1 };
        let xr = (16 * ntt).min(n.next_multiple_of(8));
        let threads = 128 * nrs * ntt;
        let ty = n.div_ceil(16 * ntt);
        let tiles = w.rows().div_ceil(16 * nrs);
        let stage = 16 * nrs * W_PITCH + xr * X_PITCH;
        let part = threads * 8 * 4;
        // Two CTAs an SM where their registers fit and there are tiles for both, if each can
        // still keep two buffers; else one with up to MAX_STAGES.
        let per_cta = |ctas: usize| (self.smem_optin / ctas).saturating_sub(if ctas > 1 { 2048 } else { 0 });
        let two = threads <= 256 && tiles * ty * ws.len() > self.sm_count && per_cta(2) >= part + 2 * stage;
        let budget = per_cta(if two { 2 } else { 1 });
        let stages = (budget.saturating_sub(part) / stage).min(MAX_STAGES);
        if stages < 2 {
            return Err(CudaError::Shape(format!("tensor-core products need {} bytes of shared memory, the device allows {}", part + 2 * stage, self.smem_optin)));
        }
        let smem = part + stages * stage;
        let a16 = [wp, w.row_bytes() as u64, w_stride as u64, x, if n > 1 { x_stride as u64 } else { 0 }, x_step as u64].iter().all(|v| v.is_multiple_of(16));
        args.extend([I(split as i32), I(nrs as i32), I(xr as i32), I(stages as i32), I(a16 as i32), L(w_stride as i64), L(x_step as i64), L(y_step as i64)]);
        let wave = self.resident(&self.mmq_q8_0, threads, smem) * self.sm_count;
        let grid = (tiles.min(wave.div_ceil(ty * ws.len())) as u32, ty as u32, ws.len() as u32);
        // SAFETY: the argument list matches mmq_q8_0's; the weights lie inside their buffer,
        // and the caller vouches for the activation and output rows (see above). The kernel
        // waits in its entry before it reads the activations (the condition of `overlap`).
        unsafe { launch_ex(q.stream, &self.mmq_q8_0, grid, threads as u32, smem as u32, &args, q.overlap && self.overlap()) }
    }
}
