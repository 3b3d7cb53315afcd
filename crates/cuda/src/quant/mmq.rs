//! Several tokens' official Q8_0 products on the int8 tensor cores (`mmq.cu`), each token's
//! output the bits of its one-token product with the same split: a drop-in for the
//! several-token CUDA-core kernels of the batched decode step, which pass each token's
//! activations over the decoded weights one dp4a chain at a time.

use dsv4_gguf::GgmlType;

use super::matvec::{act_bytes, DeviceMatrix, Matvec};
use crate::error::{CudaError, Result};
use crate::launch::{launch_ex, Arg, Queue};
use Arg::I;


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
        if w.ty() != GgmlType::Q8_0 {
            return Err(CudaError::UnsupportedType(w.ty()));
        }
        let row_in = act_bytes(w.ty(), w.cols())?;
        if n == 0 || !x.is_multiple_of(4) || (n > 1 && (x_stride < row_in || !x_stride.is_multiple_of(4))) {
            return Err(CudaError::Shape(format!("{n} inputs at {x:#x}, {x_stride} bytes apart, for {row_in}-byte rows")));
        }
        if n > 1 && y_stride < w.rows() {
            return Err(CudaError::Shape(format!("output stride {y_stride} under the matrix's {} rows", w.rows())));
        }
        if ![1, 2, 4, 8].contains(&split) || split > w.cols().div_ceil(1024).max(1) {
            return Err(CudaError::Shape(format!("a split over {split} warps for {} columns", w.cols())));
        }
        if w.rows() == 0 {
            return Ok(());
        }
        let mut args = self.product_args(w, w.num_bytes(), (x, x_stride), n, (y, y_stride))?;
        args.push(I(split as i32));
        // A CTA per 16 rows and 16 tokens, a warp per slice of the columns.
        let grid = (w.rows().div_ceil(16) as u32, n.div_ceil(16) as u32, 1);
        // SAFETY: the argument list matches mmq_q8_0's; the weights lie inside their buffer,
        // and the caller vouches for the activation and output rows (see above). The kernel
        // waits in its entry before it reads the activations (the condition of `overlap`).
        unsafe { launch_ex(q.stream, &self.mmq_q8_0, grid, (32 * split) as u32, 0, &args, q.overlap && self.overlap()) }
    }
}
