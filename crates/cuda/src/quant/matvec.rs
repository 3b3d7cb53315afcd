//! Host side of `matvec.cu`: `y = W x` and `Y = W X` (up to [`MAX_BATCH`] tokens) with `W` in
//! its GGUF layout and f32 activations, the plain numerics of `dsv4_quant::matvec`.
//!
//! Agreement with the CPU: the kernels dequantize every weight exactly as `dsv4_quant` does,
//! but factor block scales out of the inner sums and add in another order (per lane, then a
//! warp butterfly), and contract multiply-adds into FMAs. Results are deterministic (same
//! inputs, same bits, on a given GPU) and match the CPU within f32 rounding: the tests hold
//! the relative L2 error of each output vector under 1e-5 (see `tests/matvec.rs`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cudarc::driver::sys::{CUdevice_attribute, CUfunction_attribute};
use cudarc::driver::{CudaFunction, CudaStream, DevicePtr, LaunchConfig, PushKernelArg};
use dsv4_gguf::GgmlType;
use dsv4_quant::QuantizedActs;

use crate::buffer::DeviceBuffer;
use crate::device::Gpu;
use crate::error::{CudaError, Result};
use crate::kernels;

/// Largest token count of one [`Matvec::run_batch`] call.
pub const MAX_BATCH: usize = 16;

/// Warps per CTA of the float kernels (`MV_WARPS` in `matvec.cu`) and of the quantized ones
/// (`MVQ_WARPS`).
pub(super) const WARPS: usize = 4;
pub(super) const QWARPS: usize = 8;

/// The types with kernels, and their names in the kernel symbols.
const TYPES: &[(GgmlType, &str)] = &[
    (GgmlType::F32, "f32"),
    (GgmlType::F16, "f16"),
    (GgmlType::Q8_0, "q8_0"),
    (GgmlType::Q2_K, "q2_k"),
    (GgmlType::Q4_K, "q4_k"),
    (GgmlType::IQ2_XXS, "iq2_xxs"),
];

/// `(rows per warp, tokens)` of the float kernels, as instantiated in `matvec.cu`.
const FLOAT_VARIANTS: &[(usize, usize)] = &[(1, 1), (2, 1), (4, 1), (2, 4), (2, 8), (2, 16)];
/// `(rows per group, tokens)` of the quantized kernels.
const QUANT_VARIANTS: &[(usize, usize)] = &[(2, 1), (4, 1), (2, 4), (2, 8), (2, 16)];
/// Copy stages per warp of each quantized variant, as instantiated in `matvec.cu`.
fn stages(rows: usize, tokens: usize) -> usize {
    match (rows, tokens) {
        (2, 1) => 4,
        _ => 2,
    }
}
/// Bytes of one row's stage buffer (`BUF` in `mv_quant`): a 1024-column step, plus its
/// offset in the first 16-byte line and the 4 bytes the Q8_0 decoder may read past a block.
pub(super) fn stage_buf(ty: GgmlType) -> usize {
    let step = 1024 / ty.block_elems() * ty.block_bytes();
    (step + 14 + 4).next_multiple_of(16)
}
/// Largest x (in bytes) staged in shared memory for one-token products.
pub(super) const MAX_X_SMEM: usize = 64 * 1024;

pub(super) fn is_float(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::F32 | GgmlType::F16)
}

/// The compiled `(rows, tokens)` variants of `ty`.
fn variants(ty: GgmlType) -> &'static [(usize, usize)] {
    if is_float(ty) {
        FLOAT_VARIANTS
    } else {
        QUANT_VARIANTS
    }
}

fn symbol(ty: GgmlType, name: &str, rows: usize, tokens: usize) -> String {
    let r = if is_float(ty) { 'r' } else { 'g' };
    format!("mv_{name}_{r}{rows}_n{tokens}")
}

/// Every kernel symbol `matvec.cu` must define (the compile check looks for each in the CUBIN).
pub fn kernel_names() -> Vec<String> {
    let plain = TYPES.iter().flat_map(|&(ty, name)| {
        variants(ty)
            .iter()
            .map(move |&(r, nt)| symbol(ty, name, r, nt))
    });
    let qact = TYPES
        .iter()
        .filter(|(ty, _)| !is_float(*ty))
        .map(|(_, name)| format!("mvq_{name}_g2"));
    let slots = TYPES.iter().map(|(_, name)| format!("mvx_{name}"));
    let qslots = TYPES
        .iter()
        .filter(|(ty, _)| !is_float(*ty))
        .map(|(_, name)| format!("mvxq_{name}"));
    plain.chain(qact).chain(slots).chain(qslots).collect()
}

