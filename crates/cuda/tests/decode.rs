//! The decode step (`model/step.rs`) on the tiny model (`common/tiny.rs`): replayed as a CUDA
//! graph it gives the same bits as its kernels launched one by one, across ring wrap-around
//! (window 8), the compressed-row boundaries of ratios 4, 16 and 128, the indexer's masking,
//! checkpoint restores and uploaded states; it agrees with the CPU and with the chunk path to
//! f32 rounding, and it launches fewer kernels than the chunk path. A step of several sessions
//! gives each the bits it gets alone.

mod common;

use common::tiny::{model, prompt, rel_l2, setup, REL_L2_TOL};
use dsv4_cuda::{Decode, DecodeOptions, DenseProducts, ExpertReads, Gpu, GpuModel, GpuState};
use dsv4_model::Numerics;

fn with(gm: &mut GpuModel, decode: Decode) {
    with_experts(gm, decode, ExpertReads::Auto, DenseProducts::default());
}

fn with_experts(gm: &mut GpuModel, decode: Decode, experts: ExpertReads, dense: DenseProducts) {
    gm.set_options(DecodeOptions { decode, host_experts: false, serial_launches: false, experts, dense });
}

fn bits_equal(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

/// For each prompt length k, a state of capacity `n` fed `toks[..k]` and an uploaded copy of it.
fn twins(gpu: &Gpu, gm: &GpuModel, toks: &[u32], prompts: &[usize], n: u64, num: Numerics) -> (Vec<GpuState>, Vec<GpuState>) {
    prompts
        .iter()
        .map(|&k| {
            let mut a = gm.new_state(gpu, n).unwrap();
            gm.forward(&mut a, &toks[..k], num).unwrap();
            let b = gm.state_from_host(gpu, &gm.to_host(&a).unwrap(), n).unwrap();
            (a, b)
        })
        .unzip()
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
    assert!(gm.graph_kernels(1, num).is_some(), "no graph was captured");
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
    let kernels = gm.graph_kernels(1, num);
    // Back to 30 (the graph stays: it reads the position afresh), then eagerly, then again
    // through the graph.
    gm.restore(&mut sg, &cp).unwrap();
    let eager: Vec<Vec<f32>> = toks[30..70].iter().map(|&t| one(&mut gm, Decode::Eager, &mut sg, t, num)).collect();
    gm.restore(&mut sg, &cp).unwrap();
    let again: Vec<Vec<f32>> = toks[30..70].iter().map(|&t| one(&mut gm, Decode::Graph, &mut sg, t, num)).collect();
    assert_eq!(gm.graph_kernels(1, num), kernels);
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
    assert!(gm.graph_kernels(1, Numerics::Official).is_some(), "no official graph was captured");
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
        assert_eq!(gm.graph_kernels(1, num), Some(eager));
        assert_eq!(replay, 0);
        assert!(eager < chunk, "{eager} step launches, {chunk} on the chunk path");
    }
}

/// Several sessions at different positions decoded together (`forward_step`), the batch
/// changing from step to step (sessions leaving and rejoining, so steps of 2 to 6 sessions
/// and their graphs): every session's logits equal, bit for bit, those of a copy decoded
/// alone, under both numerics, as graphs and eagerly, the routed experts read per pick and
/// grouped by expert (the tiny model's 2 of 8 experts: most steps share experts, and an
/// expert picked by more than 4 sessions spans two entries), the dense Q8_0 products on the
/// CUDA cores and on the tensor cores.
#[test]
fn batched_step_equals_each_session_alone() {
    let n = 120u64;
    let Some((gpu, mut gm, _)) = setup("batched_step_equals_each_session_alone", n) else {
        return;
    };
    let toks = prompt(n as usize);
    for num in [Numerics::Plain, Numerics::Official] {
        let runs = [
            (Decode::Graph, ExpertReads::Slots, DenseProducts::CudaCores),
            (Decode::Graph, ExpertReads::Grouped, DenseProducts::TensorCores),
            (Decode::Eager, ExpertReads::Grouped, DenseProducts::CudaCores),
            (Decode::Eager, ExpertReads::Slots, DenseProducts::TensorCores),
        ];
        for (decode, experts, dense) in runs {
            with_experts(&mut gm, decode, experts, dense);
            let prompts = [3usize, 17, 30, 9, 41, 1];
            let (mut together, mut alone) = twins(&gpu, &gm, &toks, &prompts, n, num);
            let mut sizes = std::collections::BTreeSet::new();
            for step in 0..60usize {
                // Session j sits out the steps where (step + j) % 4 == 3.
                let picked: Vec<usize> = (0..prompts.len()).filter(|j| (step + j) % 4 != 3 || step % 7 == 0).collect();
                sizes.insert(picked.len());
                let tok_of = |j: usize| toks[(prompts[j] + 3 * step + j) % toks.len()];
                let step_toks: Vec<u32> = picked.iter().map(|&j| tok_of(j)).collect();
                let mut refs: Vec<&mut GpuState> = together.iter_mut().enumerate().filter(|(j, _)| picked.contains(j)).map(|(_, s)| s).collect();
                let batched = gm.forward_step(&mut refs, &step_toks, num).unwrap();
                for (i, &j) in picked.iter().enumerate() {
                    let single = gm.forward(&mut alone[j], &[tok_of(j)], num).unwrap();
                    assert!(single.iter().all(|v| v.is_finite()));
                    assert!(
                        bits_equal(&batched[i], &single),
                        "{num:?} {decode:?} {experts:?} {dense:?}, step {step}, session {j} at {} in a batch of {}: logits differ from alone (relative L2 {:.3e})",
                        alone[j].pos() - 1,
                        picked.len(),
                        rel_l2(&batched[i], &single)
                    );
                }
            }
            for (a, b) in together.iter().zip(&alone) {
                assert_eq!(a.pos(), b.pos());
            }
            eprintln!("{num:?} {decode:?} {experts:?} {dense:?}: 60 steps of {sizes:?} sessions equal each session alone, bit for bit");
            if decode == Decode::Graph {
                for &b in &sizes {
                    assert!(gm.graph_kernels(b, num).is_some(), "no graph for {b} sessions");
                }
            }
        }
    }
}

