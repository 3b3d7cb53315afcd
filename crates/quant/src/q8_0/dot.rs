//! Q8_0 row dot products. Lengths are checked by the public callers in `crate::dot`; the
//! portable functions define the arithmetic, `avx2.rs` repeats it with wider registers.

use super::{dequant_block, BLOCK_BYTES};
use crate::act::BlockQ8_0Act;
use crate::f16_at;
use crate::lanes::dequant_dot;

/// Exactly dequantized weights · f32 `x`, in lane order.
pub(crate) fn dot_f32(row: &[u8], x: &[f32]) -> f32 {
    avx2_or!(super::avx2::dot_f32(row, x), dot_f32_portable(row, x))
}

/// Weights · ds4 Q8_0-like activations.
pub(crate) fn dot_q8_0(row: &[u8], acts: &[BlockQ8_0Act]) -> f32 {
    avx2_or!(super::avx2::dot_q8_0(row, acts), dot_q8_0_portable(row, acts))
}

/// [`dot_q8_0`] of one row against four activation vectors at once (batched products: the
/// row is decoded once, the four sums kept apart). Each result has the bits of its own call.
pub(crate) fn dot_q8_0_x4(row: &[u8], acts: [&[BlockQ8_0Act]; 4]) -> [f32; 4] {
    avx2_or!(super::avx2::dot_q8_0_x4(row, acts), acts.map(|a| dot_q8_0_portable(row, a)))
}

pub(crate) fn dot_f32_portable(row: &[u8], x: &[f32]) -> f32 {
    dequant_dot(row, x, dequant_block)
}

/// ds4 scalar order (FORMATS §3.4): per block an exact integer sum, then
/// `acc = acc + (f32(d_w) * d_x) * (f32)isum`, blocks in order.
pub(crate) fn dot_q8_0_portable(row: &[u8], acts: &[BlockQ8_0Act]) -> f32 {
    let mut acc = 0f32;
    for (blk, a) in row.chunks_exact(BLOCK_BYTES).zip(acts) {
        let isum: i32 = blk[2..].iter().zip(&a.qs).map(|(&w, &q)| (w as i8) as i32 * q as i32).sum();
        acc += (f16_at(blk, 0) * a.d) * isum as f32;
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{random_acts_q8_0, random_row, random_x};

    #[test]
    fn simd_and_portable_agree_bitwise() {
        for seed in 0..20 {
            let row = random_row(crate::GgmlType::Q8_0, 512, seed);
            let x = random_x(512, seed);
            let acts = random_acts_q8_0(&x);
            assert_eq!(dot_f32(&row, &x).to_bits(), dot_f32_portable(&row, &x).to_bits());
            assert_eq!(dot_q8_0(&row, &acts).to_bits(), dot_q8_0_portable(&row, &acts).to_bits());
        }
    }

    #[test]
    fn four_at_once_equal_four_single_products_bitwise() {
        for seed in 0..20 {
            let row = random_row(crate::GgmlType::Q8_0, 1024, seed);
            let acts: Vec<Vec<BlockQ8_0Act>> = (0..4).map(|t| random_acts_q8_0(&random_x(1024, seed * 7 + t + 100))).collect();
            let got = dot_q8_0_x4(&row, std::array::from_fn(|t| acts[t].as_slice()));
            for t in 0..4 {
                assert_eq!(got[t].to_bits(), dot_q8_0_portable(&row, &acts[t]).to_bits(), "seed {seed} vector {t}");
            }
        }
    }
}
