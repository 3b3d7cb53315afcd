//! The whole DeepSeek V4 forward pass on one GPU, checked against `dsv4_model`'s CPU
//! reference (`tests/forward.rs`).
//!
//! [`GpuModel::load`] uploads a loaded [`Model`](dsv4_model::Model)'s weights once, in their
//! GGUF layouts; [`GpuModel::new_state`] makes a session ([`GpuState`]: the raw windows,
//! compressed rows and compressor frontiers of every layer, plus scratch), and
//! [`GpuModel::forward`] feeds it tokens, in chunks of up to 512 (`state::CHUNK`): per layer
//! the weight products of a chunk read each matrix once (tokens grouped by expert in the MoE,
//! every expert in one launch under the official numerics), while the steps that depend on earlier tokens (raw-window push, compressors,
//! indexer, attention) run token by token in order. `model/io.rs` moves states to and from
//! the CPU types (checkpoints, rewinds, forks, the disk cache).
//!
//! Numerics: both of [`Numerics`](dsv4_model::Numerics). `Plain` is f32 everywhere with the
//! weights decoded exactly; `Official` adds the FP8/BF16 KV rows, the Hadamard + FP4 indexer
//! and quantized activations in the quantized-weight products (`model/numerics.cu`).
//!
//! Every reduction has a fixed order (no float atomics), so a run is deterministic on a given
//! GPU and chunking.
//!
//! Single-token calls (decode) take the step path (`model/step.rs`), one session alone or
//! several together ([`GpuModel::forward_step`], continuous batching): every value that
//! changes from step to step (the token ids, the positions, the sessions' buffer addresses,
//! and what follows from them: ring slots, row counts, which rows are emitted) is read by the
//! kernels from small buffers uploaded before the step, so the launches of a step of n
//! sessions are the same every time and run as one CUDA graph, captured on first use and
//! cached in the model. The only host wait is the logits download. [`DecodeOptions`] selects
//! the path.

mod attn;
mod attn_chunk;
mod ffn;
mod forward;
mod io;
mod probe;
mod state;
mod step;
mod step_batch;
mod weights;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use cudarc::driver::sys::{CUdevice_attribute, CUfunction_attribute};
use cudarc::driver::{CudaFunction, CudaStream};
use dsv4_model::ModelConfig;

use crate::device::Gpu;
use crate::error::{CudaError, Result};
use crate::kernels::MODEL_KERNELS;
use crate::launch::launch_ex;
pub(crate) use crate::launch::Arg;
use crate::quant::{Matmul, Matvec};

pub use state::{state_scratch_bytes, GpuState, CHUNK as PREFILL_CHUNK};
pub use step_batch::{step_batch_bytes, MAX_STEP_BATCH, PICK_CAP};
use weights::Layer;

/// How single-token calls run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Decode {
    /// The step path captured once per batch size as a CUDA graph and replayed (the default).
    #[default]
    Graph,
    /// The step path's kernels launched one by one (the graph's reference).
    Eager,
    /// The multi-token path with one token, launches depending on the position (the decode of
    /// earlier versions, for comparisons).
    Chunk,
}

/// Run-time choices of a [`GpuModel`] that do not change its results beyond rounding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DecodeOptions {
    pub decode: Decode,
    /// Chunk path only: read the chosen experts back to the host and launch each one
    /// separately (the path before device-side expert selection, for comparisons).
    pub host_experts: bool,
    /// Launch every kernel only after the previous one has finished, as on devices before
    /// sm_90 (for comparisons): by default, kernels are programmatic dependent launches where
    /// the device has them (`launch.rs`).
    pub serial_launches: bool,
    /// How a decode step of several sessions reads the routed experts.
    pub experts: ExpertReads,
    /// Where a decode step of several sessions runs its dense Q8_0 products.
    pub dense: DenseProducts,
}

/// Where a decode step of several sessions runs its dense Q8_0 products under the official
/// numerics (`model/step.rs`). Both give each session the bits of its one-token products.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DenseProducts {
    /// The int8 tensor cores (`quant/mmq.cu`) from `MMQ_MIN_TOKENS` sessions on: each
    /// weight byte read once for up to 32 sessions, the blocks' integer sums from MMAs (the
    /// default; bench/README.md, v18).
    #[default]
    TensorCores,
    /// The CUDA cores' several-token dp4a kernels (`quant/matvec.cu`), for comparisons.
    CudaCores,
}

/// How a decode step of several sessions reads the routed experts (`model/step.rs`). Either
/// way each session gets the bits it gets alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ExpertReads {
    /// Grouped where the step's sessions are expected to share enough experts.
    #[default]
    Auto,
    /// Once per (session, pick).
    Slots,
    /// Grouped by expert on the device, each expert read once for up to 4 of its picks,
    /// whenever the step has several sessions.
    Grouped,
}

/// A model resident on one GPU.
pub struct GpuModel {
    cfg: ModelConfig,
    stream: Arc<CudaStream>,
    /// A second stream for the decode step's branches (`model/step.rs`); it joins `stream`
    /// again within each layer.
    side: Arc<CudaStream>,
    mv: Matvec,
    /// Tensor-core products of many tokens (official numerics).
    mt: Matmul,
    k: Kernels,
    w: weights::Globals,
    layers: Vec<Layer>,
    opts: DecodeOptions,
    /// Every layer's routed experts are stacked in one buffer per projection (what the step
    /// path's expert launches need), checked once at load.
    experts_stacked: bool,
    /// The decode step's scratch and captured graphs (`model/step.rs`), one step at a time.
    batch: Mutex<step_batch::StepBatch>,
    /// A prefill chunk's intermediates (`model/state.rs`), one chunk at a time, made by the
    /// first [`GpuModel::new_state`] and grown by a later one whose capacity needs longer
    /// indexer rows.
    prefill: Mutex<Option<state::Scratch>>,
    /// Page-locked staging for state downloads (`model/io.rs`), made by the first one.
    staging: Mutex<Option<cudarc::driver::PinnedHostSlice<f32>>>,
    /// Kernels queued so far (both kinds: the model's and the matvec's), for launch counts.
    launches: AtomicU64,
    /// Per-operation times while profiling (benchmarks only; see [`GpuModel::set_profiling`]).
    prof: Mutex<Option<HashMap<String, (u64, f64)>>>,
}


