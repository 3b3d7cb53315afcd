//! AVX2 versions of `dot.rs`, same arithmetic (see `crate::x86`).

use std::arch::x86_64::*;

use super::{BLOCK_BYTES, BLOCK_ELEMS};
use crate::act::BlockQ8_0Act;
use crate::f16_at;
use crate::x86::{dot_i8x32, hsum_i32, hsum_i32x4, i8x8_to_f32, load32, load32_i8, AccX};

#[target_feature(enable = "avx2,f16c")]
pub(crate) fn dot_f32(row: &[u8], x: &[f32]) -> f32 {
    let mut acc = AccX::new();
    for (blk, xs) in row.chunks_exact(BLOCK_BYTES).zip(x.chunks_exact(BLOCK_ELEMS)) {
        let d = _mm256_set1_ps(f16_at(blk, 0));
        for r in 0..4 {
            let q = i8x8_to_f32(blk[2 + 8 * r..10 + 8 * r].try_into().unwrap());
            acc.add(r, _mm256_mul_ps(d, q), xs[8 * r..8 * r + 8].try_into().unwrap());
        }
    }
    acc.sum()
}

#[target_feature(enable = "avx2,f16c")]
pub(crate) fn dot_q8_0(row: &[u8], acts: &[BlockQ8_0Act]) -> f32 {
    let mut acc = 0f32;
    for (blk, a) in row.chunks_exact(BLOCK_BYTES).zip(acts) {
        let w = load32(blk[2..].try_into().unwrap());
        let isum = hsum_i32(dot_i8x32(w, load32_i8(&a.qs)));
        acc += (f16_at(blk, 0) * a.d) * isum as f32;
    }
    acc
}

/// Four activation vectors against one row: the weight block is loaded once, the four integer
/// sums are reduced together, and the four accumulators advance as the lanes of one register
/// (lane t performs exactly the f32 operations of `dot_q8_0` for vector t).
#[target_feature(enable = "avx2,f16c")]
pub(crate) fn dot_q8_0_x4(row: &[u8], acts: [&[BlockQ8_0Act]; 4]) -> [f32; 4] {
    let mut acc = _mm_setzero_ps();
    for (b, blk) in row.chunks_exact(BLOCK_BYTES).enumerate() {
        let w = load32(blk[2..].try_into().unwrap());
        let p: [__m256i; 4] = std::array::from_fn(|t| dot_i8x32(w, load32_i8(&acts[t][b].qs)));
        let isum = _mm_cvtepi32_ps(hsum_i32x4(p));
        let dx = _mm_setr_ps(acts[0][b].d, acts[1][b].d, acts[2][b].d, acts[3][b].d);
        let scale = _mm_mul_ps(_mm_set1_ps(f16_at(blk, 0)), dx);
        acc = _mm_add_ps(acc, _mm_mul_ps(scale, isum));
    }
    let mut out = [0f32; 4];
    // SAFETY: four writable f32; unaligned store.
    unsafe { _mm_storeu_ps(out.as_mut_ptr(), acc) };
    out
}
