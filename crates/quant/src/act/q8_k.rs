//! Q8_K activation block (FORMATS §2.6, §3.3): 256 int8 codes, an f32 scale `d` that is
//! **negative** whenever the block's signed max is positive, and the sums of each 16 codes.
//! Matches ggml's reference `quantize_row_q8_K`, which ds4's CPU path calls.

pub const BLOCK_ELEMS: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ8K {
    /// `1 / iscale` with `iscale = -127 / max`: the sign is opposite to `max`'s.
    pub d: f32,
    pub qs: [i8; BLOCK_ELEMS],
    /// `bsums[j] = Σ qs[16j .. 16j+16]`.
    pub bsums: [i16; 16],
}

impl BlockQ8K {
    /// Quantizes 256 values.
    ///
    /// `max` is the value at the FIRST index with the largest `|x|` (strictly greater wins
    /// while scanning), sign kept. All zeros give `d = 0` and zero codes. Otherwise
    /// `iscale = -127 / max`, `q = clamp(round_half_even(iscale * x), -128, 127)`,
    /// `d = 1 / iscale`. NaN inputs are skipped by the max scan and give code 0.
    pub fn quantize(x: &[f32; BLOCK_ELEMS]) -> Self {
        // The first index attaining the largest |x| is what a strictly-greater scan keeps;
        // finding the max first and then its first position vectorises.
        let amax = super::max_abs(x);
        let mut blk = BlockQ8K { d: 0.0, qs: [0; BLOCK_ELEMS], bsums: [0; 16] };
        if amax == 0.0 {
            return blk;
        }
        let max = x[x.iter().position(|v| v.abs() == amax).unwrap_or(0)];
        let iscale = -127.0 / max;
        for (q, v) in blk.qs.iter_mut().zip(x) {
            *q = super::round_to_i8(iscale * v);
        }
        for (s, c) in blk.bsums.iter_mut().zip(blk.qs.chunks_exact(16)) {
            *s = c.iter().map(|&q| q as i16).sum();
        }
        blk.d = 1.0 / iscale;
        blk
    }
}

/// Quantizes `x` (a whole number of 256-blocks, checked by the caller) block by block.
pub(crate) fn quantize_row(x: &[f32]) -> Vec<BlockQ8K> {
    x.chunks_exact(BLOCK_ELEMS).map(|c| BlockQ8K::quantize(c.try_into().unwrap())).collect()
}