/// Bad input to a batched step is refused before anything runs: a token outside the
/// vocabulary, a full state, or mismatched lists leave every state where it was.
#[test]
fn batched_step_refuses_bad_input() {
    let n = 8u64;
    let Some((gpu, gm, _)) = setup("batched_step_refuses_bad_input", n) else {
        return;
    };
    let toks = prompt(8);
    let mut a = gm.new_state(&gpu, n).unwrap();
    let mut b = gm.new_state(&gpu, n).unwrap();
    gm.forward(&mut a, &toks[..3], Numerics::Plain).unwrap();
    gm.forward(&mut b, &toks[..8], Numerics::Plain).unwrap();
    let vocab = model().cfg.vocab_size as u32;
    let err = gm.forward_step(&mut [&mut a], &[vocab], Numerics::Plain).unwrap_err().to_string();
    assert!(err.contains("outside the vocabulary"), "{err}");
    let err = gm.forward_step(&mut [&mut a, &mut b], &[1, 2], Numerics::Plain).unwrap_err().to_string();
    assert!(err.contains("do not fit"), "{err}");
    let err = gm.forward_step(&mut [&mut a, &mut b], &[1], Numerics::Plain).unwrap_err().to_string();
    assert!(err.contains("2 states for 1 tokens"), "{err}");
    assert_eq!((a.pos(), b.pos()), (3, 8));
}

/// The step's reductions of its logits (`model/pick.cu`, `forward_step_picked`): for every
/// want, what the host's reference reduction (`dsv4_model::pick`) makes of the whole row the
/// same step gives a copy of each session: the argmax, the maximum and the kept set, in
/// token order, equal; a kept set larger than its room comes as the whole row.
#[test]
fn reduced_steps_equal_reductions_of_whole_rows() {
    use dsv4_cuda::PICK_CAP;
    use dsv4_model::{Next, Reduced, Want};
    let n = 40u64;
    let Some((gpu, mut gm, _)) = setup("reduced_steps_equal_reductions_of_whole_rows", n) else {
        return;
    };
    let toks = prompt(n as usize);
    let wants = [
        Want::Argmax,
        Want::Kept { inv_t: 1.0, floor: 0.05f32.ln() },
        Want::Row,
        Want::Kept { inv_t: 1.0 / 0.7, floor: 0.1f32.ln() },
        Want::Kept { inv_t: 0.2, floor: 0.01f32.ln() },
        // Every token kept: more than PICK_CAP, so the whole row.
        Want::Kept { inv_t: 1e-4, floor: 0.5f32.ln() },
    ];
    let mut kinds = [0usize; 3];
    for (num, decode) in [(Numerics::Official, Decode::Graph), (Numerics::Plain, Decode::Eager)] {
        with(&mut gm, decode);
        let prompts: Vec<usize> = (0..wants.len()).map(|k| 2 + 3 * k).collect();
        let (mut picked, mut whole) = twins(&gpu, &gm, &toks, &prompts, n, num);
        for step in 0..12usize {
            // Batches of 6, then 5, 4, ... sessions; each session's want rotates.
            let size = wants.len() - step % 3;
            let tok_of = |j: usize| toks[(5 * j + step) % toks.len()];
            let step_toks: Vec<u32> = (0..size).map(tok_of).collect();
            let step_wants: Vec<Want> = (0..size).map(|j| wants[(j + step) % wants.len()]).collect();
            let mut refs: Vec<&mut GpuState> = picked.iter_mut().take(size).collect();
            let got = gm.forward_step_picked(&mut refs, &step_toks, &step_wants, num).unwrap();
            let mut refs: Vec<&mut GpuState> = whole.iter_mut().take(size).collect();
            let rows = gm.forward_step(&mut refs, &step_toks, num).unwrap();
            for (j, (g, row)) in got.iter().zip(rows).enumerate() {
                let w = step_wants[j];
                let reference = Reduced::of(&row, w);
                let expect = if w == Want::Row || reference.kept.len() > PICK_CAP { Next::Logits(row) } else { Next::Reduced(reference) };
                kinds[match &expect {
                    Next::Logits(_) => 0,
                    Next::Reduced(r) if r.kept.is_empty() => 1,
                    Next::Reduced(_) => 2,
                }] += 1;
                assert!(*g == expect, "{num:?} {decode:?}, step {step}, session {j}, {w:?}: the step's reduction differs from the host's");
            }
        }
    }
    eprintln!("reductions equal: {} whole rows, {} argmax, {} kept sets", kinds[0], kinds[1], kinds[2]);
    assert!(kinds.iter().all(|&k| k > 0), "every form was checked: {kinds:?}");
}
