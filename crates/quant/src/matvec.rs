//! Matrix-vector products over a row-major block matrix (`rows` rows of `cols` elements, each
//! row a whole number of blocks, as GGUF stores `ne = [cols, rows]`).
//!
//! Rows are split into chunks that rayon spreads over threads; every output element is one
//! row's dot product computed by one thread in that row kernel's fixed order, so the result
//! does not depend on the thread count or on scheduling.

use rayon::prelude::*;

use crate::act::{BlockQ8K, BlockQ8_0Act, QuantizedActs};
use crate::dot::{act_kernel, plain_kernel, Kernel, Q8KDot4};
use crate::{float, iq2_xxs, q2_k, q8_0, GgmlType, QuantError};

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
    if out.len() != n * rows {
        return Err(QuantError::Length { what: "batched output elements", expected: n * rows, got: out.len() });
    }
    // Token t's row of `out` (a zero-row matrix has n empty ones).
    let mut outs: Vec<&mut [f32]> = match rows {
        0 => (0..n).map(|_| &mut [][..]).collect(),
        _ => out.chunks_exact_mut(rows).collect(),
    };
    matmul_into(ty, weights, rows, cols, xs, &mut outs, numerics)
}

/// [`matmul`] into one output slice per vector (`outs[t]` of `rows` elements gets `W xs[t]`),
/// so a caller holding separate vectors needs no copy.
pub fn matmul_into(
    ty: GgmlType,
    weights: &[u8],
    rows: usize,
    cols: usize,
    xs: &[f32],
    outs: &mut [&mut [f32]],
    numerics: Numerics,
) -> Result<(), QuantError> {
    let n = outs.len();
    if xs.len() != n * cols {
        return Err(QuantError::Length { what: "batched activation elements", expected: n * cols, got: xs.len() });
    }
    if let Some(o) = outs.iter().find(|o| o.len() != rows) {
        return Err(QuantError::Length { what: "output elements", expected: rows, got: o.len() });
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
    if row_bytes == 0 || rows == 0 {
        outs.iter_mut().for_each(|o| o.fill(0.0));
        return Ok(());
    }
    // Task c owns rows c · chunk_rows .. of every token's output: n disjoint slices of `out`,
    // written in place (a chunk-major scratch and its scatter cost two passes over the
    // output, 4 MB a step for a batch of 8 through the tiny model's head).
    let chunk_rows = (CHUNK_BYTES / row_bytes).max(1).next_multiple_of(8);
    let mut tasks: Vec<Vec<&mut [f32]>> = (0..rows.div_ceil(chunk_rows)).map(|_| Vec::with_capacity(n)).collect();
    for tok in outs.iter_mut() {
        for (c, part) in tok.chunks_mut(chunk_rows).enumerate() {
            tasks[c].push(part);
        }
    }
    let path = batched(ty, &kernels);
    let work = |(mut s, w): (Vec<&mut [f32]>, &[u8])| match &path {
        Batched::Seq(e, xs) => run_rows_seq_multi(w, row_bytes, &mut s, *e, xs),
        #[cfg(target_arch = "x86_64")]
        Batched::Q8_0x8(groups) => run_rows_q8_0_x8(w, row_bytes, &mut s, groups),
        Batched::Q8_0x4(acts) => run_rows_x4(w, row_bytes, &mut s, acts, q8_0::dot::dot_q8_0_x4),
        Batched::Q8Kx4(acts, dot4) => run_rows_x4(w, row_bytes, &mut s, acts, *dot4),
        Batched::Each => {
            for (o, k) in s.iter_mut().zip(&kernels) {
                run_rows_serial(w, row_bytes, o, k);
            }
        }
    };
    // Small products on the calling thread, as `run_rows` does: waking the pool for a few
    // microseconds of work cost more than the work (a tiny model's batched decode step spent
    // a fifth of its time scheduling). The chunks and their kernels are the same either way.
    if weights.len().saturating_mul(n) < PAR_MIN_BYTES {
        tasks.into_iter().zip(weights.chunks(chunk_rows * row_bytes)).for_each(work);
    } else {
        tasks.into_par_iter().zip(weights.par_chunks(chunk_rows * row_bytes)).for_each(work);
    }
    Ok(())
}

/// How the rows of a batched product meet several vectors at once (every vector's kernel of
/// one kind): each row's weights decoded once for all of them.
enum Batched<'a> {
    /// Float weights in the sequential order (the HC projections): eight rows against up to
    /// eight vectors a pass, each row's weights converted once for all of them.
    Seq(float::Elem, Vec<&'a [f32]>),
    /// Q8_0 with AVX-512 VNNI (the attention projections and the output head): eight vectors
    /// a pass, their activations laid out once here.
    #[cfg(target_arch = "x86_64")]
    Q8_0x8(Vec<q8_0::vnni::Acts8>),
    /// Q8_0 elsewhere: four vectors a pass.
    Q8_0x4(Vec<&'a [BlockQ8_0Act]>),
    /// IQ2_XXS and Q2_K with Q8_K activations (the routed experts of the q2 files): four
    /// vectors a pass, each group's weights decoded once for all four.
    Q8Kx4(Vec<&'a [BlockQ8K]>, Q8KDot4),
    /// One vector at a time.
    Each,
}

fn batched<'a>(ty: GgmlType, kernels: &[Kernel<'a>]) -> Batched<'a> {
    // Some(what `pick` gives for every kernel), None if one kernel is of another kind.
    fn all<'a, T>(ks: &[Kernel<'a>], pick: impl Fn(&Kernel<'a>) -> Option<T>) -> Option<Vec<T>> {
        ks.iter().map(pick).collect()
    }
    if kernels.len() < 2 {
        return Batched::Each;
    }
    let path = match kernels[0] {
        Kernel::Seq(e, _) => all(kernels, |k| match *k {
            Kernel::Seq(ek, x) if ek == e => Some(x),
            _ => None,
        })
        .map(|xs| Batched::Seq(e, xs)),
        Kernel::Q8_0(..) => all(kernels, |k| if let Kernel::Q8_0(_, a) = *k { Some(a) } else { None }).map(|acts| {
            #[cfg(target_arch = "x86_64")]
            if q8_0::vnni::available() {
                return Batched::Q8_0x8(acts.chunks(q8_0::vnni::TOKENS).map(q8_0::vnni::Acts8::new).collect());
            }
            Batched::Q8_0x4(acts)
        }),
        Kernel::Q8K(..) => {
            let dot4: Option<Q8KDot4> = match ty {
                GgmlType::IQ2_XXS => Some(iq2_xxs::dot::dot_q8k_x4),
                GgmlType::Q2_K => Some(q2_k::dot::dot_q8k_x4),
                _ => None,
            };
            dot4.and_then(|f| all(kernels, |k| if let Kernel::Q8K(_, a) = *k { Some(a) } else { None }).map(|acts| Batched::Q8Kx4(acts, f)))
        }
        Kernel::F32(..) => None,
    };
    path.unwrap_or(Batched::Each)
}

