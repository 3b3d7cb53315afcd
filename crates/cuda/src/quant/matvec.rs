//! Host side of `matvec.cu`: `y = W x` and `Y = W X` (up to [`MAX_BATCH`] tokens) with `W` in
//! its GGUF layout and f32 activations, the plain numerics of `dsv4_quant::matvec`.
//!
//! Agreement with the CPU: the kernels dequantize every weight exactly as `dsv4_quant` does,
//! but factor block scales out of the inner sums and add in another order (per lane, then a
//! warp butterfly), and contract multiply-adds into FMAs. Results are deterministic (same
//! inputs, same bits, on a given GPU) and match the CPU within f32 rounding: the tests hold
//! the relative L2 error of each output vector under 1e-5 (see `tests/matvec.rs`).

use std::collections::HashMap;
use std::sync::Arc;

use cudarc::driver::{CudaFunction, CudaStream, LaunchConfig, PushKernelArg};
use dsv4_gguf::GgmlType;

use crate::buffer::DeviceBuffer;
use crate::device::Gpu;
use crate::error::{CudaError, Result};
use crate::kernels;

/// Largest token count of one [`Matvec::run_batch`] call.
pub const MAX_BATCH: usize = 16;

/// Threads per CTA, as `MV_THREADS` in `matvec.cu` (four warps).
const THREADS: u32 = 128;
const WARPS: usize = 4;

/// The types with kernels, and their names in the kernel symbols.
const TYPES: &[(GgmlType, &str)] = &[
    (GgmlType::F32, "f32"),
    (GgmlType::F16, "f16"),
    (GgmlType::Q8_0, "q8_0"),
    (GgmlType::Q2_K, "q2_k"),
    (GgmlType::Q4_K, "q4_k"),
    (GgmlType::IQ2_XXS, "iq2_xxs"),
];

/// `(rows per warp, tokens)` of every compiled variant, as instantiated in `matvec.cu`.
const VARIANTS: &[(usize, usize)] = &[(1, 1), (2, 1), (4, 1), (2, 4), (2, 8), (2, 16)];

/// Every kernel symbol `matvec.cu` must define (the compile check looks for each in the CUBIN).
pub fn kernel_names() -> Vec<String> {
    TYPES
        .iter()
        .flat_map(|&(_, name)| VARIANTS.iter().map(move |&(r, nt)| format!("mv_{name}_r{r}_n{nt}")))
        .collect()
}

fn type_name(ty: GgmlType) -> Result<&'static str> {
    TYPES.iter().find(|(t, _)| *t == ty).map(|(_, n)| *n).ok_or(CudaError::UnsupportedType(ty))
}

/// A weight matrix in device memory: `rows` rows of `cols` elements of `ty`, each row
/// `cols / block_elems * block_bytes` bytes, rows contiguous (GGUF's `ne = [cols, rows]`).
/// It may be a window into a larger buffer (one expert of a stacked expert tensor).
#[derive(Clone, Debug)]
pub struct DeviceMatrix {
    buf: Arc<DeviceBuffer<u8>>,
    offset: usize,
    ty: GgmlType,
    rows: usize,
    cols: usize,
}

/// Bytes of one row, checking that `cols` suits the type's kernels.
pub fn row_bytes(ty: GgmlType, cols: usize) -> Result<usize> {
    type_name(ty)?;
    let block = ty.block_elems();
    if !cols.is_multiple_of(block) {
        return Err(CudaError::Shape(format!("{ty} row of {cols} columns is not a whole number of {block}-column blocks")));
    }
    // The float kernels give each lane 16 bytes of a row.
    let lane_cols = match ty {
        GgmlType::F32 => 4,
        GgmlType::F16 => 8,
        _ => 1,
    };
    if !cols.is_multiple_of(lane_cols) {
        return Err(CudaError::Shape(format!("{ty} rows need a multiple of {lane_cols} columns, got {cols}")));
    }
    if cols > i32::MAX as usize {
        return Err(CudaError::Shape(format!("{cols} columns")));
    }
    Ok(cols / block * ty.block_bytes())
}

impl DeviceMatrix {
    /// Uploads `bytes` (exactly `rows` rows of `cols` elements of `ty`) into its own buffer.
    pub fn upload(gpu: &Gpu, ty: GgmlType, rows: usize, cols: usize, bytes: &[u8]) -> Result<Self> {
        let need = row_bytes(ty, cols)?.checked_mul(rows).ok_or_else(|| CudaError::Shape("size overflows".into()))?;
        if bytes.len() != need {
            return Err(CudaError::Shape(format!("{rows}x{cols} {ty} needs {need} bytes, got {}", bytes.len())));
        }
        Self::view(Arc::new(gpu.upload(bytes)?), 0, ty, rows, cols)
    }

    /// The matrix stored at byte `offset` of `buf`. The offset must be 16-byte aligned (GGUF
    /// tensor data is 32-byte aligned, and stacked experts are whole matrices apart).
    pub fn view(buf: Arc<DeviceBuffer<u8>>, offset: usize, ty: GgmlType, rows: usize, cols: usize) -> Result<Self> {
        let rb = row_bytes(ty, cols)?;
        if rows > i32::MAX as usize {
            return Err(CudaError::Shape(format!("{rows} rows")));
        }
        if !offset.is_multiple_of(16) {
            return Err(CudaError::Shape(format!("matrix offset {offset} is not 16-byte aligned")));
        }
        let end = rb.checked_mul(rows).and_then(|b| b.checked_add(offset));
        if end.is_none_or(|e| e > buf.len()) {
            return Err(CudaError::Shape(format!("{rows}x{cols} {ty} at offset {offset} overruns a buffer of {} bytes", buf.len())));
        }
        Ok(DeviceMatrix { buf, offset, ty, rows, cols })
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
    stream: Arc<CudaStream>,
    funcs: HashMap<(GgmlType, usize, usize), CudaFunction>,
    /// IQ2_XXS magnitude octets (`dsv4_quant`'s table), read into shared memory per CTA.
    iq2_grid: DeviceBuffer<u64>,
    sm_count: usize,
}

/// Which compiled variant a call uses: rows per warp and token capacity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Variant {
    pub rows_per_warp: usize,
    pub tokens: usize,
}