fn type_name(ty: GgmlType) -> Result<&'static str> {
    TYPES
        .iter()
        .find(|(t, _)| *t == ty)
        .map(|(_, n)| *n)
        .ok_or(CudaError::UnsupportedType(ty))
}

/// A weight matrix in device memory: `rows` rows of `cols` elements of `ty`, each row
/// `cols / block_elems * block_bytes` bytes, rows contiguous (GGUF's `ne = [cols, rows]`).
/// It may be a window into a larger buffer (one expert of a stacked expert tensor).
#[derive(Clone, Debug)]
pub struct DeviceMatrix {
    pub(super) buf: Arc<DeviceBuffer<u8>>,
    pub(super) offset: usize,
    ty: GgmlType,
    rows: usize,
    cols: usize,
}

/// Bytes of one row, checking that `cols` suits the type's kernels.
pub fn row_bytes(ty: GgmlType, cols: usize) -> Result<usize> {
    type_name(ty)?;
    let block = ty.block_elems();
    if !cols.is_multiple_of(block) {
        return Err(CudaError::Shape(format!(
            "{ty} row of {cols} columns is not a whole number of {block}-column blocks"
        )));
    }
    // The float kernels give each lane 16 bytes of a row.
    let lane_cols = match ty {
        GgmlType::F32 => 4,
        GgmlType::F16 => 8,
        _ => 1,
    };
    if !cols.is_multiple_of(lane_cols) {
        return Err(CudaError::Shape(format!(
            "{ty} rows need a multiple of {lane_cols} columns, got {cols}"
        )));
    }
    if cols > i32::MAX as usize {
        return Err(CudaError::Shape(format!("{cols} columns")));
    }
    Ok(cols / block * ty.block_bytes())
}

impl DeviceMatrix {
    /// Uploads `bytes` (exactly `rows` rows of `cols` elements of `ty`) into its own buffer.
    pub fn upload(gpu: &Gpu, ty: GgmlType, rows: usize, cols: usize, bytes: &[u8]) -> Result<Self> {
        let need = row_bytes(ty, cols)?
            .checked_mul(rows)
            .ok_or_else(|| CudaError::Shape("size overflows".into()))?;
        if bytes.len() != need {
            return Err(CudaError::Shape(format!(
                "{rows}x{cols} {ty} needs {need} bytes, got {}",
                bytes.len()
            )));
        }
        Self::view(Arc::new(gpu.upload(bytes)?), 0, ty, rows, cols)
    }

    /// The matrix stored at byte `offset` of `buf`. The offset must be 16-byte aligned (GGUF
    /// tensor data is 32-byte aligned, and stacked experts are whole matrices apart).
    pub fn view(
        buf: Arc<DeviceBuffer<u8>>,
        offset: usize,
        ty: GgmlType,
        rows: usize,
        cols: usize,
    ) -> Result<Self> {
        let rb = row_bytes(ty, cols)?;
        if rows > i32::MAX as usize {
            return Err(CudaError::Shape(format!("{rows} rows")));
        }
        if !offset.is_multiple_of(16) {
            return Err(CudaError::Shape(format!(
                "matrix offset {offset} is not 16-byte aligned"
            )));
        }
        let end = rb.checked_mul(rows).and_then(|b| b.checked_add(offset));
        if end.is_none_or(|e| e > buf.len()) {
            return Err(CudaError::Shape(format!(
                "{rows}x{cols} {ty} at offset {offset} overruns a buffer of {} bytes",
                buf.len()
            )));
        }
        Ok(DeviceMatrix {
            buf,
            offset,
            ty,
            rows,
            cols,
        })
    }

