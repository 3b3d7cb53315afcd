//! Matrix-vector products over a row-major block matrix (`rows` rows of `cols` elements, each
//! row a whole number of blocks, as GGUF stores `ne = [cols, rows]`).
//!
//! Rows are split into chunks that rayon spreads over threads; every output element is one
//! row's dot product computed by one thread in that row kernel's fixed order, so the result
//! does not depend on the thread count or on scheduling.

use rayon::prelude::*;

use crate::act::QuantizedActs;
use crate::dot::{act_kernel, plain_kernel, Kernel};
use crate::{float, GgmlType, QuantError};

/// How dot products are computed (README decision 3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Numerics {
    /// ds4's CPU scalar numerics: activations quantized per weight type ([`crate::dot_q`]).
    #[default]
    Official,
    /// Weights dequantized exactly, everything in f32 ([`crate::dot_f32`]).
    Plain,
}

/// Below this many weight bytes a matvec runs on the calling thread: the fork/join would
/// cost more than it saves.
const PAR_MIN_BYTES: usize = 256 * 1024;
/// Weight bytes per parallel task: big enough to amortise scheduling, small enough to balance.
const CHUNK_BYTES: usize = 64 * 1024;

fn check_shape(
    ty: GgmlType,
    weights: &[u8],
    rows: usize,
    cols: usize,
    x_len: usize,
    out_len: usize,
) -> Result<usize, QuantError> {
    let block = ty.block_elems();
    if !cols.is_multiple_of(block) {
        return Err(QuantError::PartialBlock { ty, elems: cols, block });
    }
    let row_bytes = (cols / block).checked_mul(ty.block_bytes()).ok_or(QuantError::Overflow)?;
    let need = row_bytes.checked_mul(rows).ok_or(QuantError::Overflow)?;
    if weights.len() != need {
        return Err(QuantError::Length { what: "weight matrix bytes", expected: need, got: weights.len() });
    }
    if x_len != cols {
        return Err(QuantError::Length { what: "activation elements", expected: cols, got: x_len });
    }
    if out_len != rows {
        return Err(QuantError::Length { what: "output elements", expected: rows, got: out_len });
    }
    Ok(row_bytes)
}

/// `out[r] = weights[r] · x` for `rows` rows of `cols` elements of type `ty`.
///
/// `Official` quantizes `x` once for the whole call; `Plain` uses the f32 kernels. To reuse one
/// quantized `x` across several matrices (the MoE's gate/up experts), call
/// [`matvec_acts`].
pub fn matvec(
    ty: GgmlType,
    weights: &[u8],
    rows: usize,
    cols: usize,
    x: &[f32],
    out: &mut [f32],
    numerics: Numerics,
) -> Result<(), QuantError> {
    let row_bytes = check_shape(ty, weights, rows, cols, x.len(), out.len())?;
    match numerics {
        Numerics::Plain => {
            let k = plain_kernel(ty)?;
            run_rows(weights, row_bytes, out, &Kernel::F32(k, x));
            Ok(())
        }
        Numerics::Official => {
            let acts = QuantizedActs::for_weight(ty, x)?;
            run_rows(weights, row_bytes, out, &act_kernel(ty, &acts)?);
            Ok(())
        }
    }
}

/// `out[r] = weights[r] · acts` with the official numerics, for activations quantized
/// beforehand with [`QuantizedActs::for_weight`].
pub fn matvec_acts(
    ty: GgmlType,
    weights: &[u8],
    rows: usize,
    cols: usize,
    acts: &QuantizedActs,
    out: &mut [f32],
) -> Result<(), QuantError> {
    let k = act_kernel(ty, acts)?;
    let row_bytes = check_shape(ty, weights, rows, cols, acts.len(), out.len())?;
    run_rows(weights, row_bytes, out, &k);
    Ok(())
}

fn run_rows(weights: &[u8], row_bytes: usize, out: &mut [f32], k: &Kernel<'_>) {
    if row_bytes == 0 {
        // Zero columns: every dot product is the empty sum.
        out.fill(0.0);
        return;
    }
    let serial = |o: &mut [f32], w: &[u8]| {
        let mut o = o;
        let mut w = w;
        if let Kernel::Seq(e, x) = *k {
            // Eight sequential chains side by side; same result as row by row.
            let mut oc = o.chunks_exact_mut(8);
            let mut wc = w.chunks_exact(8 * row_bytes);
            for (o8, w8) in (&mut oc).zip(&mut wc) {
                let rows: [&[u8]; 8] = std::array::from_fn(|r| &w8[r * row_bytes..(r + 1) * row_bytes]);
                o8.copy_from_slice(&float::dot_seq8(e, rows, x));
            }
            (o, w) = (oc.into_remainder(), wc.remainder());
        }
        for (v, r) in o.iter_mut().zip(w.chunks_exact(row_bytes)) {
            *v = k.run(r);
        }
    };
    if weights.len() < PAR_MIN_BYTES {
        serial(out, weights);
        return;
    }
    // A multiple of 8 rows keeps the eight-row sequential kernel busy in every chunk.
    let chunk_rows = (CHUNK_BYTES / row_bytes).max(1).next_multiple_of(8);
    out.par_chunks_mut(chunk_rows)
        .zip(weights.par_chunks(chunk_rows * row_bytes))
        .for_each(|(o, w)| serial(o, w));
}
