//! Q8_0: blocks of 32 weights, an f16 scale `d` then 32 signed bytes; `w = d * q`.

#[cfg(target_arch = "x86_64")]
mod avx2;
pub(crate) mod dot;
#[cfg(target_arch = "x86_64")]
pub(crate) mod vnni;
pub mod quantize;

use crate::f16_at;

pub const BLOCK_ELEMS: usize = 32;
pub const BLOCK_BYTES: usize = 34;

/// Exact dequantization of one block (bit-identical to gguf-py).
#[inline(always)]
pub(crate) fn dequant_block(blk: &[u8; BLOCK_BYTES], out: &mut [f32; BLOCK_ELEMS]) {
    let d = f16_at(blk, 0);
    for (v, &q) in out.iter_mut().zip(&blk[2..]) {
        *v = d * (q as i8) as f32;
    }
}

pub(crate) fn dequantize(bytes: &[u8], out: &mut [f32]) {
    for (blk, o) in bytes.chunks_exact(BLOCK_BYTES).zip(out.chunks_exact_mut(BLOCK_ELEMS)) {
        dequant_block(blk.try_into().unwrap(), o.try_into().unwrap());
    }
}
