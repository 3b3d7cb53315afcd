//! Helpers shared by the integration tests: seeded random blocks and the golden-file reader.
#![allow(dead_code)]

use std::io::Read;

use dsv4_quant::GgmlType;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// Reads a gzip file from `tests/data/`.
pub fn golden(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(file).read_to_end(&mut out).unwrap();
    out
}

/// Little-endian cursor over golden bytes.
pub struct Cursor<'a>(pub &'a [u8]);

impl<'a> Cursor<'a> {
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take(4).try_into().unwrap())
    }
    pub fn f32s(&mut self, n: usize) -> Vec<f32> {
        self.take(4 * n).chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
    }
}

/// Byte offsets of the f16 scale fields in one block of `ty`.
pub fn f16_fields(ty: GgmlType) -> &'static [usize] {
    match ty {
        GgmlType::Q8_0 | GgmlType::IQ2_XXS => &[0],
        GgmlType::Q4_K => &[0, 2],
        GgmlType::Q2_K => &[80, 82],
        _ => &[],
    }
}

/// A `rows x cols` matrix of `ty` with random code bytes; the f16 scales (and float elements)
/// are uniform in `±scale` so the weights have a realistic spread.
pub fn random_matrix(ty: GgmlType, rows: usize, cols: usize, scale: f32, seed: u64) -> Vec<u8> {
    let mut r = rng(seed);
    let row_bytes = cols / ty.block_elems() * ty.block_bytes();
    let mut m: Vec<u8> = (0..rows * row_bytes).map(|_| r.gen()).collect();
    let f16 = |r: &mut ChaCha8Rng| half::f16::from_f32(r.gen_range(-scale..scale)).to_le_bytes();
    match ty {
        GgmlType::F32 => m.chunks_exact_mut(4).for_each(|c| c.copy_from_slice(&r.gen_range(-scale..scale).to_le_bytes())),
        GgmlType::F16 => m.chunks_exact_mut(2).for_each(|c| c.copy_from_slice(&f16(&mut r))),
        GgmlType::BF16 => m.chunks_exact_mut(2).for_each(|c| {
            let bits = (r.gen_range(-scale..scale).to_bits() >> 16) as u16;
            c.copy_from_slice(&bits.to_le_bytes())
        }),
        _ => {
            for blk in m.chunks_exact_mut(ty.block_bytes()) {
                for &o in f16_fields(ty) {
                    blk[o..o + 2].copy_from_slice(&f16(&mut r));
                }
            }
        }
    }
    m
}

/// Roughly Gaussian activations (sum of uniforms) with a few outliers, like hidden states.
pub fn random_x(n: usize, seed: u64) -> Vec<f32> {
    let mut r = rng(seed);
    (0..n)
        .map(|i| {
            let g: f32 = (0..4).map(|_| r.gen_range(-1.0f32..1.0)).sum();
            if i % 97 == 5 { 8.0 * g } else { g }
        })
        .collect()
}

/// The documented `dot_f32` order, written out plainly: lane `i % 32` accumulates
/// `w[i] * x[i]` in ascending `i`, then the 32 lanes fold in halves.
pub fn lane_order_dot(w: &[f32], x: &[f32]) -> f32 {
    let mut lanes = [0f32; 32];
    for i in 0..w.len() {
        lanes[i % 32] += w[i] * x[i];
    }
    let mut n = 32;
    while n > 1 {
        n /= 2;
        for l in 0..n {
            lanes[l] += lanes[l + n];
        }
    }
    lanes[0]
}

/// Every weight type the dot products support.
pub const DOT_TYPES: [GgmlType; 7] = [
    GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0,
    GgmlType::Q2_K, GgmlType::Q4_K, GgmlType::IQ2_XXS,
];
