//! The official-numerics kernels on host vectors, for the tests that hold them to the CPU's
//! bits (`tests/forward.rs`). Not for production use: each call allocates and synchronises.

use dsv4_gguf::GgmlType;

use super::GpuModel;
use super::forward::{BLOCK, TOPK_THREADS};
use super::Arg::{F, I, P};
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
        self.quant_acts(ty == GgmlType::Q8_0, self.ptr(&xd), 0, x.len(), 1, self.ptr(&out), 0)?;
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

    /// The indexer's keep-mask of `scores` (1 for the `k` highest in `f32::total_cmp` order,
    /// ties to the lower index), as the attention kernels use it; `k < scores.len()`.
    #[doc(hidden)]
    pub fn probe_topk(&self, gpu: &Gpu, scores: &[f32], k: usize) -> Result<Vec<u8>> {
        if k == 0 || k >= scores.len() || scores.len() > i32::MAX as usize {
            return Err(CudaError::Shape(format!("top {k} of {} scores", scores.len())));
        }
        let sd = gpu.upload(scores)?;
        let out = gpu.alloc_zeros::<u8>(scores.len())?;
        self.launch("topk_mask", (1, 1), TOPK_THREADS, 0, &[P(self.ptr(&sd)), I(scores.len() as i32), I(k as i32), P(self.ptr(&out))])?;
        gpu.download(&out)
    }

    /// The indexer's scores of one token (`q`: heads × dim, `w`: heads, already scaled) over
    /// the key rows `keys`, as the per-token path runs them: on the tensor cores with `fp4`
    /// (inputs that went through the official round trip), else in f32.
    #[doc(hidden)]
    pub fn probe_index_scores(&self, gpu: &Gpu, q: &[f32], w: &[f32], keys: &[f32], fp4: bool) -> Result<Vec<f32>> {
        let (heads, dim) = (w.len(), q.len() / w.len().max(1));
        if heads == 0 || q.len() != heads * dim || !keys.len().is_multiple_of(dim) || (fp4 && !self.index_fp4_shape(heads, dim)) {
            return Err(CudaError::Shape(format!("{heads} heads of {dim} over {} key values", keys.len())));
        }
        let n = keys.len() / dim;
        let (qd, wd, kd) = (gpu.upload(q)?, gpu.upload(w)?, gpu.upload(keys)?);
        let out = gpu.upload(&vec![f32::NAN; n])?;
        let args = [P(self.ptr(&qd)), P(self.ptr(&wd)), F(1.0), P(self.ptr(&kd)), I(n as i32), I(heads as i32), I(dim as i32), P(self.ptr(&out)), I(fp4 as i32)];
        self.launch("index_scores", (self.index_blocks(n, fp4, false), 1), BLOCK, 0, &args)?;
        gpu.download(&out)
    }
}
