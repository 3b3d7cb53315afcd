//! Public functions return errors, never panic, on wrong lengths and unsupported types.

use dsv4_quant::{dequantize_row, dot_f32, dot_q, GgmlType, QuantError, QuantizedActs};

#[test]
fn dequantize_row_checks_lengths() {
    let mut out = vec![0f32; 256];
    assert!(matches!(dequantize_row(GgmlType::Q2_K, &[0; 83], &mut out), Err(QuantError::RowBytes { need: 84, got: 83, .. })));
    assert!(matches!(dequantize_row(GgmlType::Q8_0, &[0; 34], &mut out[..31]), Err(QuantError::PartialBlock { .. })));
    assert!(matches!(dequantize_row(GgmlType::Q6_K, &[0; 210], &mut out), Err(QuantError::Unsupported(GgmlType::Q6_K))));
}

#[test]
fn dot_f32_checks_lengths_and_types() {
    let x = vec![1f32; 256];
    assert!(matches!(dot_f32(GgmlType::IQ2_XXS, &[0; 65], &x), Err(QuantError::RowBytes { .. })));
    assert!(matches!(dot_f32(GgmlType::IQ2_XXS, &[0; 66], &x[..255]), Err(QuantError::PartialBlock { .. })));
    assert!(matches!(dot_f32(GgmlType::F16, &[0; 10], &x[..4]), Err(QuantError::RowBytes { .. })));
    assert!(matches!(dot_f32(GgmlType::I32, &[0; 1024], &x), Err(QuantError::Unsupported(GgmlType::I32))));
    assert_eq!(dot_f32(GgmlType::F32, &[], &[]), Ok(0.0));
}

#[test]
fn dot_q_checks_lengths_and_formats() {
    let x = vec![1f32; 512];
    let k = QuantizedActs::for_weight(GgmlType::Q2_K, &x).unwrap();
    assert!(matches!(dot_q(GgmlType::Q2_K, &[0; 84], &k), Err(QuantError::RowBytes { .. })));
    assert!(matches!(dot_q(GgmlType::Q8_0, &[0; 16 * 34], &k), Err(QuantError::ActsMismatch { .. })));
    assert!(matches!(dot_q(GgmlType::F16, &[0; 1024], &k), Err(QuantError::ActsMismatch { .. })));
    let f = QuantizedActs::for_weight(GgmlType::F16, &x).unwrap();
    assert!(matches!(dot_q(GgmlType::Q4_K, &[0; 288], &f), Err(QuantError::ActsMismatch { .. })));
    assert!(matches!(dot_q(GgmlType::Q5_K, &[0; 352], &k), Err(QuantError::Unsupported(GgmlType::Q5_K))));
    assert_eq!(dot_q(GgmlType::Q2_K, &[0; 168], &k), Ok(0.0));
}
