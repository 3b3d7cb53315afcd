//! The official-numerics dots equal, bit for bit, a plain transcription of FORMATS §2 (element
//! formulas) and §3 (activation quantizers, per-block integer sums and float order), written
//! here independently of the crate's kernels. ds4's C was not available to compile; FORMATS
//! §3.9 records that this transcription matched it on x86.

mod common;

use common::{random_matrix, random_x, rng};
use dsv4_quant::iq2_xxs::tables::KGRID;
use dsv4_quant::{dot_q, GgmlType, QuantizedActs};
use rand::Rng;

fn f16(b: &[u8], at: usize) -> f32 {
    half::f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

// ---- §3.2 / §3.3 activation quantizers ----

fn round_half_even_clamped(v: f32) -> i8 {
    let r = v.round_ties_even();
    r.clamp(-128.0, 127.0) as i8
}

fn q8_0_act(x: &[f32]) -> Vec<(f32, Vec<i8>)> {
    x.chunks(32)
        .map(|b| {
            let amax = b.iter().map(|v| v.abs()).fold(0.0f32, f32::max);
            let d = amax / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            (d, b.iter().map(|v| round_half_even_clamped(v * id)).collect())
        })
        .collect()
}

struct Q8K {
    d: f32,
    qs: Vec<i8>,
    bsums: Vec<i32>,
}

fn q8_k(x: &[f32]) -> Vec<Q8K> {
    x.chunks(256)
        .map(|b| {
            let mut best = 0;
            for i in 1..256 {
                if b[i].abs() > b[best].abs() {
                    best = i;
                }
            }
            let max = b[best];
            if max == 0.0 {
                return Q8K { d: 0.0, qs: vec![0; 256], bsums: vec![0; 16] };
            }
            let iscale = -127.0 / max;
            let qs: Vec<i8> = b.iter().map(|v| round_half_even_clamped(iscale * v)).collect();
            let bsums = qs.chunks(16).map(|c| c.iter().map(|&q| q as i32).sum()).collect();
            Q8K { d: 1.0 / iscale, qs, bsums }
        })
        .collect()
}

// ---- §2 element accessors ----

fn q2_code(qs: &[u8], i: usize) -> i32 {
    let (h, r) = (i / 128, i % 128);
    let (k, l) = (r / 32, r % 32);
    ((qs[32 * h + l] >> (2 * k)) & 3) as i32
}

fn q4_scale_min(s: &[u8], j: usize) -> (i32, i32) {
    let (sc, m) = if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        ((s[j + 4] & 15) | ((s[j - 4] >> 6) << 4), (s[j + 4] >> 4) | ((s[j] >> 6) << 4))
    };
    (sc as i32, m as i32)
}

fn q4_code(qs: &[u8], i: usize) -> i32 {
    let (c, l) = (i / 64, i % 32);
    let b = qs[32 * c + l];
    (if i % 64 >= 32 { b >> 4 } else { b & 15 }) as i32
}

/// Signed IQ2_XXS grid value of element `i`, from the kgrid rule and the parity sign rule.
fn iq2_value(blk: &[u8], i: usize) -> i32 {
    let (ib, k, j) = (i / 32, (i % 32) / 8, i % 8);
    let word = |o: usize| u32::from_le_bytes(blk[o..o + 4].try_into().unwrap());
    let (a, b) = (word(2 + 8 * ib), word(6 + 8 * ib));
    let g = ((a >> (8 * k)) & 0xff) as usize;
    let mag = [8, 25, 43][((KGRID[g] >> (2 * j)) & 3) as usize];
    let s = (b >> (7 * k)) & 127;
    let signs = s | ((s.count_ones() & 1) << 7);
    if signs & (1 << j) != 0 { -mag } else { mag }
}

fn iq2_ls(blk: &[u8], ib: usize) -> i32 {
    (u32::from_le_bytes(blk[6 + 8 * ib..10 + 8 * ib].try_into().unwrap()) >> 28) as i32
}

// ---- §3 dots ----

