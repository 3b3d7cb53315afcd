//! Q2_K: 256 weights in 84 bytes. Sixteen 16-weight sub-blocks, each with a 4-bit scale (low
//! nibble) and 4-bit min (high nibble) in `scales[16]`; 2-bit codes in `qs[64]`; then the f16
//! super-scales `d` and `dmin` at the end of the block.

pub mod quantize;

use crate::f16_at;

pub const BLOCK_ELEMS: usize = 256;
pub const BLOCK_BYTES: usize = 84;

/// The 2-bit code of element `i` (0..256): each 128-element half uses 32 bytes, and bit pair
/// `k` of byte `l` holds element `32k + l` of that half.
#[inline]
pub(crate) fn code(qs: &[u8], i: usize) -> u8 {
    let (h, r) = (i / 128, i % 128);
    (qs[32 * h + r % 32] >> (2 * (r / 32))) & 3
}

pub(crate) fn dequantize(bytes: &[u8], out: &mut [f32]) {
    for (blk, o) in bytes.chunks_exact(BLOCK_BYTES).zip(out.chunks_exact_mut(BLOCK_ELEMS)) {
        let (scales, qs) = (&blk[0..16], &blk[16..80]);
        let d = f16_at(blk, 80);
        let dmin = f16_at(blk, 82);
        for (i, v) in o.iter_mut().enumerate() {
            let sc = scales[i / 16];
            *v = (d * (sc & 15) as f32) * code(qs, i) as f32 - dmin * (sc >> 4) as f32;
        }
    }
}
