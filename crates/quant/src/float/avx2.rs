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

/// 8x8 transpose: output `k` holds element `k` of each input, input `r` in lane `r`.
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) fn transpose8(p: [__m256; 8]) -> [__m256; 8] {
    let t0 = _mm256_unpacklo_ps(p[0], p[1]);
    let t1 = _mm256_unpackhi_ps(p[0], p[1]);
    let t2 = _mm256_unpacklo_ps(p[2], p[3]);
    let t3 = _mm256_unpackhi_ps(p[2], p[3]);
    let t4 = _mm256_unpacklo_ps(p[4], p[5]);
    let t5 = _mm256_unpackhi_ps(p[4], p[5]);
    let t6 = _mm256_unpacklo_ps(p[6], p[7]);
    let t7 = _mm256_unpackhi_ps(p[6], p[7]);
    let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
    let s1 = _mm256_shuffle_ps::<0xee>(t0, t2);
    let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
    let s3 = _mm256_shuffle_ps::<0xee>(t1, t3);
    let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
    let s5 = _mm256_shuffle_ps::<0xee>(t4, t6);
    let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
    let s7 = _mm256_shuffle_ps::<0xee>(t5, t7);
    [
        _mm256_permute2f128_ps::<0x20>(s0, s4),
        _mm256_permute2f128_ps::<0x20>(s1, s5),
        _mm256_permute2f128_ps::<0x20>(s2, s6),
        _mm256_permute2f128_ps::<0x20>(s3, s7),
        _mm256_permute2f128_ps::<0x31>(s0, s4),
        _mm256_permute2f128_ps::<0x31>(s1, s5),
        _mm256_permute2f128_ps::<0x31>(s2, s6),
        _mm256_permute2f128_ps::<0x31>(s3, s7),
    ]
}

/// Eight rows in ds4's sequential order, one row per lane: per 8 columns, the eight rows'
/// products are computed column-wise, transposed, and added to the row accumulators one
/// column at a time, which is exactly each row's `acc += w[i] * x[i]` chain.
macro_rules! seq8 {
    ($name:ident, $width:literal, $elem:ident, |$bytes:ident| $load:expr) => {
        #[target_feature(enable = "avx2,f16c")]
        pub(crate) fn $name(rows: [&[u8]; 8], x: &[f32]) -> [f32; 8] {
            let full = x.len() / 8;
            let mut acc = _mm256_setzero_ps();
            for c in 0..full {
                let xs: &[f32; 8] = x[8 * c..8 * c + 8].try_into().unwrap();
                // SAFETY: 8 readable f32.
                let xv = unsafe { _mm256_loadu_ps(xs.as_ptr()) };
                let mut p = [_mm256_setzero_ps(); 8];
                for (pr, row) in p.iter_mut().zip(rows) {
                    let $bytes: &[u8; 8 * $width] = row[$width * 8 * c..$width * 8 * (c + 1)].try_into().unwrap();
                    *pr = _mm256_mul_ps($load, xv);
                }
                for col in transpose8(p) {
                    acc = _mm256_add_ps(acc, col);
                }
            }
            let mut out = [0f32; 8];
            // SAFETY: `out` has 8 f32.
            unsafe { _mm256_storeu_ps(out.as_mut_ptr(), acc) };
            for (o, row) in out.iter_mut().zip(rows) {
                for i in 8 * full..x.len() {
                    *o += $elem(row, i) * x[i];
                }
            }
            out
        }
    };
}

/// Eight rows against up to eight vectors, each (row, vector) in the sequential order: the
/// same bits as `seq8` of each vector (a product is a product; each row's additions come in
/// column order). Per eight columns the rows' weights are converted and transposed once for
/// every vector (lane r of `cols[i]` is row r's column i), and the vectors' chains run side
/// by side. `out[t]` gets vector t's eight results.
macro_rules! seq8_multi {
    ($name:ident, $width:literal, $elem:ident, |$bytes:ident| $load:expr) => {
        #[target_feature(enable = "avx2,f16c")]
        pub(crate) fn $name(rows: [&[u8]; 8], xs: &[&[f32]], out: &mut [[f32; 8]]) {
            let nt = xs.len().min(8).min(out.len());
            let len = xs.first().map_or(0, |x| x.len());
            let full = len / 8;
            let mut acc = [_mm256_setzero_ps(); 8];
            for c in 0..full {
                let mut w = [_mm256_setzero_ps(); 8];
                for (wr, row) in w.iter_mut().zip(rows) {
                    let $bytes: &[u8; 8 * $width] = row[$width * 8 * c..$width * 8 * (c + 1)].try_into().unwrap();
                    *wr = $load;
                }
                let cols = transpose8(w);
                for (a, x) in acc.iter_mut().zip(xs).take(nt) {
                    let xc: &[f32; 8] = x[8 * c..8 * c + 8].try_into().unwrap();
                    for (col, &xi) in cols.iter().zip(xc) {
                        *a = _mm256_add_ps(*a, _mm256_mul_ps(*col, _mm256_set1_ps(xi)));
                    }
                }
            }
            for ((o, a), x) in out.iter_mut().zip(&acc).zip(xs).take(nt) {
                // SAFETY: `o` has 8 f32.
                unsafe { _mm256_storeu_ps(o.as_mut_ptr(), *a) };
                for (v, row) in o.iter_mut().zip(rows) {
                    for i in 8 * full..len {
                        *v += $elem(row, i) * x[i];
                    }
                }
            }
        }
    };
}

// SAFETY (all three loads): `bytes` is a reference to exactly the bytes read; unaligned loads.
seq8_multi!(seq8_multi_f32, 4, f32_at, |bytes| unsafe { _mm256_loadu_ps(bytes.as_ptr() as *const f32) });
seq8_multi!(seq8_multi_f16, 2, f16_elem, |bytes| _mm256_cvtph_ps(unsafe {
    _mm_loadu_si128(bytes.as_ptr() as *const __m128i)
}));
seq8_multi!(seq8_multi_bf16, 2, bf16_elem, |bytes| _mm256_castsi256_ps(_mm256_slli_epi32::<16>(
    _mm256_cvtepu16_epi32(unsafe { _mm_loadu_si128(bytes.as_ptr() as *const __m128i) })
)));

// SAFETY (all three loads): `bytes` is a reference to exactly the bytes read; unaligned loads.
seq8!(seq8_f32, 4, f32_at, |bytes| unsafe { _mm256_loadu_ps(bytes.as_ptr() as *const f32) });
seq8!(seq8_f16, 2, f16_elem, |bytes| _mm256_cvtph_ps(unsafe {
    _mm_loadu_si128(bytes.as_ptr() as *const __m128i)
}));
seq8!(seq8_bf16, 2, bf16_elem, |bytes| _mm256_castsi256_ps(_mm256_slli_epi32::<16>(
    _mm256_cvtepu16_epi32(unsafe { _mm_loadu_si128(bytes.as_ptr() as *const __m128i) })
)));
