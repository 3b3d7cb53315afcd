//! A batched product gives exactly the bits of separate matrix-vector products.

use dsv4_quant::{matmul, matmul_into, matvec, quantize_matrix, GgmlType, Numerics};
use rand::{Rng, SeedableRng};

#[test]
fn matmul_equals_separate_matvecs_bit_for_bit() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    for ty in [GgmlType::F32, GgmlType::F16, GgmlType::Q8_0, GgmlType::Q2_K, GgmlType::Q4_K, GgmlType::IQ2_XXS] {
        for (rows, cols, n) in [(37, 256, 3), (300, 512, 5), (1024, 256, 1), (64, 1024, 9)] {
            let w: Vec<f32> = (0..rows * cols).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let bytes = match ty {
                GgmlType::F32 => w.iter().flat_map(|v| v.to_le_bytes()).collect(),
                GgmlType::F16 => w.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect(),
                _ => quantize_matrix(ty, rows, cols, &w, None).unwrap(),
            };
            let xs: Vec<f32> = (0..n * cols).map(|_| rng.gen_range(-2.0..2.0)).collect();
            for numerics in [Numerics::Plain, Numerics::Official] {
                let mut batched = vec![f32::NAN; n * rows];
                matmul(ty, &bytes, rows, cols, &xs, n, &mut batched, numerics).unwrap();
                for t in 0..n {
                    let mut one = vec![f32::NAN; rows];
                    matvec(ty, &bytes, rows, cols, &xs[t * cols..(t + 1) * cols], &mut one, numerics).unwrap();
                    let same = one.iter().zip(&batched[t * rows..(t + 1) * rows]).all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{ty} {rows}x{cols} token {t} {numerics:?}");
                }
            }
        }
    }
}

#[test]
fn matmul_rejects_bad_lengths() {
    let bytes = vec![0u8; 4 * 32 * 8];
    let mut out = vec![0f32; 16];
    assert!(matmul(GgmlType::F32, &bytes, 8, 32, &[0.0; 31], 1, &mut out[..8], Numerics::Plain).is_err());
    assert!(matmul(GgmlType::F32, &bytes, 8, 32, &[0.0; 64], 2, &mut out[..15], Numerics::Plain).is_err());
    assert!(matmul(GgmlType::F32, &bytes, 8, 32, &[0.0; 64], 2, &mut out, Numerics::Plain).is_ok());
    // One slice per vector: each must hold a row's outputs.
    let (mut a, mut b, mut c) = (vec![0f32; 8], vec![0f32; 7], vec![f32::NAN; 8]);
    assert!(matmul_into(GgmlType::F32, &bytes, 8, 32, &[0.0; 64], &mut [&mut a[..], &mut b[..]], Numerics::Plain).is_err());
    assert!(matmul_into(GgmlType::F32, &bytes, 8, 32, &[0.0; 32], &mut [&mut a[..], &mut c[..]], Numerics::Plain).is_err());
    assert!(matmul_into(GgmlType::F32, &bytes, 8, 32, &[0.0; 64], &mut [&mut a[..], &mut c[..]], Numerics::Plain).is_ok());
    assert!(c.iter().all(|&v| v == 0.0), "zero weights give zeros in every slice");
}
