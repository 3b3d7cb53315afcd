//! The tensor-core matmul (official numerics) against the CPU reference
//! (`dsv4_quant::matmul(.., Official)`, which quantizes each token's x as the GPU test feeds
//! it): every quantized type of the published files, the Flash shapes and awkward ones,
//! token counts around the tile widths, and the grouped (expert table) launch. Outputs are
//! poisoned with NaN before each launch. The kernel reproduces the CPU's integer sums and
//! f32 combines in the CPU's order, so results are expected bit for bit; the hard checks are
//! the matvec tolerances (relative L2 per token, and per element against the row's
//! `sum |w x|` on sampled tokens), and the count of bitwise-equal outputs is printed.

mod common;

use std::sync::Arc;

use common::{assert_close, gpu_or_skip, random_matrix, random_x, row_magnitudes, REL_L2_TOL};
use dsv4_cuda::quant::matmul::{expert_tiles, kernel_names, supports};
use dsv4_cuda::quant::matvec::{act_bytes, pack_acts};
use dsv4_cuda::quant::Matmul;
use dsv4_cuda::{DeviceMatrix, Gpu};
use dsv4_quant::{GgmlType, Numerics, QuantizedActs};

const TYPES: [GgmlType; 4] = [GgmlType::Q8_0, GgmlType::IQ2_XXS, GgmlType::Q2_K, GgmlType::Q4_K];

/// Activations of `n` random tokens quantized for `ty`, one row per token, `stride` bytes
/// apart (a multiple of 16, as the model's scratch has it), plus the f32 inputs.
fn acts(ty: GgmlType, cols: usize, n: usize, seed: u64) -> (Vec<f32>, Vec<u8>, usize) {
    let need = act_bytes(ty, cols).unwrap();
    let stride = need.next_multiple_of(16);
    let mut xs = Vec::with_capacity(n * cols);
    let mut bytes = vec![0u8; n * stride];
    for t in 0..n {
        let x = random_x(cols, seed * 1000 + t as u64);
        let packed = pack_acts(&QuantizedActs::for_weight(ty, &x).unwrap());
        bytes[t * stride..t * stride + need].copy_from_slice(&packed);
        xs.extend_from_slice(&x);
    }
    (xs, bytes, stride)
}

/// Checks the GPU's `n × rows` outputs against the CPU's: every element finite, each token's
/// relative L2 error within tolerance, every element within tolerance of its row magnitude
/// on tokens 0, n/2 and n-1. Returns (worst relative L2, bitwise-equal outputs).
#[allow(clippy::too_many_arguments)]
fn compare(what: &str, ty: GgmlType, w: &[u8], rows: usize, cols: usize, xs: &[f32], got: &[f32], want: &[f32]) -> (f64, usize) {
    let n = xs.len() / cols;
    let mut worst = 0f64;
    for t in 0..n {
        let (g, c) = (&got[t * rows..(t + 1) * rows], &want[t * rows..(t + 1) * rows]);
        if let Some(i) = g.iter().position(|v| !v.is_finite()) {
            panic!("{what}: token {t} row {i} is {} (not written?)", g[i]);
        }
        if t == 0 || t == n / 2 || t == n - 1 {
            let mags = row_magnitudes(ty, w, rows, cols, &xs[t * cols..(t + 1) * cols]);
            worst = worst.max(assert_close(&format!("{what} token {t}"), g, c, &mags));
        } else {
            let (num, den) = g.iter().zip(c).fold((0f64, 0f64), |(a, b), (&g, &c)| {
                let d = g as f64 - c as f64;
                (a + d * d, b + c as f64 * c as f64)
            });
            let rel = (num / den.max(1e-300)).sqrt();
            assert!(rel <= REL_L2_TOL, "{what} token {t}: relative L2 {rel:.3e}");
            worst = worst.max(rel);
        }
    }
    let same = got.iter().zip(want).filter(|(a, b)| a.to_bits() == b.to_bits()).count();
    (worst, same)
}

fn check(gpu: &Gpu, mm: &Matmul, ty: GgmlType, cols: usize, rows: usize, n: usize, seed: u64) {
    let w = random_matrix(ty, rows, cols, 0.01, seed);
    let dw = DeviceMatrix::upload(gpu, ty, rows, cols, &w).unwrap();
    let (xs, a, stride) = acts(ty, cols, n, seed);
    let da = gpu.upload(&a).unwrap();
    let mut dy = gpu.upload(&vec![f32::NAN; n * rows]).unwrap();
    mm.run(&dw, &da, stride, n, &mut dy).unwrap();
    let got = gpu.download(&dy).unwrap();
    let mut want = vec![0f32; n * rows];
    dsv4_quant::matmul(ty, &w, rows, cols, &xs, n, &mut want, Numerics::Official).unwrap();
    let what = format!("{ty} {cols}->{rows} x{n}");
    let (rel, same) = compare(&what, ty, &w, rows, cols, &xs, &got, &want);
    eprintln!("{what}: rel L2 {rel:.2e}, {same}/{} outputs bitwise equal to the CPU", got.len());
}

