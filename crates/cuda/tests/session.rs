//! Session state between the GPU and the CPU types (`dsv4_model::state`): continuing a CPU
//! prefill on the GPU and a GPU prefill on the CPU, checkpoints against the CPU's, and
//! rewinds that replay bit for bit. On the tiny model (`common/tiny.rs`), plain numerics.

mod common;

use common::tiny::{model, prompt, rel_l2, setup, worst, REL_L2_TOL};
use dsv4_model::state::Frontier;
use dsv4_model::{Checkpoint, Numerics};

const PLAIN: Numerics = Numerics::Plain;

/// Relative L2 of two value arrays whose -inf entries (empty frontier slots) must match
/// exactly.
fn rel_l2_inf(g: &[f32], c: &[f32]) -> f32 {
    assert_eq!(g.len(), c.len());
    for (a, b) in g.iter().zip(c) {
        assert_eq!(a.is_finite(), b.is_finite(), "finite vs non-finite: {a} {b}");
        if !b.is_finite() {
            assert_eq!(a, b);
        }
    }
    let f = |v: &[f32]| v.iter().map(|x| if x.is_finite() { *x } else { 0.0 }).collect::<Vec<_>>();
    if c.iter().all(|x| !x.is_finite() || *x == 0.0) {
        return f(g).iter().map(|x| x.abs()).fold(0.0, f32::max);
    }
    rel_l2(&f(g), &f(c))
}

fn frontier_err(g: &Option<Frontier>, c: &Option<Frontier>) -> f32 {
    match (g, c) {
        (None, None) => 0.0,
        (Some(g), Some(c)) => {
            assert_eq!((g.ratio, g.width), (c.ratio, c.width));
            rel_l2_inf(&g.kv, &c.kv).max(rel_l2_inf(&g.score, &c.score))
        }
        _ => panic!("frontier present on one side only"),
    }
}

fn checkpoint_err(g: &Checkpoint, c: &Checkpoint) -> f32 {
    assert_eq!(g.pos, c.pos);
    assert_eq!(g.layers.len(), c.layers.len());
    let mut w = 0f32;
    for (gl, cl) in g.layers.iter().zip(&c.layers) {
        assert_eq!((gl.comp_len, gl.index_len), (cl.comp_len, cl.index_len));
        w = w.max(rel_l2(&gl.raw, &cl.raw));
        w = w.max(frontier_err(&gl.compressor, &cl.compressor)).max(frontier_err(&gl.indexer, &cl.indexer));
    }
    w
}

#[test]
fn cpu_prefill_continues_on_the_gpu() {
    let (k, n) = (41, 64);
    let Some((gpu, gm, _)) = setup("cpu_prefill_continues_on_the_gpu", n as u64) else {
        return;
    };
    let m = model();
    let toks = prompt(n);
    let mut cs = m.new_state();
    m.forward(&mut cs, &toks[..k], false, PLAIN).unwrap();
    let mut st = gm.state_from_host(&gpu, &cs, n as u64).unwrap();
    assert_eq!(st.pos(), k as u64);
    let g = gm.forward_all(&mut st, &toks[k..], PLAIN).unwrap();
    let c = m.forward(&mut cs, &toks[k..], true, PLAIN).unwrap();
    let (w, at) = worst(&g, &c);
    eprintln!("CPU prefill of {k}, then GPU vs CPU for {} tokens: max relative L2 {w:.3e} (step {at})", n - k);
    assert!(w <= REL_L2_TOL);
    // A state that does not fit is refused.
    assert!(gm.state_from_host(&gpu, &cs, (n - 1) as u64).is_err());
}

#[test]
fn gpu_prefill_continues_on_the_cpu() {
    let (k, n) = (37, 64);
    let Some((_gpu, gm, mut st)) = setup("gpu_prefill_continues_on_the_cpu", n as u64) else {
        return;
    };
    let m = model();
    let toks = prompt(n);
    gm.forward(&mut st, &toks[..k], PLAIN).unwrap();
    let mut cs = gm.to_host(&st).unwrap();
    assert_eq!(cs.pos, k as u64);
    // The host copy is a valid CPU state: it survives the disk format.
    let bytes = cs.to_bytes(&m.cfg);
    assert_eq!(dsv4_model::SessionState::from_bytes(&m.cfg, &bytes).unwrap(), cs);
    let c = m.forward(&mut cs, &toks[k..], true, PLAIN).unwrap();
    let g = gm.forward_all(&mut st, &toks[k..], PLAIN).unwrap();
    let (w, at) = worst(&g, &c);
    eprintln!("GPU prefill of {k}, then GPU vs CPU for {} tokens: max relative L2 {w:.3e} (step {at})", n - k);
    assert!(w <= REL_L2_TOL);
}

