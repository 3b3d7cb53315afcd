//! Kernels over GGUF block formats: matrix-vector (and few-token matrix) products with
//! weights kept byte-identical to the file.

pub mod matvec;
mod raw;

pub use matvec::{DeviceMatrix, Matvec, MAX_BATCH};
