//! Q8_0: blocks of 32 weights, an f16 scale `d` then 32 signed bytes; `w = d * q`.

pub mod quantize;

use crate::f16_at;

pub const BLOCK_ELEMS: usize = 32;
pub const BLOCK_BYTES: usize = 34;

pub(crate) fn dequantize(bytes: &[u8], out: &mut [f32]) {
    for (blk, o) in bytes.chunks_exact(BLOCK_BYTES).zip(out.chunks_exact_mut(BLOCK_ELEMS)) {
        let d = f16_at(blk, 0);
        for (i, v) in o.iter_mut().enumerate() {
            *v = d * (blk[2 + i] as i8) as f32;
        }
    }
}