/// The model kernels of one device, by name.
struct Kernels {
    funcs: HashMap<&'static str, CudaFunction>,
    /// Most dynamic shared memory one block of the kernels in [`LARGE_SMEM`] may ask for.
    smem_optin: usize,
}

/// Kernels whose blocks may hold more than the default 48 KiB of shared memory.
const LARGE_SMEM: &[&str] = &["attend_chunk_mma"];

impl Kernels {
    fn new(gpu: &Gpu) -> Result<Kernels> {
        // The static shared memory of those kernels (a few hundred bytes) counts against the
        // device's limit too.
        let optin = gpu.context().attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)?;
        let smem_optin = (optin.max(0) as usize).saturating_sub(1024);
        let mut funcs = HashMap::new();
        for (src, names) in MODEL_KERNELS {
            let module = gpu.load_module(src)?;
            for &name in *names {
                let f = module.load_function(name).map_err(|_| CudaError::MissingKernel(name.into()))?;
                if LARGE_SMEM.contains(&name) {
                    f.set_attribute(CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, smem_optin as i32)?;
                }
                funcs.insert(name, f);
            }
        }
        Ok(Kernels { funcs, smem_optin })
    }

    /// Queues kernel `name` on `stream`.
    ///
    /// Safety (upheld by every caller in this module): `args` match the kernel's parameter
    /// list in type and order, and every address points into a live buffer of the model or
    /// of the state, large enough for what the kernel touches given the size arguments.
    #[allow(clippy::too_many_arguments)] // one per launch parameter of cuLaunchKernelEx
    fn launch(&self, stream: &Arc<CudaStream>, name: &str, grid: (usize, usize, usize), block: usize, smem: usize, args: &[Arg], overlap: bool) -> Result<()> {
        let f = self.funcs.get(name).ok_or_else(|| CudaError::MissingKernel(name.into()))?;
        let grid = (grid.0.max(1) as u32, grid.1.max(1) as u32, grid.2.max(1) as u32);
        // SAFETY: see the function's contract above; every model kernel starts with
        // DSV4_GRID_ENTRY, the condition of `overlap`.
        unsafe { launch_ex(stream, f, grid, block as u32, smem as u32, args, overlap) }
    }
}

impl GpuModel {
    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    pub fn options(&self) -> DecodeOptions {
        self.opts
    }

    /// Takes effect from the next call.
    pub fn set_options(&mut self, opts: DecodeOptions) {
        if opts.serial_launches != self.opts.serial_launches {
            self.mv.set_overlap(!opts.serial_launches);
        }
        // Graphs keep the launches' attributes and kernels from their capture.
        if (opts.serial_launches, opts.experts, opts.dense) != (self.opts.serial_launches, self.opts.experts, self.opts.dense) {
            if let Ok(b) = self.batch.get_mut() {
                b.graphs.clear();
            }
        }
        self.opts = opts;
    }

    /// Kernel launches queued since the model was loaded (a graph replay counts as none; its
    /// kernels were counted once, when it was captured).
    pub fn launch_count(&self) -> u64 {
        self.launches.load(Ordering::Relaxed)
    }

    fn counted(&self, n: u64) {
        self.launches.fetch_add(n, Ordering::Relaxed);
    }

    /// Turns per-operation profiling on (clearing what was gathered) or off. While on, every
    /// kernel launch and weight product synchronizes both streams before and after itself and
    /// adds its host wall time to its label: a breakdown for benchmarks, at the cost of a
    /// synchronization per operation (small operations read high; the decode step's branches
    /// run one after another).
    pub fn set_profiling(&self, on: bool) {
        if let Ok(mut p) = self.prof.lock() {
            *p = on.then(HashMap::new);
        }
    }

    /// What profiling gathered: (label, calls, seconds), longest first.
    pub fn profile(&self) -> Vec<(String, u64, f64)> {
        let mut v: Vec<(String, u64, f64)> = self
            .prof
            .lock()
            .ok()
            .and_then(|p| p.as_ref().map(|m| m.iter().map(|(k, &(n, t))| (k.clone(), n, t)).collect()))
            .unwrap_or_default();
        v.sort_by(|a, b| b.2.total_cmp(&a.2));
        v
    }

    /// Runs `f`, timed under `label()` while profiling.
    fn timed<R>(&self, label: impl FnOnce() -> String, f: impl FnOnce() -> Result<R>) -> Result<R> {
        if !self.prof.lock().is_ok_and(|p| p.is_some()) {
            return f();
        }
        self.stream.synchronize()?;
        self.side.synchronize()?;
        let t = Instant::now();
        let r = f()?;
        self.stream.synchronize()?;
        self.side.synchronize()?;
        let dt = t.elapsed().as_secs_f64();
        if let Ok(mut p) = self.prof.lock() {
            if let Some(m) = p.as_mut() {
                let e = m.entry(label()).or_insert((0, 0.0));
                e.0 += 1;
                e.1 += dt;
            }
        }
        Ok(r)
    }
}
