//! The whole DeepSeek V4 forward pass on one GPU, checked against `dsv4_model`'s CPU
//! reference (`tests/forward.rs`).
//!
//! [`GpuModel::load`] uploads a loaded [`Model`](dsv4_model::Model)'s weights once, in their
//! GGUF layouts; [`GpuModel::new_state`] makes a session ([`GpuState`]: the raw windows,
//! compressed rows and compressor frontiers of every layer, plus per-token scratch), and
//! [`GpuModel::forward`] feeds it tokens. Tokens run one at a time: the weight products are
//! [`Matvec`](crate::Matvec) kernels, the rest are the single-token kernels of `model/*.cu`.
//!
//! Numerics: [`Numerics::Plain`](dsv4_model::Numerics) (f32 everywhere, weights decoded
//! exactly). The official numerics (FP8 KV rows, FP4 indexer, quantized activations) are not
//! implemented yet and are refused with an error.
//!
//! Every reduction has a fixed order (no float atomics), so a run is deterministic on a given
//! GPU. One host synchronisation per score-routed layer remains: the chosen experts are read
//! back to pick the expert matrices.

mod forward;
mod state;
mod weights;

use std::collections::HashMap;
use std::sync::Arc;

use cudarc::driver::{CudaFunction, CudaStream, LaunchConfig, PushKernelArg};
use dsv4_model::ModelConfig;

use crate::device::Gpu;
use crate::error::{CudaError, Result};
use crate::kernels::MODEL_KERNELS;
use crate::quant::Matvec;

pub use state::GpuState;
use weights::Layer;

/// A model resident on one GPU.
pub struct GpuModel {
    cfg: ModelConfig,
    stream: Arc<CudaStream>,
    mv: Matvec,
    k: Kernels,
    w: weights::Globals,
    layers: Vec<Layer>,
}

/// One kernel argument, pushed by value (device addresses are plain 64-bit integers).
#[derive(Clone, Copy, Debug)]
enum Arg {
    P(u64),
    I(i32),
    L(i64),
    F(f32),
}

/// The model kernels of one device, by name.
struct Kernels {
    funcs: HashMap<&'static str, CudaFunction>,
}

impl Kernels {
    fn new(gpu: &Gpu) -> Result<Kernels> {
        let mut funcs = HashMap::new();
        for (src, names) in MODEL_KERNELS {
            let module = gpu.load_module(src)?;
            for &name in *names {
                let f = module.load_function(name).map_err(|_| CudaError::MissingKernel(name.into()))?;
                funcs.insert(name, f);
            }
        }
        Ok(Kernels { funcs })
    }

    /// Queues kernel `name` on `stream`.
    ///
    /// Safety (upheld by every caller in this module): `args` match the kernel's parameter
    /// list in type and order, and every address points into a live buffer of the model or
    /// of the state, large enough for what the kernel touches given the size arguments.
    fn launch(&self, stream: &Arc<CudaStream>, name: &str, grid: usize, block: usize, smem: usize, args: &[Arg]) -> Result<()> {
        let f = self.funcs.get(name).ok_or_else(|| CudaError::MissingKernel(name.into()))?;
        let cfg = LaunchConfig {
            grid_dim: (grid.max(1) as u32, 1, 1),
            block_dim: (block as u32, 1, 1),
            shared_mem_bytes: smem as u32,
        };
        let mut b = stream.launch_builder(f);
        for a in args {
            match a {
                Arg::P(v) => b.arg(v),
                Arg::I(v) => b.arg(v),
                Arg::L(v) => b.arg(v),
                Arg::F(v) => b.arg(v),
            };
        }
        // SAFETY: see the function's contract above.
        unsafe { b.launch(cfg) }?;
        Ok(())
    }
}

impl GpuModel {
    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }
}