impl Matvec {
    /// Compiles (or takes from the cache) and loads `matvec.cu` on `gpu`.
    pub fn new(gpu: &Gpu) -> Result<Self> {
        let module = gpu.load_module(&kernels::MATVEC)?;
        let mut funcs = HashMap::new();
        for &(ty, name) in TYPES {
            for &(r, nt) in VARIANTS {
                let sym = format!("mv_{name}_r{r}_n{nt}"); // as kernel_names()
                let f = module.load_function(&sym).map_err(|_| CudaError::MissingKernel(sym.clone()))?;
                funcs.insert((ty, r, nt), f);
            }
        }
        let iq2_grid = gpu.upload(&dsv4_quant::iq2_xxs::tables::GRID)?;
        Ok(Matvec { stream: gpu.stream().clone(), funcs, iq2_grid, sm_count: gpu.sm_count() })
    }

    /// The variant a product of `rows` rows over `n` tokens runs. One token: the most rows
    /// per warp that still leaves at least 8 warps per SM (more rows per warp reuse each
    /// activation load more; more warps keep more loads in flight). Several tokens: two rows
    /// per warp and the smallest token capacity that holds `n`.
    pub fn variant(&self, rows: usize, n: usize) -> Variant {
        if n <= 1 {
            let min_warps = 8 * self.sm_count;
            let rows_per_warp = [4, 2].into_iter().find(|&r| rows / r >= min_warps).unwrap_or(1);
            return Variant { rows_per_warp, tokens: 1 };
        }
        let tokens = [4, 8, 16].into_iter().find(|&t| t >= n).unwrap_or(MAX_BATCH);
        Variant { rows_per_warp: 2, tokens }
    }

    /// `y = W x`: `x` has `cols` elements, `y` gets `rows`.
    pub fn run(&self, w: &DeviceMatrix, x: &DeviceBuffer<f32>, y: &mut DeviceBuffer<f32>) -> Result<()> {
        self.run_batch(w, x, 1, y)
    }

    /// `Y = W X` for `n <= MAX_BATCH` tokens, reading `W` once: `x` holds the tokens'
    /// activations one after another (`n * cols`), `y` gets their outputs the same way
    /// (`n * rows`).
    pub fn run_batch(&self, w: &DeviceMatrix, x: &DeviceBuffer<f32>, n: usize, y: &mut DeviceBuffer<f32>) -> Result<()> {
        let v = self.variant(w.rows, n);
        self.run_variant(w, x, n, y, v)
    }

    /// [`Matvec::run_batch`] with an explicit variant (for benchmarks and tests of every
    /// variant). `v` must be one of the compiled ones, with `v.tokens >= n`.
    pub fn run_variant(&self, w: &DeviceMatrix, x: &DeviceBuffer<f32>, n: usize, y: &mut DeviceBuffer<f32>, v: Variant) -> Result<()> {
        if n == 0 || n > MAX_BATCH || n > v.tokens {
            return Err(CudaError::Shape(format!("{n} tokens for a variant of {} (at most {MAX_BATCH})", v.tokens)));
        }
        if x.len() != n * w.cols {
            return Err(CudaError::Shape(format!("x has {} elements, {n} tokens of {} columns need {}", x.len(), w.cols, n * w.cols)));
        }
        if y.len() != n * w.rows {
            return Err(CudaError::Shape(format!("y has {} elements, {n} tokens of {} rows need {}", y.len(), w.rows, n * w.rows)));
        }
        let f = self
            .funcs
            .get(&(w.ty, v.rows_per_warp, v.tokens))
            .ok_or_else(|| CudaError::MissingKernel(format!("{} r{} n{}", w.ty, v.rows_per_warp, v.tokens)))?;
        if w.rows == 0 {
            return Ok(());
        }
        let rows_per_cta = WARPS * v.rows_per_warp;
        let cfg = LaunchConfig {
            grid_dim: (w.rows.div_ceil(rows_per_cta) as u32, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let weights = w.buf.cuda_slice().slice(w.offset..w.offset + w.num_bytes());
        let row_bytes = w.row_bytes() as i64;
        let (rows, cols) = (w.rows as i32, w.cols as i32);
        let (x_stride, y_stride) = (w.cols as i64, w.rows as i64);
        let n = n as i32;
        let xv = x.view();
        let mut yv = y.view_mut();
        let grid = self.iq2_grid.view();
        let mut launch = self.stream.launch_builder(f);
        launch
            .arg(&weights)
            .arg(&row_bytes)
            .arg(&rows)
            .arg(&cols)
            .arg(&xv)
            .arg(&x_stride)
            .arg(&mut yv)
            .arg(&y_stride)
            .arg(&n)
            .arg(&grid);
        // SAFETY: the argument list matches MV_ARGS in matvec.cu; the shapes were checked
        // above, the weights lie inside their buffer (DeviceMatrix::view) whose allocation
        // covers the 16-byte line after them (ALLOC_ALIGN), and every buffer outlives the
        // launch on this stream (they are borrowed for the call and freed only through it).
        unsafe { launch.launch(cfg) }?;
        Ok(())
    }
}