    pub fn ty(&self) -> GgmlType {
        self.ty
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes of one row.
    pub fn row_bytes(&self) -> usize {
        self.cols / self.ty.block_elems() * self.ty.block_bytes()
    }

    /// Bytes of the whole matrix (what one product streams from memory).
    pub fn num_bytes(&self) -> usize {
        self.row_bytes() * self.rows
    }
}

/// The loaded matvec kernels of one device.
pub struct Matvec {
    pub(super) stream: Arc<CudaStream>,
    pub(super) funcs: HashMap<(GgmlType, usize, usize), CudaFunction>,
    /// Quantized-activation kernels (`mvq_<type>_g2`), quantized weight types only.
    pub(super) funcs_q: HashMap<GgmlType, CudaFunction>,
    /// Expert-slot kernels (`mvx_<type>`, `mvxq_<type>`, see `experts.rs`), by (type,
    /// quantized activations).
    pub(super) funcs_x: HashMap<(GgmlType, bool), CudaFunction>,
    /// IQ2_XXS magnitude octets (`dsv4_quant`'s table), read into shared memory per CTA.
    pub(super) iq2_grid: DeviceBuffer<u64>,
    sm_count: usize,
    /// Most shared memory one CTA may have on this device.
    smem_optin: usize,
    /// Resident CTAs per SM by (kernel, dynamic shared memory): the driver's occupancy query
    /// costs microseconds, and the model runner launches the same few shapes every token.
    occupancy: Mutex<HashMap<(u64, usize), usize>>,
}

/// Bytes of the split partial sums (`PART_BYTES` in `mv_quant`): two rounds' worth, one float
/// per (warp, row, token).
pub(super) fn part_bytes(v: Variant) -> usize {
    2 * QWARPS * v.rows * v.tokens * 4
}

/// The largest power of two not above `n` (n >= 1).
fn prev_pow2(n: usize) -> usize {
    1 << (usize::BITS - 1 - n.max(1).leading_zeros())
}

/// Dynamic shared memory of a quantized launch, laid out as above `mv_quant`.
pub(super) fn quant_smem(ty: GgmlType, cols: usize, v: Variant, xsm: bool) -> usize {
    let grid = if ty == GgmlType::IQ2_XXS { 256 * 8 } else { 0 };
    let x = if xsm { cols * 4 } else { 0 };
    grid + part_bytes(v) + x + QWARPS * stages(v.rows, v.tokens) * v.rows * stage_buf(ty)
}

/// How a call is launched. Float types: `rows` rows per warp, four warps per CTA, one warp
/// per `rows` rows. Quantized types: groups of `rows` rows, `split` warps per group (1, 2, 4
/// or 8, at most one per 1024-column step) and `ctas` CTAs of 8 warps (see `mv_quant` in
/// `matvec.cu`); 0 leaves either to [`Matvec`] (one wave of CTAs; a split only when there
/// are too few groups to fill the GPU). `tokens` is the compiled token capacity (at least
/// the call's token count).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Variant {
    pub rows: usize,
    pub tokens: usize,
    pub split: usize,
    pub ctas: usize,
}

