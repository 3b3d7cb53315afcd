//! Q4_K: 256 weights in 144 bytes: f16 `d`, f16 `dmin`, twelve bytes packing eight 6-bit
//! scales and eight 6-bit mins (one pair per 32-weight sub-block), then 128 bytes of 4-bit
//! codes where the 32 bytes of chunk `c` carry sub-block `2c` in their low nibbles and
//! sub-block `2c + 1` in their high nibbles.

pub mod quantize;

use crate::f16_at;

pub const BLOCK_ELEMS: usize = 256;
pub const BLOCK_BYTES: usize = 144;

/// (scale, min) of sub-block `j` (0..8) from the 12 packed bytes.
#[inline]
pub(crate) fn scale_min(scales: &[u8], j: usize) -> (u8, u8) {
    if j < 4 {
        (scales[j] & 63, scales[j + 4] & 63)
    } else {
        (
            (scales[j + 4] & 15) | ((scales[j - 4] >> 6) << 4),
            (scales[j + 4] >> 4) | ((scales[j] >> 6) << 4),
        )
    }
}

#[inline]
pub(crate) fn code(qs: &[u8], i: usize) -> u8 {
    let b = qs[32 * (i / 64) + i % 32];
    if (i % 64) >= 32 { b >> 4 } else { b & 15 }
}

pub(crate) fn dequantize(bytes: &[u8], out: &mut [f32]) {
    for (blk, o) in bytes.chunks_exact(BLOCK_BYTES).zip(out.chunks_exact_mut(BLOCK_ELEMS)) {
        let d = f16_at(blk, 0);
        let dmin = f16_at(blk, 2);
        let (scales, qs) = (&blk[4..16], &blk[16..144]);
        for j in 0..8 {
            let (sc, m) = scale_min(scales, j);
            let (dl, ml) = (d * sc as f32, dmin * m as f32);
            for l in 0..32 {
                let i = 32 * j + l;
                o[i] = dl * code(qs, i) as f32 - ml;
            }
        }
    }
}
