//! Matrix-vector products over a row-major block matrix (`rows` rows of `cols` elements, each
//! row a whole number of blocks, as GGUF stores `ne = [cols, rows]`).
//!
//! Rows are split into chunks that rayon spreads over threads; every output element is one
//! row's dot product computed by one thread in that row kernel's fixed order, so the result
//! does not depend on the thread count or on scheduling.

use rayon::prelude::*;

use crate::act::{BlockQ8_0Act, QuantizedActs};
use crate::dot::{act_kernel, plain_kernel, Kernel};
use crate::{float, q8_0, GgmlType, QuantError};

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

/// `out[t][r] = weights[r] · xs[t]` for `n` activation vectors (`xs` is `n × cols`, `out` is
/// `n × rows`), reading each weight chunk once for all of them while it is in cache.
///
/// Every output is computed by exactly the kernel [`matvec`] uses for that vector, so a batch
/// gives bit-for-bit the results of `n` separate calls (prefill chunking relies on this).
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    ty: GgmlType,
    weights: &[u8],
    rows: usize,
    cols: usize,
    xs: &[f32],
    n: usize,
    out: &mut [f32],
    numerics: Numerics,
) -> Result<(), QuantError> {
    if xs.len() != n * cols {
        return Err(QuantError::Length { what: "batched activation elements", expected: n * cols, got: xs.len() });
    }
    if out.len() != n * rows {
        return Err(QuantError::Length { what: "batched output elements", expected: n * rows, got: out.len() });
    }
    if n == 0 {
        return Ok(());
    }
    let row_bytes = check_shape(ty, weights, rows, cols, cols, rows)?;
    let acts: Vec<QuantizedActs> = match numerics {
        Numerics::Plain => Vec::new(),
        Numerics::Official => xs.chunks_exact(cols.max(1)).take(n).map(|x| QuantizedActs::for_weight(ty, x)).collect::<Result<_, _>>()?,
    };
    let plain = match numerics {
        Numerics::Plain => Some(plain_kernel(ty)?),
        Numerics::Official => None,
    };
    let kernels: Vec<Kernel<'_>> = (0..n)
        .map(|t| match plain {
            Some(k) => Ok(Kernel::F32(k, &xs[t * cols..(t + 1) * cols])),
            None => act_kernel(ty, &acts[t]),
        })
        .collect::<Result<_, _>>()?;
    if row_bytes == 0 {
        out.fill(0.0);
        return Ok(());
    }
    // Chunk-major scratch: chunk c holds its rows for token 0, then token 1, … so that every
    // parallel task writes one contiguous block; scattered to token-major order afterwards.
    let chunk_rows = (CHUNK_BYTES / row_bytes).max(1).next_multiple_of(8);
    let mut scratch = vec![0f32; n * rows];
    // Q8_0 with quantized activations (the attention projections and the output head):
    // several vectors per pass over a row (eight with AVX-512 VNNI, else four).
    let q8: Option<Vec<&[BlockQ8_0Act]>> = kernels.iter().map(|k| if let Kernel::Q8_0(_, a) = k { Some(*a) } else { None }).collect();
    // With AVX-512 VNNI, eight vectors per pass, their activations laid out once here.
    #[cfg(target_arch = "x86_64")]
    let q8x8: Option<Vec<q8_0::vnni::Acts8>> = match &q8 {
        Some(acts) if n > 1 && q8_0::vnni::available() => Some(acts.chunks(q8_0::vnni::TOKENS).map(q8_0::vnni::Acts8::new).collect()),
        _ => None,
    };
    #[cfg(not(target_arch = "x86_64"))]
    let q8x8: Option<Vec<()>> = None;
    let work = |(s, w): (&mut [f32], &[u8])| {
        let r = w.len() / row_bytes;
        match (&q8, &q8x8) {
            #[cfg(target_arch = "x86_64")]
            (_, Some(groups)) => run_rows_q8_0_x8(w, row_bytes, s, groups, n),
            (Some(acts), _) if n > 1 => run_rows_q8_0_x4(w, row_bytes, s, acts),
            _ => {
                for (t, k) in kernels.iter().enumerate() {
                    run_rows_serial(w, row_bytes, &mut s[t * r..(t + 1) * r], k);
                }
            }
        }
    };
    // Small products on the calling thread, as `run_rows` does: waking the pool for a few
    // microseconds of work cost more than the work (a tiny model's batched decode step spent
    // a fifth of its time scheduling). The chunks and their kernels are the same either way.
    if weights.len().saturating_mul(n) < PAR_MIN_BYTES {
        scratch.chunks_mut(chunk_rows * n).zip(weights.chunks(chunk_rows * row_bytes)).for_each(work);
    } else {
        scratch.par_chunks_mut(chunk_rows * n).zip(weights.par_chunks(chunk_rows * row_bytes)).for_each(work);
    }
    for (c, block) in scratch.chunks(chunk_rows * n).enumerate() {
        let r = block.len() / n;
        for t in 0..n {
            out[t * rows + c * chunk_rows..t * rows + c * chunk_rows + r].copy_from_slice(&block[t * r..(t + 1) * r]);
        }
    }
    Ok(())
}

