//! AVX2 versions of `dot.rs`, same arithmetic (see `crate::x86`).

use std::arch::x86_64::*;

use super::dot::{combine, summs};
use super::{BLOCK_BYTES, BLOCK_ELEMS};
use crate::act::BlockQ8K;
use crate::f16_at;
use crate::x86::{dot_u8i8_pairs, hsum_i32, load32, load32_i8, u8x32_to_f32, AccX};

/// The 32 codes of elements `128h + 32k .. +32`: bit pair `k` of `qs[32h .. 32h+32]`.
#[inline]
#[target_feature(enable = "avx2")]
fn codes(bytes: __m256i, k: usize) -> __m256i {
    let shifted = _mm256_srl_epi16(bytes, _mm_cvtsi32_si128(2 * k as i32));
    _mm256_and_si256(shifted, _mm256_set1_epi8(3))
}

#[target_feature(enable = "avx2,f16c")]
pub(crate) fn dot_f32(row: &[u8], x: &[f32]) -> f32 {
    let mut acc = AccX::new();
    for (blk, xs) in row.chunks_exact(BLOCK_BYTES).zip(x.chunks_exact(BLOCK_ELEMS)) {
        let (d, dmin) = (f16_at(blk, 80), f16_at(blk, 82));
        for h in 0..2 {
            let bytes = load32(blk[16 + 32 * h..48 + 32 * h].try_into().unwrap());
            for k in 0..4 {
                let q = u8x32_to_f32(codes(bytes, k));
                // Elements 0..16 of the chunk are sub-block j, 16..32 sub-block j + 1.
                let j = 8 * h + 2 * k;
                let mut w = [_mm256_setzero_ps(); 4];
                for (r, wr) in w.iter_mut().enumerate() {
                    let sc = blk[j + r / 2];
                    let dl = _mm256_set1_ps(d * (sc & 15) as f32);
                    let ml = _mm256_set1_ps(dmin * (sc >> 4) as f32);
                    *wr = _mm256_sub_ps(_mm256_mul_ps(dl, q[r]), ml);
                }
                let at = 128 * h + 32 * k;
                acc.add_chunk(w, xs[at..at + 32].try_into().unwrap());
            }
        }
    }
    acc.sum()
}

#[target_feature(enable = "avx2,f16c")]
pub(crate) fn dot_q8k(row: &[u8], acts: &[BlockQ8K]) -> f32 {
    dot_q8k_n::<1>(row, [acts])[0]
}

/// `dot_q8k` of one row against four activation vectors: each chunk's codes and scales are
/// unpacked once for all four; every vector's sums are those `dot_q8k` makes, in its order.
#[target_feature(enable = "avx2,f16c")]
pub(crate) fn dot_q8k_x4(row: &[u8], acts: [&[BlockQ8K]; 4]) -> [f32; 4] {
    dot_q8k_n(row, acts)
}

/// One row against `N` activation vectors.
#[inline]
#[target_feature(enable = "avx2,f16c")]
fn dot_q8k_n<const N: usize>(row: &[u8], acts: [&[BlockQ8K]; N]) -> [f32; N] {
    let mut sumf = [0f32; N];
    for (i, blk) in row.chunks_exact(BLOCK_BYTES).enumerate() {
        let mut isum = [_mm256_setzero_si256(); N];
        for h in 0..2 {
            let bytes = load32(blk[16 + 32 * h..48 + 32 * h].try_into().unwrap());
            for k in 0..4 {
                let at = 128 * h + 32 * k;
                let c = codes(bytes, k);
                // i16 lanes 0..8 of a pair sum hold sub-block j's, lanes 8..16 sub-block j + 1's.
                let j = at / 16;
                let sc = _mm256_set_m128i(_mm_set1_epi16((blk[j + 1] & 15) as i16), _mm_set1_epi16((blk[j] & 15) as i16));
                for (s, a) in isum.iter_mut().zip(&acts) {
                    let y = load32_i8(a[i].qs[at..at + 32].try_into().unwrap());
                    *s = _mm256_add_epi32(*s, _mm256_madd_epi16(dot_u8i8_pairs(c, y), sc));
                }
            }
        }
        for ((s, is), a) in sumf.iter_mut().zip(isum).zip(&acts) {
            *s += combine(blk, a[i].d, hsum_i32(is), summs(&blk[..16], &a[i].bsums));
        }
    }
    sumf
}
