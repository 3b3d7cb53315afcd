//! Q4_K row dot products. Lengths are checked by the public callers in `crate::dot`; the
//! portable functions define the arithmetic, `avx2.rs` repeats it with wider registers.
//!
//! ds4 has no CPU Q4_K kernel (FORMATS §2.0); the quantized-activation dot follows the formula
//! and float order of FORMATS §3.7 (the llama.cpp/CUDA computation), accumulated over blocks
//! in order like the other k-quants.

use super::{dequant_block, scale_min, unpack_codes, BLOCK_BYTES, BLOCK_ELEMS};
use crate::act::BlockQ8K;
use crate::f16_at;
use crate::lanes::dequant_dot;

/// Exactly dequantized weights · f32 `x`, in lane order.
pub(crate) fn dot_f32(row: &[u8], x: &[f32]) -> f32 {
    avx2_or!(super::avx2::dot_f32(row, x), dot_f32_portable(row, x))
}

/// Weights · Q8_K activations.
pub(crate) fn dot_q8k(row: &[u8], acts: &[BlockQ8K]) -> f32 {
    avx2_or!(super::avx2::dot_q8k(row, acts), dot_q8k_portable(row, acts))
}

pub(crate) fn dot_f32_portable(row: &[u8], x: &[f32]) -> f32 {
    dequant_dot(row, x, dequant_block)
}

/// Per block: `summs = Σ_j m_j * (bsums[2j] + bsums[2j+1])`,
/// `isum = Σ_j sc_j * Σ_l q4 * q8` (exact integers), then
/// `sumf = sumf + ((y.d * d) * (f32)isum - (y.d * dmin) * (f32)summs)`.
pub(crate) fn dot_q8k_portable(row: &[u8], acts: &[BlockQ8K]) -> f32 {
    let mut sumf = 0f32;
    for (blk, a) in row.chunks_exact(BLOCK_BYTES).zip(acts) {
        let mut q = [0u8; BLOCK_ELEMS];
        unpack_codes(blk[16..].try_into().unwrap(), &mut q);
        let mut isum = 0i32;
        for (j, (qj, yj)) in q.chunks_exact(32).zip(a.qs.chunks_exact(32)).enumerate() {
            let s: i32 = qj.iter().zip(yj).map(|(&c, &y)| c as i32 * y as i32).sum();
            isum += scale_min(&blk[4..16], j).0 as i32 * s;
        }
        sumf += combine(blk, a.d, isum, summs(blk, &a.bsums));
    }
    sumf
}

/// `Σ_j m_j * (bsums[2j] + bsums[2j+1])`.
#[inline(always)]
pub(crate) fn summs(blk: &[u8], bsums: &[i16; 16]) -> i32 {
    (0..8).map(|j| scale_min(&blk[4..16], j).1 as i32 * (bsums[2 * j] as i32 + bsums[2 * j + 1] as i32)).sum()
}

/// One block's contribution: `(y.d * d) * isum - (y.d * dmin) * summs`, f32, this order.
#[inline(always)]
pub(crate) fn combine(blk: &[u8], yd: f32, isum: i32, summs: i32) -> f32 {
    (yd * f16_at(blk, 0)) * isum as f32 - (yd * f16_at(blk, 2)) * summs as f32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{random_acts_q8k, random_row, random_x};

    #[test]
    fn simd_and_portable_agree_bitwise() {
        for seed in 0..20 {
            let row = random_row(crate::GgmlType::Q4_K, 1024, seed);
            let x = random_x(1024, seed);
            let acts = random_acts_q8k(&x);
            assert_eq!(dot_f32(&row, &x).to_bits(), dot_f32_portable(&row, &x).to_bits());
            assert_eq!(dot_q8k(&row, &acts).to_bits(), dot_q8k_portable(&row, &acts).to_bits());
        }
    }
}
