//! Q8_0 rows against up to eight quantized activation vectors at once with AVX-512 VNNI
//! (`vpdpbusd` on 256-bit registers): the batched products of the output head and the
//! attention projections when several sessions decode together on the CPU.
//!
//! Lane t of a register is token t. The activations are laid out once per call so that dword
//! j of every token's block b sits in one register ([`Acts8`]); each weight dword is then
//! broadcast to all lanes (from memory, inside the instruction) and one `vpdpbusd` adds its
//! four products for all eight tokens, so no horizontal sums are needed. `vpdpbusd`
//! multiplies unsigned by signed bytes: the activations go in with their sign bit flipped
//! (a + 128) and `128 · Σ w` (one per row and block, the same for every token) comes off
//! again, which leaves each block's integer sum exact. The f32 operations per block and token
//! are then those of `dot::dot_q8_0_portable`, in block order: the same bits as one vector at
//! a time.

use std::arch::x86_64::*;

use super::{BLOCK_BYTES, BLOCK_ELEMS};
use crate::act::BlockQ8_0Act;

/// Tokens per pass.
pub(crate) const TOKENS: usize = 8;

/// Whether the CPU has what [`rows_x8`] needs (AVX-512 VNNI with 256-bit registers), checked
/// once; off with `DSV4_QUANT_PORTABLE` like every SIMD kernel of the crate.
pub(crate) fn available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        crate::x86::available() && is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl")
    })
}

/// Up to eight activation vectors rearranged for [`rows_x8`]: per block, its eight dwords
/// across the tokens (each byte + 128) and the tokens' scales. Missing tokens (fewer than
/// eight) are zero blocks, whose results the caller drops.
pub(crate) struct Acts8 {
    /// `[block][dword j][token]`: bytes 4j..4j+4 of token t's block, each as a + 128.
    words: Vec<[i32; TOKENS]>,
    d: Vec<[f32; TOKENS]>,
}

impl Acts8 {
    /// `acts`: 1 to 8 vectors of the same number of blocks.
    pub(crate) fn new(acts: &[&[BlockQ8_0Act]]) -> Acts8 {
        let nb = acts.first().map_or(0, |a| a.len());
        let mut words = vec![[0i32; TOKENS]; nb * BLOCK_ELEMS / 4];
        let mut d = vec![[0f32; TOKENS]; nb];
        for (t, a) in acts.iter().enumerate().take(TOKENS) {
            for (b, blk) in a.iter().enumerate().take(nb) {
                for j in 0..BLOCK_ELEMS / 4 {
                    let q: [u8; 4] = std::array::from_fn(|k| (blk.qs[4 * j + k] as u8) ^ 0x80);
                    words[b * BLOCK_ELEMS / 4 + j][t] = i32::from_le_bytes(q);
                }
                d[b][t] = blk.d;
            }
        }
        // Missing tokens' zero bytes read as -128: their lanes are garbage the caller drops.
        Acts8 { words, d }
    }

    pub(crate) fn blocks(&self) -> usize {
        self.d.len()
    }
}

