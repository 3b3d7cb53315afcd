//! The forward pass's own invariants on the tiny synthetic model: any chunking of a prefill,
//! token-by-token decoding and snapshot/restore all give bit-identical logits.
//!
//! The tiny model (window 8, compression ratios 4 and 16, indexer top-k 4) is driven past
//! every boundary: the window overflows after 8 tokens, the indexer starts dropping rows after
//! 20, and 72 tokens emit 18 ratio-4 rows and 4 ratio-16 rows per compressed layer.

use dsv4_model::{Model, Numerics, SessionState};
use dsv4_synth::{Preset, SynthSpec};
use std::sync::OnceLock;

fn model() -> &'static Model {
    static M: OnceLock<Model> = OnceLock::new();
    M.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("dsv4-model-tests-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tiny.gguf");
        let spec = SynthSpec { preset: Preset::Tiny, mix: dsv4_model::ExpertMix::Q2, seed: 7 };
        dsv4_synth::write_model(&path, &spec).unwrap();
        Model::load(&path).unwrap()
    })
}

fn tokens(n: usize) -> Vec<u32> {
    // Spread over the vocabulary, including ids past 128000 (the special-token range).
    (0..n as u64).map(|i| ((i * 2_654_435_761 + 17) % 129_280) as u32).collect()
}

fn run_chunked(m: &Model, toks: &[u32], chunk: usize, numerics: Numerics) -> Vec<Vec<f32>> {
    let mut st = m.new_state();
    let mut out = Vec::new();
    for c in toks.chunks(chunk) {
        out.extend(m.forward(&mut st, c, true, numerics).unwrap());
    }
    out
}

fn assert_same(a: &[Vec<f32>], b: &[Vec<f32>], what: &str) {
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let same = x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits());
        assert!(same, "{what}: logits differ at position {i}");
    }
}

#[test]
fn chunked_prefill_equals_token_by_token_decode() {
    let m = model();
    let toks = tokens(72);
    for numerics in [Numerics::Official, Numerics::Plain] {
        let whole = run_chunked(m, &toks, toks.len(), numerics);
        assert!(whole.iter().flatten().all(|v| v.is_finite()));
        for chunk in [1, 3, 4, 5, 7, 16, 17, 33] {
            let got = run_chunked(m, &toks, chunk, numerics);
            assert_same(&whole, &got, &format!("{numerics:?} chunk {chunk}"));
        }
    }
}

#[test]
fn snapshot_restore_continues_bit_identically() {
    let m = model();
    let toks = tokens(60);
    let mut st = m.new_state();
    m.forward(&mut st, &toks[..29], false, Numerics::Official).unwrap();
    let bytes = st.to_bytes(&m.cfg);
    let mut restored = SessionState::from_bytes(&m.cfg, &bytes).unwrap();
    assert_eq!(restored, st);
    let a = m.forward(&mut st, &toks[29..], true, Numerics::Official).unwrap();
    let b = m.forward(&mut restored, &toks[29..], true, Numerics::Official).unwrap();
    assert_same(&a, &b, "restored session");
    assert_eq!(st, restored);
}

#[test]
fn states_reject_foreign_or_damaged_bytes() {
    let m = model();
    let mut st = m.new_state();
    m.forward(&mut st, &tokens(21), false, Numerics::Official).unwrap();
    let bytes = st.to_bytes(&m.cfg);
    assert!(SessionState::from_bytes(&m.cfg, &bytes[..bytes.len() - 3]).is_err());
    let mut bad = bytes.clone();
    bad[0] ^= 1;
    assert!(SessionState::from_bytes(&m.cfg, &bad).is_err());
    let other = dsv4_model::ModelConfig::flash(2);
    assert!(SessionState::from_bytes(&other, &bytes).is_err());
}

/// Official numerics (FP8/BF16 KV rows, FP4 indexer, quantized activations) perturb every
/// position by a few percent on this random model; a position occasionally jumps further when
/// the perturbation flips a discrete choice (an expert or an indexer row), so the check is on
/// the median, not the maximum.
#[test]
fn numerics_modes_differ_but_agree_closely() {
    let m = model();
    let toks = tokens(40);
    let off = run_chunked(m, &toks, 40, Numerics::Official);
    let plain = run_chunked(m, &toks, 40, Numerics::Plain);
    let mut rel: Vec<f64> = off
        .iter()
        .zip(&plain)
        .map(|(a, b)| {
            let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
            let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
            (num / den).sqrt()
        })
        .collect();
    rel.sort_by(f64::total_cmp);
    let median = rel[rel.len() / 2];
    assert!(rel[0] > 1e-4, "official numerics must not be a no-op (min relative L2 {})", rel[0]);
    assert!(median < 0.1, "official vs plain median relative L2 {median}");
}

#[test]
fn out_of_vocabulary_tokens_are_refused() {
    let m = model();
    let mut st = m.new_state();
    assert!(m.forward(&mut st, &[5, 200_000], false, Numerics::Plain).is_err());
    assert_eq!(st.pos, 0, "a refused batch leaves the session untouched");
}