/// Rows of `w` against the `n` vectors laid out in `groups` (eight a group); vector t's row i
/// goes to `out[t * rows + i]`.
#[cfg(target_arch = "x86_64")]
fn run_rows_q8_0_x8(w: &[u8], row_bytes: usize, out: &mut [f32], groups: &[q8_0::vnni::Acts8], n: usize) {
    let rows = w.len() / row_bytes;
    let mut tmp = vec![[0f32; q8_0::vnni::TOKENS]; rows];
    for (g, acts) in groups.iter().enumerate() {
        // SAFETY: the groups exist only where `vnni::available()`; the rows are Q8_0 rows of
        // the activations' block count (checked by the caller's kernels).
        unsafe { q8_0::vnni::rows_x8(w, row_bytes, acts, &mut tmp) };
        for (i, v) in tmp.iter().enumerate() {
            for (t, &x) in v.iter().enumerate().take(n - g * q8_0::vnni::TOKENS) {
                out[(g * q8_0::vnni::TOKENS + t) * rows + i] = x;
            }
        }
    }
}

/// Rows of `w` against every vector of `acts`, four vectors at a time (the last group padded
/// by repeating a vector whose extra results are dropped); vector t's row i goes to
/// `out[t * rows + i]`.
fn run_rows_q8_0_x4(w: &[u8], row_bytes: usize, out: &mut [f32], acts: &[&[BlockQ8_0Act]]) {
    let rows = w.len() / row_bytes;
    for (g, group) in acts.chunks(4).enumerate() {
        let four: [&[BlockQ8_0Act]; 4] = std::array::from_fn(|t| group[t.min(group.len() - 1)]);
        for (i, row) in w.chunks_exact(row_bytes).enumerate() {
            let v = q8_0::dot::dot_q8_0_x4(row, four);
            for (t, &x) in v.iter().enumerate().take(group.len()) {
                out[(4 * g + t) * rows + i] = x;
            }
        }
    }
}

fn run_rows(weights: &[u8], row_bytes: usize, out: &mut [f32], k: &Kernel<'_>) {
    if row_bytes == 0 {
        // Zero columns: every dot product is the empty sum.
        out.fill(0.0);
        return;
    }
    if weights.len() < PAR_MIN_BYTES {
        run_rows_serial(weights, row_bytes, out, k);
        return;
    }
    // A multiple of 8 rows keeps the eight-row sequential kernel busy in every chunk.
    let chunk_rows = (CHUNK_BYTES / row_bytes).max(1).next_multiple_of(8);
    out.par_chunks_mut(chunk_rows)
        .zip(weights.par_chunks(chunk_rows * row_bytes))
        .for_each(|(o, w)| run_rows_serial(w, row_bytes, o, k));
}

/// Rows of `w` against one kernel on the calling thread; each row's value does not depend on
/// where the slice starts (the eight-row kernel gives the same bits as row by row).
fn run_rows_serial(w: &[u8], row_bytes: usize, o: &mut [f32], k: &Kernel<'_>) {
    let mut o = o;
    let mut w = w;
    if let Kernel::Seq(e, x) = *k {
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
}