/// Every row of `w` (rows of `row_bytes`, `acts.blocks()` blocks each) against the vectors of
/// `acts`: vector t's row i goes to `outs[t][i]` (`outs`: one slice of at least the rows per
/// vector, at most eight; the lanes of missing vectors are dropped).
///
/// Rows go eight at a time: each activation register is loaded once for the eight rows, and
/// the eight rows' sums are independent chains (one row at a time, a block's dependent
/// `vpdpbusd` latencies set the pace); the eight rows' results are transposed to eight
/// consecutive outputs per vector. Each row's arithmetic is the same either way.
///
/// # Safety
/// The CPU has AVX-512 VNNI and VL ([`available`]); `row_bytes == acts.blocks() * 34`.
#[target_feature(enable = "avx2,f16c,avx512f,avx512vl,avx512vnni")]
pub(crate) unsafe fn rows_x8(w: &[u8], row_bytes: usize, acts: &Acts8, outs: &mut [&mut [f32]]) {
    let nb = acts.blocks();
    // A row of other length would be read in part, silently: refuse it.
    assert_eq!(row_bytes, nb * BLOCK_BYTES, "Q8_0 rows of {row_bytes} bytes against {nb} activation blocks");
    assert!(outs.len() <= TOKENS, "{} vectors in one pass of eight", outs.len());
    if row_bytes == 0 {
        return;
    }
    let rows = outs.iter().fold(w.len() / row_bytes, |r, o| r.min(o.len()));
    let mut wt = w[..rows * row_bytes].chunks_exact(TILE * row_bytes);
    for (g, wr) in (&mut wt).enumerate() {
        // The tile reads its rows side by side, which the hardware prefetchers do not follow:
        // ask for the lines two tiles on (a prefetch never faults, past the end included).
        let next = wr.as_ptr().wrapping_add(2 * wr.len());
        for k in (0..wr.len()).step_by(64) {
            _mm_prefetch::<_MM_HINT_T0>(next.wrapping_add(k).cast());
        }
        // SAFETY: TILE whole rows of the activations' block count; the caller vouched for the CPU.
        let acc = unsafe { tile::<TILE>(wr, row_bytes, acts) };
        // Lane r of vector t's register: row 8g + r.
        let per_vector = crate::float::transpose8(acc);
        for (o, v) in outs.iter_mut().zip(&per_vector) {
            // SAFETY: rows 8g..8g+8 lie in every output (rows <= o.len()).
            unsafe { _mm256_storeu_ps(o.as_mut_ptr().add(TILE * g), *v) };
        }
    }
    let done = rows / TILE * TILE;
    for (i, wr) in wt.remainder().chunks_exact(row_bytes).enumerate() {
        // SAFETY: as above, one row.
        let [acc] = unsafe { tile::<1>(wr, row_bytes, acts) };
        let mut lanes = [0f32; TOKENS];
        // SAFETY: eight writable f32.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc) };
        for (o, &v) in outs.iter_mut().zip(&lanes) {
            o[done + i] = v;
        }
    }
}

/// Rows a pass of [`rows_x8`].
const TILE: usize = 8;

/// `R` rows (`w` holds exactly them) against the eight vectors: row r's results, lane t for
/// vector t.
#[inline(always)]
unsafe fn tile<const R: usize>(w: &[u8], row_bytes: usize, acts: &Acts8) -> [__m256; R] {
    debug_assert!(w.len() == R * row_bytes);
    let ones = _mm256_set1_epi8(1);
    let mut acc = [_mm256_setzero_ps(); R];
    let p = w.as_ptr();
    for b in 0..acts.blocks() {
        let words = &acts.words[b * BLOCK_ELEMS / 4..(b + 1) * BLOCK_ELEMS / 4];
        let mut s = [_mm256_setzero_si256(); R];
        for j in 0..BLOCK_ELEMS / 4 {
            // SAFETY: eight i32 (words has BLOCK_ELEMS / 4 entries), read unaligned.
            let a = unsafe { _mm256_loadu_si256(words.get_unchecked(j).as_ptr().cast()) };
            for (r, sr) in s.iter_mut().enumerate() {
                // Dword j of row r's block b: codes 4j..4j+4 (after the block's f16 scale).
                // SAFETY: row r < R exists and the block has 32 codes, so the four bytes lie in w.
                let q = unsafe { std::ptr::read_unaligned(p.add(r * row_bytes + b * BLOCK_BYTES + 2 + 4 * j).cast::<i32>()) };
                *sr = _mm256_dpbusd_epi32(*sr, a, _mm256_set1_epi32(q));
            }
        }
        // The R rows' block scales, converted together.
        let mut h = [0u16; 8];
        for (r, hr) in h.iter_mut().enumerate().take(R) {
            // SAFETY: the scale's two bytes start block b of row r.
            *hr = u16::from_le(unsafe { std::ptr::read_unaligned(p.add(r * row_bytes + b * BLOCK_BYTES).cast::<u16>()) });
        }
        let mut dw = [0f32; 8];
        // SAFETY: eight u16 read, eight f32 written.
        unsafe { _mm256_storeu_ps(dw.as_mut_ptr(), f16x8_to_f32(_mm_loadu_si128(h.as_ptr().cast()))) };
        // SAFETY: eight f32, read unaligned.
        let dx = unsafe { _mm256_loadu_ps(acts.d[b].as_ptr()) };
        for r in 0..R {
            // 128 · Σ w of the row's block, in every lane.
            // SAFETY: the block's 32 codes lie in w.
            let codes = unsafe { _mm256_loadu_si256(p.add(r * row_bytes + b * BLOCK_BYTES + 2).cast()) };
            let corr = _mm256_slli_epi32(sum_lanes(_mm256_dpbusd_epi32(_mm256_setzero_si256(), ones, codes)), 7);
            // Integer sums are exact in any order; then the scalar code's f32 steps: acc +=
            // (d_w * d_x) * isum, no fused multiply-add.
            let isum = _mm256_cvtepi32_ps(_mm256_sub_epi32(s[r], corr));
            let scale = _mm256_mul_ps(_mm256_set1_ps(dw[r]), dx);
            acc[r] = _mm256_add_ps(acc[r], _mm256_mul_ps(scale, isum));
        }
    }
    acc
}

