//! CUDA backend of dsv4: device setup, run-time kernel compilation with a disk cache, device
//! buffers, the quantized matrix-vector kernels, and the whole model's forward pass
//! ([`GpuModel`], in `model/`).
//!
//! Nothing CUDA is linked at build time. cudarc loads libcuda and libnvrtc when first used,
//! and this crate checks for them first, so on a machine without a driver [`Gpu::new`]
//! returns [`CudaError::NoDriver`] instead of panicking.
//!
//! Kernels are CUDA C++ in `.cu` files beside their host code (`quant/matvec.cu` next to
//! `quant/matvec.rs`), embedded with `include_str!` ([`kernels`]) and compiled by NVRTC for
//! the device's own architecture (`sm_90` on H100/H200) into CUBINs cached on disk
//! ([`cache`]).

pub mod buffer;
pub mod cache;
pub mod device;
pub mod error;
pub mod kernels;
mod launch;
pub mod model;
pub mod nvrtc;
pub mod quant;
pub mod util;

pub use buffer::DeviceBuffer;
pub use device::{device_count, driver_present, Gpu};
pub use error::{CudaError, Result};
pub use model::{state_scratch_bytes, step_batch_bytes, Decode, DecodeOptions, DenseProducts, ExpertReads, GpuModel, GpuState, MAX_STEP_BATCH, PICK_CAP, PREFILL_CHUNK};
pub use launch::Queue;
pub use quant::{DeviceMatrix, Matvec, MmqIo, MAX_BATCH};
