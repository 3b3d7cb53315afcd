//! Q8_0 rows against up to eight quantized activation vectors at once with AVX-512 VNNI
//! (`vpdpbusd` on 256-bit registers): the batched products of the output head and the
//! attention projections when several sessions decode together on the CPU.
//!
//! Lane t of a register is token t. The activations are laid out once per call so that dword
//! j of every token's block b sits in one register ([`Acts8`]); each weight dword is then
//! broadcast to all lanes and one `vpdpbusd` adds its four products for all eight tokens, so
//! no horizontal sums are needed. `vpdpbusd` multiplies unsigned by signed bytes: the weights
//! go in with their sign bit flipped (w + 128) and `128 · Σ a` comes off again, which leaves
//! each block's integer sum exact. The f32 operations per block and token are then those of
//! `dot::dot_q8_0_portable`, in block order: the same bits as one vector at a time.

use std::arch::x86_64::*;

use super::{BLOCK_BYTES, BLOCK_ELEMS};
use crate::act::BlockQ8_0Act;
use crate::f16_at;

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
/// across the tokens, the tokens' scales and `128 · Σ a`. Missing tokens (fewer than eight)
/// are zero blocks, whose results the caller drops.
pub(crate) struct Acts8 {
    /// `[block][dword j][token]`: bytes 4j..4j+4 of token t's block.
    words: Vec<[i32; TOKENS]>,
    d: Vec<[f32; TOKENS]>,
    bias: Vec<[i32; TOKENS]>,
}

impl Acts8 {
    /// `acts`: 1 to 8 vectors of the same number of blocks.
    pub(crate) fn new(acts: &[&[BlockQ8_0Act]]) -> Acts8 {
        let nb = acts.first().map_or(0, |a| a.len());
        let mut words = vec![[0i32; TOKENS]; nb * BLOCK_ELEMS / 4];
        let mut d = vec![[0f32; TOKENS]; nb];
        let mut bias = vec![[0i32; TOKENS]; nb];
        for (t, a) in acts.iter().enumerate().take(TOKENS) {
            for (b, blk) in a.iter().enumerate().take(nb) {
                for j in 0..BLOCK_ELEMS / 4 {
                    let q = &blk.qs[4 * j..4 * j + 4];
                    words[b * BLOCK_ELEMS / 4 + j][t] = i32::from_le_bytes([q[0] as u8, q[1] as u8, q[2] as u8, q[3] as u8]);
                }
                d[b][t] = blk.d;
                bias[b][t] = 128 * blk.qs.iter().map(|&v| v as i32).sum::<i32>();
            }
        }
        Acts8 { words, d, bias }
    }

    pub(crate) fn blocks(&self) -> usize {
        self.d.len()
    }
}

/// Every row of `w` (rows of `row_bytes`, `acts.blocks()` blocks each) against the eight
/// vectors: row i's eight results go to `out[i]`.
///
/// # Safety
/// The CPU has AVX-512 VNNI and VL ([`available`]); `row_bytes == acts.blocks() * 34`.
#[target_feature(enable = "avx2,f16c,avx512f,avx512vl,avx512vnni")]
pub(crate) unsafe fn rows_x8(w: &[u8], row_bytes: usize, acts: &Acts8, out: &mut [[f32; TOKENS]]) {
    let nb = acts.blocks();
    // A row of other length would be read in part, silently: refuse it.
    assert_eq!(row_bytes, nb * BLOCK_BYTES, "Q8_0 rows of {row_bytes} bytes against {nb} activation blocks");
    let flip = _mm256_set1_epi32(0x8080_8080u32 as i32);
    for (row, o) in w.chunks_exact(row_bytes).zip(out.iter_mut()) {
        let mut acc = _mm256_setzero_ps();
        for b in 0..nb {
            let blk = &row[b * BLOCK_BYTES..(b + 1) * BLOCK_BYTES];
            let words = &acts.words[b * BLOCK_ELEMS / 4..(b + 1) * BLOCK_ELEMS / 4];
            // Two chains of four: integer sums are exact in any order.
            let mut s0 = _mm256_setzero_si256();
            let mut s1 = _mm256_setzero_si256();
            for j in 0..BLOCK_ELEMS / 8 {
                let q = &blk[2 + 8 * j..10 + 8 * j];
                let w0 = _mm256_xor_si256(_mm256_set1_epi32(i32::from_le_bytes([q[0], q[1], q[2], q[3]])), flip);
                let w1 = _mm256_xor_si256(_mm256_set1_epi32(i32::from_le_bytes([q[4], q[5], q[6], q[7]])), flip);
                // SAFETY: each is eight i32, read unaligned.
                let (a0, a1) = unsafe {
                    (
                        _mm256_loadu_si256(words[2 * j].as_ptr().cast()),
                        _mm256_loadu_si256(words[2 * j + 1].as_ptr().cast()),
                    )
                };
                s0 = _mm256_dpbusd_epi32(s0, w0, a0);
                s1 = _mm256_dpbusd_epi32(s1, w1, a1);
            }
            // SAFETY: as above.
            let (bias, dx) = unsafe { (_mm256_loadu_si256(acts.bias[b].as_ptr().cast()), _mm256_loadu_ps(acts.d[b].as_ptr())) };
            let isum = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_add_epi32(s0, s1), bias));
            // acc += (d_w * d_x) * isum, as the scalar code (no fused multiply-add).
            let scale = _mm256_mul_ps(_mm256_set1_ps(f16_at(blk, 0)), dx);
            acc = _mm256_add_ps(acc, _mm256_mul_ps(scale, isum));
        }
        // SAFETY: eight writable f32.
        unsafe { _mm256_storeu_ps(o.as_mut_ptr(), acc) };
    }
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
            let w: Vec<u8> = (0..rows).flat_map(|r| random_row(crate::GgmlType::Q8_0, cols, seed * 1000 + r as u64)).collect();
            let mut xs: Vec<Vec<BlockQ8_0Act>> = (0..ntok).map(|t| random_acts_q8_0(&random_x(cols, seed * 77 + t as u64))).collect();
            // Extremes: codes of -127 and 127 in one block of the first vector.
            if let Some(b) = xs[0].first_mut() {
                b.qs.iter_mut().enumerate().for_each(|(i, q)| *q = if i % 2 == 0 { 127 } else { -127 });
            }
            let refs: Vec<&[BlockQ8_0Act]> = xs.iter().map(Vec::as_slice).collect();
            let acts = Acts8::new(&refs);
            let mut out = vec![[f32::NAN; TOKENS]; rows];
            let row_bytes = cols / BLOCK_ELEMS * BLOCK_BYTES;
            // SAFETY: checked available; row_bytes matches the blocks.
            unsafe { rows_x8(&w, row_bytes, &acts, &mut out) };
            for (r, o) in out.iter().enumerate() {
                for t in 0..ntok {
                    let want = dot_q8_0_portable(&w[r * row_bytes..(r + 1) * row_bytes], &xs[t]);
                    assert_eq!(o[t].to_bits(), want.to_bits(), "cols {cols} row {r} token {t}");
                }
            }
        }
    }
}
