//! Host side of `matmul.cu`: `Y = W X` for many tokens under the official numerics, on the
//! int8 tensor cores. `X` is each token's activations quantized for `W`'s type (the bytes
//! [`pack_acts`](super::matvec::pack_acts) makes, or what `quant_q8_0` / `quant_q8_k` write on
//! the device), one row per token, `a_stride` bytes apart.
//!
//! Agreement with the CPU: the integer sums are exact and the f32 combines are the CPU's
//! scalar ones in its order (see the head of `matmul.cu`), so each output equals
//! `dsv4_quant::matvec(.., Official)` for its token, bit for bit on the tested inputs; the
//! tests hold the matvec tolerances.
//!
//! Three tiles: 64 rows x 16 tokens (few tokens per matrix: an expert in a prefill chunk; and
//! short matrices, spread over more SMs), 64 x 32 (experts of a long chunk: each weight
//! decoded once for up to 32 tokens in the small CTA) and 128 x 64 (dense products of a whole
//! chunk, each weight decoded once per 64 tokens); see [`tile_tokens`].

use std::collections::HashMap;
use std::sync::Arc;

use cudarc::driver::sys::CUfunction_attribute;
use cudarc::driver::{CudaFunction, CudaStream, LaunchConfig, PushKernelArg};
use dsv4_gguf::GgmlType;

use super::experts::stack_stride;
use super::matvec::{act_bytes, dev_addr, DeviceMatrix};
use crate::buffer::DeviceBuffer;
use crate::device::Gpu;
use crate::error::{CudaError, Result};
use crate::kernels;

/// Token tile widths compiled (`mm_<type>_n<BN>`).
pub const TILE_TOKENS: [usize; 3] = [16, 32, 64];

/// Weight rows of one CTA for a tile width (`BM` in `matmul.cu`).
pub fn tile_rows(bn: usize) -> usize {
    if bn == 64 {
        128
    } else {
        64
    }
}

/// Threads of one CTA for a tile width (4 warps per 64 rows and 16 tokens, `MM_KERNEL`'s
/// WN × 128).
fn tile_threads(bn: usize) -> u32 {
    if bn == 64 {
        512
    } else {
        256
    }
}

const TYPES: &[(GgmlType, &str)] = &[
    (GgmlType::Q8_0, "q8_0"),
    (GgmlType::Q2_K, "q2_k"),
    (GgmlType::Q4_K, "q4_k"),
    (GgmlType::IQ2_XXS, "iq2_xxs"),
];

/// Dynamic shared memory of a launch with `bn`-token tiles (`mm_smem_bytes` in `matmul.cu`;
/// the kernel checks it got at least this much and writes nothing otherwise).
pub fn smem_bytes(bn: usize) -> usize {
    let bm = tile_rows(bn);
    2048 + bm * 272 + bn * 272 + bm * 32 + bm * 32 + bm * 16 + bn * 32 + bn * 16 + bn * 16
}

/// Float weight types of the f32 many-token kernels (`mmf_<type>_r<R>`).
const FLOAT_TYPES: &[(GgmlType, &str)] = &[(GgmlType::F16, "f16"), (GgmlType::F32, "f32")];

/// The F16 product on the BF16 tensor cores and the sum of its column splits.
const FLOAT_MMA: [&str; 2] = ["mmf16_mma", "mmf_reduce"];

/// Floats of partial sums the split F16 product may use (8 MB): a product of few rows over
/// long rows (the HC projections, 24 x 16384) splits its columns so that ~16 warps per SM
/// run, and each split's sums wait there for `mmf_reduce`.
pub const FLOAT_PART_FLOATS: usize = 1 << 21;