fn ref_dot(ty: GgmlType, row: &[u8], x: &[f32]) -> f32 {
    match ty {
        GgmlType::Q8_0 => {
            let mut acc = 0f32;
            for (blk, (d, q)) in row.chunks(34).zip(q8_0_act(x)) {
                let isum: i32 = (0..32).map(|i| (blk[2 + i] as i8) as i32 * q[i] as i32).sum();
                acc += (f16(blk, 0) * d) * isum as f32;
            }
            acc
        }
        GgmlType::Q2_K => {
            let mut sumf = 0f32;
            for (blk, y) in row.chunks(84).zip(q8_k(x)) {
                let (scales, qs) = (&blk[..16], &blk[16..80]);
                let summs: i32 = (0..16).map(|j| y.bsums[j] * (scales[j] >> 4) as i32).sum();
                let isum: i32 = (0..16)
                    .map(|j| {
                        let s: i32 = (0..16).map(|l| q2_code(qs, 16 * j + l) * y.qs[16 * j + l] as i32).sum();
                        (scales[j] & 15) as i32 * s
                    })
                    .sum();
                let dall = y.d * f16(blk, 80);
                let dmin = y.d * f16(blk, 82);
                sumf += (dall * isum as f32) - (dmin * summs as f32);
            }
            sumf
        }
        GgmlType::Q4_K => {
            let mut sumf = 0f32;
            for (blk, y) in row.chunks(144).zip(q8_k(x)) {
                let (scales, qs) = (&blk[4..16], &blk[16..]);
                let summs: i32 = (0..8).map(|j| q4_scale_min(scales, j).1 * (y.bsums[2 * j] + y.bsums[2 * j + 1])).sum();
                let isum: i32 = (0..8)
                    .map(|j| {
                        let s: i32 = (0..32).map(|l| q4_code(qs, 32 * j + l) * y.qs[32 * j + l] as i32).sum();
                        q4_scale_min(scales, j).0 * s
                    })
                    .sum();
                sumf += (y.d * f16(blk, 0)) * isum as f32 - (y.d * f16(blk, 2)) * summs as f32;
            }
            sumf
        }
        GgmlType::IQ2_XXS => {
            let mut sumf = 0f32;
            for (blk, y) in row.chunks(66).zip(q8_k(x)) {
                let dd = f16(blk, 0) * y.d;
                let bsum: i32 = (0..8)
                    .map(|ib| {
                        let s: i32 = (0..32).map(|t| iq2_value(blk, 32 * ib + t) * y.qs[32 * ib + t] as i32).sum();
                        (2 * iq2_ls(blk, ib) + 1) * s
                    })
                    .sum();
                sumf += dd * bsum as f32;
            }
            0.125 * sumf
        }
        GgmlType::F16 => {
            let mut acc = 0f32;
            for (i, xv) in x.iter().enumerate() {
                acc += f16(row, 2 * i) * xv;
            }
            acc
        }
        GgmlType::BF16 => {
            let mut acc = 0f32;
            for (i, xv) in x.iter().enumerate() {
                let w = f32::from_bits((u16::from_le_bytes([row[2 * i], row[2 * i + 1]]) as u32) << 16);
                acc += w * xv;
            }
            acc
        }
        GgmlType::F32 => {
            let mut acc = 0f32;
            for (i, xv) in x.iter().enumerate() {
                acc += f32::from_le_bytes(row[4 * i..4 * i + 4].try_into().unwrap()) * xv;
            }
            acc
        }
        _ => unreachable!(),
    }
}

/// Activation vectors with the awkward cases: Gaussian-like, an all-zero block, a block
/// whose max is negative, a block of one repeated value (ties everywhere), huge and tiny
/// magnitudes.
fn activation_cases(cols: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut r = rng(seed);
    let mut cases = vec![random_x(cols, seed)];
    let mut x = random_x(cols, seed + 1);
    x[..256].fill(0.0);
    x[256] = -50.0;
    cases.push(x);
    cases.push((0..cols).map(|i| if i % 3 == 0 { 0.75 } else { -0.75 }).collect());
    cases.push((0..cols).map(|_| r.gen_range(-1.0f32..1.0) * 1e-30).collect());
    cases.push((0..cols).map(|_| r.gen_range(-1.0f32..1.0) * 1e20).collect());
    cases
}

fn check_type(ty: GgmlType) {
    let cols = 1024;
    let rows = 24;
    let m = random_matrix(ty, rows, cols, 1.0, ty as u64);
    let row_bytes = cols / ty.block_elems() * ty.block_bytes();
    for (c, x) in activation_cases(cols, 7 + ty as u64).into_iter().enumerate() {
        let acts = QuantizedActs::for_weight(ty, &x).unwrap();
        for (r, row) in m.chunks_exact(row_bytes).enumerate() {
            let got = dot_q(ty, row, &acts).unwrap();
            let want = ref_dot(ty, row, &x);
            assert_eq!(got.to_bits(), want.to_bits(), "{ty} case {c} row {r}: {got:e} vs {want:e}");
        }
    }
}

#[test]
fn q8_0_matches_the_transcription() {
    check_type(GgmlType::Q8_0);
}

#[test]
fn q2_k_matches_the_transcription() {
    check_type(GgmlType::Q2_K);
}

#[test]
fn q4_k_matches_the_transcription() {
    check_type(GgmlType::Q4_K);
}

#[test]
fn iq2_xxs_matches_the_transcription() {
    check_type(GgmlType::IQ2_XXS);
}

#[test]
fn float_weights_sum_sequentially() {
    for ty in [GgmlType::F16, GgmlType::BF16, GgmlType::F32] {
        check_type(ty);
    }
}

#[test]
fn activation_quantizers_match_the_transcription() {
    for (c, x) in activation_cases(1024, 99).into_iter().enumerate() {
        let QuantizedActs::Q8K(blocks) = QuantizedActs::for_weight(GgmlType::Q2_K, &x).unwrap() else {
            panic!("Q2_K must use Q8_K activations")
        };
        for (b, (got, want)) in blocks.iter().zip(q8_k(&x)).enumerate() {
            assert_eq!(got.d.to_bits(), want.d.to_bits(), "case {c} block {b}");
            assert_eq!(got.qs.to_vec(), want.qs, "case {c} block {b}");
            assert_eq!(got.bsums.iter().map(|&s| s as i32).collect::<Vec<_>>(), want.bsums);
        }
        let QuantizedActs::Q8_0(blocks) = QuantizedActs::for_weight(GgmlType::Q8_0, &x).unwrap() else {
            panic!("Q8_0 must use Q8_0 activations")
        };
        for (b, (got, (d, q))) in blocks.iter().zip(q8_0_act(&x)).enumerate() {
            assert_eq!(got.d.to_bits(), d.to_bits(), "case {c} block {b}");
            assert_eq!(got.qs.to_vec(), q, "case {c} block {b}");
        }
    }
}