impl Matvec {
    /// Compiles (or takes from the cache) and loads `matvec.cu` on `gpu`.
    pub fn new(gpu: &Gpu) -> Result<Self> {
        let module = gpu.load_module(&kernels::MATVEC)?;
        let smem_optin = gpu
            .context()
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)?;
        let mut funcs = HashMap::new();
        let mut funcs_q = HashMap::new();
        let mut funcs_x = HashMap::new();
        for &(ty, name) in TYPES {
            for &(r, nt) in variants(ty) {
                let sym = symbol(ty, name, r, nt);
                let f = module
                    .load_function(&sym)
                    .map_err(|_| CudaError::MissingKernel(sym.clone()))?;
                if !is_float(ty) {
                    // All of a quantized kernel's shared memory is dynamic; allow what the
                    // device allows (the launch asks only for what it needs).
                    f.set_attribute(
                        CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                        smem_optin,
                    )?;
                }
                funcs.insert((ty, r, nt), f);
            }
            if !is_float(ty) {
                let sym = format!("mvq_{name}_g2");
                let f = module
                    .load_function(&sym)
                    .map_err(|_| CudaError::MissingKernel(sym.clone()))?;
                f.set_attribute(
                    CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    smem_optin,
                )?;
                funcs_q.insert(ty, f);
            }
            for qa in [false, true] {
                if qa && is_float(ty) {
                    continue;
                }
                let sym = format!("mvx{}_{name}", if qa { "q" } else { "" });
                let f = module
                    .load_function(&sym)
                    .map_err(|_| CudaError::MissingKernel(sym.clone()))?;
                if !is_float(ty) {
                    f.set_attribute(
                        CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                        smem_optin,
                    )?;
                }
                funcs_x.insert((ty, qa), f);
            }
        }
        let iq2_grid = gpu.upload(&dsv4_quant::iq2_xxs::tables::GRID)?;
        Ok(Matvec {
            stream: gpu.stream().clone(),
            funcs,
            funcs_q,
            funcs_x,
            iq2_grid,
            sm_count: gpu.sm_count(),
            smem_optin: smem_optin.max(0) as usize,
            occupancy: Mutex::new(HashMap::new()),
        })
    }

    /// The variant a product of `w` over `n` tokens runs.
    ///
    /// Float types, one token: the most rows per warp that still leaves at least 8 warps per
    /// SM (more rows per warp reuse each activation load more; more warps keep more loads in
    /// flight). Quantized types: groups of 2 rows, one wave of CTAs, split and CTA count
    /// chosen at launch (see [`Variant`]). Several
    /// tokens: 2 rows per warp or group and the smallest compiled token capacity that holds
    /// `n`.
    pub fn variant(&self, w: &DeviceMatrix, n: usize) -> Variant {
        let tokens = if n <= 1 {
            1
        } else {
            [4, 8, 16]
                .into_iter()
                .find(|&t| t >= n)
                .unwrap_or(MAX_BATCH)
        };
        if is_float(w.ty) {
            let rows = if n > 1 {
                2
            } else {
                [4, 2]
                    .into_iter()
                    .find(|&r| w.rows / r >= 8 * self.sm_count)
                    .unwrap_or(1)
            };
            return Variant {
                rows,
                tokens,
                split: 0,
                ctas: 0,
            };
        }
        Variant {
            rows: 2,
            tokens,
            split: 0,
            ctas: 0,
        }
    }

    /// `y = W x`: `x` has `cols` elements, `y` gets `rows`.
    pub fn run(
        &self,
        w: &DeviceMatrix,
        x: &DeviceBuffer<f32>,
        y: &mut DeviceBuffer<f32>,
    ) -> Result<()> {
        self.run_batch(w, x, 1, y)
    }

    /// `Y = W X` for `n <= MAX_BATCH` tokens, reading `W` once: `x` holds the tokens'
    /// activations one after another (`n * cols`), `y` gets their outputs the same way
    /// (`n * rows`).
    pub fn run_batch(
        &self,
        w: &DeviceMatrix,
        x: &DeviceBuffer<f32>,
        n: usize,
        y: &mut DeviceBuffer<f32>,
    ) -> Result<()> {
        let v = self.variant(w, n);
        self.run_variant(w, x, n, y, v)
    }

    /// [`Matvec::run_batch`] with an explicit variant (for benchmarks and tests of every
    /// variant). `v` must be one of the compiled ones, with `v.tokens >= n`.
    pub fn run_variant(
        &self,
        w: &DeviceMatrix,
        x: &DeviceBuffer<f32>,
        n: usize,
        y: &mut DeviceBuffer<f32>,
        v: Variant,
    ) -> Result<()> {
        if n == 0 || n > MAX_BATCH || n > v.tokens {
            return Err(CudaError::Shape(format!(
                "{n} tokens for a variant of {} (at most {MAX_BATCH})",
                v.tokens
            )));
        }
        if x.len() != n * w.cols {
            return Err(CudaError::Shape(format!(
                "x has {} elements, {n} tokens of {} columns need {}",
                x.len(),
                w.cols,
                n * w.cols
            )));
        }
        if y.len() != n * w.rows {
            return Err(CudaError::Shape(format!(
                "y has {} elements, {n} tokens of {} rows need {}",
                y.len(),
                w.rows,
                n * w.rows
            )));
        }
        let f = self
            .funcs
            .get(&(w.ty, v.rows, v.tokens))
            .ok_or_else(|| CudaError::MissingKernel(format!("{} {v:?}", w.ty)))?;
        if w.rows == 0 {
            return Ok(());
        }
        let (ctas, threads, split, smem, xsm) = if is_float(w.ty) {
            (w.rows.div_ceil(WARPS * v.rows), WARPS * 32, 0, 0, false)
        } else {
            let xsm = n == 1 && w.cols * 4 <= MAX_X_SMEM;
            let smem = quant_smem(w.ty, w.cols, v, xsm);
            let (ctas, split) = self.quant_plan(f, w, v, smem)?;
            (ctas, QWARPS * 32, split, smem, xsm)
        };
        let xp = dev_addr(&self.stream, x);
        let yp = dev_addr(&self.stream, y);
        self.launch(f, w, (xp, w.cols), n, (yp, w.rows), (ctas, threads, smem), split, xsm)
    }

    /// `y = W x` for one token on device addresses (the model runner's sub-vectors: a head
    /// group's slice of the attention output, one expert's input).
    ///
    /// # Safety
    /// `x` must address `cols` f32 and `y` `rows` f32 of live device memory of this stream's
    /// context, neither freed before the queued work completes, and `y` must not overlap `x`.
    pub unsafe fn run_raw(&self, w: &DeviceMatrix, x: u64, y: u64) -> Result<()> {
        if !x.is_multiple_of(16) {
            return Err(CudaError::Shape(format!("x at {x:#x} is not 16-byte aligned")));
        }
        let v = self.variant(w, 1);
        let f = self
            .funcs
            .get(&(w.ty, v.rows, v.tokens))
            .ok_or_else(|| CudaError::MissingKernel(format!("{} {v:?}", w.ty)))?;
        if w.rows == 0 {
            return Ok(());
        }
        let (ctas, threads, split, smem, xsm) = if is_float(w.ty) {
            (w.rows.div_ceil(WARPS * v.rows), WARPS * 32, 0, 0, false)
        } else {
            let xsm = w.cols * 4 <= MAX_X_SMEM;
            let smem = quant_smem(w.ty, w.cols, v, xsm);
            let (ctas, split) = self.quant_plan(f, w, v, smem)?;
            (ctas, QWARPS * 32, split, smem, xsm)
        };
        self.launch(f, w, (x, w.cols), 1, (y, w.rows), (ctas, threads, smem), split, xsm)
    }

    /// CTAs and split of a quantized launch (see [`Variant`]), after checking its shared
    /// memory.
    pub(super) fn quant_plan(
        &self,
        f: &CudaFunction,
        w: &DeviceMatrix,
        v: Variant,
        smem: usize,
    ) -> Result<(usize, usize)> {
        self.quant_plan_shape(f, w.rows, w.cols, v, smem)
    }

    /// [`Matvec::quant_plan`] for a product of `rows` rows of `cols` columns.
    pub(super) fn quant_plan_shape(
        &self,
        f: &CudaFunction,
        rows: usize,
        cols: usize,
        v: Variant,
        smem: usize,
    ) -> Result<(usize, usize)> {
        if smem > self.smem_optin {
            return Err(CudaError::Shape(format!(
                "{v:?} needs {smem} bytes of shared memory, the device allows {}",
                self.smem_optin
            )));
        }
        let threads = (QWARPS * 32) as u32;
        // The function handle identifies the kernel for the cache.
        let key = (f.cu_function() as u64, smem);
        let cached = self.occupancy.lock().ok().and_then(|m| m.get(&key).copied());
        let per_sm = match cached {
            Some(n) => n,
            None => {
                let n = f
                    .occupancy_max_active_blocks_per_multiprocessor(threads, smem, None)
                    .unwrap_or(1)
                    .max(1) as usize;
                if let Ok(mut m) = self.occupancy.lock() {
                    m.insert(key, n);
                }
                n
            }
        };
        let wave = per_sm * self.sm_count;
        let groups = rows.div_ceil(v.rows);
        let nsteps = cols.div_ceil(1024).max(1);
        // Split only as far as needed to give every resident warp a share.
        let want = if v.split == 0 {
            (wave * QWARPS).div_ceil(groups)
        } else {
            v.split
        };
        let split = prev_pow2(want.clamp(1, QWARPS).min(nsteps));
        let packs = groups.div_ceil(QWARPS / split);
        let ctas = if v.ctas == 0 { wave.min(packs) } else { v.ctas };
        Ok((ctas.max(1), split))
    }

    /// Queues one kernel with the MV_ARGS argument list (strides in elements).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn launch(
        &self,
        f: &CudaFunction,
        w: &DeviceMatrix,
        (x, x_stride): (u64, usize),
        n: usize,
        (y, y_stride): (u64, usize),
        (ctas, threads, smem): (usize, usize, usize),
        split: usize,
        xsm: bool,
    ) -> Result<()> {
        let cfg = LaunchConfig {
            grid_dim: (ctas as u32, 1, 1),
            block_dim: (threads as u32, 1, 1),
            shared_mem_bytes: smem as u32,
        };
        let weights = w.buf.cuda_slice().slice(w.offset..w.offset + w.num_bytes());
        let row_bytes = w.row_bytes() as i64;
        let (rows, cols) = (w.rows as i32, w.cols as i32);
        let (x_stride, y_stride) = (x_stride as i64, y_stride as i64);
        let n = n as i32;
        let split = split as i32;
        let xsm = xsm as i32;
        let grid = self.iq2_grid.view();
        let mut launch = self.stream.launch_builder(f);
        launch
            .arg(&weights)
            .arg(&row_bytes)
            .arg(&rows)
            .arg(&cols)
            .arg(&x)
            .arg(&x_stride)
            .arg(&y)
            .arg(&y_stride)
            .arg(&n)
            .arg(&grid)
            .arg(&split)
            .arg(&xsm);
        // SAFETY: the argument list matches MV_ARGS in matvec.cu; callers checked the shapes,
        // the weights lie inside their buffer (DeviceMatrix::view) whose allocation covers the
        // 16-byte line after them (ALLOC_ALIGN), and every buffer outlives the launch on this
        // stream (they are borrowed for the call and freed only through it).
        unsafe { launch.launch(cfg) }?;
        Ok(())
    }

    /// `y = W x` with the official numerics: `acts` holds `x` quantized the way `W`'s type
    /// needs (ds4's Q8_0-like blocks for Q8_0, Q8_K for Q2_K, Q4_K, IQ2_XXS), as the bytes
    /// [`pack_acts`] makes. Matches `dsv4_quant::matvec_acts` (and `dot_q`) to f32 rounding:
    /// the integer block sums are exact, only the order of the f32 additions differs.
    pub fn run_q(
        &self,
        w: &DeviceMatrix,
        acts: &DeviceBuffer<u8>,
        y: &mut DeviceBuffer<f32>,
    ) -> Result<()> {
        let need = act_bytes(w.ty, w.cols)?;
        if acts.len() != need {
            return Err(CudaError::Shape(format!(
                "{} activation bytes, {} columns of {} need {need}",
                acts.len(),
                w.cols,
                w.ty
            )));
        }
        if y.len() != w.rows {
            return Err(CudaError::Shape(format!(
                "y has {} elements, {} rows",
                y.len(),
                w.rows
            )));
        }
        let f = self
            .funcs_q
            .get(&w.ty)
            .ok_or(CudaError::UnsupportedType(w.ty))?;
        if w.rows == 0 {
            return Ok(());
        }
        let v = Variant {
            rows: 2,
            tokens: 1,
            split: 0,
            ctas: 0,
        };
        let grid = if w.ty == GgmlType::IQ2_XXS {
            256 * 8
        } else {
            0
        };
        let smem = grid
            + part_bytes(v)
            + need.next_multiple_of(16)
            + QWARPS * 4 * v.rows * stage_buf(w.ty);
        let (ctas, split) = self.quant_plan(f, w, v, smem)?;
        let (ap, yp) = (dev_addr(&self.stream, acts), dev_addr(&self.stream, y));
        self.launch(
            f,
            w,
            (ap, w.cols),
            1,
            (yp, w.rows),
            (ctas, QWARPS * 32, smem),
            split,
            false,
        )
    }
}