#[test]
fn kernel_names_cover_every_type() {
    let names = kernel_names();
    assert_eq!(names.len(), 18);
    assert!(names.iter().any(|n| n == "mmf16_mma") && names.iter().any(|n| n == "mmf_reduce"));
    assert!(TYPES.iter().all(|&t| supports(t)));
    assert!(!supports(GgmlType::F16) && !supports(GgmlType::F32));
}

#[test]
fn flash_shapes_match_cpu_official() {
    let Some(gpu) = gpu_or_skip("flash_shapes_match_cpu_official") else {
        return;
    };
    let mm = Matmul::new(&gpu).unwrap();
    // (cols, rows, token counts): q_a with every count; q_b, out_b, the experts and the head
    // with one or two (the CPU reference dominates the test's time).
    let shapes: [(usize, usize, &[usize]); 6] = [
        (4096, 1024, &[16, 17, 64, 100, 512]),
        (1024, 32768, &[100]),
        (8192, 4096, &[64]),
        (4096, 2048, &[17, 64]),
        (2048, 4096, &[512]),
        (4096, 129280, &[16]),
    ];
    for (ti, &ty) in TYPES.iter().enumerate() {
        for (si, &(cols, rows, ns)) in shapes.iter().enumerate() {
            // The LM head is Q8_0 in the published files; the others skip its 0.5 GB.
            if rows == 129280 && ty != GgmlType::Q8_0 {
                continue;
            }
            for &n in ns {
                check(&gpu, &mm, ty, cols, rows, n, (100 * ti + 10 * si + n) as u64);
            }
        }
    }
}

#[test]
fn odd_shapes_match_cpu_official() {
    let Some(gpu) = gpu_or_skip("odd_shapes_match_cpu_official") else {
        return;
    };
    let mm = Matmul::new(&gpu).unwrap();
    for (ti, &ty) in TYPES.iter().enumerate() {
        let b = ty.block_elems();
        // One block, rows not a multiple of 128, one row; Q8_0 also with column counts that
        // end inside a 256-column step.
        let mut shapes = vec![(b, 1, 3), (3 * b, 37, 17), (5 * b, 129, 65), (12288, 17, 2)];
        if ty == GgmlType::Q8_0 {
            shapes.extend([(96, 200, 33), (32 * 13, 131, 100)]);
        }
        for (si, &(cols, rows, n)) in shapes.iter().enumerate() {
            check(&gpu, &mm, ty, cols, rows, n, (7000 + 100 * ti + si) as u64);
        }
    }
}

/// One launch over a table of (expert, first row, count) tiles of a stacked expert tensor,
/// as the MoE runs it: each group's outputs equal its expert's CPU product; rows of a
/// skipped tile (negative expert) and rows no tile names stay untouched.
#[test]
fn expert_tiles_match_cpu_official() {
    let Some(gpu) = gpu_or_skip("expert_tiles_match_cpu_official") else {
        return;
    };
    let mm = Matmul::new(&gpu).unwrap();
    let (ne, rows, cols) = (5usize, 384usize, 1024usize);
    for (ti, &ty) in TYPES.iter().enumerate() {
        let stacked = random_matrix(ty, ne * rows, cols, 0.01, 9000 + ti as u64);
        let per = stacked.len() / ne;
        let buf = Arc::new(gpu.upload(&stacked).unwrap());
        let experts: Vec<DeviceMatrix> = (0..ne).map(|e| DeviceMatrix::view(buf.clone(), e * per, ty, rows, cols).unwrap()).collect();
        // Groups: (expert, first row, count); rows 90..95 belong to no group.
        let groups = [(3usize, 0usize, 5usize), (0, 5, 70), (4, 75, 1), (1, 76, 14), (2, 95, 33)];
        let total = 128;
        let (xs, a, stride) = acts(ty, cols, total, 9100 + ti as u64);
        let da = gpu.upload(&a).unwrap();
        for bn in dsv4_cuda::quant::matmul::TILE_TOKENS {
            let mut tiles = expert_tiles(&groups, bn);
            // A skipped tile over rows 90..95.
            tiles.extend([-1, 90, 5]);
            let mut dy = gpu.upload(&vec![f32::NAN; total * rows]).unwrap();
            mm.run_tiles(&gpu, &experts, &tiles, bn, &da, stride, &mut dy, rows).unwrap();
            let got = gpu.download(&dy).unwrap();
            assert!(got[90 * rows..95 * rows].iter().all(|v| v.is_nan()), "{ty}: rows of no tile were written");
            assert!(got[128 * rows..].is_empty());
            for &(ex, first, cnt) in &groups {
                let w = &stacked[ex * per..(ex + 1) * per];
                let x = &xs[first * cols..(first + cnt) * cols];
                let mut want = vec![0f32; cnt * rows];
                dsv4_quant::matmul(ty, w, rows, cols, x, cnt, &mut want, Numerics::Official).unwrap();
                let what = format!("{ty} expert {ex} rows {first}+{cnt} bn {bn}");
                let (rel, same) = compare(&what, ty, w, rows, cols, x, &got[first * rows..(first + cnt) * rows], &want);
                eprintln!("{what}: rel L2 {rel:.2e}, {same}/{} bitwise", want.len());
            }
        }
    }
}

