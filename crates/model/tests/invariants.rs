//! The forward pass's own invariants on the tiny synthetic model: any chunking of a prefill,
//! token-by-token decoding and snapshot/restore all give bit-identical logits.
//!
//! The tiny model (window 8, compression ratios 4, 16 and 128, indexer top-k 4) is driven past
//! every boundary: the window overflows after 8 tokens, the indexer starts dropping rows after
//! 20, and 140 tokens emit 35 ratio-4 rows, 8 ratio-16 rows and one ratio-128 row.

use dsv4_model::{Model, Mtp, Numerics, SessionState};
use dsv4_synth::{Preset, SynthSpec};
use std::sync::OnceLock;

fn dir() -> &'static std::path::Path {
    static D: OnceLock<tempfile::TempDir> = OnceLock::new();
    D.get_or_init(|| tempfile::tempdir().unwrap()).path()
}

fn spec() -> SynthSpec {
    SynthSpec { preset: Preset::Tiny, mix: dsv4_model::ExpertMix::Q2, seed: 7 }
}

fn model() -> &'static Model {
    static M: OnceLock<Model> = OnceLock::new();
    M.get_or_init(|| {
        let path = dsv4_synth::cached_model(std::path::Path::new(env!("CARGO_TARGET_TMPDIR")), &spec()).unwrap();
        Model::load(&path).unwrap()
    })
}

