//! Q8_0 quantizer (FORMATS §4.5): bit-identical to ggml's `quantize_row_q8_0_ref`, gguf-py's
//! `quantize(x, Q8_0)` and ds4's `quants.c`.

use super::{BLOCK_BYTES, BLOCK_ELEMS};
use crate::fit::f16_bits;

/// Quantizes whole blocks of `x` into `out` (lengths already checked by the caller).
pub(crate) fn quantize(x: &[f32], out: &mut [u8]) {
    for (xb, blk) in x
        .chunks_exact(BLOCK_ELEMS)
        .zip(out.chunks_exact_mut(BLOCK_BYTES))
    {
        quantize_block(xb, blk);
    }
}

fn quantize_block(x: &[f32], blk: &mut [u8]) {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    // The codes use the inverse of the *unrounded* scale, not of the stored f16: that is what
    // the reference implementations do, and bit parity with them is the point of this path.
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    blk[0..2].copy_from_slice(&f16_bits(d));
    for (q, &v) in blk[2..].iter_mut().zip(x) {
        // `f32::round` rounds halves away from zero, like C `roundf` and gguf-py's `np_roundf`.
        *q = ((v * id).round() as i8) as u8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_round_away_from_zero_with_unit_scale() {
        // amax 127 gives d = 1 exactly, so the codes are the inputs rounded.
        let mut x = [0.0f32; 32];
        x[0] = 127.0;
        x[1] = 0.5;
        x[2] = 1.5;
        x[3] = 2.5;
        x[4] = -2.5;
        x[5] = -0.5;
        x[6] = -126.49;
        let mut blk = [0u8; 34];
        quantize_block(&x, &mut blk);
        assert_eq!(&blk[0..2], &half::f16::from_f32(1.0).to_le_bytes());
        let q: Vec<i8> = blk[2..9].iter().map(|&b| b as i8).collect();
        assert_eq!(q, [127, 1, 2, 3, -3, -1, -126]);
    }

    #[test]
    fn inverse_comes_from_the_unrounded_scale() {
        // amax = 0.1: d = 0.1/127 is not an f16, and x·(1/d) of the largest element is 127
        // (with the rounded f16 scale it would be 126.99… or 127.0… by luck only).
        let mut x = [0.0f32; 32];
        x[0] = 0.1;
        x[1] = -0.05;
        let mut blk = [0u8; 34];
        quantize_block(&x, &mut blk);
        let d = 0.1f32 / 127.0;
        assert_eq!(&blk[0..2], &half::f16::from_f32(d).to_le_bytes());
        assert_eq!(blk[2] as i8, 127);
        assert_eq!(blk[3] as i8, (-0.05f32 * (1.0 / d)).round() as i8);
    }
}
