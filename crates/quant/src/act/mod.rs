//! Activations as the official numerics feed them to a weight type (FORMATS §3.1): ds4's CPU
//! scalar x86 path quantizes `x` to Q8_0-like blocks for Q8_0 weights and to Q8_K for the
//! k-quant/i-quant expert weights, and keeps f32 for float weights.

pub mod q8_0;
pub mod q8_k;

pub use q8_0::BlockQ8_0Act;
pub use q8_k::BlockQ8K;

use crate::{GgmlType, QuantError};

/// `clamp(round_half_even(v), -128, 127)` as i8, written so that loops over it vectorise:
/// `f32::round_ties_even` is a libm call on baseline x86-64 and a saturating `as i32` is
/// scalarised. Clamping first equals clamping after rounding (the bounds are integers) and
/// keeps |v| small, so adding 1.5 * 2^23 rounds to an integer, ties to even, and leaves it in
/// the low mantissa bits. NaN gives 0 (as ggml's `nearest_int` does), infinities saturate.
#[inline(always)]
pub(crate) fn round_to_i8(v: f32) -> i8 {
    const MAGIC: f32 = 12_582_912.0;
    let c = if v.is_nan() { 0.0 } else { v.clamp(-128.0, 127.0) };
    ((c + MAGIC).to_bits() as i32 - 0x4b40_0000) as i8
}

/// Largest |x| (NaNs ignored; 0 for an empty or all-NaN block), as eight partial maxima so it
/// vectorises; max is exact, so the grouping does not matter.
#[inline(always)]
pub(crate) fn max_abs(x: &[f32]) -> f32 {
    let mut m = [0f32; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for l in 0..8 {
            m[l] = m[l].max(c[l].abs());
        }
    }
    let tail = chunks.remainder().iter().fold(0f32, |a, v| a.max(v.abs()));
    m.iter().fold(tail, |a, &v| a.max(v))
}

/// Which activation format a weight type is multiplied with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ActFormat {
    /// Float weights (F32, F16, BF16): activations stay f32.
    F32,
    /// Q8_0 weights: ds4's Q8_0-like blocks with an f32 scale.
    Q8_0,
    /// Q2_K, Q4_K and IQ2_XXS weights.
    Q8K,
}

impl ActFormat {
    pub fn for_weight(ty: GgmlType) -> Result<Self, QuantError> {
        match ty {
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => Ok(ActFormat::F32),
            GgmlType::Q8_0 => Ok(ActFormat::Q8_0),
            GgmlType::Q2_K | GgmlType::Q4_K | GgmlType::IQ2_XXS => Ok(ActFormat::Q8K),
            other => Err(QuantError::Unsupported(other)),
        }
    }

    /// Elements per activation block (1 for f32).
    pub fn block_elems(self) -> usize {
        match self {
            ActFormat::F32 => 1,
            ActFormat::Q8_0 => q8_0::BLOCK_ELEMS,
            ActFormat::Q8K => q8_k::BLOCK_ELEMS,
        }
    }
}

/// One activation vector in the format some weight type needs. Quantize once, then use it
/// for every row (and, for the MoE, every expert) that multiplies the same `x`.
#[derive(Clone, Debug, PartialEq)]
pub enum QuantizedActs {
    F32(Vec<f32>),
    Q8_0(Vec<BlockQ8_0Act>),
    Q8K(Vec<BlockQ8K>),
}

impl QuantizedActs {
    /// Quantizes `x` to `format`. Errors when `x` is not a whole number of blocks.
    pub fn quantize(format: ActFormat, x: &[f32]) -> Result<Self, QuantError> {
        let block = format.block_elems();
        if !x.len().is_multiple_of(block) {
            return Err(QuantError::PartialActBlock { format, elems: x.len(), block });
        }
        Ok(match format {
            ActFormat::F32 => QuantizedActs::F32(x.to_vec()),
            ActFormat::Q8_0 => QuantizedActs::Q8_0(q8_0::quantize_row(x)),
            ActFormat::Q8K => QuantizedActs::Q8K(q8_k::quantize_row(x)),
        })
    }

    /// Quantizes `x` to the format that weights of type `ty` need.
    pub fn for_weight(ty: GgmlType, x: &[f32]) -> Result<Self, QuantError> {
        Self::quantize(ActFormat::for_weight(ty)?, x)
    }

    pub fn format(&self) -> ActFormat {
        match self {
            QuantizedActs::F32(_) => ActFormat::F32,
            QuantizedActs::Q8_0(_) => ActFormat::Q8_0,
            QuantizedActs::Q8K(_) => ActFormat::Q8K,
        }
    }

    /// Number of activation elements represented.
    pub fn len(&self) -> usize {
        match self {
            QuantizedActs::F32(v) => v.len(),
            QuantizedActs::Q8_0(v) => v.len() * q8_0::BLOCK_ELEMS,
            QuantizedActs::Q8K(v) => v.len() * q8_k::BLOCK_ELEMS,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(v: f32) -> i8 {
        (v.round_ties_even() as i32).clamp(-128, 127) as i8
    }

    #[test]
    fn round_to_i8_is_round_half_even_with_clamp() {
        let mut probes: Vec<f32> = (-600..=600).map(|k| k as f32 * 0.25).collect();
        probes.extend([0.49999997, -0.49999997, 127.49999, 127.5, -128.5, -128.49998, 1e-30, -0.0]);
        let mut v = 1.0f32;
        while v < 1e38 {
            // every magnitude, in particular around 2^22..2^24 where the trick changes regime
            for s in [v, -v, v * 1.37, -v * 1.37, v.next_up(), -v.next_down()] {
                probes.push(s);
            }
            v *= 1.5;
        }
        probes.extend([f32::INFINITY, f32::NEG_INFINITY, f32::MAX, f32::MIN, 4194303.5, 4194304.5, 8388607.5]);
        for p in probes {
            assert_eq!(round_to_i8(p), exact(p), "{p}");
        }
        assert_eq!(round_to_i8(f32::NAN), 0);
    }

    #[test]
    fn max_abs_ignores_nan_and_sign() {
        assert_eq!(max_abs(&[]), 0.0);
        assert_eq!(max_abs(&[-3.0, f32::NAN, 2.0]), 3.0);
        let x: Vec<f32> = (0..37).map(|i| (i as f32 - 20.0) * 0.5).collect();
        assert_eq!(max_abs(&x), 10.0);
    }
}