/// Rows of `w` against the vectors laid out in `groups` (eight a group); vector t's row i
/// goes to `out[t][i]`.
#[cfg(target_arch = "x86_64")]
fn run_rows_q8_0_x8(w: &[u8], row_bytes: usize, out: &mut [&mut [f32]], groups: &[q8_0::vnni::Acts8]) {
    for (acts, outs) in groups.iter().zip(out.chunks_mut(q8_0::vnni::TOKENS)) {
        // SAFETY: the groups exist only where `vnni::available()`; the rows are Q8_0 rows of
        // the activations' block count (checked by the caller's kernels).
        unsafe { q8_0::vnni::rows_x8(w, row_bytes, acts, outs) };
    }
}

/// Rows of `w` against every vector of `acts`, four vectors at a time (the last group padded
/// by repeating a vector whose extra results are dropped); vector t's row i goes to
/// `out[t][i]`.
fn run_rows_x4<A>(w: &[u8], row_bytes: usize, out: &mut [&mut [f32]], acts: &[&[A]], dot4: fn(&[u8], [&[A]; 4]) -> [f32; 4]) {
    for (group, outs) in acts.chunks(4).zip(out.chunks_mut(4)) {
        let four: [&[A]; 4] = std::array::from_fn(|t| group[t.min(group.len() - 1)]);
        for (i, row) in w.chunks_exact(row_bytes).enumerate() {
            let v = dot4(row, four);
            for (o, &x) in outs.iter_mut().zip(&v) {
                o[i] = x;
            }
        }
    }
}

/// Rows of float weights against the vectors `xs` in the sequential order, eight rows and up
/// to eight vectors a pass (the rows past a multiple of eight one at a time); vector t's row
/// i goes to `out[t][i]`. The same bits as [`run_rows_serial`] of each vector.
fn run_rows_seq_multi(w: &[u8], row_bytes: usize, out: &mut [&mut [f32]], e: float::Elem, xs: &[&[f32]]) {
    let rows = w.len() / row_bytes;
    let mut res = [[0f32; 8]; 8];
    for (g, w8) in w.chunks_exact(8 * row_bytes).enumerate() {
        let r8: [&[u8]; 8] = std::array::from_fn(|r| &w8[r * row_bytes..(r + 1) * row_bytes]);
        for (xg, og) in xs.chunks(8).zip(out.chunks_mut(8)) {
            float::dot_seq8_multi(e, r8, xg, &mut res);
            for (o, v) in og.iter_mut().zip(&res) {
                o[8 * g..8 * g + 8].copy_from_slice(v);
            }
        }
    }
    for i in rows / 8 * 8..rows {
        let row = &w[i * row_bytes..(i + 1) * row_bytes];
        for (o, x) in out.iter_mut().zip(xs) {
            o[i] = float::dot_seq(e, row, x);
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
