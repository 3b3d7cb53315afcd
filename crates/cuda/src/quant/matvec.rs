//! Host side of `matvec.cu`: `y = W x` and `Y = W X` (up to [`MAX_BATCH`] tokens) with `W` in
//! its GGUF layout and f32 activations, the plain numerics of `dsv4_quant::matvec`.
//!
//! Agreement with the CPU: the kernels dequantize every weight exactly as `dsv4_quant` does,
//! but factor block scales out of the inner sums and add in another order (per lane, then a
//! warp butterfly), and contract multiply-adds into FMAs. Results are deterministic (same
//! inputs, same bits, on a given GPU) and match the CPU within f32 rounding: the tests hold
//! the relative L2 error of each output vector under 1e-5 (see `tests/matvec.rs`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use cudarc::driver::sys::{CUdevice_attribute, CUfunction_attribute};
use cudarc::driver::{CudaFunction, CudaStream, DevicePtr};
use dsv4_gguf::GgmlType;
use dsv4_quant::QuantizedActs;

use crate::buffer::DeviceBuffer;
use crate::device::Gpu;
use crate::error::{CudaError, Result};
use crate::kernels;
use crate::launch::Queue;

/// Largest token count of one [`Matvec::run_batch`] call.
pub const MAX_BATCH: usize = 16;

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
/// Fewest rows for which one-token quantized products use groups of 4 rows (measured on the
/// H100: 4 beat 2 from 2048 rows up, tied at 1024, lost at 512).
pub(super) const GROUP4_MIN_ROWS: usize = 2048;
/// Rows per group of the quantized-activation kernels (`mvq_<type>_g<G>`), one token.
const QACT_GROUPS: &[usize] = &[2, 4];
/// Token capacities of the several-token quantized-activation kernels
/// (`mvq_<type>_g2_n<NT>`).
pub(super) const QACT_TOKENS: &[usize] = &[2, 4, 8, 16];

/// Picks per entry of the grouped expert kernels: 16 (`mvg[q]_<type>_n16`, groups of 2 rows,
/// tables written once by the host) and 4 (`mvg[q]_<type>_g4_n4`, groups of 4 rows, tables
/// written on the device by the routing's grouping; see `matvec.cu`).
pub const GROUPED_TOKENS: &[usize] = &[4, 16];

/// Rows per group of the grouped kernel with `nt` picks per entry.
pub(super) fn grouped_rows(nt: usize) -> usize {
    if nt == 4 {
        4
    } else {
        2
    }
}

fn grouped_symbol(name: &str, qacts: bool, nt: usize) -> String {
    let q = if qacts { "q" } else { "" };
    if grouped_rows(nt) == 4 {
        format!("mvg{q}_{name}_g4_n{nt}")
    } else {
        format!("mvg{q}_{name}_n{nt}")
    }
}

fn qact_symbol(name: &str, g: usize, nt: usize) -> String {
    if nt == 1 {
        format!("mvq_{name}_g{g}")
    } else {
        format!("mvq_{name}_g{g}_n{nt}")
    }
}

/// The (rows per group, tokens) shapes of the quantized-activation kernels.
fn qact_shapes() -> impl Iterator<Item = (usize, usize)> {
    QACT_GROUPS.iter().map(|&g| (g, 1)).chain(QACT_TOKENS.iter().map(|&t| (2, t)))
}
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
        .flat_map(|(_, name)| qact_shapes().map(move |(g, nt)| qact_symbol(name, g, nt)));
    let slots = TYPES
        .iter()
        .flat_map(|&(ty, name)| slot_kernels(ty, name).into_iter().map(|(_, s)| s));
    let grouped = TYPES.iter().filter(|(ty, _)| !is_float(*ty)).flat_map(|(_, name)| {
        [false, true].into_iter().flat_map(move |qa| GROUPED_TOKENS.iter().map(move |&nt| grouped_symbol(name, qa, nt)))
    });
    plain.chain(qact).chain(slots).chain(grouped).collect()
}

