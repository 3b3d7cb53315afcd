//! Products of the experts a routing kernel chose, with the expert ids read on the device:
//! one launch covers every (token, pick) slot, so the host never waits for the routing.

use std::sync::Arc;

use cudarc::driver::CudaFunction;

use super::matvec::{grouped_rows, is_float, DeviceMatrix, Matvec, Variant, GROUP4_MIN_ROWS};
use super::plan::SlotArgs;
use crate::error::{CudaError, Result};
use crate::launch::Queue;

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
    /// Slots of one token when the launch covers several tokens' (0: all `n` are one
    /// token's). The warps per row group, which fix each product's order of sums, are
    /// chosen as for a launch of this many slots, so a token's results do not depend on how
    /// many other tokens share the launch.
    pub per_token: usize,
}

/// A grouped launch ([`Matvec::run_grouped_raw`]): `slots` entries of a device table, each
/// [matrix id, count, `nt` pick indices] (an id out of range skips the entry); pick j reads
/// input row `j / x_div` and writes output row `(j % y_mod) · y_mul + j / y_mod`; rows summed
/// with `split` warps per row group. With `nt` = 4 the table is a kernel's output (the routing's
/// grouping, `group_picks` in `model/moe.cu`), read after the previous kernel; with 16 it is
/// written once, before any launch that reads it.
#[derive(Clone, Copy, Debug)]
pub struct Grouped {
    pub table: u64,
    pub slots: usize,
    /// Entries expected to be busy (0: all `slots`): the CTAs per entry are sized so that
    /// these make about one wave, the rest of the grid finding skipped entries.
    pub busy: usize,
    pub nt: usize,
    pub x_div: usize,
    pub y_mod: usize,
    pub y_mul: usize,
    pub split: usize,
}

/// Waves of CTAs a grouped launch over a device-made table aims at (see `run_grouped_raw`):
/// 4, and 8 from GROUPED_MANY expected busy entries. On 6 H100 layers 8 waves made a batch of
/// 32 sessions (~136 busy entries a routed matrix, ~272 for gate and up together) 3% faster,
/// 16 about 1%, and a batch of 8 (~44 and ~88) 2% slower (bench/README.md, v19 and v20).
fn grouped_waves(busy: usize) -> usize {
    if busy >= GROUPED_MANY {
        8
    } else {
        4
    }
}
const GROUPED_MANY: usize = 128;

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

/// The byte stride of the stack `experts` for a launch of `s`, or None when it has nothing
/// to do; an error for experts not stacked in one buffer and for slots the grid or the
/// placement cannot take.
fn stacked(experts: &[DeviceMatrix], s: &ExpertSlots) -> Result<Option<usize>> {
    let stride = stack_stride(experts).ok_or_else(|| CudaError::Shape("experts are not stacked in one buffer".into()))?;
    if s.n == 0 || experts[0].rows() == 0 {
        return Ok(None);
    }
    if s.n > 65535 || s.x_div == 0 || s.y_mod == 0 {
        return Err(CudaError::Shape(format!("expert slots {s:?}")));
    }
    Ok(Some(stride))
}

impl Matvec {
    /// The slot kernel of a launch of `slots` products of `w`'s shape: groups of 4 rows when
    /// those are plentiful, as for one matrix (float types: 2 rows per warp).
    fn slot_kernel(&self, w: &DeviceMatrix, qacts: bool, slots: usize) -> Result<(&CudaFunction, Variant)> {
        let g = if !is_float(w.ty()) && w.rows() * slots >= GROUP4_MIN_ROWS { 4 } else { 2 };
        let f = self.funcs_x.get(&(w.ty(), qacts, g)).ok_or(CudaError::UnsupportedType(w.ty()))?;
        Ok((f, Variant { rows: g, tokens: 1, split: 0, ctas: 0 }))
    }

    /// Warps per row group of a launch of `slots` products of `w`'s shape. The split fixes
    /// the order in which a row's partial sums are added, so launches that must give a
    /// token the bits of its own launch take that launch's split (for float types the warps
    /// per row set, `float_split` in `plan.rs`).
    pub fn slot_split(&self, w: &DeviceMatrix, qacts: bool, slots: usize) -> Result<usize> {
        let (f, v) = self.slot_kernel(w, qacts, slots.max(1))?;
        Ok(self.plan(f, w, v, 1, slots.max(1), qacts)?.split)
    }

