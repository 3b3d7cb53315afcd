//! Launch geometry of the matvec kernels, shared by every entry point (`matvec.rs`, `raw.rs`,
//! `experts.rs`): which kernel, how many CTAs, how much shared memory, and the one place that
//! pushes the `MV_ARGS` / `MVX_ARGS` argument lists of `matvec.cu`.

use cudarc::driver::{CudaFunction, DevicePtr};
use dsv4_gguf::GgmlType;

use super::experts::ExpertSlots;
use super::matvec::{act_bytes, dev_addr, is_float, DeviceMatrix, Matvec, Variant};
use crate::error::{CudaError, Result};
use crate::launch::{launch_ex, Arg, Queue};
use Arg::{I, L, P};

/// Warps per CTA of the float kernels (`MV_WARPS` in `matvec.cu`) and of the quantized ones
/// (`MVQ_WARPS`).
pub(super) const WARPS: usize = 4;
pub(super) const QWARPS: usize = 8;

/// Largest x (in bytes, all tokens) staged in shared memory: one token, and several (those
/// kernels run one CTA per SM anyway, their registers being the limit, so x may take the
/// room a second CTA would have had).
const MAX_X_SMEM: usize = 64 * 1024;
const MAX_X_SMEM_BATCH: usize = 128 * 1024;

/// Fewest rows for which a batch too large for shared memory is split into several launches:
/// a small matrix pays the ~5 us launch-and-fill cost per launch, more than the slow
/// activation loads cost it (H100, Q8_0, 16 tokens of 4096 columns: 512 rows took 25.6 us in
/// one launch of the previous kernels and 30.0 us as two launches of these; 1024 rows 46 us
/// and 35 us).
const SPLIT_MIN_ROWS: usize = 1024;

/// Tokens per launch of a quantized product of `n` tokens over a `rows` x `cols` matrix: all
/// of them when their activations fit the shared-memory room, else as many as fit (at least
/// 2, the batched kernels' smallest use); all at once (activations read from global memory)
/// when not even 2 fit or the matrix is small.
pub(super) fn batch_chunk(rows: usize, cols: usize, n: usize) -> usize {
    let fit = MAX_X_SMEM_BATCH / (cols * 4).max(1);
    if n <= 1 || fit >= n || fit < 2 || rows < SPLIT_MIN_ROWS {
        n
    } else {
        fit
    }
}

/// Words of the IQ2_XXS selector tables (`IQ2_TAB_WORDS` in `matvec.cu`).
pub(super) const IQ2_TAB_WORDS: usize = 384;

/// Copy stages per warp of each quantized variant, as instantiated in `matvec.cu`
/// (`MV_QUANT_ALL`): groups of 4 rows keep as many as fit ~72 KB of one CTA.
fn stages(ty: GgmlType, rows: usize, tokens: usize) -> usize {
    match (rows, tokens) {
        (2, 1) => 4,
        // And the routed grouped kernels (`mvg[q]_<type>_g4_n4`).
        (4, 1 | 4) => match ty {
            GgmlType::Q8_0 => 2,
            GgmlType::Q4_K => 3,
            _ => 4,
        },
        _ => 2,
    }
}

/// Bytes of one row's stage buffer (`BUF` in `mv_quant`): a 1024-column step, plus its
/// offset in the first 16-byte line and the 4 bytes the Q8_0 decoder may read past a block.
fn stage_buf(ty: GgmlType) -> usize {
    let step = 1024 / ty.block_elems() * ty.block_bytes();
    (step + 14 + 4).next_multiple_of(16)
}

/// Bytes of the split partial sums (`PART_BYTES` in `mv_quant`): two rounds' worth, one float
/// per (warp, row, token).
fn part_bytes(v: Variant) -> usize {
    2 * QWARPS * v.rows * v.tokens * 4
}

/// The largest power of two not above `n` (n >= 1).
fn prev_pow2(n: usize) -> usize {
    1 << (usize::BITS - 1 - n.max(1).leading_zeros())
}

