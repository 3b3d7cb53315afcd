//! AVX2 building blocks for the per-format kernels (`*/avx2.rs`), used when the CPU has AVX2
//! and F16C (checked once at run time, then cached). Setting the environment variable
//! `DSV4_QUANT_PORTABLE=1` forces the portable kernels, e.g. to run the test suite on them.
//!
//! Every kernel performs the same f32 operations, per element and per lane, as the portable
//! code it replaces, so results are bit-identical; integer sums are exact in any order. Each
//! format's unit tests compare the two paths bit for bit.

use std::arch::x86_64::*;

use crate::lanes::{reduce, LANES};

#[inline]
pub(crate) fn available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        std::env::var_os("DSV4_QUANT_PORTABLE").is_none_or(|v| v.is_empty() || v == "0")
            && is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("f16c")
    })
}

/// The 32 lanes of [`crate::lanes::Acc`] as four registers: register `r` holds lanes
/// `8r..8r+8`.
#[derive(Clone, Copy)]
pub(crate) struct AccX(pub(crate) [__m256; LANES / 8]);

impl AccX {
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) fn new() -> Self {
        AccX([_mm256_setzero_ps(); LANES / 8])
    }

    /// Lane group `r` += `w * x[0..8]` (multiply, then add: no FMA).
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) fn add(&mut self, r: usize, w: __m256, x: &[f32; 8]) {
        // SAFETY: `x` is 8 readable f32; unaligned loads are allowed.
        let xv = unsafe { _mm256_loadu_ps(x.as_ptr()) };
        self.0[r] = _mm256_add_ps(self.0[r], _mm256_mul_ps(w, xv));
    }

    /// A whole 32-column chunk: `w[r]` holds columns `8r..8r+8`.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) fn add_chunk(&mut self, w: [__m256; 4], x: &[f32; 32]) {
        for (r, wr) in w.into_iter().enumerate() {
            self.add(r, wr, x[8 * r..8 * r + 8].try_into().unwrap());
        }
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) fn lanes(self) -> [f32; LANES] {
        let mut out = [0f32; LANES];
        for (r, v) in self.0.into_iter().enumerate() {
            // SAFETY: `out[8r..8r+8]` is in bounds.
            unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(8 * r), v) };
        }
        out
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) fn sum(self) -> f32 {
        reduce(self.lanes())
    }
}

/// 8 bytes, sign-extended to i32 and converted (exactly) to f32.
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) fn i8x8_to_f32(b: &[u8; 8]) -> __m256 {
    // SAFETY: 8 readable bytes.
    let v = unsafe { _mm_loadl_epi64(b.as_ptr() as *const __m128i) };
    _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v))
}

/// Bytes `8r..8r+8` of a 32-byte register, zero-extended to i32 and converted to f32.
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) fn u8x32_to_f32(v: __m256i) -> [__m256; 4] {
    let lo = _mm256_castsi256_si128(v);
    let hi = _mm256_extracti128_si256::<1>(v);
    [
        _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo)),
        _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128::<8>(lo))),
        _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi)),
        _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128::<8>(hi))),
    ]
}

/// Loads 32 bytes.
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) fn load32(b: &[u8; 32]) -> __m256i {
    // SAFETY: 32 readable bytes; unaligned load.
    unsafe { _mm256_loadu_si256(b.as_ptr() as *const __m256i) }
}

/// Loads 32 i8.
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) fn load32_i8(b: &[i8; 32]) -> __m256i {
    // SAFETY: 32 readable bytes; unaligned load.
    unsafe { _mm256_loadu_si256(b.as_ptr() as *const __m256i) }
}

/// Σ a[i] * b[i] over 32 signed bytes each, as eight i32 partial sums (exact: the bytes are
/// widened to i16 first, so no input value, -128 included, can saturate).
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) fn dot_i8x32(a: __m256i, b: __m256i) -> __m256i {
    let (alo, ahi) = (_mm256_castsi256_si128(a), _mm256_extracti128_si256::<1>(a));
    let (blo, bhi) = (_mm256_castsi256_si128(b), _mm256_extracti128_si256::<1>(b));
    let lo = _mm256_madd_epi16(_mm256_cvtepi8_epi16(alo), _mm256_cvtepi8_epi16(blo));
    let hi = _mm256_madd_epi16(_mm256_cvtepi8_epi16(ahi), _mm256_cvtepi8_epi16(bhi));
    _mm256_add_epi32(lo, hi)
}

/// Pairwise `u[2i] * s[2i] + u[2i+1] * s[2i+1]` as sixteen i16, for unsigned `u` (codes, at
/// most 15 here) and signed `s`: at most 2 * 15 * 128 in magnitude, so it never saturates.
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) fn dot_u8i8_pairs(u: __m256i, s: __m256i) -> __m256i {
    _mm256_maddubs_epi16(u, s)
}

/// The sums of four vectors of eight i32, as the four lanes of one register (exact).
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) fn hsum_i32x4(v: [__m256i; 4]) -> __m128i {
    // Pairwise adds keep each vector's partial sums apart: after two rounds lane k of each
    // half holds part of vector k's sum; the halves are then added.
    let a = _mm256_hadd_epi32(v[0], v[1]);
    let b = _mm256_hadd_epi32(v[2], v[3]);
    let c = _mm256_hadd_epi32(a, b);
    _mm_add_epi32(_mm256_castsi256_si128(c), _mm256_extracti128_si256::<1>(c))
}

/// Sum of eight i32.
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) fn hsum_i32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
    _mm_cvtsi128_si32(s)
}
