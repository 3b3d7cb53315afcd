//! AVX2/F16C versions of the lane-order float dots, same arithmetic (see `crate::x86`). F16C's
//! conversion is exact for every finite f16, subnormals included.

use std::arch::x86_64::*;

use super::{bf16_elem, f16_elem, f32_at};
use crate::lanes::{reduce, LANES};
use crate::x86::AccX;

/// Shared shape: full 32-column chunks in registers, then the tail onto lanes `0..tail`.
macro_rules! kernel {
    ($name:ident, $width:literal, $elem:ident, |$bytes:ident| $load:expr) => {
        #[target_feature(enable = "avx2,f16c")]
        pub(crate) fn $name(row: &[u8], x: &[f32]) -> f32 {
            let mut acc = AccX::new();
            let full = x.len() / LANES;
            for c in 0..full {
                for r in 0..4 {
                    let at = LANES * c + 8 * r;
                    let $bytes: &[u8; 8 * $width] = row[$width * at..$width * (at + 8)].try_into().unwrap();
                    acc.add(r, $load, x[at..at + 8].try_into().unwrap());
                }
            }
            let mut lanes = acc.lanes();
            for i in LANES * full..x.len() {
                lanes[i % LANES] += $elem(row, i) * x[i];
            }
            reduce(lanes)
        }
    };
}

// SAFETY (all three loads): `bytes` is a reference to exactly the bytes read; unaligned loads.
kernel!(dot_f32, 4, f32_at, |bytes| unsafe { _mm256_loadu_ps(bytes.as_ptr() as *const f32) });
kernel!(dot_f16, 2, f16_elem, |bytes| _mm256_cvtph_ps(unsafe {
    _mm_loadu_si128(bytes.as_ptr() as *const __m128i)
}));
kernel!(dot_bf16, 2, bf16_elem, |bytes| _mm256_castsi256_ps(_mm256_slli_epi32::<16>(
    _mm256_cvtepu16_epi32(unsafe { _mm_loadu_si128(bytes.as_ptr() as *const __m128i) })
)));