/// Warps per row set of a float product (1, 2 or 4; `mv_float`): the fewest that give
/// `slots` launches of `rows` rows (`r` per warp) two CTAs per SM, else 4. A matrix of a few
/// hundred rows (the router, the indexer's projections) otherwise streams through a few
/// dozen SMs, one warp per row set walking every column.
fn float_split(rows: usize, r: usize, slots: usize, sm_count: usize) -> usize {
    [1, 2, 4].into_iter().find(|&ks| rows.div_ceil(WARPS / ks * r) * slots >= 2 * sm_count).unwrap_or(4)
}

/// One launch: grid (`ctas` x slots or token groups), block, dynamic shared memory, and the
/// kernel's `ks` (warps per row group) and `xsm` (x staged in shared memory) arguments.
#[derive(Clone, Copy, Debug)]
pub(super) struct Launch {
    pub ctas: usize,
    /// Token groups of a float product (the grid's second dimension; 1 otherwise): group y
    /// takes tokens y·NT .. y·NT + NT of the kernel's NT.
    pub groups: usize,
    pub threads: usize,
    pub smem: usize,
    pub split: usize,
    pub xsm: bool,
}

/// The expert-slot arguments of a launch (`MVX_ARGS` beyond `MV_ARGS`).
pub(super) struct SlotArgs {
    pub slots: ExpertSlots,
    pub n_expert: usize,
    pub expert_bytes: usize,
}

impl Matvec {
    /// The launch of `f` for `n` tokens of `w` (variant `v`), over `slots` products of `w`'s
    /// shape at once (expert slots; 1 otherwise), with f32 activations or (`qacts`) the
    /// quantized activation blocks of `v.tokens` tokens.
    ///
    /// Float types: one warp per `v.rows` rows, CTAs of 4 warps. Quantized types: one wave of
    /// CTAs of 8 warps over all slots' row groups (see `mv_quant`), split only as far as
    /// needed to give every resident warp a share; `v.split` / `v.ctas` override the choice.
    pub(super) fn plan(
        &self,
        f: &CudaFunction,
        w: &DeviceMatrix,
        v: Variant,
        n: usize,
        slots: usize,
        qacts: bool,
    ) -> Result<Launch> {
        let (ty, rows, cols) = (w.ty(), w.rows(), w.cols());
        if is_float(ty) {
            if qacts {
                return Err(CudaError::UnsupportedType(ty));
            }
            let split = if v.split == 0 { float_split(rows, v.rows, slots, self.sm_count) } else { v.split };
            if ![1, 2, 4].contains(&split) {
                return Err(CudaError::Shape(format!("a float product split over {split} warps (1, 2 or 4)")));
            }
            let ctas = rows.div_ceil(WARPS / split * v.rows);
            let groups = if slots == 1 { n.div_ceil(v.tokens).max(1) } else { 1 };
            return Ok(Launch { ctas, groups, threads: WARPS * 32, smem: 0, split, xsm: false });
        }
        let tab = if ty == GgmlType::IQ2_XXS { IQ2_TAB_WORDS * 4 } else { 0 };
        let (x, xsm) = if qacts {
            (act_bytes(ty, cols)?.next_multiple_of(16) * v.tokens, false)
        } else {
            let bytes = n * cols * 4;
            let room = if n == 1 { MAX_X_SMEM } else { MAX_X_SMEM_BATCH };
            if bytes <= room {
                (bytes, true)
            } else {
                (0, false)
            }
        };
        let smem = tab + part_bytes(v) + x + QWARPS * stages(ty, v.rows, v.tokens) * v.rows * stage_buf(ty);
        if smem > self.smem_optin {
            return Err(CudaError::Shape(format!(
                "{v:?} needs {smem} bytes of shared memory, the device allows {}",
                self.smem_optin
            )));
        }
        let threads = QWARPS * 32;
        let wave = self.resident(f, threads, smem) * self.sm_count;
        let groups = (rows * slots).div_ceil(v.rows);
        let nsteps = cols.div_ceil(1024).max(1);
        let want = if v.split == 0 {
            (wave * QWARPS).div_ceil(groups)
        } else {
            v.split
        };
        let split = prev_pow2(want.clamp(1, QWARPS).min(nsteps));
        let packs = groups.div_ceil(QWARPS / split);
        let ctas = if v.ctas == 0 { wave.min(packs) } else { v.ctas };
        // Slots are the grid's second dimension; together they make (about) one wave.
        let ctas = ctas.div_ceil(slots).max(1);
        Ok(Launch { ctas, groups: 1, threads, smem, split, xsm })
    }

