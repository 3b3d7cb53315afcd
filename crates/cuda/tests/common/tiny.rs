//! The tiny synthetic model the GPU forward tests compare against the CPU reference (window
//! 8, compression ratios 4 / 16 / 128, indexer top-k 4, hash- and score-routed MoE), and the
//! comparisons they share.

use std::sync::OnceLock;

use dsv4_cuda::{GpuModel, GpuState};
use dsv4_model::Model;
use dsv4_synth::{Preset, SynthSpec};

/// Largest relative L2 distance allowed between a position's GPU and CPU logits under the
/// plain numerics. Measured on an H100: 8.1e-7 (and 9.0e-7 along the 256-token greedy run);
/// a discrete flip (an expert or an indexer row chosen differently) would show as 1e-3 or
/// more.
pub const REL_L2_TOL: f32 = 1e-5;

pub fn model() -> &'static Model {
    static M: OnceLock<(tempfile::TempDir, Model)> = OnceLock::new();
    &M.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny.gguf");
        let spec = SynthSpec { preset: Preset::Tiny, mix: dsv4_model::ExpertMix::Q2, seed: 7 };
        dsv4_synth::write_model(&path, &spec).unwrap();
        let m = Model::load(&path).unwrap();
        (dir, m)
    })
    .1
}

pub fn prompt(n: usize) -> Vec<u32> {
    // Spread over the vocabulary, special-token range included.
    (0..n as u64).map(|i| ((i * 2_654_435_761 + 17) % 129_280) as u32).collect()
}

pub fn rel_l2(gpu: &[f32], cpu: &[f32]) -> f32 {
    assert_eq!(gpu.len(), cpu.len());
    let (mut num, mut den) = (0f64, 0f64);
    for (a, b) in gpu.iter().zip(cpu) {
        num += ((a - b) as f64).powi(2);
        den += (*b as f64).powi(2);
    }
    (num / den.max(f64::MIN_POSITIVE)).sqrt() as f32
}

/// The largest [`rel_l2`] over paired logit vectors, and where.
pub fn worst(gpu: &[Vec<f32>], cpu: &[Vec<f32>]) -> (f32, usize) {
    assert_eq!(gpu.len(), cpu.len());
    let mut w = (0f32, 0usize);
    for (i, (g, c)) in gpu.iter().zip(cpu).enumerate() {
        assert!(g.iter().all(|v| v.is_finite()), "position {i}: non-finite GPU logits");
        let e = rel_l2(g, c);
        assert!(e.is_finite(), "position {i}: relative L2 is {e}");
        if e > w.0 {
            w = (e, i);
        }
    }
    w
}

/// The first index of the largest logit (NaN never wins: the tests reject NaN first).
pub fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

pub fn setup(test: &str, capacity: u64) -> Option<(dsv4_cuda::Gpu, GpuModel, GpuState)> {
    let gpu = super::gpu_or_skip(test)?;
    let gm = GpuModel::load(&gpu, model()).unwrap();
    let st = gm.new_state(&gpu, capacity).unwrap();
    Some((gpu, gm, st))
}
