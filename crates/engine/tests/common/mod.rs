//! Test bodies shared by the CPU and CUDA test binaries.

pub mod batch;
