//! IQ2_XXS: 256 weights in 66 bytes: f16 `d`, then eight 32-weight groups of two
//! little-endian u32 `(A, B)`. Byte `k` of `A` indexes the lattice for octet `k`; bits `7k..7k+7`
//! of `B` index the sign table, bits 28..32 hold the group scale `ls`. Blocks are 66 bytes, so
//! the u32 fields are only 2-byte aligned: always read them bytewise.

#[cfg(target_arch = "x86_64")]
mod avx2;
pub(crate) mod dot;
pub mod tables;

pub mod quantize;

use crate::f16_at;
use tables::{GRID, KSIGNS};

pub const BLOCK_ELEMS: usize = 256;
pub const BLOCK_BYTES: usize = 66;

#[inline(always)]
pub(crate) fn group_words(blk: &[u8], ib: usize) -> (u32, u32) {
    let at = 2 + 8 * ib;
    let w = |o: usize| u32::from_le_bytes([blk[o], blk[o + 1], blk[o + 2], blk[o + 3]]);
    (w(at), w(at + 4))
}

/// Exact dequantization of one block: `db = (d * (0.5 + ls)) * 0.25` per group, then
/// `y = (db * grid byte) * (±1)`, f32 arithmetic in this order (matches ggml/gguf-py).
#[inline(always)]
pub(crate) fn dequant_block(blk: &[u8; BLOCK_BYTES], out: &mut [f32; BLOCK_ELEMS]) {
    let d = f16_at(blk, 0);
    for (ib, o) in out.chunks_exact_mut(32).enumerate() {
        let (a, b) = group_words(blk, ib);
        let db = (d * (0.5 + (b >> 28) as f32)) * 0.25;
        for (k, oct) in o.chunks_exact_mut(8).enumerate() {
            let grid = GRID[((a >> (8 * k)) & 0xff) as usize];
            let signs = KSIGNS[((b >> (7 * k)) & 127) as usize] as u32;
            for (j, v) in oct.iter_mut().enumerate() {
                let mag = ((grid >> (8 * j)) & 0xff) as f32;
                // ±1.0 built from the sign bit: a real multiply, as the reference does.
                let s = f32::from_bits(0x3f80_0000 | (((signs >> j) & 1) << 31));
                *v = (db * mag) * s;
            }
        }
    }
}

pub(crate) fn dequantize(bytes: &[u8], out: &mut [f32]) {
    for (blk, o) in bytes.chunks_exact(BLOCK_BYTES).zip(out.chunks_exact_mut(BLOCK_ELEMS)) {
        dequant_block(blk.try_into().unwrap(), o.try_into().unwrap());
    }
}
