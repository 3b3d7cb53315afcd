//! Q4_K quantizer (FORMATS §4.6): the reference path of ggml's `quantize_row_q4_K_ref` when
//! no importance is given, and the importance path of `quantize_row_q4_K_impl` otherwise, as
//! ds4's `quants.c` runs them.

use super::{scale_min, BLOCK_BYTES, BLOCK_ELEMS};
use crate::fit::{f16_bits, f16_round, make_qkx, make_qp_quants, nearest_int, quantize_blocks};

/// Quantizes whole blocks of `x` into `out`. `importance`, when given, has one value per
/// element of `x` (the per-column vector of the row). Lengths are checked by the caller.
pub(crate) fn quantize(x: &[f32], importance: Option<&[f32]>, out: &mut [u8]) {
    quantize_blocks(x, importance, out, (BLOCK_ELEMS, BLOCK_BYTES), block_ref, block_weighted);
}

fn block_ref(x: &[f32], blk: &mut [u8]) {
    let mut l = [0u8; BLOCK_ELEMS];
    let mut scales = [0.0f32; 8];
    let mut mins = [0.0f32; 8];
    let mut weights = [0.0f32; 32];
    let (mut max_scale, mut max_min) = (0.0f32, 0.0f32);
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        let mut sum_x2 = 0.0f32;
        for &v in xs {
            sum_x2 += v * v;
        }
        // Weight each element by the sub-block RMS plus its own magnitude: large values
        // matter more, but small ones are not ignored.
        let av_x = (sum_x2 / 32.0).sqrt();
        for (w, &v) in weights.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        (scales[j], mins[j]) = make_qkx(
            15,
            xs,
            &weights,
            &mut l[32 * j..32 * j + 32],
            -1.0,
            0.1,
            20,
            false,
        );
        if scales[j] > max_scale {
            max_scale = scales[j];
        }
        if mins[j] > max_min {
            max_min = mins[j];
        }
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut ls = [0u8; 8];
    let mut lm = [0u8; 8];
    for j in 0..8 {
        ls[j] = nearest_int(inv_scale * scales[j]).clamp(0, 63) as u8;
        lm[j] = nearest_int(inv_min * mins[j]).clamp(0, 63) as u8;
    }
    finish(x, &ls, &lm, max_scale / 63.0, max_min / 63.0, &mut l, blk);
}

fn block_weighted(x: &[f32], imp: &[f32], blk: &mut [u8]) {
    let mut l = [0u8; BLOCK_ELEMS];
    let mut scales = [0.0f32; 8];
    let mut mins = [0.0f32; 8];
    let mut sw = [0.0f32; 8];
    let mut weights = [0.0f32; 32];
    let mut sum_x2 = 0.0f32;
    for &v in x {
        sum_x2 += v * v;
    }
    let sigma2 = 2.0 * sum_x2 / BLOCK_ELEMS as f32;
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        let qw = &imp[32 * j..32 * j + 32];
        for i in 0..32 {
            weights[i] = qw[i] * (sigma2 + xs[i] * xs[i]).sqrt();
        }
        let mut sumw = 0.0f32;
        for &w in &weights {
            sumw += w;
        }
        sw[j] = sumw;
        (scales[j], mins[j]) = make_qkx(
            15,
            xs,
            &weights,
            &mut l[32 * j..32 * j + 32],
            -0.9,
            0.05,
            36,
            false,
        );
    }
    // The 6-bit sub-block scales and mins are themselves fitted, each sub-block weighted by
    // its total importance, instead of being scaled against their maximum.
    let mut ls = [0u8; 8];
    let mut lm = [0u8; 8];
    let d_block = make_qp_quants(63, &scales, &mut ls, &sw);
    let m_block = make_qp_quants(63, &mins, &mut lm, &sw);
    finish(x, &ls, &lm, d_block, m_block, &mut l, blk);
}

/// Packs the 6-bit scales/mins and the f16 super-scales, then recomputes every code against
/// the values a reader will actually decode (f16 `d`·`sc`, f16 `dmin`·`m`), so the codes
/// absorb the rounding of the scales. A sub-block whose decoded scale is 0 keeps the codes of
/// its fit: they multiply 0, and keeping them is what the reference does (byte parity).
fn finish(
    x: &[f32],
    ls: &[u8; 8],
    lm: &[u8; 8],
    d: f32,
    dmin: f32,
    l: &mut [u8; 256],
    blk: &mut [u8],
) {
    let sc = &mut blk[4..16];
    for j in 0..8 {
        if j < 4 {
            sc[j] = ls[j];
            sc[j + 4] = lm[j];
        } else {
            sc[j + 4] = (ls[j] & 15) | ((lm[j] & 15) << 4);
            sc[j - 4] |= (ls[j] >> 4) << 6;
            sc[j] |= (lm[j] >> 4) << 6;
        }
    }
    blk[0..2].copy_from_slice(&f16_bits(d));
    blk[2..4].copy_from_slice(&f16_bits(dmin));
    let (d, dmin) = (f16_round(d), f16_round(dmin));
    for j in 0..8 {
        let (s, m) = scale_min(&blk[4..16], j);
        let dd = d * s as f32;
        if dd == 0.0 {
            continue;
        }
        let dm = dmin * m as f32;
        for i in 32 * j..32 * j + 32 {
            l[i] = nearest_int((x[i] + dm) / dd).clamp(0, 15) as u8;
        }
    }
    let qs = &mut blk[16..144];
    for c in 0..4 {
        for i in 0..32 {
            qs[32 * c + i] = l[64 * c + i] | (l[64 * c + 32 + i] << 4);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_scales_round_trip_through_the_reader() {
        // Every 6-bit value in every slot must come back out of `scale_min` unchanged.
        let x = [0.0f32; 256];
        let mut l = [0u8; 256];
        for (a, b) in [(0u8, 63u8), (63, 0), (21, 42), (33, 17)] {
            let ls = [a, b, a, b, b, a, b, a];
            let lm = [b, a, b, a, a, b, a, b];
            let mut blk = [0u8; 144];
            finish(&x, &ls, &lm, 1.0, 1.0, &mut l, &mut blk);
            for j in 0..8 {
                assert_eq!(scale_min(&blk[4..16], j), (ls[j], lm[j]), "j={j}");
            }
        }
    }
}
