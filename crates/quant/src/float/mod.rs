//! Plain element types: F32, F16, BF16 and I32 (the hash-routing table).
//!
//! Two dot orders exist for the float types: `dot_f32/f16/bf16` (the plain-numerics fast path,
//! lane order of `crate::lanes`) and `dot_seq` (ds4's scalar CPU order, FORMATS §3.8: one
//! f32 accumulator, `acc += f32(w[i]) * x[i]` for ascending `i`). The sequential one is what
//! the official numerics use for float weights; one row is bound by one add's latency per
//! element, so matvec runs eight rows side by side (`dot_seq8`, one row per SIMD lane).

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) use avx2::transpose8;

use crate::lanes::{Acc, LANES};

/// IEEE f16 -> f32, exact (subnormals, infinities and NaN payloads kept, NaNs not quieted,
/// like numpy). Written with selects instead of branches so that loops over it vectorise.
#[inline(always)]
pub(crate) fn f16_to_f32(h: u16) -> f32 {
    let h = h as u32;
    let sign = (h & 0x8000) << 16;
    let em = h & 0x7fff;
    // Normal: move exponent and mantissa into place and rebias by 127 - 15 = 112.
    let normal = (em << 13) + (112 << 23);
    // Infinity/NaN: all-ones exponent, mantissa (payload) kept.
    let special = (em << 13) | 0x7f80_0000;
    // Zero/subnormal: value is mantissa * 2^-24, exact in f32 (no f32 subnormal arithmetic).
    let sub = ((em as i32) as f32 * (1.0 / 16_777_216.0)).to_bits();
    let bits = if em < 0x400 { sub } else if em >= 0x7c00 { special } else { normal };
    f32::from_bits(bits | sign)
}

#[inline(always)]
pub(crate) fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

#[inline(always)]
fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([b[2 * i], b[2 * i + 1]])
}

pub(crate) fn dequantize_f32(b: &[u8], out: &mut [f32]) {
    for (o, c) in out.iter_mut().zip(b.chunks_exact(4)) {
        *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
    }
}

pub(crate) fn dequantize_f16(b: &[u8], out: &mut [f32]) {
    for (o, c) in out.iter_mut().zip(b.chunks_exact(2)) {
        *o = f16_to_f32(u16::from_le_bytes([c[0], c[1]]));
    }
}

pub(crate) fn dequantize_bf16(b: &[u8], out: &mut [f32]) {
    for (o, c) in out.iter_mut().zip(b.chunks_exact(2)) {
        *o = bf16_to_f32(u16::from_le_bytes([c[0], c[1]]));
    }
}

/// I32 values widen to f32 (exact for the expert ids of `tid2eid`).
pub(crate) fn dequantize_i32(b: &[u8], out: &mut [f32]) {
    for (o, c) in out.iter_mut().zip(b.chunks_exact(4)) {
        *o = i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32;
    }
}

/// Lane-order dot of a row of 2- or 4-byte elements converted by `conv`: each chunk of
/// `LANES` elements is converted into a stack array, then accumulated.
#[inline(always)]
fn dot_lanes<const W: usize>(row: &[u8], x: &[f32], conv: impl Fn(&[u8]) -> f32) -> f32 {
    let mut acc = Acc::new();
    let mut rc = row.chunks_exact(W * LANES);
    let mut xc = x.chunks_exact(LANES);
    for (r, xs) in (&mut rc).zip(&mut xc) {
        let w: [f32; LANES] = std::array::from_fn(|l| conv(&r[W * l..W * l + W]));
        acc.add_chunk(&w, xs.try_into().unwrap());
    }
    let (tail, rem) = (xc.remainder(), rc.remainder());
    let mut w = [0f32; LANES];
    for (l, v) in w.iter_mut().take(tail.len()).enumerate() {
        *v = conv(&rem[W * l..W * l + W]);
    }
    acc.add_slice(&w[..tail.len()], tail);
    acc.sum()
}

/// Element `i` of a little-endian F32 / F16 / BF16 row.
#[inline(always)]
pub(crate) fn f32_at(b: &[u8], i: usize) -> f32 {
    f32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
}
#[inline(always)]
pub(crate) fn f16_elem(b: &[u8], i: usize) -> f32 {
    f16_to_f32(u16_at(b, i))
}
#[inline(always)]
pub(crate) fn bf16_elem(b: &[u8], i: usize) -> f32 {
    bf16_to_f32(u16_at(b, i))
}

