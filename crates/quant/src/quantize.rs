//! Quantizers for the block types the ds4 files store: Q8_0, Q2_K, Q4_K and IQ2_XXS.
//!
//! Each follows ds4's `gguf-tools/quants.c` (itself ggml's algorithms, FORMATS §4) so that
//! re-quantizing gives the bytes ds4's tool would write:
//!
//! | type | without importance | with importance |
//! |---|---|---|
//! | Q8_0 | `d = amax/127` per 32 | ignored (ds4 ignores it too) |
//! | Q4_K | reference path (§4.6) | importance path (§4.6) |
//! | Q2_K | reference path (§4.7) | importance path (§4.7) |
//! | IQ2_XXS | the `Σ_rows x²` column-energy fallback (§4.3) | §4.8 |
//!
//! Importance vectors hold one non-negative value per column (an imatrix entry for one
//! matrix, or one expert's slice of it). [`quantize_matrix`] is the recommended entry: it is
//! the only one that can compute IQ2_XXS's fallback importance exactly as ds4 does, because
//! that needs every row of the matrix. [`quantize_row`] on IQ2_XXS without importance uses
//! `x²` of that row alone, which is the same fallback for a one-row matrix and therefore
//! differs from the matrix result whenever the matrix has more than one row.
//!
//! Input must be finite: NaN or ±inf anywhere is rejected with [`QuantizeError::NonFinite`]
//! rather than quantized to garbage. Magnitudes whose block scale does not fit an f16 are
//! rejected with [`QuantizeError::ScaleOverflow`]; on Gaussian data that happens above
//! max |x| ≈ 1.0e6 for Q2_K (its `dmin` = max min / 15), 4.3e6 for Q4_K, 9e6 for Q8_0 and
//! 1.1e7 for IQ2_XXS. Tiny magnitudes quantize to (near) zero as the f16 scales underflow,
//! which is the format's own limit.
//!
//! Zero importance is honoured as ds4 does: a K-quant block whose importance is all zero
//! fits scale and min 0 and decodes to exactly 0; an IQ2_XXS 32-group with all-zero
//! importance is left at grid point 0 with group scale code 0.

use rayon::prelude::*;

use crate::{check_row, iq2_xxs, q2_k, q4_k, q8_0, GgmlType, QuantError};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum QuantizeError {
    /// Unsupported type, or a row length / output size that does not fit the block layout.
    #[error(transparent)]
    Layout(#[from] QuantError),
    #[error(
        "input value at row {row}, column {col} is {value}; only finite values can be quantized"
    )]
    NonFinite { row: usize, col: usize, value: f32 },
    #[error("importance has {got} values; it needs one per column ({cols})")]
    ImportanceLen { cols: usize, got: usize },
    #[error("importance value at column {col} is {value}; importance must be finite and >= 0")]
    BadImportance { col: usize, value: f32 },
    #[error("matrix of {rows} x {cols} needs {need} input values, got {got}")]
    MatrixLen {
        rows: usize,
        cols: usize,
        need: usize,
        got: usize,
    },
    #[error("{ty} row {row}, block {block}: the block scale overflows f16 (input magnitude too large for the format)")]
    ScaleOverflow {
        ty: GgmlType,
        row: usize,
        block: usize,
    },
}

/// Whether [`quantize_row`] can produce `ty`.
pub fn can_quantize(ty: GgmlType) -> bool {
    matches!(
        ty,
        GgmlType::Q8_0 | GgmlType::Q2_K | GgmlType::Q4_K | GgmlType::IQ2_XXS
    )
}

/// Quantizes one row `x` (a whole number of blocks) of `ty` into `out`, which must be
/// exactly one row of `ty` bytes. `importance`, when given, has `x.len()` entries.
///
/// For IQ2_XXS without importance this uses `x²` of this row as the importance, which is
/// ds4's fallback for a one-row matrix; prefer [`quantize_matrix`] for whole matrices.
pub fn quantize_row(
    ty: GgmlType,
    x: &[f32],
    importance: Option<&[f32]>,
    out: &mut [u8],
) -> Result<(), QuantizeError> {
    validate_layout(ty, x.len())?;
    check_row(ty, out, x.len())?;
    if let Some(imp) = importance {
        validate_importance(imp, x.len())?;
    }
    check_finite(x, x.len())?;
    let energy;
    let importance = match (ty, importance) {
        (GgmlType::IQ2_XXS, None) => {
            energy = column_energy(1, x.len(), x);
            Some(energy.as_slice())
        }
        _ => importance,
    };
    quantize_checked_row(ty, x, importance, out, 0)
}

/// Quantizes a row-major `rows × cols` matrix of `ty`, returning `rows` rows of
/// `ty.row_bytes(cols)` bytes each. `importance`, when given, has `cols` entries. For IQ2_XXS
/// without importance, the importance is `Σ_rows x[r][c]²` ([`column_energy`]), as ds4's
/// quantizer does. Rows are quantized in parallel on the current rayon pool; the result does
/// not depend on the thread count.
pub fn quantize_matrix(
    ty: GgmlType,
    rows: usize,
    cols: usize,
    x: &[f32],
    importance: Option<&[f32]>,
) -> Result<Vec<u8>, QuantizeError> {
    validate_layout(ty, cols)?;
    let row_bytes = cols / ty.block_elems() * ty.block_bytes();
    let mut out = vec![0u8; rows * row_bytes];
    quantize_matrix_into(ty, rows, cols, x, importance, &mut out)?;
    Ok(out)
}

