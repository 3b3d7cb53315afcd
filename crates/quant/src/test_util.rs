//! Random inputs for the unit tests (seeded, so failures reproduce).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::act::{q8_0, q8_k, BlockQ8K, BlockQ8_0Act};
use crate::GgmlType;

/// Byte offsets of the f16 scale fields in one block of `ty`.
pub(crate) fn f16_fields(ty: GgmlType) -> &'static [usize] {
    match ty {
        GgmlType::Q8_0 | GgmlType::IQ2_XXS => &[0],
        GgmlType::Q4_K => &[0, 2],
        GgmlType::Q2_K => &[80, 82],
        _ => &[],
    }
}

/// A row of `n` elements of `ty`: random code bytes, scales and float elements random finite
/// values of moderate size (so sums stay finite and comparable).
pub(crate) fn random_row(ty: GgmlType, n: usize, seed: u64) -> Vec<u8> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x00c0_ffee);
    let bytes = n / ty.block_elems() * ty.block_bytes();
    let mut row: Vec<u8> = (0..bytes).map(|_| rng.gen()).collect();
    let f16 = |rng: &mut ChaCha8Rng| half::f16::from_f32(rng.gen_range(-2.0f32..2.0)).to_le_bytes();
    match ty {
        GgmlType::F32 => {
            for c in row.chunks_exact_mut(4) {
                c.copy_from_slice(&rng.gen_range(-2.0f32..2.0).to_le_bytes());
            }
        }
        GgmlType::F16 => row.chunks_exact_mut(2).for_each(|c| c.copy_from_slice(&f16(&mut rng))),
        GgmlType::BF16 => {
            for c in row.chunks_exact_mut(2) {
                let v = rng.gen_range(-2.0f32..2.0).to_bits() >> 16;
                c.copy_from_slice(&(v as u16).to_le_bytes());
            }
        }
        _ => {
            for blk in row.chunks_exact_mut(ty.block_bytes()) {
                for &o in f16_fields(ty) {
                    blk[o..o + 2].copy_from_slice(&f16(&mut rng));
                }
            }
        }
    }
    row
}

pub(crate) fn random_x(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xbeef);
    (0..n).map(|_| rng.gen_range(-3.0f32..3.0)).collect()
}

/// Q8_0-like blocks of `x`, with one code forced to -128 per block (allowed by the clamp).
pub(crate) fn random_acts_q8_0(x: &[f32]) -> Vec<BlockQ8_0Act> {
    let mut acts = q8_0::quantize_row(x);
    for (i, b) in acts.iter_mut().enumerate() {
        b.qs[(i * 7) % 32] = -128;
    }
    acts
}

/// Q8_K blocks of `x`, with one code forced to -128 per block: the quantizer never makes it,
/// but the public block type allows it and the kernels must handle it exactly.
pub(crate) fn random_acts_q8k(x: &[f32]) -> Vec<BlockQ8K> {
    let mut acts = q8_k::quantize_row(x);
    for (i, b) in acts.iter_mut().enumerate() {
        b.qs[(i * 37) % 256] = -128;
    }
    acts
}

/// A four-vector Q8_K kernel of `ty` gives, for each vector, the bits of the one-vector kernel
/// `one` (random rows and activations, several seeds).
pub(crate) fn check_q8k_x4(ty: GgmlType, dot4: crate::dot::Q8KDot4, one: fn(&[u8], &[BlockQ8K]) -> f32) {
    for seed in 0..10 {
        let row = random_row(ty, 1024, seed);
        let acts: Vec<Vec<BlockQ8K>> = (0..4).map(|t| random_acts_q8k(&random_x(1024, 100 * seed + t))).collect();
        let four = dot4(&row, std::array::from_fn(|t| acts[t].as_slice()));
        for (t, a) in acts.iter().enumerate() {
            assert_eq!(four[t].to_bits(), one(&row, a).to_bits(), "{ty} seed {seed}, vector {t}");
        }
    }
}
