//! AVX2 versions of `dot.rs`, same arithmetic (see `crate::x86`).

use std::arch::x86_64::*;

use super::{BLOCK_BYTES, BLOCK_ELEMS};
use crate::act::BlockQ8_0Act;
use crate::f16_at;
use crate::x86::{dot_i8x32, hsum_i32, i8x8_to_f32, load32, load32_i8, AccX};

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
