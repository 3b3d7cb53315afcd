//! Q2_K quantizer (FORMATS §4.7): the reference path of ggml's `quantize_row_q2_K_ref` when
//! no importance is given, and the importance path of `quantize_row_q2_K_impl` otherwise, as
//! ds4's `quants.c` runs them.

use super::{BLOCK_BYTES, BLOCK_ELEMS};
use crate::fit::{f16_bits, f16_round, make_qkx, make_qp_quants, nearest_int, quantize_blocks};

/// Quantizes whole blocks of `x` into `out`. `importance`, when given, has one value per
/// element of `x`. Lengths are checked by the caller.
pub(crate) fn quantize(x: &[f32], importance: Option<&[f32]>, out: &mut [u8]) {
    quantize_blocks(x, importance, out, (BLOCK_ELEMS, BLOCK_BYTES), block_ref, block_weighted);
}

fn block_ref(x: &[f32], blk: &mut [u8]) {
    let mut l = [0u8; BLOCK_ELEMS];
    let mut scales = [0.0f32; 16];
    let mut mins = [0.0f32; 16];
    let mut weights = [0.0f32; 16];
    let (mut max_scale, mut max_min) = (0.0f32, 0.0f32);
    for j in 0..16 {
        let xs = &x[16 * j..16 * j + 16];
        for (w, &v) in weights.iter_mut().zip(xs) {
            *w = v.abs();
        }
        // With only four levels the fit minimizes absolute error (`use_mad`), which is less
        // dominated by the single largest element than squared error.
        (scales[j], mins[j]) = make_qkx(
            3,
            xs,
            &weights,
            &mut l[16 * j..16 * j + 16],
            -0.5,
            0.1,
            15,
            true,
        );
        if scales[j] > max_scale {
            max_scale = scales[j];
        }
        if mins[j] > max_min {
            max_min = mins[j];
        }
    }
    let sc = &mut blk[0..16];
    let d = if max_scale > 0.0 {
        let iscale = 15.0 / max_scale;
        for j in 0..16 {
            // Not clamped in ggml because scale ≤ max_scale; the clamp only guards the u8.
            sc[j] = nearest_int(iscale * scales[j]).clamp(0, 15) as u8;
        }
        max_scale / 15.0
    } else {
        sc.fill(0);
        0.0
    };
    let dmin = if max_min > 0.0 {
        let iscale = 15.0 / max_min;
        for j in 0..16 {
            sc[j] |= (nearest_int(iscale * mins[j]).clamp(0, 15) as u8) << 4;
        }
        max_min / 15.0
    } else {
        0.0
    };
    finish(x, d, dmin, &mut l, blk);
}

fn block_weighted(x: &[f32], imp: &[f32], blk: &mut [u8]) {
    let mut l = [0u8; BLOCK_ELEMS];
    let mut scales = [0.0f32; 16];
    let mut mins = [0.0f32; 16];
    let mut sw = [0.0f32; 16];
    let mut weights = [0.0f32; 16];
    let mut sum_x2 = 0.0f32;
    for &v in x {
        sum_x2 += v * v;
    }
    let sigma2 = sum_x2 / BLOCK_ELEMS as f32;
    for j in 0..16 {
        let xs = &x[16 * j..16 * j + 16];
        let qw = &imp[16 * j..16 * j + 16];
        for i in 0..16 {
            weights[i] = qw[i] * (sigma2 + xs[i] * xs[i]).sqrt();
        }
        for &w in &weights {
            sw[j] += w;
        }
        (scales[j], mins[j]) = make_qkx(
            3,
            xs,
            &weights,
            &mut l[16 * j..16 * j + 16],
            -0.9,
            0.05,
            36,
            false,
        );
    }
    let mut ls = [0u8; 16];
    let mut lm = [0u8; 16];
    let d = make_qp_quants(15, &scales, &mut ls, &sw);
    let dmin = make_qp_quants(15, &mins, &mut lm, &sw);
    for j in 0..16 {
        blk[j] = ls[j] | (lm[j] << 4);
    }
    finish(x, d, dmin, &mut l, blk);
}

/// Stores the f16 super-scales, then recomputes every code against the decoded scales
/// (`scales[0..16]` must already hold the nibbles). Sub-blocks whose decoded scale is 0 keep
/// the codes of their fit, as the reference does.
fn finish(x: &[f32], d: f32, dmin: f32, l: &mut [u8; 256], blk: &mut [u8]) {
    blk[80..82].copy_from_slice(&f16_bits(d));
    blk[82..84].copy_from_slice(&f16_bits(dmin));
    let (d, dmin) = (f16_round(d), f16_round(dmin));
    for (j, &sc) in blk[..16].iter().enumerate() {
        let dd = d * (sc & 15) as f32;
        if dd == 0.0 {
            continue;
        }
        let dm = dmin * (sc >> 4) as f32;
        for i in 16 * j..16 * j + 16 {
            l[i] = nearest_int((x[i] + dm) / dd).clamp(0, 3) as u8;
        }
    }
    // Each 128-element half fills 32 bytes; bit pair k of byte i holds element 32k + i.
    let qs = &mut blk[16..80];
    for h in 0..2 {
        for i in 0..32 {
            let e = 128 * h + i;
            qs[32 * h + i] = l[e] | (l[e + 32] << 2) | (l[e + 64] << 4) | (l[e + 96] << 6);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::q2_k::code;

    #[test]
    fn codes_land_where_the_reader_looks() {
        let x = [0.0f32; 256];
        let mut l = [0u8; 256];
        for (i, v) in l.iter_mut().enumerate() {
            *v = ((i * 7 + i / 16) % 4) as u8;
        }
        let expect = l;
        let mut blk = [0u8; 84];
        // All scale nibbles 0: the codes are kept as given and only packed.
        finish(&x, 1.0, 1.0, &mut l, &mut blk);
        for (i, &want) in expect.iter().enumerate() {
            assert_eq!(code(&blk[16..80], i), want, "i={i}");
        }
    }
}