/// Every kernel symbol `matmul.cu` must define.
pub fn kernel_names() -> Vec<String> {
    let quant = TYPES.iter().flat_map(|(_, name)| TILE_TOKENS.iter().map(move |bn| format!("mm_{name}_n{bn}")));
    let float = FLOAT_TYPES.iter().flat_map(|(_, name)| [1, 2].map(|r| format!("mmf_{name}_r{r}")));
    quant.chain(float).chain(FLOAT_MMA.iter().map(|s| s.to_string())).collect()
}

/// Whether `ty` has a tensor-core kernel (the quantized types of the published files).
pub fn supports(ty: GgmlType) -> bool {
    TYPES.iter().any(|(t, _)| *t == ty)
}

/// The tile width a product of `rows` rows over `n` tokens uses on a GPU of `sms`
/// multiprocessors: wide tiles (fewer weight decodes per token) once they still give every
/// SM a CTA, narrow ones otherwise (a 1024-row matrix over 256 tokens makes 32 wide CTAs but
/// 256 narrow ones).
pub fn tile_tokens(rows: usize, n: usize, sms: usize) -> usize {
    if n > 16 && rows.div_ceil(tile_rows(64)) * n.div_ceil(64) >= sms {
        64
    } else {
        16
    }
}

/// Column splits of an F16 product on the tensor cores and the columns of each (a multiple
/// of 16): enough warps (32 tokens x 32 rows each) for ~16 per SM, at least 4 steps of 16
/// columns a split, and the splits' partial sums within `part_floats`.
pub fn float_splits(rows: usize, cols: usize, n: usize, sms: usize, part_floats: usize) -> (usize, usize) {
    let steps = cols / 16;
    let warps = rows.div_ceil(32) * n.div_ceil(32);
    let room = part_floats / (n * rows).max(1);
    let want = (16 * sms).div_ceil(warps.max(1)).min(steps / 4).min(room).max(1);
    let kchunk = steps.div_ceil(want) * 16;
    (cols.div_ceil(kchunk.max(16)), kchunk.max(16))
}

/// The tile table of a grouped launch ([`Matmul::run_tiles_raw`]): for each `(expert, first
/// row, count)` group, `(expert, first, count)` triples of at most `bn` tokens.
pub fn expert_tiles(groups: &[(usize, usize, usize)], bn: usize) -> Vec<i32> {
    let mut t = Vec::new();
    for &(ex, first, cnt) in groups {
        let mut k = 0;
        while k < cnt {
            let c = bn.min(cnt - k);
            t.extend([ex as i32, (first + k) as i32, c as i32]);
            k += c;
        }
    }
    t
}

/// Products side by side in one launch (grid.z): how many, and how far apart their
/// activations (bytes) and outputs (floats) start.
#[derive(Clone, Copy)]
struct Groups {
    count: usize,
    a_bytes: i64,
    y_floats: i64,
}

impl Groups {
    const ONE: Groups = Groups { count: 1, a_bytes: 0, y_floats: 0 };
}

/// The loaded matmul kernels of one device.
pub struct Matmul {
    stream: Arc<CudaStream>,
    funcs: HashMap<(GgmlType, usize), CudaFunction>,
    /// Float-weight kernels by (type, rows per warp).
    funcs_f: HashMap<(GgmlType, usize), CudaFunction>,
    /// `FLOAT_MMA`, in that order.
    funcs_fm: [CudaFunction; 2],
    iq2_tab: DeviceBuffer<u32>,
    sm_count: usize,
}