    /// Whether [`Matvec::run_experts_raw`] can run `experts` (stacked in one buffer).
    pub fn experts_stacked(experts: &[DeviceMatrix]) -> bool {
        stack_stride(experts).is_some()
    }

    /// For each slot of `s`, the one-token product of its expert: input rows start at `x`,
    /// `x_bytes` apart (f32 activations, or with `qacts` the activations quantized for the
    /// weights' type, as [`Matvec::run_q`] takes them); output rows at `y`, `y_stride` f32
    /// apart. Queued on `q`.
    ///
    /// # Safety
    /// `s.ids` must hold `s.n` i32 on the device; every input and output row the slots
    /// address must be live device memory of this stream's context until the queued work
    /// completes; outputs must not overlap inputs or each other.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn run_experts_raw(
        &self,
        q: Queue,
        experts: &[DeviceMatrix],
        s: ExpertSlots,
        x: u64,
        x_bytes: usize,
        qacts: bool,
        y: u64,
        y_stride: usize,
    ) -> Result<()> {
        let Some(stride) = stacked(experts, &s)? else { return Ok(()) };
        let w = &experts[0];
        if !x.is_multiple_of(16) || !x_bytes.is_multiple_of(16) {
            return Err(CudaError::Shape(format!("x at {x:#x} with stride {x_bytes} is not 16-byte aligned")));
        }
        // The slot kernels are the one-token kernels over all slots' rows together: groups of
        // 4 rows when those are plentiful, as for one matrix (float types: 2 rows per warp).
        let one = if s.per_token == 0 { s.n } else { s.per_token.min(s.n) };
        let split = self.slot_split(w, qacts, one)?;
        let (f, v) = self.slot_kernel(w, qacts, s.n)?;
        let l = self.plan(f, w, Variant { split, ..v }, 1, s.n, qacts)?;
        let slots = SlotArgs { slots: s, n_expert: experts.len(), expert_bytes: stride };
        self.launch(f, w, (x, x_bytes), 1, (y, y_stride), l, Some(slots), q)
    }

    /// The grouped products of `g` (each listed matrix read once for up to `g.nt` picks):
    /// every pick gets the bits of its [`run_experts_raw`](Self::run_experts_raw) slot in a
    /// launch with split `g.split`. Inputs: f32 rows `x_stride` floats apart, or (`qacts`)
    /// quantized activation rows `x_stride` bytes apart; outputs `y_stride` f32 apart.
    /// Quantized weights only. Queued on `q`.
    ///
    /// # Safety
    /// `g.table` must hold `g.slots` entries of `2 + g.nt` i32 on the device, whose picks
    /// address input and output rows inside live device memory of this stream's context
    /// until the queued work completes; outputs must not overlap inputs or each other.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn run_grouped_raw(
        &self,
        q: Queue,
        experts: &[DeviceMatrix],
        g: Grouped,
        x: u64,
        x_stride: usize,
        qacts: bool,
        y: u64,
        y_stride: usize,
    ) -> Result<()> {
        let s = ExpertSlots { ids: g.table, n: g.slots, x_div: g.x_div, y_mod: g.y_mod, y_mul: g.y_mul, per_token: 0 };
        let Some(stride) = stacked(experts, &s)? else { return Ok(()) };
        let w = &experts[0];
        let f = self
            .funcs_g
            .get(&(w.ty(), qacts, g.nt))
            .ok_or_else(|| CudaError::MissingKernel(format!("grouped {} qacts={qacts} n{}", w.ty(), g.nt)))?;
        let v = Variant { rows: grouped_rows(g.nt), tokens: g.nt, split: g.split.max(1), ctas: 0 };
        // A table made on the device has an expected count of busy entries: CTAs per entry
        // for a few waves over those (grouped_waves), so that a few more than expected add a
        // fraction of a wave rather than a whole one. Host tables: one wave over all entries.
        let per = if g.busy == 0 { g.slots } else { g.busy.min(g.slots).div_ceil(grouped_waves(g.busy)) };
        let l = self.plan(f, w, v, g.nt, per.max(1), qacts)?;
        let slots = SlotArgs { slots: s, n_expert: experts.len(), expert_bytes: stride };
        self.launch(f, w, (x, x_stride), g.nt, (y, y_stride), l, Some(slots), q)
    }
}
