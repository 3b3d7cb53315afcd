//! The decode step (`model/step.rs`) on the tiny model (`common/tiny.rs`): replayed as a CUDA
//! graph it gives the same bits as its kernels launched one by one, across ring wrap-around
//! (window 8), the compressed-row boundaries of ratios 4, 16 and 128, the indexer's masking,
//! checkpoint restores and uploaded states; it agrees with the CPU and with the chunk path to
//! f32 rounding, and it launches fewer kernels than the chunk path.

mod common;

use common::tiny::{model, prompt, rel_l2, setup, REL_L2_TOL};
use dsv4_cuda::{Decode, DecodeOptions, GpuModel, GpuState};
use dsv4_model::Numerics;

fn with(gm: &mut GpuModel, decode: Decode) {
    gm.set_options(DecodeOptions { decode, host_experts: false });
}

fn bits_equal(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

/// Token `t` through `st` under `decode`.
fn one(gm: &mut GpuModel, decode: Decode, st: &mut GpuState, t: u32, num: Numerics) -> Vec<f32> {
    with(gm, decode);
    let g = gm.forward(st, &[t], num).unwrap();
    assert!(g.iter().all(|v| v.is_finite()), "non-finite logits at position {}", st.pos() - 1);
    g
}

/// `n` tokens after a chunked prompt of `k`, graph and eager side by side: every step's
/// logits bit for bit equal; plain numerics also against the CPU.
fn graph_equals_eager(test: &str, num: Numerics) {
    let (k, n) = (5usize, 300usize);
    let Some((gpu, mut gm, mut sg)) = setup(test, n as u64) else {
        return;
    };
    let m = model();
    let toks = prompt(n);
    let mut se = gm.new_state(&gpu, n as u64).unwrap();
    with(&mut gm, Decode::Graph);
    gm.forward(&mut sg, &toks[..k], num).unwrap();
    gm.forward(&mut se, &toks[..k], num).unwrap();
    let mut cs = m.new_state();
    if num == Numerics::Plain {
        m.forward(&mut cs, &toks[..k], false, num).unwrap();
    }
    let mut worst = 0f32;
    for (i, &t) in toks.iter().enumerate().skip(k) {
        let g = one(&mut gm, Decode::Graph, &mut sg, t, num);
        let e = one(&mut gm, Decode::Eager, &mut se, t, num);
        assert!(bits_equal(&g, &e), "position {i}: graph and eager logits differ (relative L2 {:.3e})", rel_l2(&g, &e));
        if num == Numerics::Plain {
            let c = m.forward(&mut cs, &[t], false, num).unwrap().pop().unwrap();
            worst = worst.max(rel_l2(&g, &c));
        }
    }
    assert_eq!(sg.pos(), n as u64);
    assert!(sg.graph_kernels().is_some(), "no graph was captured");
    eprintln!("{test}: {} graph steps bit-identical to eager steps; vs CPU max relative L2 {worst:.3e}", n - k);
    assert!(worst <= REL_L2_TOL, "graph decode vs CPU: relative L2 {worst:.3e}");
}

#[test]
fn graph_decode_equals_eager_steps_plain() {
    graph_equals_eager("graph_decode_equals_eager_steps_plain", Numerics::Plain);
}

#[test]
fn graph_decode_equals_eager_steps_official() {
    graph_equals_eager("graph_decode_equals_eager_steps_official", Numerics::Official);
}

/// The step path against the chunk path (one token at a time through the multi-token code):
/// the same function up to f32 summation order.
#[test]
fn step_path_matches_the_chunk_path() {
    let n = 160;
    let Some((gpu, mut gm, mut sg)) = setup("step_path_matches_the_chunk_path", n as u64) else {
        return;
    };
    let toks = prompt(n);
    let mut sc = gm.new_state(&gpu, n as u64).unwrap();
    let mut worst = 0f32;
    for &t in &toks {
        let g = one(&mut gm, Decode::Graph, &mut sg, t, Numerics::Plain);
        let c = one(&mut gm, Decode::Chunk, &mut sc, t, Numerics::Plain);
        worst = worst.max(rel_l2(&g, &c));
    }
    eprintln!("step path vs chunk path over {n} positions: max relative L2 {worst:.3e}");
    assert!(worst <= REL_L2_TOL);
}

/// A graph captured before a restore or on an uploaded state replays the same bits as eager
/// steps on the same state.
#[test]
fn graph_survives_restore_and_state_upload() {
    let n = 96;
    let Some((gpu, mut gm, mut sg)) = setup("graph_survives_restore_and_state_upload", n as u64) else {
        return;
    };
    let m = model();
    let toks = prompt(n);
    let num = Numerics::Plain;
    with(&mut gm, Decode::Graph);
    gm.forward(&mut sg, &toks[..30], num).unwrap();
    let cp = gm.checkpoint(&sg).unwrap();
    let first: Vec<Vec<f32>> = toks[30..70].iter().map(|&t| one(&mut gm, Decode::Graph, &mut sg, t, num)).collect();
    let kernels = sg.graph_kernels();
    // Back to 30 (the graph stays: it reads the position afresh), then eagerly, then again
    // through the graph.
    gm.restore(&mut sg, &cp).unwrap();
    let eager: Vec<Vec<f32>> = toks[30..70].iter().map(|&t| one(&mut gm, Decode::Eager, &mut sg, t, num)).collect();
    gm.restore(&mut sg, &cp).unwrap();
    let again: Vec<Vec<f32>> = toks[30..70].iter().map(|&t| one(&mut gm, Decode::Graph, &mut sg, t, num)).collect();
    assert_eq!(sg.graph_kernels(), kernels);
    for (i, ((a, b), c)) in first.iter().zip(&eager).zip(&again).enumerate() {
        assert!(bits_equal(a, b) && bits_equal(a, c), "position {}: replay after restore differs", 30 + i);
    }
    // A CPU prefill of 45 uploaded, then graph and eager decode on two copies of it.
    let mut cs = m.new_state();
    m.forward(&mut cs, &toks[..45], false, num).unwrap();
    let mut su = gm.state_from_host(&gpu, &cs, n as u64).unwrap();
    let mut se = gm.state_from_host(&gpu, &cs, n as u64).unwrap();
    let mut worst = 0f32;
    for &t in &toks[45..] {
        let g = one(&mut gm, Decode::Graph, &mut su, t, num);
        let e = one(&mut gm, Decode::Eager, &mut se, t, num);
        assert!(bits_equal(&g, &e), "uploaded state, position {}: graph and eager differ", su.pos() - 1);
        let c = m.forward(&mut cs, &[t], false, num).unwrap().pop().unwrap();
        worst = worst.max(rel_l2(&g, &c));
    }
    eprintln!("uploaded state: graph == eager bit for bit; vs CPU max relative L2 {worst:.3e}");
    assert!(worst <= REL_L2_TOL);
    // Switching numerics recaptures; the new graph matches eager steps on a copy of the state.
    let mut copy = gm.state_from_host(&gpu, &gm.to_host(&sg).unwrap(), n as u64).unwrap();
    for &t in &toks[70..74] {
        let g = one(&mut gm, Decode::Graph, &mut sg, t, Numerics::Official);
        let e = one(&mut gm, Decode::Eager, &mut copy, t, Numerics::Official);
        assert!(bits_equal(&g, &e), "official after plain, position {}: graph and eager differ", sg.pos() - 1);
    }
    assert!(sg.graph_kernels() > kernels, "the official graph was not recaptured");
}

/// Kernels per decode token: the graph holds exactly the eager step's launches, fewer than
/// the chunk path's, under both numerics.
#[test]
fn step_launches_fewer_kernels() {
    let n = 40;
    let Some((gpu, mut gm, _)) = setup("step_launches_fewer_kernels", n as u64) else {
        return;
    };
    let toks = prompt(n);
    let layers = model().cfg.n_layer as u64;
    for num in [Numerics::Plain, Numerics::Official] {
        let mut sc = gm.new_state(&gpu, n as u64).unwrap();
        let mut sg = gm.new_state(&gpu, n as u64).unwrap();
        let count = |gm: &mut GpuModel, d: Decode, s: &mut GpuState, t: u32| {
            let before = gm.launch_count();
            one(gm, d, s, t, num);
            gm.launch_count() - before
        };
        // Past the indexer's top-k, so the chunk path runs every kernel it has.
        let mut se = gm.new_state(&gpu, n as u64).unwrap();
        with(&mut gm, Decode::Chunk);
        gm.forward(&mut se, &toks[..30], num).unwrap();
        gm.forward(&mut sc, &toks[..30], num).unwrap();
        gm.forward(&mut sg, &toks[..30], num).unwrap();
        let chunk = count(&mut gm, Decode::Chunk, &mut sc, toks[30]);
        let eager = count(&mut gm, Decode::Eager, &mut se, toks[30]);
        let captured = count(&mut gm, Decode::Graph, &mut sg, toks[30]);
        let replay = count(&mut gm, Decode::Graph, &mut sg, toks[31]);
        eprintln!("{num:?}: kernels per token: chunk path {chunk} ({:.1}/layer), step {eager} ({:.1}/layer); graph replay queues {replay}", chunk as f64 / layers as f64, eager as f64 / layers as f64);
        assert_eq!(captured, eager);
        assert_eq!(sg.graph_kernels(), Some(eager));
        assert_eq!(replay, 0);
        assert!(eager < chunk, "{eager} step launches, {chunk} on the chunk path");
    }
}
