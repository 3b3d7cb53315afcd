//! Q4_K: 256 weights in 144 bytes: f16 `d`, f16 `dmin`, twelve bytes packing eight 6-bit
//! scales and eight 6-bit mins (one pair per 32-weight sub-block), then 128 bytes of 4-bit
//! codes where the 32 bytes of chunk `c` carry sub-block `2c` in their low nibbles and
//! sub-block `2c + 1` in their high nibbles.

#[cfg(target_arch = "x86_64")]
mod avx2;
pub(crate) mod dot;
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

/// The 4-bit code of element `i` (0..256). Element-wise accessor for the quantizers; the
/// tests check `unpack_codes` against it.
#[allow(dead_code)]
#[inline]
pub(crate) fn code(qs: &[u8], i: usize) -> u8 {
    let b = qs[32 * (i / 64) + i % 32];
    if (i % 64) >= 32 { b >> 4 } else { b & 15 }
}

/// All 256 codes in element order: chunk `c`'s low nibbles, then its high nibbles.
#[inline(always)]
pub(crate) fn unpack_codes(qs: &[u8; 128], out: &mut [u8; BLOCK_ELEMS]) {
    for c in 0..4 {
        for l in 0..32 {
            let b = qs[32 * c + l];
            out[64 * c + l] = b & 15;
            out[64 * c + 32 + l] = b >> 4;
        }
    }
}

/// Exact dequantization of one block: `y = (d * sc) * q - (dmin * m)`, in f32, this order.
#[inline(always)]
pub(crate) fn dequant_block(blk: &[u8; BLOCK_BYTES], out: &mut [f32; BLOCK_ELEMS]) {
    let d = f16_at(blk, 0);
    let dmin = f16_at(blk, 2);
    let mut q = [0u8; BLOCK_ELEMS];
    unpack_codes(blk[16..].try_into().unwrap(), &mut q);
    for (j, (o, qj)) in out.chunks_exact_mut(32).zip(q.chunks_exact(32)).enumerate() {
        let (sc, m) = scale_min(&blk[4..16], j);
        let (dl, ml) = (d * sc as f32, dmin * m as f32);
        for (v, &c) in o.iter_mut().zip(qj) {
            *v = dl * c as f32 - ml;
        }
    }
}

pub(crate) fn dequantize(bytes: &[u8], out: &mut [f32]) {
    for (blk, o) in bytes.chunks_exact(BLOCK_BYTES).zip(out.chunks_exact_mut(BLOCK_ELEMS)) {
        dequant_block(blk.try_into().unwrap(), o.try_into().unwrap());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpack_codes_matches_the_element_formula() {
        let qs: [u8; 128] = std::array::from_fn(|i| (i as u8).wrapping_mul(157).wrapping_add(11));
        let mut out = [0u8; BLOCK_ELEMS];
        unpack_codes(&qs, &mut out);
        for (i, &c) in out.iter().enumerate() {
            assert_eq!(c, code(&qs, i), "element {i}");
        }
    }
}