/// Several matrices of one shape in one launch (the output projection's head groups): group
/// g of token t reads activation row `t·G + g` and writes its outputs at `t·G·rows + g·rows`,
/// each group equal to its own matrix's CPU product.
#[test]
fn grouped_products_match_cpu_official() {
    let Some(gpu) = gpu_or_skip("grouped_products_match_cpu_official") else {
        return;
    };
    let mm = Matmul::new(&gpu).unwrap();
    let (ng, rows, cols) = (4usize, 320usize, 1024usize);
    for (ti, &ty) in TYPES.iter().enumerate() {
        let stacked = random_matrix(ty, ng * rows, cols, 0.01, 9500 + ti as u64);
        let per = stacked.len() / ng;
        let buf = Arc::new(gpu.upload(&stacked).unwrap());
        let mats: Vec<DeviceMatrix> = (0..ng).map(|g| DeviceMatrix::view(buf.clone(), g * per, ty, rows, cols).unwrap()).collect();
        for n in [2usize, 37, 130] {
            // Row t·ng + g: token t's group g.
            let (xs, a, stride) = acts(ty, cols, n * ng, 9600 + 10 * ti as u64 + n as u64);
            let da = gpu.upload(&a).unwrap();
            let mut dy = gpu.upload(&vec![f32::NAN; n * ng * rows]).unwrap();
            mm.run_groups(&mats, &da, ng * stride, stride, n, &mut dy, ng * rows, rows).unwrap();
            let got = gpu.download(&dy).unwrap();
            for g in 0..ng {
                let x: Vec<f32> = (0..n).flat_map(|t| xs[(t * ng + g) * cols..(t * ng + g + 1) * cols].to_vec()).collect();
                let mine: Vec<f32> = (0..n).flat_map(|t| got[(t * ng + g) * rows..(t * ng + g + 1) * rows].to_vec()).collect();
                let mut want = vec![0f32; n * rows];
                dsv4_quant::matmul(ty, &stacked[g * per..(g + 1) * per], rows, cols, &x, n, &mut want, Numerics::Official).unwrap();
                let what = format!("{ty} group {g} of {ng}, {n} tokens");
                let (rel, same) = compare(&what, ty, &stacked[g * per..(g + 1) * per], rows, cols, &x, &mine, &want);
                eprintln!("{what}: rel L2 {rel:.2e}, {same}/{} bitwise", want.len());
            }
        }
        let mut small = gpu.upload(&vec![0f32; ng * rows]).unwrap();
        let a = gpu.upload(&[0u8; 64]).unwrap();
        assert!(mm.run_groups(&mats, &a, 64, 64, 2, &mut small, rows, rows).is_err(), "{ty}: buffers too small are refused");
    }
}

