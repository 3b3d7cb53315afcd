//! AVX2 versions of `dot.rs`, same arithmetic (see `crate::x86`).

use std::arch::x86_64::*;

use super::dot::signed_octet;
use super::tables::{GRID, KSIGNS};
use super::{group_words, BLOCK_BYTES, BLOCK_ELEMS};
use crate::act::BlockQ8K;
use crate::f16_at;
use crate::x86::{dot_i8x32, hsum_i32, load32_i8, AccX};

#[target_feature(enable = "avx2,f16c")]
pub(crate) fn dot_f32(row: &[u8], x: &[f32]) -> f32 {
    let mut acc = AccX::new();
    let bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    let (plus, minus) = (_mm256_set1_ps(1.0), _mm256_set1_ps(-1.0));
    for (blk, xs) in row.chunks_exact(BLOCK_BYTES).zip(x.chunks_exact(BLOCK_ELEMS)) {
        let d = f16_at(blk, 0);
        for ib in 0..8 {
            let (a, b) = group_words(blk, ib);
            let db = _mm256_set1_ps((d * (0.5 + (b >> 28) as f32)) * 0.25);
            for k in 0..4 {
                let grid = GRID[((a >> (8 * k)) & 0xff) as usize];
                let mag = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(grid as i64)));
                // ±1.0 per element from the sign byte, then a real multiply as in the
                // portable code.
                let signs = _mm256_set1_epi32(KSIGNS[((b >> (7 * k)) & 127) as usize] as i32);
                let neg = _mm256_cmpeq_epi32(_mm256_and_si256(signs, bit), bit);
                let s = _mm256_blendv_ps(plus, minus, _mm256_castsi256_ps(neg));
                let w = _mm256_mul_ps(_mm256_mul_ps(db, mag), s);
                let at = 32 * ib + 8 * k;
                acc.add(k, w, xs[at..at + 8].try_into().unwrap());
            }
        }
    }
    acc.sum()
}

#[target_feature(enable = "avx2,f16c")]
pub(crate) fn dot_q8k(row: &[u8], acts: &[BlockQ8K]) -> f32 {
    dot_q8k_n::<1>(row, [acts])[0]
}

/// `dot_q8k` of one row against four activation vectors: each group's signed octets are
/// built once for all four; every vector's sums are those `dot_q8k` makes, in its order.
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
        let mut bsum = [_mm256_setzero_si256(); N];
        for ib in 0..8 {
            let (qa, qb) = group_words(blk, ib);
            let oct = |k: u32| signed_octet((qa >> (8 * k)) & 0xff, (qb >> (7 * k)) & 127) as i64;
            let w = _mm256_setr_epi64x(oct(0), oct(1), oct(2), oct(3));
            let ls = _mm256_set1_epi32(2 * (qb >> 28) as i32 + 1);
            for (b, a) in bsum.iter_mut().zip(&acts) {
                let y = load32_i8(a[i].qs[32 * ib..32 * ib + 32].try_into().unwrap());
                *b = _mm256_add_epi32(*b, _mm256_mullo_epi32(dot_i8x32(w, y), ls));
            }
        }
        let d = f16_at(blk, 0);
        for ((s, b), a) in sumf.iter_mut().zip(bsum).zip(&acts) {
            *s += (d * a[i].d) * hsum_i32(b) as f32;
        }
    }
    sumf.map(|s| 0.125 * s)
}
