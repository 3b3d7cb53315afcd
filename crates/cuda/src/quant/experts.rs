//! Products of the experts a routing kernel chose, with the expert ids read on the device:
//! one launch covers every (token, pick) slot, so the host never waits for the routing.

use std::sync::Arc;

use cudarc::driver::{LaunchConfig, PushKernelArg};
use dsv4_gguf::GgmlType;

use super::matvec::{
    act_bytes, is_float, part_bytes, quant_smem, stage_buf, DeviceMatrix, Matvec, Variant,
    MAX_X_SMEM, QWARPS, WARPS,
};
use crate::error::{CudaError, Result};

/// The slots of one [`Matvec::run_experts_raw`] launch: slot `j < n` multiplies expert
/// `ids[j]` by input row `j / x_div` and writes output row `(j % y_mod) · y_mul + j / y_mod`.
#[derive(Clone, Copy, Debug)]
pub struct ExpertSlots {
    /// Device address of `n` i32 expert ids (slots with an id out of range are skipped).
    pub ids: u64,
    pub n: usize,
    pub x_div: usize,
    pub y_mod: usize,
    pub y_mul: usize,
}

/// Byte stride between the experts when `experts` are consecutive views of one buffer.
pub fn stack_stride(experts: &[DeviceMatrix]) -> Option<usize> {
    let first = experts.first()?;
    let bytes = first.num_bytes();
    let same = experts.iter().enumerate().all(|(i, m)| {
        Arc::ptr_eq(&m.buf, &first.buf)
            && m.offset == first.offset + i * bytes
            && m.ty() == first.ty()
            && m.rows() == first.rows()
            && m.cols() == first.cols()
    });
    same.then_some(bytes)
}

impl Matvec {
    /// Whether [`Matvec::run_experts_raw`] can run `experts` (stacked in one buffer).
    pub fn experts_stacked(experts: &[DeviceMatrix]) -> bool {
        stack_stride(experts).is_some()
    }

    /// For each slot of `s`, the one-token product of its expert: input rows start at `x`,
    /// `x_bytes` apart (f32 activations, or with `qacts` the activations quantized for the
    /// weights' type, as [`Matvec::run_q`] takes them); output rows at `y`, `y_stride` f32
    /// apart.
    ///
    /// # Safety
    /// `s.ids` must hold `s.n` i32 on the device; every input and output row the slots
    /// address must be live device memory of this stream's context until the queued work
    /// completes; outputs must not overlap inputs or each other.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn run_experts_raw(
        &self,
        experts: &[DeviceMatrix],
        s: ExpertSlots,
        x: u64,
        x_bytes: usize,
        qacts: bool,
        y: u64,
        y_stride: usize,
    ) -> Result<()> {
        let stride = stack_stride(experts)
            .ok_or_else(|| CudaError::Shape("experts are not stacked in one buffer".into()))?;
        let w = &experts[0];
        if s.n == 0 || w.rows() == 0 {
            return Ok(());
        }
        if s.n > 65535 || s.x_div == 0 || s.y_mod == 0 {
            return Err(CudaError::Shape(format!("expert slots {s:?}")));
        }
        if !x.is_multiple_of(16) || !x_bytes.is_multiple_of(16) {
            return Err(CudaError::Shape(format!("x at {x:#x} with stride {x_bytes} is not 16-byte aligned")));
        }
        let f = self
            .funcs_x
            .get(&(w.ty(), qacts))
            .ok_or(CudaError::UnsupportedType(w.ty()))?;
        let v = Variant { rows: 2, tokens: 1, split: 0, ctas: 0 };
        let (ctas, threads, split, smem, xsm) = if is_float(w.ty()) {
            if qacts {
                return Err(CudaError::UnsupportedType(w.ty()));
            }
            (w.rows().div_ceil(WARPS * 2), WARPS * 32, 0, 0, false)
        } else {
            let (smem, xsm) = if qacts {
                let need = act_bytes(w.ty(), w.cols())?;
                let grid = if w.ty() == GgmlType::IQ2_XXS { 256 * 8 } else { 0 };
                (grid + part_bytes(v) + need.next_multiple_of(16) + QWARPS * 4 * v.rows * stage_buf(w.ty()), false)
            } else {
                let xsm = w.cols() * 4 <= MAX_X_SMEM;
                (quant_smem(w.ty(), w.cols(), v, xsm), xsm)
            };
            // One wave over all the slots' rows together.
            let (ctas, split) = self.quant_plan_shape(f, w.rows() * s.n, w.cols(), v, smem)?;
            (ctas.div_ceil(s.n).max(1), QWARPS * 32, split, smem, xsm)
        };
        let cfg = LaunchConfig {
            grid_dim: (ctas as u32, s.n as u32, 1),
            block_dim: (threads as u32, 1, 1),
            shared_mem_bytes: smem as u32,
        };
        let end = w
            .offset
            .checked_add(stride * experts.len())
            .filter(|&e| e <= w.buf.len())
            .ok_or_else(|| CudaError::Shape("expert stack overruns its buffer".into()))?;
        let weights = w.buf.cuda_slice().slice(w.offset..end);
        let row_bytes = w.row_bytes() as i64;
        let (rows, cols) = (w.rows() as i32, w.cols() as i32);
        let (x_stride, y_stride) = (x_bytes as i64, y_stride as i64);
        let one = 1i32;
        let (split, xsm) = (split as i32, xsm as i32);
        let grid = self.iq2_grid.view();
        let n_expert = experts.len() as i32;
        let expert_bytes = stride as i64;
        let (x_div, y_mod, y_mul) = (s.x_div as i32, s.y_mod as i32, s.y_mul as i64);
        let mut launch = self.stream.launch_builder(f);
        launch
            .arg(&weights)
            .arg(&row_bytes)
            .arg(&rows)
            .arg(&cols)
            .arg(&x)
            .arg(&x_stride)
            .arg(&y)
            .arg(&y_stride)
            .arg(&one)
            .arg(&grid)
            .arg(&split)
            .arg(&xsm)
            .arg(&s.ids)
            .arg(&n_expert)
            .arg(&expert_bytes)
            .arg(&x_div)
            .arg(&y_mod)
            .arg(&y_mul);
        // SAFETY: the argument list matches MVX_ARGS in matvec.cu; the weights of every expert
        // lie inside the slice passed (checked above; ids out of range are skipped on the
        // device), and the caller vouches for the ids, inputs and outputs.
        unsafe { launch.launch(cfg) }?;
        Ok(())
    }
}