/// Float weights (F16, F32) over many tokens: the plain f32 product against the CPU's, on
/// the model's float shapes (HC projection, router, compressor, indexer) and odd ones; F16
/// also on the BF16 tensor cores (`run_f16_mma`: column splits through the partial sums,
/// fewer splits when they have less room, the f32 kernel for columns not in 16s), which
/// must be as close to the CPU, deterministic, and independent of the split count to f32
/// rounding.
#[test]
fn float_weights_match_cpu_plain() {
    let Some(gpu) = gpu_or_skip("float_weights_match_cpu_plain") else {
        return;
    };
    let mm = Matmul::new(&gpu).unwrap();
    let shapes = [(16384, 24, 256), (16384, 24, 512), (4096, 256, 100), (4096, 1024, 17), (1024, 8192, 33), (4096, 64, 2), (64, 3, 5), (8, 517, 40), (520, 40, 70)];
    let mut part = gpu.upload(&vec![f32::NAN; dsv4_cuda::quant::matmul::FLOAT_PART_FLOATS]).unwrap();
    let mut small = gpu.upload(&vec![f32::NAN; 24 * 512 * 3]).unwrap();
    for (ti, ty) in [GgmlType::F16, GgmlType::F32].into_iter().enumerate() {
        for (si, &(cols, rows, n)) in shapes.iter().enumerate() {
            if ty == GgmlType::F32 && cols % 4 != 0 {
                continue;
            }
            let seed = (5000 + 100 * ti + si) as u64;
            let w = random_matrix(ty, rows, cols, 0.05, seed);
            let dw = DeviceMatrix::upload(&gpu, ty, rows, cols, &w).unwrap();
            let xs: Vec<f32> = (0..n).flat_map(|t| random_x(cols, seed * 1000 + t as u64)).collect();
            let dx = gpu.upload(&xs).unwrap();
            let mut dy = gpu.upload(&vec![f32::NAN; n * rows]).unwrap();
            mm.run_float(&dw, &dx, n, &mut dy).unwrap();
            let got = gpu.download(&dy).unwrap();
            let mut want = vec![0f32; n * rows];
            dsv4_quant::matmul(ty, &w, rows, cols, &xs, n, &mut want, Numerics::Plain).unwrap();
            let what = format!("{ty} {cols}->{rows} x{n}");
            let (rel, _) = compare(&what, ty, &w, rows, cols, &xs, &got, &want);
            eprintln!("{what}: rel L2 {rel:.2e}");
            if ty == GgmlType::F16 {
                let tc = |part: &mut dsv4_cuda::DeviceBuffer<f32>| {
                    let mut dy = gpu.upload(&vec![f32::NAN; n * rows]).unwrap();
                    mm.run_f16_mma(&dw, &dx, n, &mut dy, part).unwrap();
                    gpu.download(&dy).unwrap()
                };
                let (a, b, c) = (tc(&mut part), tc(&mut part), tc(&mut small));
                let (rel, _) = compare(&format!("{what} tensor cores"), ty, &w, rows, cols, &xs, &a, &want);
                assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()), "{what}: tensor cores not deterministic");
                let (rs, _) = compare(&format!("{what} tensor cores, fewer splits"), ty, &w, rows, cols, &xs, &c, &want);
                let (splits, _) = dsv4_cuda::quant::matmul::float_splits(rows, cols, n, gpu.sm_count(), part.len());
                eprintln!("{what} tensor cores: rel L2 {rel:.2e} ({splits} splits), {rs:.2e} with less room");
            }
        }
    }
}

#[test]
fn bad_inputs_are_errors() {
    let Some(gpu) = gpu_or_skip("bad_inputs_are_errors") else {
        return;
    };
    let mm = Matmul::new(&gpu).unwrap();
    let (rows, cols) = (64, 512);
    let w = DeviceMatrix::upload(&gpu, GgmlType::Q2_K, rows, cols, &random_matrix(GgmlType::Q2_K, rows, cols, 0.01, 1)).unwrap();
    let (_, a, stride) = acts(GgmlType::Q2_K, cols, 4, 2);
    let da = gpu.upload(&a).unwrap();
    let mut dy = gpu.upload(&vec![0f32; 4 * rows]).unwrap();
    assert!(mm.run(&w, &da, stride, 5, &mut dy).is_err(), "more tokens than activation rows");
    let mut small = gpu.upload(&vec![0f32; rows]).unwrap();
    assert!(mm.run(&w, &da, stride, 4, &mut small).is_err(), "output too small");
    assert!(mm.run(&w, &da, 8, 1, &mut dy).is_err(), "stride under one row");
    let f = DeviceMatrix::upload(&gpu, GgmlType::F16, 8, 64, &vec![0u8; 8 * 128]).unwrap();
    assert!(mm.run(&f, &da, stride, 1, &mut dy).is_err(), "F16 has no tensor-core kernel");
    let experts = [w.clone()];
    assert!(mm.run_tiles(&gpu, &experts, &[1, 0, 4], 16, &da, stride, &mut dy, rows).is_err(), "expert out of range");
    assert!(mm.run_tiles(&gpu, &experts, &[0, 0, 17], 16, &da, stride, &mut dy, rows).is_err(), "tile wider than bn");
    assert!(mm.run_tiles(&gpu, &experts, &[0, 2, 4], 16, &da, stride, &mut dy, rows).is_err(), "tile past the rows");
}