/// The device address of a buffer's first element (kernel arguments are plain addresses).
pub(crate) fn dev_addr<T>(stream: &Arc<CudaStream>, b: &DeviceBuffer<T>) -> u64 {
    // With event tracking off (`Gpu::new`) the guard records nothing.
    let (p, _guard) = b.slice.device_ptr(stream);
    p
}

/// Bytes of `cols` activations quantized for weights of type `ty` (Q8_0: 36 per 32 columns,
/// f32 scale then 32 int8; Q2_K, Q4_K, IQ2_XXS: Q8_K, 292 per 256 columns, f32 scale, 256
/// int8, 16 int16 block sums), the layout of ds4's C structs.
pub fn act_bytes(ty: GgmlType, cols: usize) -> Result<usize> {
    row_bytes(ty, cols)?;
    match ty {
        GgmlType::Q8_0 => Ok(cols / 32 * 36),
        GgmlType::Q2_K | GgmlType::Q4_K | GgmlType::IQ2_XXS => Ok(cols / 256 * 292),
        other => Err(CudaError::UnsupportedType(other)),
    }
}

/// The device bytes of quantized activations (little-endian, ds4's block layouts).
pub fn pack_acts(acts: &QuantizedActs) -> Vec<u8> {
    let mut out = Vec::new();
    match acts {
        QuantizedActs::F32(x) => x
            .iter()
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        QuantizedActs::Q8_0(blocks) => {
            for b in blocks {
                out.extend_from_slice(&b.d.to_le_bytes());
                out.extend(b.qs.iter().map(|&q| q as u8));
            }
        }
        QuantizedActs::Q8K(blocks) => {
            for b in blocks {
                out.extend_from_slice(&b.d.to_le_bytes());
                out.extend(b.qs.iter().map(|&q| q as u8));
                b.bsums
                    .iter()
                    .for_each(|s| out.extend_from_slice(&s.to_le_bytes()));
            }
        }
    }
    out
}
