//! Kernels over GGUF block formats: matrix-vector (and few-token matrix) products with
//! weights kept byte-identical to the file.

mod experts;
pub mod matmul;
pub mod matvec;
mod mmq;
mod plan;
mod raw;

pub use experts::{ExpertSlots, Grouped};
pub use matmul::Matmul;
pub use matvec::{DeviceMatrix, Matvec, MAX_BATCH};
pub use mmq::MmqIo;