fn mtp() -> &'static Mtp {
    static M: OnceLock<Mtp> = OnceLock::new();
    M.get_or_init(|| {
        let path = dir().join("tiny-mtp.gguf");
        dsv4_synth::write_mtp(&path, &spec()).unwrap();
        model().load_mtp(&path).unwrap()
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
    let toks = tokens(140);
    for numerics in [Numerics::Official, Numerics::Plain] {
        let whole = run_chunked(m, &toks, toks.len(), numerics);
        assert!(whole.iter().flatten().all(|v| v.is_finite()));
        for chunk in [1, 3, 4, 5, 7, 16, 17, 33, 128, 129] {
            let got = run_chunked(m, &toks, chunk, numerics);
            assert_same(&whole, &got, &format!("{numerics:?} chunk {chunk}"));
        }
    }
}

#[test]
fn long_sequences_fill_every_kind_of_state() {
    let m = model();
    let mut st = m.new_state();
    m.forward(&mut st, &tokens(140), false, Numerics::Official).unwrap();
    let d = m.cfg.head_dim;
    let rows: Vec<usize> = st.layers.iter().map(|l| l.comp_rows.len() / d).collect();
    assert_eq!(rows, vec![0, 0, 35, 1, 35, 8]);
    let index_rows: Vec<usize> = st.layers.iter().map(|l| l.index_rows.len() / m.cfg.indexer_head_dim).collect();
    assert_eq!(index_rows, vec![0, 0, 35, 0, 35, 0]);
    assert_eq!(st.pos, 140);
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

/// The MTP block keeps the same chunking invariant over its own window, and really reads both
/// of its inputs.
#[test]
fn mtp_block_is_chunking_invariant_and_uses_token_and_hidden() {
    let (m, mtp) = (model(), mtp());
    let toks = tokens(30);
    let mut st = m.new_state();
    let (_, hidden) = m.forward_hidden(&mut st, &toks, false, Numerics::Official, true).unwrap();
    assert_eq!(hidden.len(), 30);
    let run = |chunk: usize| {
        let mut ms = m.new_mtp_state();
        let mut out = Vec::new();
        for (t, h) in toks.chunks(chunk).zip(hidden.chunks(chunk)) {
            out.extend(m.forward_mtp(mtp, &mut ms, t, h, Numerics::Official).unwrap());
        }
        out
    };
    let whole = run(30);
    assert!(whole.iter().flatten().all(|v| v.is_finite()));
    for chunk in [1, 4, 7] {
        assert_same(&whole, &run(chunk), &format!("mtp chunk {chunk}"));
    }
    let mut ms = m.new_mtp_state();
    let other_token = m.forward_mtp(mtp, &mut ms, &[toks[0] + 1], &hidden[..1], Numerics::Official).unwrap();
    assert_ne!(other_token[0], whole[0]);
    let mut ms = m.new_mtp_state();
    let mut h = hidden[0].clone();
    h.iter_mut().for_each(|v| *v *= -1.0);
    let other_hidden = m.forward_mtp(mtp, &mut ms, &toks[..1], &[h], Numerics::Official).unwrap();
    assert_ne!(other_hidden[0], whole[0]);
    let mut ms = m.new_mtp_state();
    assert!(m.forward_mtp(mtp, &mut ms, &toks[..2], &hidden[..1], Numerics::Official).is_err());
}

/// Checkpoints at any position (aligned to a compression window or not) restore a state from
/// which continuing gives exactly the uninterrupted run's logits.
#[test]
fn checkpoints_rewind_to_any_position() {
    let m = model();
    let toks = tokens(150);
    let whole = run_chunked(m, &toks, 150, Numerics::Official);
    let mut st = m.new_state();
    let mut cps = Vec::new();
    for (i, &t) in toks.iter().enumerate() {
        if [0, 3, 16, 61, 128, 131].contains(&i) {
            cps.push(st.checkpoint());
        }
        m.forward(&mut st, &[t], false, Numerics::Official).unwrap();
    }
    for c in cps.iter().rev() {
        st.restore(c).unwrap();
        let p = c.pos as usize;
        let again = m.forward(&mut st, &toks[p..], true, Numerics::Official).unwrap();
        assert_same(&whole[p..], &again, &format!("rewound to {p}"));
    }
    // A checkpoint from the future cannot be restored.
    let mut fresh = m.new_state();
    assert!(fresh.restore(cps.last().unwrap()).is_err());
}

/// Several sessions in one batch (decode steps and a prefill chunk side by side) give each
/// session exactly what running it alone gives: logits and states, bit for bit.
#[test]
fn batched_sessions_equal_sessions_run_alone() {
    let m = model();
    for numerics in [Numerics::Official, Numerics::Plain] {
        let all = tokens(200);
        // Three sessions at different depths: short, past a ratio-16 row, past the ratio-128 row.
        let prompts = [&all[..5], &all[20..60], &all[50..190]];
        let mut alone: Vec<_> = prompts.iter().map(|p| {
            let mut s = m.new_state();
            m.forward(&mut s, p, false, numerics).unwrap();
            s
        }).collect();
        let mut batched = alone.clone();
        for step in 0..12u32 {
            // Session 1 gets a 7-token chunk on step 3 (a prefill beside decodes); session 2 sits
            // out step 5.
            let feeds: Vec<Vec<u32>> = (0..3u32)
                .map(|i| match (i, step) {
                    (1, 3) => (0..7).map(|k| 1000 + 13 * k + step).collect(),
                    (2, 5) => Vec::new(),
                    _ => vec![3000 + 101 * i + 7 * step],
                })
                .collect();
            let want: Vec<Vec<f32>> = alone
                .iter_mut()
                .zip(&feeds)
                .map(|(s, f)| if f.is_empty() { Vec::new() } else { m.forward(s, f, false, numerics).unwrap().pop().unwrap() })
                .collect();
            let mut refs: Vec<&mut dsv4_model::SessionState> = batched.iter_mut().collect();
            let slices: Vec<&[u32]> = feeds.iter().map(Vec::as_slice).collect();
            let got = m.forward_sessions(&mut refs, &slices, numerics).unwrap();
            for i in 0..3 {
                assert!(want[i].iter().map(|v| v.to_bits()).eq(got[i].iter().map(|v| v.to_bits())), "{numerics:?} step {step} session {i}: logits differ");
            }
            assert_eq!(alone, batched, "{numerics:?} step {step}: states differ");
        }
    }
    // Mismatched lengths are an error, not a panic.
    let mut s = m.new_state();
    assert!(m.forward_sessions(&mut [&mut s], &[], Numerics::Plain).is_err());
}
