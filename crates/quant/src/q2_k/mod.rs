//! Q2_K: 256 weights in 84 bytes. Sixteen 16-weight sub-blocks, each with a 4-bit scale (low
//! nibble) and 4-bit min (high nibble) in `scales[16]`; 2-bit codes in `qs[64]`; then the f16
//! super-scales `d` and `dmin` at the end of the block.

#[cfg(target_arch = "x86_64")]
mod avx2;
pub(crate) mod dot;
pub mod quantize;

use crate::f16_at;

pub const BLOCK_ELEMS: usize = 256;
pub const BLOCK_BYTES: usize = 84;

/// The 2-bit code of element `i` (0..256): each 128-element half uses 32 bytes, and bit pair
/// `k` of byte `l` holds element `32k + l` of that half.
// Element-wise accessor for the quantizers; the tests check `unpack_codes` against it.
#[allow(dead_code)]
#[inline]
pub(crate) fn code(qs: &[u8], i: usize) -> u8 {
    let (h, r) = (i / 128, i % 128);
    (qs[32 * h + r % 32] >> (2 * (r / 32))) & 3
}

/// All 256 codes of a block in element order, unpacked a byte-run at a time (vectorisable):
/// element `128h + 32k + l` is bit pair `k` of `qs[32h + l]`.
#[inline(always)]
pub(crate) fn unpack_codes(qs: &[u8; 64], out: &mut [u8; BLOCK_ELEMS]) {
    for h in 0..2 {
        for k in 0..4 {
            for l in 0..32 {
                out[128 * h + 32 * k + l] = (qs[32 * h + l] >> (2 * k)) & 3;
            }
        }
    }
}

/// Exact dequantization of one block: `y = (d * sc) * q - dmin * m`, in f32, this order.
#[inline(always)]
pub(crate) fn dequant_block(blk: &[u8; BLOCK_BYTES], out: &mut [f32; BLOCK_ELEMS]) {
    let d = f16_at(blk, 80);
    let dmin = f16_at(blk, 82);
    let mut q = [0u8; BLOCK_ELEMS];
    unpack_codes(blk[16..80].try_into().unwrap(), &mut q);
    for (j, (o, qj)) in out.chunks_exact_mut(16).zip(q.chunks_exact(16)).enumerate() {
        let sc = blk[j];
        let (dl, ml) = (d * (sc & 15) as f32, dmin * (sc >> 4) as f32);
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
        let qs: [u8; 64] = std::array::from_fn(|i| (i as u8).wrapping_mul(157).wrapping_add(11));
        let mut out = [0u8; BLOCK_ELEMS];
        unpack_codes(&qs, &mut out);
        for (i, &c) in out.iter().enumerate() {
            assert_eq!(c, code(&qs, i), "element {i}");
        }
    }
}
