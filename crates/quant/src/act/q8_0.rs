//! ds4's Q8_0-like activation block (FORMATS §3.2): 32 int8 codes with an **f32** scale.
//! ggml's `block_q8_0` rounds that scale to f16 and rounds codes ties-away; ds4 does neither,
//! so this is a type of its own rather than a reuse of the Q8_0 weight block.

pub const BLOCK_ELEMS: usize = 32;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ8_0Act {
    /// `amax / 127`, kept in f32.
    pub d: f32,
    pub qs: [i8; BLOCK_ELEMS],
}

impl BlockQ8_0Act {
    /// Quantizes 32 values: `d = amax/127`, `id = 1/d` (0 when `d == 0`),
    /// `q = clamp(round_half_even(x * id), -128, 127)`. A NaN input gives code 0.
    pub fn quantize(x: &[f32; BLOCK_ELEMS]) -> Self {
        let amax = super::max_abs(x);
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut qs = [0i8; BLOCK_ELEMS];
        for (q, v) in qs.iter_mut().zip(x) {
            *q = super::round_to_i8(v * id);
        }
        BlockQ8_0Act { d, qs }
    }
}

/// Quantizes `x` (a whole number of 32-blocks, checked by the caller) block by block.
pub(crate) fn quantize_row(x: &[f32]) -> Vec<BlockQ8_0Act> {
    x.chunks_exact(BLOCK_ELEMS).map(|c| BlockQ8_0Act::quantize(c.try_into().unwrap())).collect()
}