impl Matmul {
    /// Compiles (or takes from the cache) and loads `matmul.cu` on `gpu`.
    pub fn new(gpu: &Gpu) -> Result<Self> {
        let module = gpu.load_module(&kernels::MATMUL)?;
        let mut funcs = HashMap::new();
        for &(ty, name) in TYPES {
            for bn in TILE_TOKENS {
                let sym = format!("mm_{name}_n{bn}");
                let f = module.load_function(&sym).map_err(|_| CudaError::MissingKernel(sym.clone()))?;
                f.set_attribute(CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, smem_bytes(bn) as i32)?;
                funcs.insert((ty, bn), f);
            }
        }
        let mut funcs_f = HashMap::new();
        for &(ty, name) in FLOAT_TYPES {
            for r in [1, 2] {
                let sym = format!("mmf_{name}_r{r}");
                funcs_f.insert((ty, r), module.load_function(&sym).map_err(|_| CudaError::MissingKernel(sym.clone()))?);
            }
        }
        let load = |sym: &str| module.load_function(sym).map_err(|_| CudaError::MissingKernel(sym.to_owned()));
        let funcs_fm = [load(FLOAT_MMA[0])?, load(FLOAT_MMA[1])?];
        Ok(Matmul { stream: gpu.stream().clone(), funcs, funcs_f, funcs_fm, iq2_tab: gpu.upload(&super::matvec::iq2_tables())?, sm_count: gpu.sm_count() })
    }

    /// `Y = W X` for `n` tokens whose activations (quantized for `W`) are `acts`, one row of
    /// `a_stride` bytes per token; `y` gets `n` rows of `W.rows()` outputs.
    pub fn run(&self, w: &DeviceMatrix, acts: &DeviceBuffer<u8>, a_stride: usize, n: usize, y: &mut DeviceBuffer<f32>) -> Result<()> {
        let need = act_bytes(w.ty(), w.cols())?;
        if n == 0 {
            return Ok(());
        }
        if a_stride < need || acts.len() < (n - 1) * a_stride + need {
            return Err(CudaError::Shape(format!("{} activation bytes for {n} rows of {a_stride} ({need} used)", acts.len())));
        }
        if y.len() < n * w.rows() {
            return Err(CudaError::Shape(format!("y has {} elements, {n} tokens of {} rows need more", y.len(), w.rows())));
        }
        let (a, yp) = (dev_addr(&self.stream, acts), dev_addr(&self.stream, y));
        // SAFETY: sizes checked above; both buffers are borrowed for the call and outlive the
        // launch on this stream.
        unsafe { self.run_raw(w, a, a_stride, n, yp, w.rows()) }
    }

    /// [`Matmul::run`] on device addresses: token t's activations at `acts + t·a_stride`
    /// (bytes), its outputs at `y + 4·t·y_stride`.
    ///
    /// # Safety
    /// Every token's activations and outputs must be live device memory of this stream's
    /// context until the queued work completes; outputs must not overlap the inputs.
    pub unsafe fn run_raw(&self, w: &DeviceMatrix, acts: u64, a_stride: usize, n: usize, y: u64, y_stride: usize) -> Result<()> {
        if n == 0 || w.rows() == 0 {
            return Ok(());
        }
        let bn = tile_tokens(w.rows(), n, self.sm_count);
        let tiles = n.div_ceil(bn);
        // SAFETY: forwarded from the caller; no tile table.
        unsafe { self.launch(std::slice::from_ref(w), 0, tiles, bn, n, acts, a_stride, y, y_stride, Groups::ONE) }
    }

    /// [`Matmul::run_groups_raw`] on buffers, bounds checked: group g's token t reads its
    /// activations at `acts[g·a_group + t·a_stride ..]` and writes `y[g·y_group + t·y_stride
    /// ..]`.
    #[allow(clippy::too_many_arguments)]
    pub fn run_groups(&self, mats: &[DeviceMatrix], acts: &DeviceBuffer<u8>, a_stride: usize, a_group: usize, n: usize, y: &mut DeviceBuffer<f32>, y_stride: usize, y_group: usize) -> Result<()> {
        let Some(w) = mats.first() else { return Ok(()) };
        if n == 0 {
            return Ok(());
        }
        let (last, need) = (mats.len() - 1, act_bytes(w.ty(), w.cols())?);
        if a_stride < need || acts.len() < last * a_group + (n - 1) * a_stride + need {
            return Err(CudaError::Shape(format!("{} activation bytes for {} groups of {n} rows", acts.len(), mats.len())));
        }
        if y_stride < w.rows() || y.len() < last * y_group + (n - 1) * y_stride + w.rows() {
            return Err(CudaError::Shape(format!("y has {} elements, too few for {} groups of {n} tokens", y.len(), mats.len())));
        }
        let (a, yp) = (dev_addr(&self.stream, acts), dev_addr(&self.stream, y));
        // SAFETY: sizes checked above; both buffers are borrowed for the call and outlive the
        // launch on this stream.
        unsafe { self.run_groups_raw(mats, a, a_stride, a_group, n, yp, y_stride, y_group) }
    }