    /// Resident CTAs per SM of `f` with `smem` bytes of dynamic shared memory (cached: the
    /// driver's query costs microseconds, and the model runner launches the same few shapes
    /// every token).
    pub(super) fn resident(&self, f: &CudaFunction, threads: usize, smem: usize) -> usize {
        let key = (f.cu_function() as u64, smem);
        if let Some(n) = self.occupancy.lock().ok().and_then(|m| m.get(&key).copied()) {
            return n;
        }
        let n = f
            .occupancy_max_active_blocks_per_multiprocessor(threads as u32, smem, None)
            .unwrap_or(1)
            .max(1) as usize;
        if let Ok(mut m) = self.occupancy.lock() {
            m.insert(key, n);
        }
        n
    }

    /// The leading arguments every product kernel takes (`MV_ARGS` up to `n`, and `mmq.cu`'s):
    /// the weights (`bytes` of them from `w`'s start: `w` itself or the expert stack it opens,
    /// checked to lie inside the buffer), their shape, the inputs and outputs with their
    /// strides, and the token count.
    pub(super) fn product_args(&self, w: &DeviceMatrix, bytes: usize, (x, x_stride): (u64, usize), n: usize, (y, y_stride): (u64, usize)) -> Result<Vec<Arg>> {
        let end = w
            .offset
            .checked_add(bytes)
            .filter(|&e| e <= w.buf.len())
            .ok_or_else(|| CudaError::Shape("weights overrun their buffer".into()))?;
        let weights = w.buf.cuda_slice().slice(w.offset..end);
        // With event tracking off (`Gpu::new`) the guard records nothing.
        let (wp, _guard) = weights.device_ptr(&self.stream);
        Ok(vec![
            P(wp),
            L(w.row_bytes() as i64),
            I(w.rows() as i32),
            I(w.cols() as i32),
            P(x),
            L(x_stride as i64),
            P(y),
            L(y_stride as i64),
            I(n as i32),
        ])
    }

    /// Queues `f` with the `MV_ARGS` argument list (strides in elements; for expert slots the
    /// x stride is in bytes), followed by `MVX_ARGS`'s when `slots` is given. The weights
    /// passed are `w` itself, or the whole expert stack that starts at `w`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn launch(
        &self,
        f: &CudaFunction,
        w: &DeviceMatrix,
        (x, x_stride): (u64, usize),
        n: usize,
        (y, y_stride): (u64, usize),
        l: Launch,
        slots: Option<SlotArgs>,
        q: Queue,
    ) -> Result<()> {
        let (grid_y, bytes) = match &slots {
            Some(s) => (s.slots.n, s.expert_bytes * s.n_expert),
            None => (l.groups, w.num_bytes()),
        };
        let mut args = self.product_args(w, bytes, (x, x_stride), n, (y, y_stride))?;
        args.extend([P(dev_addr(&self.stream, &self.iq2_tab)), I(l.split as i32), I(l.xsm as i32)]);
        if let Some(s) = slots {
            args.extend([
                P(s.slots.ids),
                I(s.n_expert as i32),
                L(s.expert_bytes as i64),
                I(s.slots.x_div as i32),
                I(s.slots.y_mod as i32),
                L(s.slots.y_mul as i64),
            ]);
        }
        // SAFETY: the argument list matches MV_ARGS (and MVX_ARGS with slots) in matvec.cu;
        // callers checked the shapes, the weights lie inside their buffer (checked above;
        // expert ids out of range are skipped on the device) whose allocation covers the
        // 16-byte line after them (ALLOC_ALIGN), and every buffer outlives the launch on
        // this stream (the safe entry points borrow them for the call; the raw ones pass the
        // obligation to their callers). Every matvec kernel waits in its entry before it
        // touches what another kernel writes (the condition of `overlap`).
        let grid = (l.ctas as u32, grid_y as u32, 1);
        unsafe { launch_ex(q.stream, f, grid, l.threads as u32, l.smem as u32, &args, q.overlap && self.overlap()) }
    }
}