#[test]
fn checkpoint_matches_the_cpu() {
    let n = 64;
    let Some((_gpu, gm, mut st)) = setup("checkpoint_matches_the_cpu", n as u64) else {
        return;
    };
    let m = model();
    let toks = prompt(n);
    let mut cs = m.new_state();
    let mut worst_err = 0f32;
    // Unaligned and aligned to every compression ratio (4, 16 and 128 > n).
    let mut at = 0;
    for k in [3, 16, 21, 48, 61] {
        gm.forward(&mut st, &toks[at..k], PLAIN).unwrap();
        m.forward(&mut cs, &toks[at..k], false, PLAIN).unwrap();
        at = k;
        let e = checkpoint_err(&gm.checkpoint(&st).unwrap(), &cs.checkpoint());
        worst_err = worst_err.max(e);
        // The full state too.
        let h = gm.to_host(&st).unwrap();
        for (gl, cl) in h.layers.iter().zip(&cs.layers) {
            assert_eq!(gl.comp_rows.len(), cl.comp_rows.len());
            assert_eq!(gl.index_rows.len(), cl.index_rows.len());
            if !cl.comp_rows.is_empty() {
                worst_err = worst_err.max(rel_l2(&gl.comp_rows, &cl.comp_rows));
            }
            if !cl.index_rows.is_empty() {
                worst_err = worst_err.max(rel_l2(&gl.index_rows, &cl.index_rows));
            }
        }
    }
    eprintln!("GPU vs CPU checkpoints and states: max relative L2 of any array {worst_err:.3e}");
    assert!(worst_err <= 1e-5);
}

#[test]
fn restore_replays_bit_for_bit() {
    let n = 64;
    let Some((gpu, gm, mut st)) = setup("restore_replays_bit_for_bit", n as u64) else {
        return;
    };
    let toks = prompt(n);
    for (k, chunked) in [(13usize, false), (32, true)] {
        let mut st_k = gm.new_state(&gpu, n as u64).unwrap();
        gm.forward(&mut st_k, &toks[..k], PLAIN).unwrap();
        let cp = gm.checkpoint(&st_k).unwrap();
        let run = |st: &mut dsv4_cuda::GpuState| -> Vec<Vec<f32>> {
            if chunked {
                gm.forward_all(st, &toks[k..], PLAIN).unwrap()
            } else {
                toks[k..].iter().map(|&t| gm.forward(st, &[t], PLAIN).unwrap()).collect()
            }
        };
        let first = run(&mut st_k);
        gm.restore(&mut st_k, &cp).unwrap();
        assert_eq!(st_k.pos(), k as u64);
        let again = run(&mut st_k);
        let same = first.iter().flatten().zip(again.iter().flatten()).all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "replay after restoring at {k} differs");
        // The checkpoint after the replay equals the one before it.
        gm.restore(&mut st_k, &cp).unwrap();
        assert_eq!(gm.checkpoint(&st_k).unwrap(), cp);
    }
    // A checkpoint from later than the state is refused, and nothing changes.
    gm.forward(&mut st, &toks[..5], PLAIN).unwrap();
    let mut later = gm.new_state(&gpu, n as u64).unwrap();
    gm.forward(&mut later, &toks[..9], PLAIN).unwrap();
    assert!(gm.restore(&mut st, &gm.checkpoint(&later).unwrap()).is_err());
    assert_eq!(st.pos(), 5);
    // A CPU checkpoint restores a GPU state too (the same tokens).
    let m = model();
    let mut cs = m.new_state();
    m.forward(&mut cs, &toks[..3], false, PLAIN).unwrap();
    gm.restore(&mut st, &cs.checkpoint()).unwrap();
    assert_eq!(st.pos(), 3);
    let g = gm.forward(&mut st, &toks[3..7], PLAIN).unwrap();
    let c = m.forward(&mut cs, &toks[3..7], false, PLAIN).unwrap().pop().unwrap();
    assert!(rel_l2(&g, &c) <= REL_L2_TOL);
}

/// Where the official numerics part from the CPU: each layer's cached KV rows and compressor
/// frontiers after a few tokens, GPU vs CPU (printed per layer; a layer's raw row depends on
/// every layer below it, its frontier on the same input through a float matrix).
#[test]
fn official_states_track_the_cpu_layer_by_layer() {
    let n = 24;
    let Some((_gpu, gm, mut st)) = setup("official_states_track_the_cpu_layer_by_layer", n as u64) else {
        return;
    };
    let m = model();
    let toks = prompt(n);
    let mut cs = m.new_state();
    let mut at = 0;
    for k in [1, 2, 5, 24] {
        gm.forward(&mut st, &toks[at..k], Numerics::Official).unwrap();
        m.forward(&mut cs, &toks[at..k], false, Numerics::Official).unwrap();
        at = k;
        let (g, c) = (gm.checkpoint(&st).unwrap(), cs.checkpoint());
        let per: Vec<String> = g
            .layers
            .iter()
            .zip(&c.layers)
            .map(|(gl, cl)| format!("raw {:.1e} front {:.1e}", rel_l2(&gl.raw, &cl.raw), frontier_err(&gl.compressor, &cl.compressor)))
            .collect();
        eprintln!("official after {k} tokens, per layer: {}", per.join(" | "));
    }
}