    /// [`Matmul::run_raw`] for several matrices of one shape stacked in one buffer (the
    /// output projection's head groups) in one launch: matrix g multiplies the `n` activation
    /// rows starting `g·a_group` bytes after `acts` into the outputs starting `g·y_group`
    /// floats after `y`.
    ///
    /// # Safety
    /// As [`Matmul::run_raw`], for every group's activations and outputs.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn run_groups_raw(&self, mats: &[DeviceMatrix], acts: u64, a_stride: usize, a_group: usize, n: usize, y: u64, y_stride: usize, y_group: usize) -> Result<()> {
        let Some(w) = mats.first() else { return Ok(()) };
        if n == 0 || w.rows() == 0 {
            return Ok(());
        }
        if mats.len() > 65535 || !a_group.is_multiple_of(4) {
            return Err(CudaError::Shape(format!("{} groups, activations {a_group} bytes apart", mats.len())));
        }
        // Each group alone has rows/BM CTAs: the tile width counts them all.
        let bn = tile_tokens(w.rows() * mats.len(), n, self.sm_count);
        let groups = Groups { count: mats.len(), a_bytes: a_group as i64, y_floats: y_group as i64 };
        // SAFETY: forwarded from the caller; no tile table.
        unsafe { self.launch(mats, 0, n.div_ceil(bn), bn, n, acts, a_stride, y, y_stride, groups) }
    }

    /// `Y = W X` for float weights (F16, F32) and `n` f32 activation vectors one after another
    /// in `x`, outputs one after another in `y`: the plain f32 product (FMAs), as the
    /// model runs its float matrices under either numerics.
    pub fn run_float(&self, w: &DeviceMatrix, x: &DeviceBuffer<f32>, n: usize, y: &mut DeviceBuffer<f32>) -> Result<()> {
        if x.len() < n * w.cols() || y.len() < n * w.rows() {
            return Err(CudaError::Shape(format!("{n} tokens of {}x{}: x has {}, y {}", w.rows(), w.cols(), x.len(), y.len())));
        }
        let (xp, yp) = (dev_addr(&self.stream, x), dev_addr(&self.stream, y));
        // SAFETY: sizes checked above; both buffers are borrowed for the call and outlive the
        // launch on this stream.
        unsafe { self.run_float_raw(w, xp, w.cols(), n, yp, w.rows()) }
    }

    /// [`Matmul::run_f16_mma_raw`] on whole buffers (rows of `w.cols()` and `w.rows()`
    /// floats), `part` for the column splits' partial sums.
    pub fn run_f16_mma(&self, w: &DeviceMatrix, x: &DeviceBuffer<f32>, n: usize, y: &mut DeviceBuffer<f32>, part: &mut DeviceBuffer<f32>) -> Result<()> {
        if x.len() < n * w.cols() || y.len() < n * w.rows() {
            return Err(CudaError::Shape(format!("{n} tokens of {}x{}: x has {}, y {}", w.rows(), w.cols(), x.len(), y.len())));
        }
        let (xp, yp, pp) = (dev_addr(&self.stream, x), dev_addr(&self.stream, y), dev_addr(&self.stream, part));
        // SAFETY: sizes checked above, `part` by its length; the buffers are borrowed for the
        // call and outlive the launches on this stream.
        unsafe { self.run_f16_mma_raw(w, xp, w.cols(), n, yp, w.rows(), pp, part.len()) }
    }

    /// [`Matmul::run_float`] on device addresses with strides (f32 elements): token t's input
    /// at `x + 4·t·x_stride` (16-byte aligned), its outputs at `y + 4·t·y_stride`.
    ///
    /// # Safety
    /// Every token's inputs and outputs must be live device memory of this stream's context
    /// until the queued work completes; outputs must not overlap the inputs.
    pub unsafe fn run_float_raw(&self, w: &DeviceMatrix, x: u64, x_stride: usize, n: usize, y: u64, y_stride: usize) -> Result<()> {
        if n == 0 || w.rows() == 0 {
            return Ok(());
        }
        let r = if w.rows() >= 512 { 2 } else { 1 };
        let f = self.funcs_f.get(&(w.ty(), r)).ok_or(CudaError::UnsupportedType(w.ty()))?;
        if !x.is_multiple_of(16) || !x_stride.is_multiple_of(4) || x_stride < w.cols() || y_stride < w.rows() || n.div_ceil(16) > 65535 {
            return Err(CudaError::Shape(format!("x at {x:#x}, strides {x_stride}/{y_stride} for {}x{}, {n} tokens", w.rows(), w.cols())));
        }
        let weights = w.buf.cuda_slice().slice(w.offset..w.offset + w.num_bytes());
        let cfg = LaunchConfig { grid_dim: (w.rows().div_ceil(4 * r) as u32, n.div_ceil(16) as u32, 1), block_dim: (128, 1, 1), shared_mem_bytes: 0 };
        let (row_bytes, rows, cols) = (w.row_bytes() as i64, w.rows() as i32, w.cols() as i32);
        let (xs, ys, n) = (x_stride as i64, y_stride as i64, n as i32);
        let mut b = self.stream.launch_builder(f);
        b.arg(&weights).arg(&row_bytes).arg(&rows).arg(&cols).arg(&x).arg(&xs).arg(&y).arg(&ys).arg(&n);
        // SAFETY: the list matches MMF_KERNEL in matmul.cu; the weights lie in their buffer
        // (DeviceMatrix::view), the caller vouches for the activations and outputs.
        unsafe { b.launch(cfg) }?;
        Ok(())
    }

    /// `y_t = W x_t` for `n` tokens of F16 weights on the BF16 tensor cores (`mmf16_mma`:
    /// f32 accuracy, another order of additions than [`Matmul::run_float_raw`]), with `part`
    /// (`part_floats` floats) for the partial sums of column splits. Falls back to
    /// [`Matmul::run_float_raw`] for other types and shapes the kernel does not take.
    ///
    /// # Safety
    /// As [`Matmul::run_float_raw`]; `part` is `part_floats` floats of device memory that
    /// nothing else uses until the product is done.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn run_f16_mma_raw(&self, w: &DeviceMatrix, x: u64, x_stride: usize, n: usize, y: u64, y_stride: usize, part: u64, part_floats: usize) -> Result<()> {
        let (rows, cols) = (w.rows(), w.cols());
        if w.ty() != GgmlType::F16 || cols == 0 || !cols.is_multiple_of(16) || !w.row_bytes().is_multiple_of(8) || n.div_ceil(128) > 65535 {
            // SAFETY: the caller's contract is run_float_raw's.
            return unsafe { self.run_float_raw(w, x, x_stride, n, y, y_stride) };
        }
        if n == 0 || rows == 0 {
            return Ok(());
        }
        if !x.is_multiple_of(16) || !x_stride.is_multiple_of(4) || x_stride < cols || y_stride < rows {
            return Err(CudaError::Shape(format!("x at {x:#x}, strides {x_stride}/{y_stride} for {rows}x{cols}, {n} tokens")));
        }
        let (splits, kchunk) = float_splits(rows, cols, n, self.sm_count, part_floats);
        let weights = w.buf.cuda_slice().slice(w.offset..w.offset + w.num_bytes());
        let cfg = LaunchConfig { grid_dim: (rows.div_ceil(32) as u32, n.div_ceil(128) as u32, splits as u32), block_dim: (128, 1, 1), shared_mem_bytes: 0 };
        let (row_bytes, r, c, xs, ys, nn, kc) = (w.row_bytes() as i64, rows as i32, cols as i32, x_stride as i64, y_stride as i64, n as i32, kchunk as i32);
        let mut b = self.stream.launch_builder(&self.funcs_fm[0]);
        b.arg(&weights).arg(&row_bytes).arg(&r).arg(&c).arg(&x).arg(&xs).arg(&y).arg(&ys).arg(&nn).arg(&kc).arg(&part);
        // SAFETY: the list matches mmf16_mma in matmul.cu; the weights lie in their buffer,
        // the caller vouches for the activations, outputs and `part` (splits × n × rows
        // floats fit it by float_splits).
        unsafe { b.launch(cfg) }?;
        if splits > 1 {
            let total = (n * rows) as u32;
            let cfg = LaunchConfig { grid_dim: (total.div_ceil(256), 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
            let sp = splits as i32;
            let mut b = self.stream.launch_builder(&self.funcs_fm[1]);
            b.arg(&part).arg(&sp).arg(&r).arg(&nn).arg(&y).arg(&ys);
            // SAFETY: the list matches mmf_reduce; it reads what the launch above wrote.
            unsafe { b.launch(cfg) }?;
        }
        Ok(())
    }

    /// [`Matmul::run_tiles_raw`] with the tile table given on the host (checked, then
    /// uploaded): `acts` holds the activation rows the tiles name, `y` gets their outputs.
    #[allow(clippy::too_many_arguments)]
    pub fn run_tiles(&self, gpu: &Gpu, experts: &[DeviceMatrix], tiles: &[i32], bn: usize, acts: &DeviceBuffer<u8>, a_stride: usize, y: &mut DeviceBuffer<f32>, y_stride: usize) -> Result<()> {
        let w = experts.first().ok_or_else(|| CudaError::Shape("no experts".into()))?;
        let need = act_bytes(w.ty(), w.cols())?;
        if !TILE_TOKENS.contains(&bn) || !tiles.len().is_multiple_of(3) {
            return Err(CudaError::Shape(format!("tile width {bn}, table of {} values", tiles.len())));
        }
        for t in tiles.chunks_exact(3) {
            let (ex, first, cnt) = (t[0], t[1], t[2]);
            if ex >= experts.len() as i32 || first < 0 || cnt < 0 || cnt as usize > bn {
                return Err(CudaError::Shape(format!("tile {t:?} for {} experts of width {bn}", experts.len())));
            }
            let end = (first + cnt) as usize;
            if cnt > 0 && (acts.len() < (end - 1) * a_stride + need || y.len() < (end - 1) * y_stride + w.rows()) {
                return Err(CudaError::Shape(format!("tile {t:?} runs past the activations or outputs")));
            }
        }
        let table = gpu.upload(tiles)?;
        let (tp, a, yp) = (dev_addr(&self.stream, &table), dev_addr(&self.stream, acts), dev_addr(&self.stream, y));
        // SAFETY: the table was checked against the buffers above; all three are borrowed for
        // the call, and the table is freed only after the stream finishes (synchronize below).
        unsafe { self.run_tiles_raw(experts, tp, tiles.len() / 3, bn, a, a_stride, yp, y_stride)? };
        self.stream.synchronize()?;
        Ok(())
    }

    /// One launch over the tiles of a table made by [`expert_tiles`] (already on the device,
    /// `n_tiles` triples at `tiles`): each tile multiplies its expert of the stacked `experts`
    /// by its tokens' activation rows (`acts + row·a_stride`) into `y + 4·row·y_stride`.
    ///
    /// # Safety
    /// `tiles` must hold `3·n_tiles` i32 on the device with experts below `experts.len()`
    /// (or negative) and counts at most `bn`; every row they address must be live device
    /// memory until the queued work completes; outputs must not overlap the inputs.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn run_tiles_raw(&self, experts: &[DeviceMatrix], tiles: u64, n_tiles: usize, bn: usize, acts: u64, a_stride: usize, y: u64, y_stride: usize) -> Result<()> {
        if n_tiles == 0 || experts.is_empty() || experts[0].rows() == 0 {
            return Ok(());
        }
        if tiles == 0 {
            return Err(CudaError::Shape("a grouped product needs its tile table".into()));
        }
        // SAFETY: forwarded from the caller.
        unsafe { self.launch(experts, tiles, n_tiles, bn, 0, acts, a_stride, y, y_stride, Groups::ONE) }
    }

    /// `experts`: the stacked matrices a tile table names, or (with `groups.count` > 1) the
    /// groups' matrices, group z the z-th.
    #[allow(clippy::too_many_arguments)]
    unsafe fn launch(&self, experts: &[DeviceMatrix], tiles: u64, n_tiles: usize, bn: usize, n: usize, acts: u64, a_stride: usize, y: u64, y_stride: usize, groups: Groups) -> Result<()> {
        let w = &experts[0];
        let stride = if experts.len() == 1 { w.num_bytes() } else { stack_stride(experts).ok_or_else(|| CudaError::Shape("experts are not stacked in one buffer".into()))? };
        let need = act_bytes(w.ty(), w.cols())?;
        let f = self.funcs.get(&(w.ty(), bn)).ok_or(CudaError::UnsupportedType(w.ty()))?;
        if !acts.is_multiple_of(4) || !a_stride.is_multiple_of(4) || a_stride < need {
            return Err(CudaError::Shape(format!("activation rows at {acts:#x}, {a_stride} bytes apart, {need} needed, 4-byte aligned")));
        }
        if y_stride < w.rows() || n_tiles > 65535 {
            return Err(CudaError::Shape(format!("output stride {y_stride} for {} rows, {n_tiles} tiles", w.rows())));
        }
        let end = w
            .offset
            .checked_add(stride * experts.len())
            .filter(|&e| e <= w.buf.len())
            .ok_or_else(|| CudaError::Shape("matrices overrun their buffer".into()))?;
        let weights = w.buf.cuda_slice().slice(w.offset..end);
        let cfg = LaunchConfig {
            grid_dim: (w.rows().div_ceil(tile_rows(bn)) as u32, n_tiles as u32, groups.count as u32),
            block_dim: (tile_threads(bn), 1, 1),
            shared_mem_bytes: smem_bytes(bn) as u32,
        };
        let (row_bytes, rows, cols, eb) = (w.row_bytes() as i64, w.rows() as i32, w.cols() as i32, stride as i64);
        let (a_stride, y_stride, n) = (a_stride as i64, y_stride as i64, n as i32);
        let tab = self.iq2_tab.view();
        // Group z's matrix follows the previous one (a tile table's experts are found by
        // their index instead).
        let gw = if groups.count > 1 { eb } else { 0 };
        let mut b = self.stream.launch_builder(f);
        b.arg(&weights)
            .arg(&row_bytes)
            .arg(&rows)
            .arg(&cols)
            .arg(&eb)
            .arg(&acts)
            .arg(&a_stride)
            .arg(&y)
            .arg(&y_stride)
            .arg(&n)
            .arg(&tiles)
            .arg(&tab)
            .arg(&gw)
            .arg(&groups.a_bytes)
            .arg(&groups.y_floats);
        // SAFETY: the list matches MM_ARGS in matmul.cu; the weights of every expert lie in
        // the slice passed (checked above), and the caller vouches for activations, outputs
        // and the tile table.
        unsafe { b.launch(cfg) }?;
        Ok(())
    }
}