macro_rules! dispatch {
    ($(#[$m:meta])* $name:ident, $portable:ident, $w:literal, $conv:ident) => {
        $(#[$m])*
        pub(crate) fn $name(row: &[u8], x: &[f32]) -> f32 {
            #[cfg(target_arch = "x86_64")]
            if crate::x86::available() {
                // SAFETY: the CPU has the features `avx2` is compiled for.
                return unsafe { avx2::$name(row, x) };
            }
            $portable(row, x)
        }
        pub(crate) fn $portable(row: &[u8], x: &[f32]) -> f32 {
            dot_lanes::<$w>(row, x, |c| $conv(c, 0))
        }
    };
}
dispatch!(
    /// F32 row · x in lane order. Lengths are checked by the caller.
    dot_f32, dot_f32_portable, 4, f32_at
);
dispatch!(
    /// F16 row · x in lane order.
    dot_f16, dot_f16_portable, 2, f16_elem
);
dispatch!(
    /// BF16 row · x in lane order.
    dot_bf16, dot_bf16_portable, 2, bf16_elem
);

/// The float element types, for the sequential kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Elem {
    F32,
    F16,
    BF16,
}

#[cfg(test)]
impl Elem {
    fn at(self, b: &[u8], i: usize) -> f32 {
        match self {
            Elem::F32 => f32_at(b, i),
            Elem::F16 => f16_elem(b, i),
            Elem::BF16 => bf16_elem(b, i),
        }
    }
}

/// ds4's sequential order (FORMATS §3.8): `acc += f32(w[i]) * x[i]` for ascending `i`, one f32
/// accumulator. Conversion and products are done a chunk at a time (vectorisable); the
/// additions are one dependent chain, so a single row runs at one add latency per element.
#[inline(always)]
fn dot_seq_body(row: &[u8], x: &[f32], conv: impl Fn(&[u8], usize) -> f32) -> f32 {
    let mut acc = 0f32;
    for (c, xs) in x.chunks(LANES).enumerate() {
        let mut p = [0f32; LANES];
        for (l, (v, xv)) in p.iter_mut().zip(xs).enumerate() {
            *v = conv(row, c * LANES + l) * xv;
        }
        for v in &p[..xs.len()] {
            acc += v;
        }
    }
    acc
}

/// One row · x in the sequential order.
pub(crate) fn dot_seq(e: Elem, row: &[u8], x: &[f32]) -> f32 {
    match e {
        Elem::F32 => dot_seq_body(row, x, f32_at),
        Elem::F16 => dot_seq_body(row, x, f16_elem),
        Elem::BF16 => dot_seq_body(row, x, bf16_elem),
    }
}

/// Eight rows · x, each in the sequential order: identical to eight `dot_seq` calls. The AVX2
/// kernel gives each row one lane, so the eight chains run side by side (matvec's fast path).
pub(crate) fn dot_seq8(e: Elem, rows: [&[u8]; 8], x: &[f32]) -> [f32; 8] {
    #[cfg(target_arch = "x86_64")]
    if crate::x86::available() {
        // SAFETY: the CPU has the features `avx2` is compiled for.
        return unsafe {
            match e {
                Elem::F32 => avx2::seq8_f32(rows, x),
                Elem::F16 => avx2::seq8_f16(rows, x),
                Elem::BF16 => avx2::seq8_bf16(rows, x),
            }
        };
    }
    rows.map(|r| dot_seq(e, r, x))
}

/// Eight rows against up to eight vectors `xs` (of one length), each (row, vector) in the
/// sequential order: `out[t]` gets `dot_seq8(e, rows, xs[t])`, bit for bit. The AVX2 kernel
/// converts each row's weights once for all the vectors.
pub(crate) fn dot_seq8_multi(e: Elem, rows: [&[u8]; 8], xs: &[&[f32]], out: &mut [[f32; 8]]) {
    #[cfg(target_arch = "x86_64")]
    if crate::x86::available() {
        // SAFETY: the CPU has the features `avx2` is compiled for.
        unsafe {
            match e {
                Elem::F32 => avx2::seq8_multi_f32(rows, xs, out),
                Elem::F16 => avx2::seq8_multi_f16(rows, xs, out),
                Elem::BF16 => avx2::seq8_multi_bf16(rows, xs, out),
            }
        }
        return;
    }
    for (o, x) in out.iter_mut().zip(xs) {
        *o = dot_seq8(e, rows, x);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{random_row, random_x};
    use crate::GgmlType;

    #[test]
    fn simd_and_portable_agree_bitwise() {
        // Odd lengths exercise the tail that goes to the first lanes.
        for (seed, n) in [(1, 4096), (2, 4095), (3, 33), (4, 7), (5, 0), (6, 100)] {
            let x = random_x(n, seed);
            for (ty, fast, portable) in [
                (GgmlType::F32, dot_f32 as fn(&[u8], &[f32]) -> f32, dot_f32_portable as fn(&[u8], &[f32]) -> f32),
                (GgmlType::F16, dot_f16, dot_f16_portable),
                (GgmlType::BF16, dot_bf16, dot_bf16_portable),
            ] {
                let row = random_row(ty, n, seed);
                assert_eq!(fast(&row, &x).to_bits(), portable(&row, &x).to_bits(), "{ty} n={n}");
            }
        }
    }

    #[test]
    fn eight_row_sequential_kernel_equals_single_rows() {
        for (seed, n) in [(1, 4096), (2, 1000), (3, 7), (4, 0)] {
            let x = random_x(n, seed);
            for (ty, e) in [(GgmlType::F32, Elem::F32), (GgmlType::F16, Elem::F16), (GgmlType::BF16, Elem::BF16)] {
                let rows: Vec<Vec<u8>> = (0..8).map(|r| random_row(ty, n, seed * 8 + r)).collect();
                let refs: [&[u8]; 8] = std::array::from_fn(|r| rows[r].as_slice());
                let got = dot_seq8(e, refs, &x);
                for r in 0..8 {
                    let want = dot_seq(e, refs[r], &x);
                    assert_eq!(got[r].to_bits(), want.to_bits(), "{ty} n={n} row {r}");
                    // and the chain really is sequential
                    let mut acc = 0f32;
                    for (i, xv) in x.iter().enumerate() {
                        acc += e.at(refs[r], i) * xv;
                    }
                    assert_eq!(want.to_bits(), acc.to_bits());
                }
            }
        }
    }

    #[test]
    fn several_vectors_at_once_equal_one_at_a_time() {
        for (seed, n, nt) in [(1, 1024, 8), (2, 1000, 3), (3, 7, 2), (4, 0, 5), (5, 4096, 1), (6, 33, 8)] {
            let xs: Vec<Vec<f32>> = (0..nt).map(|t| random_x(n, seed * 100 + t as u64)).collect();
            let refs_x: Vec<&[f32]> = xs.iter().map(Vec::as_slice).collect();
            for (ty, e) in [(GgmlType::F32, Elem::F32), (GgmlType::F16, Elem::F16), (GgmlType::BF16, Elem::BF16)] {
                let rows: Vec<Vec<u8>> = (0..8).map(|r| random_row(ty, n, seed * 8 + r)).collect();
                let refs: [&[u8]; 8] = std::array::from_fn(|r| rows[r].as_slice());
                let mut out = vec![[f32::NAN; 8]; nt];
                dot_seq8_multi(e, refs, &refs_x, &mut out);
                for (t, x) in xs.iter().enumerate() {
                    let want = dot_seq8(e, refs, x);
                    for r in 0..8 {
                        assert_eq!(out[t][r].to_bits(), want[r].to_bits(), "{ty} n={n} vector {t} row {r}");
                    }
                }
            }
        }
    }

    #[test]
    fn f16_conversion_matches_half_for_every_non_nan_pattern() {
        for h in 0..=u16::MAX {
            let ours = f16_to_f32(h);
            let theirs = half::f16::from_bits(h).to_f32();
            if theirs.is_nan() {
                // NaN payload kept, not quieted (numpy's behaviour, which gguf-py inherits).
                assert!(ours.is_nan());
                assert_eq!(ours.to_bits(), ((h as u32 & 0x8000) << 16) | 0x7f80_0000 | ((h as u32 & 0x3ff) << 13));
            } else {
                assert_eq!(ours.to_bits(), theirs.to_bits(), "f16 bits {h:#06x}");
            }
        }
    }
}
