//! [`Matvec`] on device addresses with explicit strides: the model runner's batched products
//! over slices of its scratch (a head group's part of each token's attention output, the
//! tokens an expert serves), and the quantized-activation product of one token.

use cudarc::driver::CudaFunction;

use super::matvec::{is_float, DeviceMatrix, Matvec, Variant, MAX_BATCH};
use super::plan::{batch_chunk, Launch};
use crate::error::{CudaError, Result};
use crate::launch::Queue;

/// Fewest CTAs an SM a several-token float product keeps (`run_batch_split_raw`).
const FLOAT_CTAS_PER_SM: usize = 8;

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
        self.products(w, (x, x_stride), n, (y, y_stride), None)
    }

    /// `n` tokens' products (strides in f32 elements), with the variant `forced` or chosen per
    /// launch. Quantized types stage the tokens' activations in shared memory, which holds
    /// only so many (see `plan`): larger batches run as several launches of as many tokens as
    /// fit, each reading W once. That reads W more than once, but the batched kernels are
    /// compute-bound and activations read from global memory cost more: each lane's 16-byte
    /// loads touch 32 different cache lines per warp.
    ///
    /// # Safety
    /// As [`Matvec::run_batch_raw`].
    pub(super) unsafe fn products(
        &self,
        w: &DeviceMatrix,
        (x, x_stride): (u64, usize),
        n: usize,
        (y, y_stride): (u64, usize),
        forced: Option<Variant>,
    ) -> Result<()> {
        let chunk = if is_float(w.ty()) { n } else { batch_chunk(w.rows(), w.cols(), n) };
        let mut t0 = 0;
        while t0 < n {
            let m = chunk.min(n - t0);
            let v = forced.unwrap_or_else(|| self.variant(w, m));
            let f = self
                .funcs
                .get(&(w.ty(), v.rows, v.tokens))
                .ok_or_else(|| CudaError::MissingKernel(format!("{} {v:?}", w.ty())))?;
            if w.rows() == 0 {
                return Ok(());
            }
            let l = self.plan(f, w, v, m, 1, false)?;
            let (xt, yt) = (x + (t0 * x_stride * 4) as u64, y + (t0 * y_stride * 4) as u64);
            self.launch(f, w, (xt, x_stride), m, (yt, y_stride), l, None, self.queue())?;
            t0 += m;
        }
        Ok(())
    }

    /// [`Matvec::run_q`] on device addresses: `acts` holds one token's activations quantized
    /// for `W`'s type ([`act_bytes`](super::matvec::act_bytes) bytes, 4-byte aligned).
    ///
    /// # Safety
    /// `acts` and the `rows` outputs at `y` must be live device memory of this stream's
    /// context until the queued work completes, and must not overlap.
    pub unsafe fn run_q_raw(&self, w: &DeviceMatrix, acts: u64, y: u64) -> Result<()> {
        super::matvec::act_bytes(w.ty(), w.cols())?;
        if !acts.is_multiple_of(4) {
            return Err(CudaError::Shape(format!("activations at {acts:#x} are not 4-byte aligned")));
        }
        let (f, v) = self.qact_kernel(w)?;
        if w.rows() == 0 {
            return Ok(());
        }
        let l = self.plan(f, w, v, 1, 1, true)?;
        self.launch(f, w, (acts, w.cols()), 1, (y, w.rows()), l, None, self.queue())
    }

    /// `n` tokens' products with the warps per row group fixed to `split` (what
    /// [`Matvec::slot_split`] gives for one token), so each token's row sums are added in the
    /// order of its one-token product: the same bits as that product, with W read once per
    /// up to 16 tokens. `x` holds f32 rows `x_stride` f32 apart or, with `qacts`, quantized
    /// activation rows `x_stride` bytes apart (4-byte aligned); outputs `y_stride` f32 apart.
    ///
    /// Queued on `q` (a second launch, for more than 16 tokens, overlaps the first).
    ///
    /// # Safety
    /// As [`Matvec::run_batch_raw`], for `n` rows of input and output.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn run_batch_split_raw(
        &self,
        q: Queue,
        w: &DeviceMatrix,
        x: u64,
        x_stride: usize,
        qacts: bool,
        n: usize,
        y: u64,
        y_stride: usize,
        split: usize,
    ) -> Result<()> {
        // Float weights: each token's FMA chains, lane sums and split partials are those of the
        // one-token slot kernel (`mv_float` with R = 2 rows a warp, the same `split`), whatever
        // the token count; they take f32 inputs only.
        if is_float(w.ty()) && qacts {
            return Err(CudaError::UnsupportedType(w.ty()));
        }
        let row_in = if qacts { super::matvec::act_bytes(w.ty(), w.cols())? } else { w.cols() * 4 };
        let stride_bytes = if qacts { x_stride } else { x_stride * 4 };
        check_rows(w, n, (x, stride_bytes, row_in, if qacts { 4 } else { 16 }), y_stride)?;
        if w.rows() == 0 {
            return Ok(());
        }
        if is_float(w.ty()) {
            // One launch, its token groups in the grid: as many tokens a CTA (16, 8, 4, else
            // 1) as still leave FLOAT_CTAS_PER_SM CTAs an SM (each group re-reads W, from L2).
            // A 256-row matrix has 128 CTAs a group: with 16 tokens a CTA, 32 tokens took
            // 49 µs on an H100, twice as long as a launch of a slot per token.
            let launch_of = |nt: usize| -> Result<(&CudaFunction, Launch)> {
                let f = self.funcs.get(&(w.ty(), 2, nt)).ok_or_else(|| CudaError::MissingKernel(format!("{} r2 n{nt}", w.ty())))?;
                Ok((f, self.plan(f, w, Variant { rows: 2, tokens: nt, split, ctas: 0 }, n, 1, false)?))
            };
            let fills = |c: &Result<(&CudaFunction, Launch)>| c.as_ref().map_or(true, |(_, l)| l.ctas * l.groups >= FLOAT_CTAS_PER_SM * self.sm_count);
            let (f, l) = match [16, 8, 4].into_iter().map(launch_of).find(fills) {
                Some(c) => c?,
                None => launch_of(1)?,
            };
            return self.launch(f, w, (x, x_stride), n, (y, y_stride), l, None, q);
        }
        let mut t0 = 0;
        while t0 < n {
            let m = (n - t0).min(MAX_BATCH);
            let caps: &[usize] = if qacts { super::matvec::QACT_TOKENS } else { &[4, 8, 16] };
            let tokens = caps.iter().copied().find(|&c| c >= m).unwrap_or(MAX_BATCH);
            let (f, v) = if qacts {
                let f = self.funcs_q.get(&(w.ty(), 2, tokens));
                (f, Variant { rows: 2, tokens, split, ctas: 0 })
            } else {
                (self.funcs.get(&(w.ty(), 2, tokens)), Variant { rows: 2, tokens, split, ctas: 0 })
            };
            let f = f.ok_or_else(|| CudaError::MissingKernel(format!("{} {v:?}", w.ty())))?;
            let l = self.plan(f, w, v, m, 1, qacts)?;
            let (xt, yt) = (x + (t0 * stride_bytes) as u64, y + (t0 * y_stride * 4) as u64);
            let q = Queue { overlap: q.overlap || t0 > 0, ..q };
            self.launch(f, w, (xt, x_stride), m, (yt, y_stride), l, None, q)?;
            t0 += m;
        }
        Ok(())
    }
}

/// The rows a several-token product reads and writes: `n` inputs from `x.0`, `x.1` bytes
/// apart, each `x.2` bytes and aligned to `x.3` bytes; outputs `y_stride` f32 apart, each
/// holding `w`'s rows.
pub(super) fn check_rows(w: &DeviceMatrix, n: usize, x: (u64, usize, usize, usize), y_stride: usize) -> Result<()> {
    let (at, stride, row_in, align) = x;
    if n == 0 || !at.is_multiple_of(align as u64) || (n > 1 && (stride < row_in || !stride.is_multiple_of(align))) {
        return Err(CudaError::Shape(format!("{n} inputs at {at:#x}, {stride} bytes apart, for {row_in}-byte rows")));
    }
    if n > 1 && y_stride < w.rows() {
        return Err(CudaError::Shape(format!("output stride {y_stride} under the matrix's {} rows", w.rows())));
    }
    Ok(())
}
