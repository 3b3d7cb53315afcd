//! Every CUDA source of the crate, embedded at build time. The device code is compiled at
//! start-up by NVRTC ([`crate::nvrtc`]); the compile-check test walks [`ALL_SOURCES`], so a
//! `.cu` file added here is checked in CI without a GPU.

/// One `.cu` file: `path` (relative to `crates/cuda/src`, for messages and as NVRTC's program
/// name) and its text.
#[derive(Clone, Copy, Debug)]
pub struct KernelSource {
    pub path: &'static str,
    pub code: &'static str,
}

/// The header every source may `#include`, handed to NVRTC in memory (no include path needed).
pub const COMMON_HEADER_NAME: &str = "dsv4_common.cuh";
pub const COMMON_HEADER: &str = include_str!("common.cuh");

pub const MATVEC: KernelSource = KernelSource { path: "quant/matvec.cu", code: include_str!("quant/matvec.cu") };

pub const ALL_SOURCES: &[KernelSource] = &[MATVEC];
