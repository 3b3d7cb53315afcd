//! Q2_K row dot products. Lengths are checked by the public callers in `crate::dot`; the
//! portable functions define the arithmetic, `avx2.rs` repeats it with wider registers.

use super::{dequant_block, unpack_codes, BLOCK_BYTES, BLOCK_ELEMS};
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

/// [`dot_q8k`] of one row against four activation vectors (the codes unpacked once), the
/// bits of four separate calls.
pub(crate) fn dot_q8k_x4(row: &[u8], acts: [&[BlockQ8K]; 4]) -> [f32; 4] {
    avx2_or!(super::avx2::dot_q8k_x4(row, acts), acts.map(|a| dot_q8k_portable(row, a)))
}

pub(crate) fn dot_f32_portable(row: &[u8], x: &[f32]) -> f32 {
    dequant_dot(row, x, dequant_block)
}

/// ds4 scalar order (FORMATS §3.5), per block in order:
/// `summs = Σ_j bsums[j] * min_j`, `isum = Σ_j scale_j * Σ_l q2 * q8` (exact integers), then
/// `sumf = sumf + ((y.d * d) * (f32)isum - (y.d * dmin) * (f32)summs)`.
pub(crate) fn dot_q8k_portable(row: &[u8], acts: &[BlockQ8K]) -> f32 {
    let mut sumf = 0f32;
    for (blk, a) in row.chunks_exact(BLOCK_BYTES).zip(acts) {
        let mut q = [0u8; BLOCK_ELEMS];
        unpack_codes(blk[16..80].try_into().unwrap(), &mut q);
        let summs = summs(&blk[..16], &a.bsums);
        let mut isum = 0i32;
        for (j, (qj, yj)) in q.chunks_exact(16).zip(a.qs.chunks_exact(16)).enumerate() {
            let s: i32 = qj.iter().zip(yj).map(|(&c, &y)| c as i32 * y as i32).sum();
            isum += (blk[j] & 15) as i32 * s;
        }
        sumf += combine(blk, a.d, isum, summs);
    }
    sumf
}

/// `Σ_j bsums[j] * (scales[j] >> 4)`.
#[inline(always)]
pub(crate) fn summs(scales: &[u8], bsums: &[i16; 16]) -> i32 {
    scales.iter().zip(bsums).map(|(&s, &b)| b as i32 * (s >> 4) as i32).sum()
}

/// One block's contribution: `(y.d * d) * isum - (y.d * dmin) * summs`, f32, this order.
#[inline(always)]
pub(crate) fn combine(blk: &[u8], yd: f32, isum: i32, summs: i32) -> f32 {
    let dall = yd * f16_at(blk, 80);
    let dmin = yd * f16_at(blk, 82);
    dall * isum as f32 - dmin * summs as f32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{random_acts_q8k, random_row, random_x};

    #[test]
    fn simd_and_portable_agree_bitwise() {
        for seed in 0..20 {
            let row = random_row(crate::GgmlType::Q2_K, 1024, seed);
            let x = random_x(1024, seed);
            let acts = random_acts_q8k(&x);
            assert_eq!(dot_f32(&row, &x).to_bits(), dot_f32_portable(&row, &x).to_bits());
            assert_eq!(dot_q8k(&row, &acts).to_bits(), dot_q8k_portable(&row, &acts).to_bits());
        }
    }

    #[test]
    fn four_vectors_give_the_bits_of_four_calls() {
        crate::test_util::check_q8k_x4(crate::GgmlType::Q2_K, dot_q8k_x4, dot_q8k_portable);
    }
}
