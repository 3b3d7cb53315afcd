//! The tensor types DeepSeek V4 Flash files use: dequantization, dot products with f32 and
//! with quantized activations, quantizers, and the FP8/FP4 rounding of the official numerics.
//!
//! One folder per block format (`q8_0`, `q2_k`, `q4_k`, `iq2_xxs`) holds its layout, its
//! dequantization and its dot products; quantizers sit beside them in `quantize.rs`.

mod fit;
pub mod float;
pub mod iq2_xxs;
pub mod q2_k;
pub mod q4_k;
pub mod q8_0;
pub mod quantize;

pub use quantize::quantize_row;

pub use dsv4_gguf::GgmlType;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QuantError {
    #[error("tensor type {0} is not supported by this engine")]
    Unsupported(GgmlType),
    #[error("{ty} row of {elems} elements is not a whole number of {block}-element blocks")]
    PartialBlock { ty: GgmlType, elems: usize, block: usize },
    #[error("{ty} row of {elems} elements needs {need} bytes, got {got}")]
    RowBytes { ty: GgmlType, elems: usize, need: usize, got: usize },
}

/// Checks that `bytes` holds exactly one row of `elems` elements of `ty`.
pub fn check_row(ty: GgmlType, bytes: &[u8], elems: usize) -> Result<(), QuantError> {
    let block = ty.block_elems();
    if elems % block != 0 {
        return Err(QuantError::PartialBlock { ty, elems, block });
    }
    let need = elems / block * ty.block_bytes();
    if bytes.len() != need {
        return Err(QuantError::RowBytes { ty, elems, need, got: bytes.len() });
    }
    Ok(())
}

/// Dequantizes one row of `out.len()` elements stored as `ty` in `bytes`, exactly (the
/// result is bit-identical to gguf-py's `dequantize`).
pub fn dequantize_row(ty: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<(), QuantError> {
    check_row(ty, bytes, out.len())?;
    match ty {
        GgmlType::F32 => float::dequantize_f32(bytes, out),
        GgmlType::F16 => float::dequantize_f16(bytes, out),
        GgmlType::BF16 => float::dequantize_bf16(bytes, out),
        GgmlType::I32 => float::dequantize_i32(bytes, out),
        GgmlType::Q8_0 => q8_0::dequantize(bytes, out),
        GgmlType::Q2_K => q2_k::dequantize(bytes, out),
        GgmlType::Q4_K => q4_k::dequantize(bytes, out),
        GgmlType::IQ2_XXS => iq2_xxs::dequantize(bytes, out),
        other => return Err(QuantError::Unsupported(other)),
    }
    Ok(())
}

#[inline]
pub(crate) fn f16_at(b: &[u8], at: usize) -> f32 {
    half::f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}
