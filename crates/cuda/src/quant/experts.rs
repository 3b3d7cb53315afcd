//! Products of the experts a routing kernel chose, with the expert ids read on the device:
//! one launch covers every (token, pick) slot, so the host never waits for the routing.

use std::sync::Arc;

use super::matvec::{is_float, DeviceMatrix, Matvec, Variant, GROUP4_MIN_ROWS};
use super::plan::SlotArgs;
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
        // The slot kernels are the one-token kernels over all slots' rows together: groups of
        // 4 rows when those are plentiful, as for one matrix (float types: 2 rows per warp).
        let g = if !is_float(w.ty()) && w.rows() * s.n >= GROUP4_MIN_ROWS { 4 } else { 2 };
        let f = self
            .funcs_x
            .get(&(w.ty(), qacts, g))
            .ok_or(CudaError::UnsupportedType(w.ty()))?;
        let v = Variant { rows: g, tokens: 1, split: 0, ctas: 0 };
        let l = self.plan(f, w, v, 1, s.n, qacts)?;
        let slots = SlotArgs { slots: s, n_expert: experts.len(), expert_bytes: stride };
        self.launch(f, w, (x, x_bytes), 1, (y, y_stride), l, Some(slots))
    }
}
