//! Shared by the integration tests: the one place that decides whether a GPU (or NVRTC) is
//! there, seeded random GGUF matrices, and the CPU comparison.
#![allow(dead_code)]

pub mod tiny;

use std::path::PathBuf;

use dsv4_cuda::{CudaError, Gpu};
use dsv4_quant::GgmlType;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Set to 1 to turn "no GPU" into a test failure (on the GPU machine, so that a broken
/// driver setup cannot pass as skipped tests).
pub const REQUIRE_GPU_ENV: &str = "DSV4_REQUIRE_GPU";
/// Set to 1 to turn "no NVRTC" into a failure of the compile check (CI, after the setup
/// script has installed NVRTC).
pub const REQUIRE_NVRTC_ENV: &str = "DSV4_REQUIRE_NVRTC";
/// Device index for the GPU tests (default 0).
pub const GPU_INDEX_ENV: &str = "DSV4_GPU";

fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// The GPU a test runs on, or `None` after printing that `test` is skipped and why. The
/// only GPU detection of the test suite.
pub fn gpu_or_skip(test: &str) -> Option<Gpu> {
    let index = std::env::var(GPU_INDEX_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    match Gpu::new(index) {
        Ok(gpu) => Some(gpu),
        Err(e @ (CudaError::NoDriver | CudaError::NoDevice { .. })) => {
            if env_flag(REQUIRE_GPU_ENV) {
                panic!("{test}: {REQUIRE_GPU_ENV} is set but there is no usable GPU: {e}");
            }
            eprintln!("SKIPPED {test}: no usable CUDA GPU here ({e})");
            None
        }
        // A driver that is present but fails is a real failure, not a skip.
        Err(e) => panic!("{test}: CUDA device {index} could not be opened: {e}"),
    }
}

/// Where the compile-check setup script puts NVRTC: `target/cuda-nvrtc-venv`, a Python venv
/// with the `nvidia-cuda-nvrtc` wheel (`scripts/cuda-compile-check-setup`).
fn venv_nvrtc() -> Option<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut targets = vec![manifest.join("../../target")];
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        targets.insert(0, PathBuf::from(t));
    }
    for target in targets {
        let lib = target.join("cuda-nvrtc-venv/lib");
        let Ok(entries) = std::fs::read_dir(&lib) else {
            continue;
        };
        for e in entries.flatten() {
            let cand = e
                .path()
                .join("site-packages/nvidia/cu13/lib/libnvrtc.so.13");
            if cand.is_file() {
                return Some(cand);
            }
        }
    }
    None
}

/// Loads NVRTC for the compile check: `DSV4_NVRTC_LIB`, else the setup script's venv, else
/// the system's. Returns what was loaded, or `None` after printing that `test` is skipped.
pub fn nvrtc_or_skip(test: &str) -> Option<String> {
    let explicit = std::env::var_os(dsv4_cuda::nvrtc::NVRTC_LIB_ENV)
        .is_none()
        .then(venv_nvrtc)
        .flatten();
    match dsv4_cuda::nvrtc::load_nvrtc(explicit.as_deref()) {
        Ok(what) => Some(what),
        Err(e) => {
            if env_flag(REQUIRE_NVRTC_ENV) {
                panic!("{test}: {REQUIRE_NVRTC_ENV} is set but NVRTC is missing: {e}");
            }
            eprintln!(
                "SKIPPED {test}: {e}. Run scripts/cuda-compile-check-setup (or set {}) to compile the kernels without a GPU",
                dsv4_cuda::nvrtc::NVRTC_LIB_ENV
            );
            None
        }
    }
}

pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// Byte offsets of the f16 scale fields of one block.
fn f16_fields(ty: GgmlType) -> &'static [usize] {
    match ty {
        GgmlType::Q8_0 | GgmlType::IQ2_XXS => &[0],
        GgmlType::Q4_K => &[0, 2],
        GgmlType::Q2_K => &[80, 82],
        _ => &[],
    }
}

