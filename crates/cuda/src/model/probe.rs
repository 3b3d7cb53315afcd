//! The official-numerics kernels on host vectors, for the tests that hold them to the CPU's
//! bits (`tests/forward.rs`). Not for production use: each call allocates and synchronises.

use dsv4_gguf::GgmlType;

use super::GpuModel;
use super::Arg::{L, P};
use crate::device::Gpu;
use crate::error::{CudaError, Result};
use crate::quant::matvec::act_bytes;

impl GpuModel {
    /// `x` quantized on the GPU for weights of type `ty` (Q8_0 or a k/i-quant), as the bytes
    /// `dsv4_cuda::quant::matvec::pack_acts` makes of the CPU's quantization.
    #[doc(hidden)]
    pub fn probe_quantize(&self, gpu: &Gpu, ty: GgmlType, x: &[f32]) -> Result<Vec<u8>> {
        let bytes = act_bytes(ty, x.len())?;
        let xd = gpu.upload(x)?;
        let out = gpu.alloc_zeros::<u8>(bytes)?;
        let (kernel, blk) = if ty == GgmlType::Q8_0 { ("quant_q8_0", 32) } else { ("quant_q8_k", 256) };
        self.launch(kernel, (x.len() / blk, 1), blk, 0, &[P(self.ptr(&xd)), L(0), P(self.ptr(&out)), L(0)])?;
        gpu.download(&out)
    }

    /// Rows of `head_dim` as the official numerics cache them (`Numerics::store_kv_row`).
    #[doc(hidden)]
    pub fn probe_kv_round(&self, gpu: &Gpu, rows: &[f32]) -> Result<Vec<f32>> {
        let d = self.cfg.head_dim;
        if !rows.len().is_multiple_of(d) {
            return Err(CudaError::Shape(format!("{} values are not rows of {d}", rows.len())));
        }
        let buf = gpu.upload(rows)?;
        for r in 0..rows.len() / d {
            self.kv_round(self.ptr(&buf) + (r * d * 4) as u64)?;
        }
        gpu.download(&buf)
    }

    /// Rows of `indexer_head_dim` as the official indexer scores them
    /// (`Numerics::indexer_row`).
    #[doc(hidden)]
    pub fn probe_index_round(&self, gpu: &Gpu, rows: &[f32]) -> Result<Vec<f32>> {
        let id = self.cfg.indexer_head_dim;
        if !rows.len().is_multiple_of(id) {
            return Err(CudaError::Shape(format!("{} values are not rows of {id}", rows.len())));
        }
        let buf = gpu.upload(rows)?;
        self.index_round(self.ptr(&buf), rows.len() / id)?;
        gpu.download(&buf)
    }
}