/// The expert-slot kernels of a type, keyed by (quantized activations, rows per group):
/// `mvx_<float type>` (rows per warp 2), `mvx[q]_<type>_g{2,4}`.
fn slot_kernels(ty: GgmlType, name: &str) -> Vec<((bool, usize), String)> {
    if is_float(ty) {
        return vec![((false, 2), format!("mvx_{name}"))];
    }
    let mut out = Vec::new();
    for qa in [false, true] {
        for g in QACT_GROUPS {
            out.push(((qa, *g), format!("mvx{}_{name}_g{g}", if qa { "q" } else { "" })));
        }
    }
    out
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
    /// Quantized-activation kernels (`mvq_<type>_g<G>[_n<NT>]`) by (type, G, NT), quantized
    /// weight types only.
    pub(super) funcs_q: HashMap<(GgmlType, usize, usize), CudaFunction>,
    /// Expert-slot kernels (`mvx_<type>`, `mvx[q]_<type>_g<G>`, see `experts.rs`), by (type,
    /// quantized activations, rows per group).
    pub(super) funcs_x: HashMap<(GgmlType, bool, usize), CudaFunction>,
    /// Grouped expert kernels (`mvg[q]_<type>_n<NT>`, see `experts.rs`), by (type, quantized
    /// activations, picks per entry).
    pub(super) funcs_g: HashMap<(GgmlType, bool, usize), CudaFunction>,
    /// IQ2_XXS selector tables (see [`iq2_tables`]), read into shared memory per CTA.
    pub(super) iq2_tab: DeviceBuffer<u32>,
    /// Several tokens' official Q8_0 products on the tensor cores (`mmq.rs`).
    pub(super) mmq_q8_0: CudaFunction,
    pub(super) sm_count: usize,
    /// Most shared memory one CTA may have on this device.
    pub(super) smem_optin: usize,
    /// Resident CTAs per SM by (kernel, dynamic shared memory): the driver's occupancy query
    /// costs microseconds, and the model runner launches the same few shapes every token.
    pub(super) occupancy: Mutex<HashMap<(u64, usize), usize>>,
    /// Launches are programmatic dependent launches (`launch.rs`): on by default where the
    /// device has them (sm_90+), never elsewhere.
    pub(super) overlap: AtomicBool,
    overlap_ok: bool,
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
        let mut funcs_g = HashMap::new();
        // All of a quantized kernel's shared memory is dynamic: allow what the device allows
        // (each launch asks only for what it needs).
        let load = |sym: &str, quantized: bool| -> Result<CudaFunction> {
            let f = module.load_function(sym).map_err(|_| CudaError::MissingKernel(sym.to_owned()))?;
            if quantized {
                f.set_attribute(CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, smem_optin)?;
            }
            Ok(f)
        };
        for &(ty, name) in TYPES {
            for &(r, nt) in variants(ty) {
                funcs.insert((ty, r, nt), load(&symbol(ty, name, r, nt), !is_float(ty))?);
            }
            for (g, nt) in qact_shapes().filter(|_| !is_float(ty)) {
                funcs_q.insert((ty, g, nt), load(&qact_symbol(name, g, nt), true)?);
            }
            for ((qa, g), sym) in slot_kernels(ty, name) {
                funcs_x.insert((ty, qa, g), load(&sym, !is_float(ty))?);
            }
            for qa in [false, true].into_iter().filter(|_| !is_float(ty)) {
                for &nt in GROUPED_TOKENS {
                    funcs_g.insert((ty, qa, nt), load(&grouped_symbol(name, qa, nt), true)?);
                }
            }
        }
        let iq2_tab = gpu.upload(&iq2_tables())?;
        let mmq = gpu.load_module(&kernels::MMQ)?;
        let mmq_q8_0 = mmq.load_function("mmq_q8_0").map_err(|_| CudaError::MissingKernel("mmq_q8_0".into()))?;
        mmq_q8_0.set_attribute(CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, smem_optin)?;
        Ok(Matvec {
            stream: gpu.stream().clone(),
            funcs,
            funcs_q,
            funcs_x,
            funcs_g,
            iq2_tab,
            mmq_q8_0,
            sm_count: gpu.sm_count(),
            smem_optin: smem_optin.max(0) as usize,
            occupancy: Mutex::new(HashMap::new()),
            overlap: AtomicBool::new(gpu.compute_capability().0 >= 9),
            overlap_ok: gpu.compute_capability().0 >= 9,
        })
    }

    /// Whether launches overlap the previous kernel's end (see `launch.rs`); the model's own
    /// kernels follow the same choice.
    pub fn overlap(&self) -> bool {
        self.overlap.load(Ordering::Relaxed)
    }

    /// This matvec's own stream, launches overlapping where allowed: where every entry point
    /// but the raw step ones (which take theirs) queues its kernels.
    pub fn queue(&self) -> Queue<'_> {
        Queue { stream: &self.stream, overlap: true }
    }

    /// Asks for overlapping launches (taken only where the device has them) or plain ones.
    pub fn set_overlap(&self, on: bool) {
        self.overlap.store(on && self.overlap_ok, Ordering::Relaxed);
    }

    /// The variant a product of `w` over `n` tokens runs (with f32 activations; the official
    /// numerics take the same group size).
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
        // One token: groups of 4 rows where there are rows to spare (each activation load
        // then serves 4 rows, and each copy stage carries twice the bytes); small matrices
        // keep groups of 2, which spread over more warps.
        let rows = if n <= 1 && w.rows >= GROUP4_MIN_ROWS { 4 } else { 2 };
        Variant {
            rows,
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
        let (xp, yp) = (dev_addr(&self.stream, x), dev_addr(&self.stream, y));
        // SAFETY: x and y are live buffers of this stream, borrowed for the call, holding
        // exactly n tokens (checked above).
        unsafe { self.products(w, (xp, w.cols), n, (yp, w.rows), Some(v)) }
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
        // SAFETY: the caller's obligations are those of products.
        unsafe { self.products(w, (x, w.cols), 1, (y, w.rows), None) }
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
        // SAFETY: acts and y are live buffers of this stream, borrowed for the call, and
        // their sizes were checked above.
        unsafe {
            self.run_q_raw(
                w,
                dev_addr(&self.stream, acts),
                dev_addr(&self.stream, y),
            )
        }
    }

    /// [`Matvec::run_q`] with an explicit variant (tests and benchmarks): `v.rows` 2 or 4,
    /// `v.tokens` 1.
    pub fn run_q_variant(
        &self,
        w: &DeviceMatrix,
        acts: &DeviceBuffer<u8>,
        y: &mut DeviceBuffer<f32>,
        v: Variant,
    ) -> Result<()> {
        if acts.len() != act_bytes(w.ty, w.cols)? || y.len() != w.rows || v.tokens != 1 {
            return Err(CudaError::Shape(format!("official product of {} rows with {v:?}", w.rows)));
        }
        let f = self
            .funcs_q
            .get(&(w.ty, v.rows, 1))
            .ok_or_else(|| CudaError::MissingKernel(format!("{} official {v:?}", w.ty)))?;
        if w.rows == 0 {
            return Ok(());
        }
        let l = self.plan(f, w, v, 1, 1, true)?;
        let (ap, yp) = (dev_addr(&self.stream, acts), dev_addr(&self.stream, y));
        self.launch(f, w, (ap, w.cols), 1, (yp, w.rows), l, None, self.queue())
    }

    /// The quantized-activation kernel and variant for `w`: groups of 4 rows where rows are
    /// plentiful (as [`Matvec::variant`] chooses for f32 activations), else of 2.
    pub(super) fn qact_kernel(&self, w: &DeviceMatrix) -> Result<(&CudaFunction, Variant)> {
        let v = self.variant(w, 1);
        let f = self
            .funcs_q
            .get(&(w.ty, v.rows, 1))
            .ok_or(CudaError::UnsupportedType(w.ty))?;
        Ok((f, v))
    }
}

/// The IQ2_XXS tables of `matvec.cu` (`iq2_octet`): for each of the 256 grid entries, its
/// eight level indices as PRMT selector nibbles (element e in bits 4e..4e+1); then for each
/// of the 128 sign indices, its eight signs (the eighth from the parity) as bit 2 of the
/// same nibbles, so that OR-ing one of each selects the signed level of every element.
pub fn iq2_tables() -> Vec<u32> {
    use dsv4_quant::iq2_xxs::tables::{KGRID, KSIGNS};
    let grid = KGRID.iter().map(|&g| {
        (0..8).fold(0u32, |acc, e| acc | (((g as u32 >> (2 * e)) & 3) << (4 * e)))
    });
    let signs = KSIGNS.iter().map(|&s| {
        (0..8).fold(0u32, |acc, e| acc | (((s as u32 >> e) & 1) << (4 * e + 2)))
    });
    grid.chain(signs).collect()
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
