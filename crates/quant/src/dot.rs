//! Public row dot products: type dispatch and length checks over the per-format kernels.
//!
//! * [`dot_f32`]: weights dequantized exactly, times f32 `x`, accumulated in f32 in a fixed
//!   lane order: the product of column `i` is added, in ascending `i`, to lane `i % 32`; then
//!   the 32 lanes fold in halves (`a[l] += a[l + 16]`, then `+ 8`, `+ 4`, `+ 2`, `+ 1`). The
//!   same bits on every CPU. Used by the plain numerics and wherever activations stay f32.
//! * [`dot_q`]: the official numerics, following ds4's scalar x86 CPU path (FORMATS §3):
//!   Q8_0 weights with Q8_0-like activations, Q2_K/IQ2_XXS/Q4_K with Q8_K, and float weights
//!   with f32 activations summed sequentially in column order (§3.8). ds4 has no CPU Q4_K
//!   kernel; Q4_K follows the formula and float order of §3.7. The kernels are exact for every
//!   code value of the public activation blocks, -128 included.

use crate::act::{ActFormat, BlockQ8K, BlockQ8_0Act, QuantizedActs};
use crate::{check_row, float, iq2_xxs, q2_k, q4_k, q8_0, GgmlType, QuantError};

pub(crate) type F32Kernel = fn(&[u8], &[f32]) -> f32;

/// One row against four Q8_K activation vectors, each result the bits of the one-vector
/// kernel (`dot_q8k_x4` of the k- and i-quants).
pub(crate) type Q8KDot4 = fn(&[u8], [&[BlockQ8K]; 4]) -> [f32; 4];

/// A row kernel bound to its activations, resolved once per matvec.
#[derive(Clone, Copy)]
pub(crate) enum Kernel<'a> {
    F32(F32Kernel, &'a [f32]),
    /// Float weights in ds4's sequential order; matvec runs them eight rows at a time.
    Seq(float::Elem, &'a [f32]),
    Q8_0(fn(&[u8], &[BlockQ8_0Act]) -> f32, &'a [BlockQ8_0Act]),
    Q8K(fn(&[u8], &[BlockQ8K]) -> f32, &'a [BlockQ8K]),
}

impl Kernel<'_> {
    #[inline]
    pub(crate) fn run(&self, row: &[u8]) -> f32 {
        match *self {
            Kernel::F32(f, x) => f(row, x),
            Kernel::Seq(e, x) => float::dot_seq(e, row, x),
            Kernel::Q8_0(f, a) => f(row, a),
            Kernel::Q8K(f, a) => f(row, a),
        }
    }
}

/// The lane-order f32 kernel of `ty`.
pub(crate) fn plain_kernel(ty: GgmlType) -> Result<F32Kernel, QuantError> {
    Ok(match ty {
        GgmlType::F32 => float::dot_f32,
        GgmlType::F16 => float::dot_f16,
        GgmlType::BF16 => float::dot_bf16,
        GgmlType::Q8_0 => q8_0::dot::dot_f32,
        GgmlType::Q2_K => q2_k::dot::dot_f32,
        GgmlType::Q4_K => q4_k::dot::dot_f32,
        GgmlType::IQ2_XXS => iq2_xxs::dot::dot_f32,
        other => return Err(QuantError::Unsupported(other)),
    })
}

/// The official-numerics kernel of `ty`, bound to `acts` (whose format must be the one `ty`
/// needs).
pub(crate) fn act_kernel(ty: GgmlType, acts: &QuantizedActs) -> Result<Kernel<'_>, QuantError> {
    let need = ActFormat::for_weight(ty)?;
    let mismatch = QuantError::ActsMismatch { ty, need, got: acts.format() };
    Ok(match (ty, acts) {
        (GgmlType::F32, QuantizedActs::F32(x)) => Kernel::Seq(float::Elem::F32, x),
        (GgmlType::F16, QuantizedActs::F32(x)) => Kernel::Seq(float::Elem::F16, x),
        (GgmlType::BF16, QuantizedActs::F32(x)) => Kernel::Seq(float::Elem::BF16, x),
        (GgmlType::Q8_0, QuantizedActs::Q8_0(a)) => Kernel::Q8_0(q8_0::dot::dot_q8_0, a),
        (GgmlType::Q2_K, QuantizedActs::Q8K(a)) => Kernel::Q8K(q2_k::dot::dot_q8k, a),
        (GgmlType::Q4_K, QuantizedActs::Q8K(a)) => Kernel::Q8K(q4_k::dot::dot_q8k, a),
        (GgmlType::IQ2_XXS, QuantizedActs::Q8K(a)) => Kernel::Q8K(iq2_xxs::dot::dot_q8k, a),
        _ => return Err(mismatch),
    })
}

/// `row · x` with the weights of `ty` dequantized exactly and f32 accumulation in the lane
/// order described in the module docs.
/// `row` must hold exactly `x.len()` elements. Types: F32, F16, BF16, Q8_0, Q2_K, Q4_K,
/// IQ2_XXS.
pub fn dot_f32(ty: GgmlType, row: &[u8], x: &[f32]) -> Result<f32, QuantError> {
    let k = plain_kernel(ty)?;
    check_row(ty, row, x.len())?;
    Ok(k(row, x))
}

/// `row · acts` with ds4's official numerics (see the module docs); `acts` must be in the
/// format [`ActFormat::for_weight`] gives for `ty` and cover exactly the row.
pub fn dot_q(ty: GgmlType, row: &[u8], acts: &QuantizedActs) -> Result<f32, QuantError> {
    let k = act_kernel(ty, acts)?;
    check_row(ty, row, acts.len())?;
    Ok(k.run(row))
}
