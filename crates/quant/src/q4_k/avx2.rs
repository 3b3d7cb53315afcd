//! AVX2 versions of `dot.rs`, same arithmetic (see `crate::x86`).

use std::arch::x86_64::*;

use super::dot::{combine, summs};
use super::{scale_min, BLOCK_BYTES, BLOCK_ELEMS};
use crate::act::BlockQ8K;
use crate::f16_at;
use crate::x86::{dot_u8i8_pairs, hsum_i32, load32, load32_i8, u8x32_to_f32, AccX};

/// Low and high nibbles of chunk `c`'s 32 bytes: sub-blocks `2c` and `2c + 1`.
#[inline]
#[target_feature(enable = "avx2")]
fn nibbles(blk: &[u8], c: usize) -> [__m256i; 2] {
    let bytes = load32(blk[16 + 32 * c..48 + 32 * c].try_into().unwrap());
    let m = _mm256_set1_epi8(15);
    [_mm256_and_si256(bytes, m), _mm256_and_si256(_mm256_srli_epi16::<4>(bytes), m)]
}

#[target_feature(enable = "avx2,f16c")]
pub(crate) fn dot_f32(row: &[u8], x: &[f32]) -> f32 {
    let mut acc = AccX::new();
    for (blk, xs) in row.chunks_exact(BLOCK_BYTES).zip(x.chunks_exact(BLOCK_ELEMS)) {
        let (d, dmin) = (f16_at(blk, 0), f16_at(blk, 2));
        for c in 0..4 {
            for (half, codes) in nibbles(blk, c).into_iter().enumerate() {
                let j = 2 * c + half;
                let (sc, m) = scale_min(&blk[4..16], j);
                let dl = _mm256_set1_ps(d * sc as f32);
                let ml = _mm256_set1_ps(dmin * m as f32);
                let w = u8x32_to_f32(codes).map(|q| _mm256_sub_ps(_mm256_mul_ps(dl, q), ml));
                acc.add_chunk(w, xs[32 * j..32 * j + 32].try_into().unwrap());
            }
        }
    }
    acc.sum()
}

#[target_feature(enable = "avx2,f16c")]
pub(crate) fn dot_q8k(row: &[u8], acts: &[BlockQ8K]) -> f32 {
    let mut sumf = 0f32;
    for (blk, a) in row.chunks_exact(BLOCK_BYTES).zip(acts) {
        let mut isum = _mm256_setzero_si256();
        for c in 0..4 {
            for (half, codes) in nibbles(blk, c).into_iter().enumerate() {
                let j = 2 * c + half;
                let y = load32_i8(a.qs[32 * j..32 * j + 32].try_into().unwrap());
                let sc = _mm256_set1_epi16(scale_min(&blk[4..16], j).0 as i16);
                isum = _mm256_add_epi32(isum, _mm256_madd_epi16(dot_u8i8_pairs(codes, y), sc));
            }
        }
        sumf += combine(blk, a.d, hsum_i32(isum), summs(blk, &a.bsums));
    }
    sumf
}
