//! `--backend` and `--gpu`: where the model runs.

use dsv4_engine::Runner;
use dsv4_model::Model;
use std::sync::Arc;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// CUDA when a GPU is present, else the CPU.
    Auto,
    Cpu,
    Cuda,
}

#[derive(clap::Args, Clone, Debug)]
pub struct DeviceArgs {
    /// Where the model runs.
    #[arg(long, value_enum, default_value_t = Backend::Auto)]
    pub backend: Backend,
    /// Which GPU (with the CUDA backend).
    #[arg(long, default_value_t = 0)]
    pub gpu: usize,
}

impl DeviceArgs {
    /// The runner for `model`, its states sized for `ctx` tokens, `sessions` of them
    /// resident. `auto` falls back to the CPU, saying why, when no GPU can be used (none
    /// present, or too little memory for the plan); `cuda` fails instead.
    pub fn runner(&self, model: Arc<Model>, ctx: usize, sessions: usize) -> anyhow::Result<Runner> {
        let want_gpu = match self.backend {
            Backend::Cpu => false,
            Backend::Cuda => true,
            Backend::Auto => dsv4_cuda::driver_present() && dsv4_cuda::device_count().unwrap_or(0) > 0,
        };
        if !want_gpu {
            return Ok(Runner::cpu(model));
        }
        let t = std::time::Instant::now();
        match Runner::cuda(model.clone(), self.gpu, ctx, sessions) {
            Ok((r, plan)) => {
                eprintln!("{}", plan.gpu_summary());
                eprintln!("running on {} (weights uploaded in {:.1} s)", r.describe(), t.elapsed().as_secs_f64());
                Ok(r)
            }
            Err(e) if self.backend == Backend::Auto => {
                eprintln!("GPU {} unusable ({e}); running on the CPU", self.gpu);
                Ok(Runner::cpu(model))
            }
            Err(e) => anyhow::bail!("--backend cuda: {e}"),
        }
    }
}