/// The sum of the eight lanes, in every lane.
#[inline(always)]
unsafe fn sum_lanes(v: __m256i) -> __m256i {
    let v = _mm256_add_epi32(v, _mm256_permute2x128_si256::<1>(v, v));
    let v = _mm256_add_epi32(v, _mm256_shuffle_epi32::<0b01_00_11_10>(v));
    _mm256_add_epi32(v, _mm256_shuffle_epi32::<0b10_11_00_01>(v))
}

/// Eight IEEE f16 to f32 exactly as `float::f16_to_f32` (subnormals, infinities and NaN
/// payloads kept, NaNs not quieted), lane by lane.
#[inline(always)]
unsafe fn f16x8_to_f32(v: __m128i) -> __m256 {
    let h = _mm256_cvtepu16_epi32(v);
    let sign = _mm256_slli_epi32(_mm256_and_si256(h, _mm256_set1_epi32(0x8000)), 16);
    let em = _mm256_and_si256(h, _mm256_set1_epi32(0x7fff));
    let shifted = _mm256_slli_epi32(em, 13);
    let normal = _mm256_add_epi32(shifted, _mm256_set1_epi32(112 << 23));
    let special = _mm256_or_si256(shifted, _mm256_set1_epi32(0x7f80_0000));
    let sub = _mm256_castps_si256(_mm256_mul_ps(_mm256_cvtepi32_ps(em), _mm256_set1_ps(1.0 / 16_777_216.0)));
    let is_sub = _mm256_cmpgt_epi32(_mm256_set1_epi32(0x400), em);
    let is_special = _mm256_cmpgt_epi32(em, _mm256_set1_epi32(0x7bff));
    let bits = _mm256_blendv_epi8(_mm256_blendv_epi8(normal, special, is_special), sub, is_sub);
    _mm256_castsi256_ps(_mm256_or_si256(bits, sign))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::q8_0::dot::dot_q8_0_portable;
    use crate::test_util::{random_acts_q8_0, random_row, random_x};

    #[test]
    fn eight_at_once_equal_single_products_bitwise() {
        if !available() {
            eprintln!("no AVX-512 VNNI on this CPU: skipped");
            return;
        }
        for (seed, cols, ntok) in [(1u64, 256usize, 8usize), (2, 1024, 8), (3, 4096, 5), (4, 32, 1), (5, 512, 3)] {
            let rows = 37;
            let mut w: Vec<u8> = (0..rows).flat_map(|r| random_row(crate::GgmlType::Q8_0, cols, seed * 1000 + r as u64)).collect();
            // Extremes: weight codes of -128 and 127 in the first block of row 9.
            let row_bytes = cols / BLOCK_ELEMS * BLOCK_BYTES;
            w[9 * row_bytes + 2..9 * row_bytes + 34].iter_mut().enumerate().for_each(|(i, q)| *q = if i % 3 == 0 { 0x80 } else { 0x7f });
            let mut xs: Vec<Vec<BlockQ8_0Act>> = (0..ntok).map(|t| random_acts_q8_0(&random_x(cols, seed * 77 + t as u64))).collect();
            // Extremes: codes of -127 and 127 in one block of the first vector.
            if let Some(b) = xs[0].first_mut() {
                b.qs.iter_mut().enumerate().for_each(|(i, q)| *q = if i % 2 == 0 { 127 } else { -127 });
            }
            let refs: Vec<&[BlockQ8_0Act]> = xs.iter().map(Vec::as_slice).collect();
            let acts = Acts8::new(&refs);
            let mut out = vec![vec![f32::NAN; rows]; ntok];
            let mut views: Vec<&mut [f32]> = out.iter_mut().map(Vec::as_mut_slice).collect();
            // SAFETY: checked available; row_bytes matches the blocks.
            unsafe { rows_x8(&w, row_bytes, &acts, &mut views) };
            for (t, o) in out.iter().enumerate() {
                for (r, v) in o.iter().enumerate() {
                    let want = dot_q8_0_portable(&w[r * row_bytes..(r + 1) * row_bytes], &xs[t]);
                    assert_eq!(v.to_bits(), want.to_bits(), "cols {cols} row {r} token {t}");
                }
            }
        }
    }
}
