//! [`Matvec`] on device addresses with explicit strides: the model runner's batched products
//! over slices of its scratch (a head group's part of each token's attention output, the
//! tokens an expert serves), and the quantized-activation product of one token.

use super::matvec::{
    is_float, part_bytes, quant_smem, stage_buf, DeviceMatrix, Matvec, Variant, MAX_BATCH, MAX_X_SMEM, QWARPS,
    WARPS,
};
use crate::error::{CudaError, Result};
use dsv4_gguf::GgmlType;

impl Matvec {
    /// `y_t = W x_t` for `n <= MAX_BATCH` tokens, reading `W` once: token t's input starts at
    /// `x + 4·t·x_stride` and its output at `y + 4·t·y_stride` (strides in f32 elements).
    /// With `n == 1` this is exactly [`Matvec::run_raw`].
    ///
    /// # Safety
    /// Every token's `cols` inputs and `rows` outputs must be live device memory of this
    /// stream's context until the queued work completes; outputs must not overlap inputs or
    /// each other.
    pub unsafe fn run_batch_raw(&self, w: &DeviceMatrix, x: u64, x_stride: usize, n: usize, y: u64, y_stride: usize) -> Result<()> {
        if n == 0 || n > MAX_BATCH {
            return Err(CudaError::Shape(format!("{n} tokens (1..={MAX_BATCH})")));
        }
        if !x.is_multiple_of(16) || (n > 1 && !(x_stride * 4).is_multiple_of(16)) {
            return Err(CudaError::Shape(format!("x at {x:#x} with stride {x_stride} is not 16-byte aligned")));
        }
        if n > 1 && (x_stride < w.cols() || y_stride < w.rows()) {
            return Err(CudaError::Shape(format!("strides {x_stride}/{y_stride} under the matrix's {}x{}", w.rows(), w.cols())));
        }
        let v = self.variant(w, n);
        let f = self
            .funcs
            .get(&(w.ty(), v.rows, v.tokens))
            .ok_or_else(|| CudaError::MissingKernel(format!("{} {v:?}", w.ty())))?;
        if w.rows() == 0 {
            return Ok(());
        }
        let (ctas, threads, split, smem, xsm) = if is_float(w.ty()) {
            (w.rows().div_ceil(WARPS * v.rows), WARPS * 32, 0, 0, false)
        } else {
            let xsm = n == 1 && w.cols() * 4 <= MAX_X_SMEM;
            let smem = quant_smem(w.ty(), w.cols(), v, xsm);
            let (ctas, split) = self.quant_plan(f, w, v, smem)?;
            (ctas, QWARPS * 32, split, smem, xsm)
        };
        self.launch(f, w, (x, x_stride), n, (y, y_stride), (ctas, threads, smem), split, xsm)
    }

    /// [`Matvec::run_q`] on device addresses: `acts` holds one token's activations quantized
    /// for `W`'s type ([`act_bytes`](super::matvec::act_bytes) bytes, 4-byte aligned).
    ///
    /// # Safety
    /// `acts` and the `rows` outputs at `y` must be live device memory of this stream's
    /// context until the queued work completes, and must not overlap.
    pub unsafe fn run_q_raw(&self, w: &DeviceMatrix, acts: u64, y: u64) -> Result<()> {
        let need = super::matvec::act_bytes(w.ty(), w.cols())?;
        if !acts.is_multiple_of(4) {
            return Err(CudaError::Shape(format!("activations at {acts:#x} are not 4-byte aligned")));
        }
        let f = self.funcs_q.get(&w.ty()).ok_or(CudaError::UnsupportedType(w.ty()))?;
        if w.rows() == 0 {
            return Ok(());
        }
        let v = Variant { rows: 2, tokens: 1, split: 0, ctas: 0 };
        let grid = if w.ty() == GgmlType::IQ2_XXS { 256 * 8 } else { 0 };
        let smem = grid + part_bytes(v) + need.next_multiple_of(16) + QWARPS * 4 * v.rows * stage_buf(w.ty());
        let (ctas, split) = self.quant_plan(f, w, v, smem)?;
        self.launch(f, w, (acts, w.cols()), 1, (y, w.rows()), (ctas, QWARPS * 32, smem), split, false)
    }
}
