//! Host side of `util.cu`.

use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::{CudaFunction, LaunchConfig, PushKernelArg};

use crate::device::Gpu;
use crate::error::Result;
use crate::kernels;

/// Utility kernels of one device.
pub struct Util {
    spin: CudaFunction,
    mma_s8: CudaFunction,
    mma_bf16: CudaFunction,
}

/// The tensor-core instruction a ceiling is measured for ([`Util::mma_peak`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmaKind {
    /// `mma.sync` m16n8k32, int8 operands, int32 sums (the Q8_0 and expert tiles, mmq).
    S8,
    /// `mma.sync` m16n8k16, BF16 operands, f32 sums (attention, the F16 products).
    Bf16,
}

/// Warps a CTA of the ceiling kernels and CTAs an SM: 32 warps an SM, enough to keep every
/// tensor pipe busy.
const PEAK_THREADS: u32 = 256;
const PEAK_CTAS_PER_SM: usize = 4;

impl Util {
    pub fn new(gpu: &Gpu) -> Result<Self> {
        let module = gpu.load_module(&kernels::UTIL)?;
        let spin = module
            .load_function("dsv4_spin")
            .map_err(|_| crate::CudaError::MissingKernel("dsv4_spin".into()))?;
        let get = |name: &str| module.load_function(name).map_err(|_| crate::CudaError::MissingKernel(name.into()));
        Ok(Util { spin, mma_s8: get("mma_peak_s8")?, mma_bf16: get("mma_peak_bf16")? })
    }

    /// Queues a one-thread kernel that busy-waits `cycles` SM clocks on `gpu`'s stream.
    pub fn spin(&self, gpu: &Gpu, cycles: i64) -> Result<()> {
        let cfg = LaunchConfig {
            grid_dim: (1, 1, 1),
            block_dim: (1, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut launch = gpu.stream().launch_builder(&self.spin);
        launch.arg(&cycles);
        // SAFETY: the kernel takes one 64-bit integer and touches no memory.
        unsafe { launch.launch(cfg) }?;
        Ok(())
    }

    /// The rate in operations a second (two per multiply-add) that `kind`'s `mma.sync` reaches
    /// on the whole device: one launch of 4 CTAs an SM, each warp issuing `iters` rounds of 8
    /// independent MMAs, timed between events after an untimed launch.
    pub fn mma_peak(&self, gpu: &Gpu, kind: MmaKind, iters: i32) -> Result<f64> {
        if iters <= 0 {
            return Err(crate::CudaError::Shape(format!("{iters} rounds of MMAs")));
        }
        let ctas = gpu.sm_count() * PEAK_CTAS_PER_SM;
        let threads = ctas * PEAK_THREADS as usize;
        let cfg = LaunchConfig { grid_dim: (ctas as u32, 1, 1), block_dim: (PEAK_THREADS, 1, 1), shared_mem_bytes: 0 };
        let mut out = gpu.alloc_zeros::<u32>(threads)?;
        let (f, flops_per_mma) = match kind {
            MmaKind::S8 => (&self.mma_s8, 2.0 * 16.0 * 8.0 * 32.0),
            MmaKind::Bf16 => (&self.mma_bf16, 2.0 * 16.0 * 8.0 * 16.0),
        };
        let s = gpu.stream();
        let run = |out: &mut crate::DeviceBuffer<u32>| -> Result<()> {
            let mut launch = s.launch_builder(f);
            let mut view = out.view_mut();
            launch.arg(&iters).arg(&mut view);
            // SAFETY: the kernel takes a round count and one 4-byte output per thread; `out`
            // holds one for each of the grid's threads.
            unsafe { launch.launch(cfg) }?;
            Ok(())
        };
        run(&mut out)?;
        let flags = Some(CUevent_flags::CU_EVENT_DEFAULT);
        let start = s.record_event(flags)?;
        run(&mut out)?;
        let end = s.record_event(flags)?;
        end.synchronize()?;
        let ms = start.elapsed_ms(&end)? as f64;
        let warps = (threads / 32) as f64;
        Ok(warps * iters as f64 * 8.0 * flops_per_mma / (ms * 1e-3))
    }
}
