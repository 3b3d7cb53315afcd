//! Host side of `util.cu`.

use cudarc::driver::{CudaFunction, LaunchConfig, PushKernelArg};

use crate::device::Gpu;
use crate::error::Result;
use crate::kernels;

/// Utility kernels of one device.
pub struct Util {
    spin: CudaFunction,
}

impl Util {
    pub fn new(gpu: &Gpu) -> Result<Self> {
        let module = gpu.load_module(&kernels::UTIL)?;
        let spin = module
            .load_function("dsv4_spin")
            .map_err(|_| crate::CudaError::MissingKernel("dsv4_spin".into()))?;
        Ok(Util { spin })
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
}
