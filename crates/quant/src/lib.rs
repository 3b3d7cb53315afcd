//! The tensor types DeepSeek V4 Flash files use: dequantization, dot products with f32 and
//! with quantized activations, quantizers, and the FP8/FP4 rounding of the official numerics.
//!
//! One folder per block format (`q8_0`, `q2_k`, `q4_k`, `iq2_xxs`) holds its layout, its
//! dequantization (`mod.rs`) and its dot products (`dot.rs`); quantizers sit beside them in
//! `quantize.rs`. `act` holds the activation blocks of the official numerics (ds4's Q8_0-like
//! and Q8_K), `dot` and `matvec` the public dispatch, `lanes` the fixed-order f32 accumulator,
//! `fp8`/`fp4` the FP8/FP4/E8M0 scalar formats.
//!
//! Kernels: each format's `dot.rs` holds portable code that defines the arithmetic; on x86-64
//! CPUs with AVX2 and F16C, `*/avx2.rs` (helpers in `x86`) does the same f32 operations in the
//! same order with wider registers, so results are identical on every CPU (unit tests compare
//! the two bit for bit; `DSV4_QUANT_PORTABLE=1` forces the portable path).
//!
//! Two numerics (README decision 3): [`dot_q`] / [`Numerics::Official`] reproduce ds4's
//! scalar x86 CPU dot products bit for bit (FORMATS §3); [`dot_f32`] / [`Numerics::Plain`]
//! dequantize weights exactly and accumulate in f32 in a documented lane order.

/// `$fast` (a call into a format's `avx2.rs`) where the CPU has AVX2 and F16C, else
/// `$portable`: the dispatch of every format's dot products (`*/dot.rs`). Both compute the
/// same bits.
macro_rules! avx2_or {
    ($fast:expr, $portable:expr) => {{
        #[cfg(target_arch = "x86_64")]
        if crate::x86::available() {
            // SAFETY: the CPU has the features the `avx2.rs` kernels are compiled for.
            return unsafe { $fast };
        }
        $portable
    }};
}

pub mod act;
pub mod dot;
mod fit;
pub mod float;
pub mod fp4;
pub mod fp8;
pub mod iq2_xxs;
mod lanes;
pub mod matvec;
pub mod q2_k;
pub mod q4_k;
pub mod q8_0;
pub mod quantize;

pub use quantize::{quantize_matrix, quantize_row};

pub use act::{ActFormat, BlockQ8K, BlockQ8_0Act, QuantizedActs};
pub use dot::{dot_f32, dot_q};
pub use dsv4_gguf::GgmlType;
pub use matvec::{matmul, matmul_into, matvec, matvec_acts, Numerics};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QuantError {
    #[error("tensor type {0} is not supported by this engine")]
    Unsupported(GgmlType),
    #[error("{ty} row of {elems} elements is not a whole number of {block}-element blocks")]
    PartialBlock { ty: GgmlType, elems: usize, block: usize },
    #[error("{ty} row of {elems} elements needs {need} bytes, got {got}")]
    RowBytes { ty: GgmlType, elems: usize, need: usize, got: usize },
    #[error("{elems} activations are not a whole number of {format:?} blocks of {block}")]
    PartialActBlock { format: ActFormat, elems: usize, block: usize },
    #[error("{ty} weights need {need:?} activations, got {got:?}")]
    ActsMismatch { ty: GgmlType, need: ActFormat, got: ActFormat },
    #[error("{what}: expected {expected}, got {got}")]
    Length { what: &'static str, expected: usize, got: usize },
    #[error("matrix size overflows usize")]
    Overflow,
}

/// Checks that `bytes` holds exactly one row of `elems` elements of `ty`.
pub fn check_row(ty: GgmlType, bytes: &[u8], elems: usize) -> Result<(), QuantError> {
    let block = ty.block_elems();
    if !elems.is_multiple_of(block) {
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

/// The little-endian f16 at byte `at`, as f32. Uses the crate's own branch-free conversion:
/// `half`'s goes through a run-time CPU check per call, which costs more than a block's dot.
#[inline(always)]
pub(crate) fn f16_at(b: &[u8], at: usize) -> f32 {
    float::f16_to_f32(u16::from_le_bytes([b[at], b[at + 1]]))
}

#[cfg(target_arch = "x86_64")]
mod x86;

#[cfg(test)]
mod test_util;