/// A `rows x cols` matrix of `ty` in GGUF layout: random code bytes (every byte pattern is a
/// valid code, scale index, sign index or grid index in these formats) and f16 scales (or
/// float elements) uniform in `±scale`, zero excluded so no block is trivially empty.
pub fn random_matrix(ty: GgmlType, rows: usize, cols: usize, scale: f32, seed: u64) -> Vec<u8> {
    let mut r = rng(seed);
    let row_bytes = cols / ty.block_elems() * ty.block_bytes();
    let mut m: Vec<u8> = (0..rows * row_bytes).map(|_| r.gen()).collect();
    let val = |r: &mut ChaCha8Rng| {
        let v: f32 = r.gen_range(scale * 0.05..scale);
        if r.gen() {
            v
        } else {
            -v
        }
    };
    match ty {
        GgmlType::F32 => m
            .chunks_exact_mut(4)
            .for_each(|c| c.copy_from_slice(&val(&mut r).to_le_bytes())),
        GgmlType::F16 => m
            .chunks_exact_mut(2)
            .for_each(|c| c.copy_from_slice(&half::f16::from_f32(val(&mut r)).to_le_bytes())),
        _ => {
            for blk in m.chunks_exact_mut(ty.block_bytes()) {
                for &o in f16_fields(ty) {
                    blk[o..o + 2].copy_from_slice(&half::f16::from_f32(val(&mut r)).to_le_bytes());
                }
            }
        }
    }
    m
}

/// Activations like hidden states: roughly Gaussian with a few large outliers.
pub fn random_x(n: usize, seed: u64) -> Vec<f32> {
    let mut r = rng(seed ^ 0x5eed);
    (0..n)
        .map(|_| {
            let g: f32 = (0..4).map(|_| r.gen_range(-1.0f32..1.0)).sum();
            if r.gen_range(0..64) == 0 {
                g * 20.0
            } else {
                g
            }
        })
        .collect()
}

/// Relative L2 error bound between a GPU output vector and `dsv4_quant::matvec` (Plain). Both
/// sum f32 products of the same exactly-decoded weights in different orders (and the GPU
/// factors block scales out and fuses multiply-adds); with 512-8192 terms per output that
/// leaves differences around 1e-7 relative, so 1e-5 has ample margin while any decoding
/// slip (one wrong scale, code or sign in a row) shows up far above it.
pub const REL_L2_TOL: f64 = 1e-5;
/// Per-element bound, relative to `sum_j |w_ij x_j|` of the row: f32 summation error is at
/// most ~n·eps of that sum and in practice ~sqrt(n)·eps; 1e-4 catches a single wrong output
/// that the vector-wide L2 would dilute.
pub const ELEM_TOL: f64 = 1e-4;

/// Row magnitudes `sum_j |w_ij x_j|` from the exact dequantization.
pub fn row_magnitudes(ty: GgmlType, m: &[u8], rows: usize, cols: usize, x: &[f32]) -> Vec<f64> {
    let rb = cols / ty.block_elems() * ty.block_bytes();
    let mut w = vec![0f32; cols];
    (0..rows)
        .map(|r| {
            dsv4_quant::dequantize_row(ty, &m[r * rb..(r + 1) * rb], &mut w).unwrap();
            w.iter().zip(x).map(|(a, b)| (a * b).abs() as f64).sum()
        })
        .collect()
}

/// Checks `got` (GPU) against `want` (CPU): every element finite, relative L2 within
/// [`REL_L2_TOL`], every element within [`ELEM_TOL`] of its row magnitude. NaN fails every
/// comparison, so an element the kernel never wrote (the tests poison outputs with NaN
/// before launching) cannot pass. Returns the relative L2 error.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], mags: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut num = 0f64;
    let mut den = 0f64;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            g.is_finite(),
            "{what}: element {i} is {g} (not written, or overflow); CPU has {w}"
        );
        let d = g as f64 - w as f64;
        let bound = ELEM_TOL * mags[i] + 1e-30;
        assert!(
            d.abs() <= bound,
            "{what}: element {i}: GPU {g} vs CPU {w} (|diff| {:.3e} > {bound:.3e})",
            d.abs()
        );
        num += d * d;
        den += (w as f64) * (w as f64);
    }
    let rel = if den > 0.0 {
        (num / den).sqrt()
    } else {
        num.sqrt()
    };
    assert!(
        rel <= REL_L2_TOL,
        "{what}: relative L2 error {rel:.3e} > {REL_L2_TOL:e}"
    );
    rel
}
