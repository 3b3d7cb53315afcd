//! Which arithmetic the forward pass emulates.
//!
//! `Official` follows DeepSeek's reference: cached KV rows are stored as BF16 after an FP8
//! (E4M3, power-of-two scale per 64 dims) round trip of their non-RoPE dims; indexer queries
//! and keys go through a Hadamard rotation and an FP4 (E2M1, scale per 32) round trip; and, as
//! in ds4's CPU path, activations are quantized (Q8_0 / Q8_K) before quantized-weight dots.
//! `Plain` computes what HF transformers computes in float32: none of that, weights
//! dequantized exactly, everything else f32. It is how the engine is checked against
//! transformers.

use dsv4_quant::{fp4, fp8};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Numerics {
    #[default]
    Official,
    Plain,
}

/// FP8 block width of the KV round trip and FP4 block width of the indexer round trip.
const FP8_BLOCK: usize = 64;
const FP4_BLOCK: usize = 32;
const E4M3_MAX: f32 = 448.0;
const E2M1_MAX: f32 = 6.0;

impl Numerics {
    /// A KV row (raw or compressed) as it is stored in the cache.
    pub fn store_kv_row(self, row: &mut [f32], rope_dim: usize) {
        if self == Numerics::Plain {
            return;
        }
        let nope = row.len() - rope_dim;
        for block in row[..nope].chunks_mut(FP8_BLOCK) {
            round_trip(block, 1e-4, E4M3_MAX, fp8::e4m3_round);
        }
        for v in row.iter_mut() {
            *v = half::bf16::from_f32(*v).to_f32();
        }
    }

    /// An indexer query head or indexer key row, as the official indexer scores it.
    pub fn indexer_row(self, row: &mut [f32]) {
        if self == Numerics::Plain {
            return;
        }
        hadamard(row);
        // The floor is 6 × FLT_MIN so the power-of-two scale stays a normal float.
        for block in row.chunks_mut(FP4_BLOCK) {
            round_trip(block, 6.0 * f32::MIN_POSITIVE, E2M1_MAX, fp4::e2m1_round);
        }
    }

    pub fn quantized_activations(self) -> bool {
        self == Numerics::Official
    }

    /// The dot-product arithmetic the quant kernels use under these numerics.
    pub fn dot_mode(self) -> dsv4_quant::Numerics {
        if self.quantized_activations() { dsv4_quant::Numerics::Official } else { dsv4_quant::Numerics::Plain }
    }
}

/// Scales a block by a power of two so its max lands at or under `max`, rounds every value to
/// the small float grid, and scales back.
fn round_trip(block: &mut [f32], floor: f32, max: f32, round: fn(f32) -> f32) {
    let amax = block.iter().fold(0f32, |m, v| m.max(v.abs())).max(floor);
    let scale = (amax / max).log2().ceil().exp2();
    for v in block.iter_mut() {
        *v = round((*v / scale).clamp(-max, max)) * scale;
    }
}

/// Orthonormal Walsh–Hadamard transform (Sylvester order) in place; length a power of two.
pub fn hadamard(x: &mut [f32]) {
    let n = x.len();
    let mut stride = 1;
    while stride < n {
        for start in (0..n).step_by(2 * stride) {
            for j in start..start + stride {
                let (a, b) = (x[j], x[j + stride]);
                x[j] = a + b;
                x[j + stride] = a - b;
            }
        }
        stride *= 2;
    }
    let s = 1.0 / (n as f32).sqrt();
    x.iter_mut().for_each(|v| *v *= s);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hadamard_is_orthonormal() {
        let mut x: Vec<f32> = (0..128).map(|i| (i as f32 * 0.37).sin()).collect();
        let n0: f32 = x.iter().map(|v| v * v).sum();
        let orig = x.clone();
        hadamard(&mut x);
        let n1: f32 = x.iter().map(|v| v * v).sum();
        assert!((n0 - n1).abs() < 1e-3 * n0);
        hadamard(&mut x);
        for (a, b) in x.iter().zip(&orig) {
            assert!((a - b).abs() < 1e-5);
        }
    }

    #[test]
    fn kv_row_keeps_rope_dims_to_bf16_and_quantizes_the_rest() {
        let mut row: Vec<f32> = (0..128).map(|i| (i as f32 * 0.731).sin() * 3.0).collect();
        let orig = row.clone();
        Numerics::Official.store_kv_row(&mut row, 64);
        for (a, b) in row[64..].iter().zip(&orig[64..]) {
            assert_eq!(*a, half::bf16::from_f32(*b).to_f32());
        }
        // FP8 E4M3 keeps 3 mantissa bits: relative error at most 1/16 for normal values.
        for (a, b) in row[..64].iter().zip(&orig[..64]) {
            assert!((a - b).abs() <= b.abs() / 16.0 + 1e-3, "{a} vs {b}");
        }
        let mut plain = orig.clone();
        Numerics::Plain.store_kv_row(&mut plain, 64);
        assert_eq!(plain, orig);
    }
}