/// [`quantize_matrix`] into a caller-provided buffer of exactly `rows` rows of `ty`.
pub fn quantize_matrix_into(
    ty: GgmlType,
    rows: usize,
    cols: usize,
    x: &[f32],
    importance: Option<&[f32]>,
    out: &mut [u8],
) -> Result<(), QuantizeError> {
    validate_layout(ty, cols)?;
    let need = rows.saturating_mul(cols);
    if x.len() != need {
        return Err(QuantizeError::MatrixLen {
            rows,
            cols,
            need,
            got: x.len(),
        });
    }
    let row_bytes = cols / ty.block_elems() * ty.block_bytes();
    let need_out = rows * row_bytes;
    if out.len() != need_out {
        let got = out.len();
        return Err(QuantError::RowBytes {
            ty,
            elems: need,
            need: need_out,
            got,
        }
        .into());
    }
    if let Some(imp) = importance {
        validate_importance(imp, cols)?;
    }
    check_finite(x, cols)?;
    if rows == 0 || cols == 0 {
        return Ok(());
    }
    let energy;
    let importance = match (ty, importance) {
        (GgmlType::IQ2_XXS, None) => {
            energy = column_energy(rows, cols, x);
            Some(energy.as_slice())
        }
        _ => importance,
    };
    if ty == GgmlType::IQ2_XXS {
        iq2_xxs::quantize::init();
    }
    // Every row is quantized even after a failure so that the error reported (the first
    // failing row) does not depend on scheduling.
    let results: Vec<Result<(), QuantizeError>> = x
        .par_chunks_exact(cols)
        .zip(out.par_chunks_exact_mut(row_bytes))
        .enumerate()
        .map(|(r, (xr, or))| quantize_checked_row(ty, xr, importance, or, r))
        .collect();
    results.into_iter().collect()
}

/// ds4's fallback importance for IQ2_XXS (FORMATS §4.3): `imp[c] = Σ_r x[r][c]²`, summed in
/// f32 in row order as ds4 does (the order matters for byte parity).
pub fn column_energy(rows: usize, cols: usize, x: &[f32]) -> Vec<f32> {
    let mut imp = vec![0.0f32; cols];
    for row in x.chunks_exact(cols.max(1)).take(rows) {
        for (s, &v) in imp.iter_mut().zip(row) {
            *s += v * v;
        }
    }
    imp
}

fn validate_layout(ty: GgmlType, cols: usize) -> Result<(), QuantizeError> {
    if !can_quantize(ty) {
        return Err(QuantError::Unsupported(ty).into());
    }
    let block = ty.block_elems();
    if !cols.is_multiple_of(block) {
        return Err(QuantError::PartialBlock {
            ty,
            elems: cols,
            block,
        }
        .into());
    }
    Ok(())
}

fn validate_importance(imp: &[f32], cols: usize) -> Result<(), QuantizeError> {
    if imp.len() != cols {
        return Err(QuantizeError::ImportanceLen {
            cols,
            got: imp.len(),
        });
    }
    match imp.iter().position(|v| !(v.is_finite() && *v >= 0.0)) {
        Some(col) => Err(QuantizeError::BadImportance {
            col,
            value: imp[col],
        }),
        None => Ok(()),
    }
}

fn check_finite(x: &[f32], cols: usize) -> Result<(), QuantizeError> {
    match x.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(QuantizeError::NonFinite {
            row: i / cols.max(1),
            col: i % cols.max(1),
            value: x[i],
        }),
        None => Ok(()),
    }
}

/// Quantizes one validated row, then rejects it if any stored f16 scale is not finite.
fn quantize_checked_row(
    ty: GgmlType,
    x: &[f32],
    importance: Option<&[f32]>,
    out: &mut [u8],
    row: usize,
) -> Result<(), QuantizeError> {
    let scale_offsets: &[usize] = match ty {
        GgmlType::Q8_0 => {
            q8_0::quantize::quantize(x, out);
            &[0]
        }
        GgmlType::Q2_K => {
            q2_k::quantize::quantize(x, importance, out);
            &[80, 82]
        }
        GgmlType::Q4_K => {
            q4_k::quantize::quantize(x, importance, out);
            &[0, 2]
        }
        GgmlType::IQ2_XXS => {
            let imp = importance.expect("IQ2_XXS importance is supplied by the callers");
            iq2_xxs::quantize::quantize(x, imp, out);
            &[0]
        }
        other => return Err(QuantError::Unsupported(other).into()),
    };
    for (block, blk) in out.chunks_exact(ty.block_bytes()).enumerate() {
        if scale_offsets
            .iter()
            .any(|&o| !half::f16::from_le_bytes([blk[o], blk[o + 1]]).is_finite())
        {
            return Err(QuantizeError::ScaleOverflow { ty, row, block });
        }
    }
    Ok(())
}
