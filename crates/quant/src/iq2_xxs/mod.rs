//! IQ2_XXS: 256 weights in 66 bytes: f16 `d`, then eight 32-weight groups of two
//! little-endian u32 `(A, B)`. Byte `k` of `A` indexes the lattice for octet `k`; bits `7k..7k+7`
//! of `B` index the sign table, bits 28..32 hold the group scale `ls`. Blocks are 66 bytes, so
//! the u32 fields are only 2-byte aligned: always read them bytewise.

pub mod tables;

pub mod quantize;

use crate::f16_at;
use tables::{GRID, KSIGNS};

pub const BLOCK_ELEMS: usize = 256;
pub const BLOCK_BYTES: usize = 66;

#[inline]
pub(crate) fn group_words(blk: &[u8], ib: usize) -> (u32, u32) {
    let at = 2 + 8 * ib;
    let w = |o: usize| u32::from_le_bytes([blk[o], blk[o + 1], blk[o + 2], blk[o + 3]]);
    (w(at), w(at + 4))
}

pub(crate) fn dequantize(bytes: &[u8], out: &mut [f32]) {
    for (blk, o) in bytes.chunks_exact(BLOCK_BYTES).zip(out.chunks_exact_mut(BLOCK_ELEMS)) {
        let d = f16_at(blk, 0);
        for ib in 0..8 {
            let (a, b) = group_words(blk, ib);
            // f32 arithmetic in this order, to match ggml bit for bit.
            let db = (d * (0.5 + (b >> 28) as f32)) * 0.25;
            for k in 0..4 {
                let grid = GRID[((a >> (8 * k)) & 0xff) as usize];
                let signs = KSIGNS[((b >> (7 * k)) & 127) as usize];
                for j in 0..8 {
                    let v = ((grid >> (8 * j)) & 0xff) as f32;
                    let s = if signs & (1 << j) != 0 { -1.0 } else { 1.0 };
                    o[32 * ib + 8 * k + j] = (db * v) * s;
                }
            }
        }
    }
}
