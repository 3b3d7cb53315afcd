//! IQ2_XXS row dot products. Lengths are checked by the public callers in `crate::dot`; the
//! portable functions define the arithmetic, `avx2.rs` repeats it with wider registers.

use super::tables::{GRID, SIGN_MASKS};
use super::{dequant_block, group_words, BLOCK_BYTES};
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

/// [`dot_q8k`] of one row against four activation vectors (the weights decoded once), the
/// bits of four separate calls.
pub(crate) fn dot_q8k_x4(row: &[u8], acts: [&[BlockQ8K]; 4]) -> [f32; 4] {
    avx2_or!(super::avx2::dot_q8k_x4(row, acts), acts.map(|a| dot_q8k_portable(row, a)))
}

pub(crate) fn dot_f32_portable(row: &[u8], x: &[f32]) -> f32 {
    dequant_dot(row, x, dequant_block)
}

/// The eight signed grid values of an octet as i8 bytes packed in a u64 (byte `j` = element
/// `j`). Grid bytes are at most 43, so negating byte-wise as `(g ^ 0xff) + 1` never carries
/// into the next byte.
#[inline(always)]
pub(crate) fn signed_octet(grid_index: u32, sign_index: u32) -> u64 {
    let g = GRID[grid_index as usize];
    let m = SIGN_MASKS[sign_index as usize];
    (g ^ m) + (m & 0x0101_0101_0101_0101)
}

/// ds4 scalar order (FORMATS §3.6): per block `dd = f32(d) * y.d`,
/// `bsum = Σ_ib (2 ls + 1) * Σ (±grid) * q8` (exact integer),
/// `sumf = sumf + dd * (f32)bsum`; the result is `0.125 * sumf`.
pub(crate) fn dot_q8k_portable(row: &[u8], acts: &[BlockQ8K]) -> f32 {
    let mut sumf = 0f32;
    for (blk, a) in row.chunks_exact(BLOCK_BYTES).zip(acts) {
        let mut bsum = 0i32;
        for (ib, y) in a.qs.chunks_exact(32).enumerate() {
            let (qa, qb) = group_words(blk, ib);
            let mut s = 0i32;
            for (k, yk) in y.chunks_exact(8).enumerate() {
                let oct = signed_octet((qa >> (8 * k)) & 0xff, (qb >> (7 * k)) & 127).to_le_bytes();
                s += oct.iter().zip(yk).map(|(&w, &q)| (w as i8) as i32 * q as i32).sum::<i32>();
            }
            bsum += (2 * (qb >> 28) as i32 + 1) * s;
        }
        sumf += (f16_at(blk, 0) * a.d) * bsum as f32;
    }
    0.125 * sumf
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{random_acts_q8k, random_row, random_x};

    #[test]
    fn simd_and_portable_agree_bitwise() {
        for seed in 0..20 {
            let row = random_row(crate::GgmlType::IQ2_XXS, 1024, seed);
            let x = random_x(1024, seed);
            let acts = random_acts_q8k(&x);
            assert_eq!(dot_f32(&row, &x).to_bits(), dot_f32_portable(&row, &x).to_bits());
            assert_eq!(dot_q8k(&row, &acts).to_bits(), dot_q8k_portable(&row, &acts).to_bits());
        }
    }

    #[test]
    fn four_vectors_give_the_bits_of_four_calls() {
        crate::test_util::check_q8k_x4(crate::GgmlType::IQ2_XXS, dot_q8k_x4, dot_q8k_portable);
    }

    #[test]
    fn signed_octet_negates_the_marked_bytes() {
        for g in 0..256u32 {
            for s in 0..128u32 {
                let oct = signed_octet(g, s).to_le_bytes();
                let signs = super::super::tables::KSIGNS[s as usize];
                for (j, &v) in oct.iter().enumerate() {
                    let mag = (GRID[g as usize] >> (8 * j)) as u8 as i8;
                    let want = if signs & (1 << j) != 0 { -mag } else { mag };
                    assert_eq!(v as i8, want);
                }
            }
        }
    }
}
