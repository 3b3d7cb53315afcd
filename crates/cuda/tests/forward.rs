//! The GPU forward pass against the CPU reference (`dsv4_model`), on the tiny synthetic model
//! (`common/tiny.rs`): a 64-token prompt crosses the window, emits compressed and indexer rows and makes the
//! indexer drop rows, so every mechanism is compared.
//!
//! Plain numerics on both sides unless a test says otherwise. The GPU sums in other orders
//! (warp butterflies, FMAs), so logits agree to f32 rounding amplified through the layers,
//! not bit for bit: each position's logits must be within [`REL_L2_TOL`] relative L2 of the
//! CPU's.

mod common;

use common::tiny::{argmax, model, prompt, rel_l2, setup, worst, REL_L2_TOL};
use dsv4_model::Numerics;

#[test]
fn logits_match_the_cpu_at_every_prompt_position() {
    let Some((_gpu, gm, mut st)) = setup("logits_match_the_cpu_at_every_prompt_position", 64) else {
        return;
    };
    let m = model();
    let toks = prompt(64);
    let cpu = m.forward(&mut m.new_state(), &toks, true, Numerics::Plain).unwrap();
    let mut worst = (0f32, 0usize);
    let mut argmax_same = 0;
    for (i, &t) in toks.iter().enumerate() {
        let g = gm.forward(&mut st, &[t], Numerics::Plain).unwrap();
        assert!(g.iter().all(|v| v.is_finite()), "position {i}: non-finite GPU logits");
        let e = rel_l2(&g, &cpu[i]);
        assert!(e.is_finite(), "position {i}: relative L2 is {e}");
        if e > worst.0 {
            worst = (e, i);
        }
        argmax_same += (argmax(&g) == argmax(&cpu[i])) as usize;
    }
    eprintln!(
        "GPU vs CPU logits over {} positions: max relative L2 {:.3e} (position {}), same argmax at {}/{}",
        toks.len(),
        worst.0,
        worst.1,
        argmax_same,
        toks.len()
    );
    assert!(worst.0 <= REL_L2_TOL, "position {}: relative L2 {:.3e} > {REL_L2_TOL:e}", worst.1, worst.0);
    assert_eq!(st.pos(), 64);
}

#[test]
fn greedy_decode_matches_the_cpu_for_256_tokens() {
    let (n_prompt, n_gen) = (16, 256);
    let Some((_gpu, gm, mut st)) = setup("greedy_decode_matches_the_cpu_for_256_tokens", (n_prompt + n_gen) as u64) else {
        return;
    };
    let m = model();
    let toks = prompt(n_prompt);
    let mut cs = m.new_state();
    let mut c_logits = m.forward(&mut cs, &toks, false, Numerics::Plain).unwrap().pop().unwrap();
    let mut g_logits = gm.forward(&mut st, &toks, Numerics::Plain).unwrap();
    let (mut cpu_seq, mut gpu_seq) = (Vec::new(), Vec::new());
    let mut worst = 0f32;
    for step in 0..n_gen {
        assert!(g_logits.iter().all(|v| v.is_finite()), "step {step}: non-finite GPU logits");
        worst = worst.max(rel_l2(&g_logits, &c_logits));
        let (c, g) = (argmax(&c_logits), argmax(&g_logits));
        cpu_seq.push(c);
        gpu_seq.push(g);
        if c != g {
            break;
        }
        c_logits = m.forward(&mut cs, &[c], false, Numerics::Plain).unwrap().pop().unwrap();
        g_logits = gm.forward(&mut st, &[g], Numerics::Plain).unwrap();
    }
    let agree = cpu_seq.iter().zip(&gpu_seq).take_while(|(a, b)| a == b).count();
    eprintln!("greedy: {agree}/{n_gen} tokens identical; max relative L2 on the way {worst:.3e}");
    assert_eq!(gpu_seq, cpu_seq, "greedy sequences diverge at step {agree}");
    assert_eq!(gpu_seq.len(), n_gen);
}

#[test]
fn runs_are_deterministic() {
    let Some((gpu, gm, mut st)) = setup("runs_are_deterministic", 40) else {
        return;
    };
    let toks = prompt(40);
    let a = gm.forward(&mut st, &toks, Numerics::Plain).unwrap();
    let mut st2 = gm.new_state(&gpu, 40).unwrap();
    let b = gm.forward(&mut st2, &toks, Numerics::Plain).unwrap();
    assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()), "two runs differ");
}

#[test]
fn bad_input_is_an_error() {
    let Some((_gpu, gm, mut st)) = setup("bad_input_is_an_error", 4) else {
        return;
    };
    assert!(gm.forward(&mut st, &[129_280], Numerics::Plain).is_err(), "token outside the vocabulary");
    assert!(gm.forward(&mut st, &[1, 2, 3, 4, 5], Numerics::Plain).is_err(), "over capacity");
    assert_eq!(st.pos(), 0, "a refused call runs nothing");
    assert!(gm.forward(&mut st, &[], Numerics::Plain).unwrap().is_empty());
}

#[test]
fn chunked_prefill_matches_token_by_token_and_the_cpu() {
    let n = 64;
    let Some((gpu, gm, mut st)) = setup("chunked_prefill_matches_token_by_token_and_the_cpu", n as u64) else {
        return;
    };
    let m = model();
    let toks = prompt(n);
    let cpu = m.forward(&mut m.new_state(), &toks, true, Numerics::Plain).unwrap();
    let chunked = gm.forward_all(&mut st, &toks, Numerics::Plain).unwrap();
    let mut st1 = gm.new_state(&gpu, n as u64).unwrap();
    let single: Vec<Vec<f32>> = toks.iter().map(|&t| gm.forward(&mut st1, &[t], Numerics::Plain).unwrap()).collect();
    let (wc, pc) = worst(&chunked, &cpu);
    let (ws, ps) = worst(&chunked, &single);
    eprintln!("chunks of 16 vs CPU: max relative L2 {wc:.3e} (position {pc}); vs GPU token by token {ws:.3e} (position {ps})");
    assert!(wc <= REL_L2_TOL && ws <= REL_L2_TOL);
    // Only the last logits from forward, the same as forward_all's last.
    let mut st2 = gm.new_state(&gpu, n as u64).unwrap();
    let last = gm.forward(&mut st2, &toks[..37], Numerics::Plain).unwrap();
    assert!(rel_l2(&last, &cpu[36]) <= REL_L2_TOL);
}

/// Prefill in uneven pieces (the chunk path of the attention starting from a state that
/// earlier pieces left: a partial compressor window, a ring from before the chunk, a
/// ratio-128 row completed across pieces, indexer masks per token) against token-by-token
/// decode and the CPU.
#[test]
fn uneven_pieces_match_token_by_token_and_the_cpu() {
    let n = 150;
    let Some((gpu, gm, mut st)) = setup("uneven_pieces_match_token_by_token_and_the_cpu", n as u64) else {
        return;
    };
    let m = model();
    let toks = prompt(n);
    let cpu = m.forward(&mut m.new_state(), &toks, true, Numerics::Plain).unwrap();
    let mut pieces = Vec::new();
    let mut at = 0;
    for len in [1, 2, 13, 40, 94] {
        pieces.extend(gm.forward_all(&mut st, &toks[at..at + len], Numerics::Plain).unwrap());
        at += len;
    }
    assert_eq!(at, n);
    let mut st1 = gm.new_state(&gpu, n as u64).unwrap();
    let single: Vec<Vec<f32>> = toks.iter().map(|&t| gm.forward(&mut st1, &[t], Numerics::Plain).unwrap()).collect();
    let (wc, pc) = worst(&pieces, &cpu);
    let (ws, ps) = worst(&pieces, &single);
    eprintln!("pieces 1,2,13,40,94 vs CPU: max relative L2 {wc:.3e} (position {pc}); vs GPU token by token {ws:.3e} (position {ps})");
    assert!(wc <= REL_L2_TOL && ws <= REL_L2_TOL);
}

/// Official numerics against the CPU's official path. The kernels are bit-exact
/// (`official_kernels_match_the_cpu_bit_for_bit`), but their inputs differ from the CPU's by
/// f32 rounding as in the plain path, and a quantizer sitting on a rounding tie turns that
/// into a whole code. Measured on an H100: one GPU step from the CPU's state agrees to ~2e-7
/// relative L2 at 58 of 64 positions; the others are such flips, up to 2.7e-2 (position 0,
/// where every head's output is one FP8 row times a scalar, so Q8_0 ties are common). A free
/// run compounds the flips (the tiny random model amplifies them: its CPU official and plain
/// logits differ by 0.5): up to 0.35, same argmax at 56/64.
const OFFICIAL_FLIP_TOL: f32 = 5e-2;

#[test]
fn official_numerics_match_the_cpu() {
    let n = 64;
    let Some((gpu, gm, mut st)) = setup("official_numerics_match_the_cpu", n as u64) else {
        return;
    };
    let m = model();
    let toks = prompt(n);
    let cpu = m.forward(&mut m.new_state(), &toks, true, Numerics::Official).unwrap();
    let plain = m.forward(&mut m.new_state(), &toks, true, Numerics::Plain).unwrap();
    let chunked = gm.forward_all(&mut st, &toks, Numerics::Official).unwrap();
    let mut st1 = gm.new_state(&gpu, n as u64).unwrap();
    let single: Vec<Vec<f32>> = toks.iter().map(|&t| gm.forward(&mut st1, &[t], Numerics::Official).unwrap()).collect();
    // One GPU step from the CPU's state after each prefix.
    let mut cs = m.new_state();
    let mut step = Vec::new();
    for &t in &toks {
        let mut g = gm.state_from_host(&gpu, &cs, n as u64).unwrap();
        step.push(gm.forward(&mut g, &[t], Numerics::Official).unwrap());
        m.forward(&mut cs, &[t], false, Numerics::Official).unwrap();
    }
    let (wt, pt) = worst(&step, &cpu);
    let (wc, pc) = worst(&chunked, &cpu);
    let (ws, _) = worst(&single, &cpu);
    let (wp, _) = worst(&plain, &cpu);
    let (w16, _) = worst(&chunked[..16], &cpu[..16]);
    let same = chunked.iter().zip(&cpu).filter(|(g, c)| argmax(g) == argmax(c)).count();
    let errs: Vec<String> = chunked.iter().zip(&cpu).map(|(g, c)| format!("{:.1e}", rel_l2(g, c))).collect();
    eprintln!("official per position (chunked): {}", errs.join(" "));
    let errs: Vec<String> = step.iter().zip(&cpu).map(|(g, c)| format!("{:.1e}", rel_l2(g, c))).collect();
    eprintln!("official per position (one step from the CPU state): {}", errs.join(" "));
    eprintln!(
        "official GPU vs CPU: one step from the CPU state max relative L2 {wt:.3e} (position {pt}); free run chunked {wc:.3e} (position {pc}), token by token {ws:.3e}, first 16 positions {w16:.3e}, same argmax {same}/{n}; CPU official vs CPU plain {wp:.3e}"
    );
    // Most steps agree to f32 rounding; the rest are bounded flips.
    let tight = step.iter().zip(&cpu).filter(|(g, c)| rel_l2(g, c) <= REL_L2_TOL).count();
    eprintln!("official one step: {tight}/{n} positions within {REL_L2_TOL:e}");
    assert!(tight >= n * 3 / 4, "only {tight}/{n} official steps agree to f32 rounding");
    assert!(wt <= OFFICIAL_FLIP_TOL, "one official step drifts: {wt:.3e}");
    assert!(same >= n * 3 / 4, "official free run: same argmax at {same}/{n}");
    let cs2 = chunked.iter().zip(&single).all(|(a, b)| a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()));
    eprintln!("official chunked == token by token bit for bit: {cs2}");
}

/// Rows of `w` values quantized by the CPU as the products of weights `ty` take them, packed
/// as the GPU's activation rows.
fn cpu_acts(ty: dsv4_quant::GgmlType, x: &[f32], w: usize) -> Vec<u8> {
    x.chunks(w).flat_map(|r| dsv4_cuda::quant::matvec::pack_acts(&dsv4_quant::QuantizedActs::for_weight(ty, r).unwrap())).collect()
}

/// Largest |a - b| over the largest |b|.
fn rel_max(a: &[f32], b: &[f64]) -> f64 {
    let scale = b.iter().fold(0f64, |m, v| m.max(v.abs()));
    a.iter().zip(b).map(|(&x, y)| (x as f64 - y).abs()).fold(0f64, f64::max) / scale
}

/// The decode step's launches that quantize what they write, for the products after them:
/// `hc_norm_step` (the HC read-out's RMSNorm and both lanes' activations) and `norm_rope`
/// on q_a's output. Their f32 outputs against f64 sums, their activation bytes equal to the
/// CPU's quantization of those outputs. Flash's widths (4,096 columns: 16 slices of the
/// read-out's sum of squares; q_a's 1,024), three tokens, Q8_0 and Q8_K activations, and a
/// width that ends in a partial slice (no quantization).
#[test]
fn fused_quantizations_match_the_cpu() {
    let Some((gpu, gm, _)) = setup("fused_quantizations_match_the_cpu", 4) else {
        return;
    };
    let c = &model().cfg;
    let (q8_0, q2_k) = (dsv4_quant::GgmlType::Q8_0, dsv4_quant::GgmlType::Q2_K);
    let mut next = uniform(0x5851_f42d_4c95_7f2d);
    let (hc, parts, n) = (4usize, 16usize, 3usize);
    for (e, tys) in [(4096usize, [Some(q2_k), Some(q8_0)]), (4096, [Some(q8_0), None]), (1000, [None, None])] {
        let streams: Vec<f32> = (0..n * hc * e).map(|i| next() * [0.2, 1.0, 5.0][i / e % 3]).collect();
        let m_raw: Vec<f32> = (0..n * hc * parts).map(|_| next() * 0.5).collect();
        let mut ss = Vec::new();
        for t in 0..n {
            let tot: f64 = streams[t * hc * e..(t + 1) * hc * e].iter().map(|&v| v as f64 * v as f64).sum();
            ss.extend((0..parts).map(|_| tot / parts as f64));
        }
        let scale = [0.7f32, 0.3, 0.2];
        let base: Vec<f32> = (0..hc).map(|_| next() * 0.5).collect();
        let norm: Vec<f32> = (0..e).map(|_| 1.0 + 0.5 * next()).collect();
        let (out, acts) = gm.probe_hc_read(&gpu, &streams, &m_raw, &ss, &scale, &base, &norm, hc, parts, tys).unwrap();
        for t in 0..n {
            let tot: f64 = ss[t * parts..(t + 1) * parts].iter().sum();
            let sflat = 1.0 / (tot / (hc * e) as f64 + c.rms_eps as f64).sqrt();
            let pre: Vec<f64> = (0..hc)
                .map(|h| {
                    let mv: f64 = m_raw[(t * hc + h) * parts..(t * hc + h + 1) * parts].iter().map(|&v| v as f64).sum();
                    1.0 / (1.0 + (-(mv * sflat * scale[0] as f64 + base[h] as f64)).exp()) + c.hc_eps as f64
                })
                .collect();
            let s = &streams[t * hc * e..(t + 1) * hc * e];
            let x: Vec<f64> = (0..e).map(|i| (0..hc).map(|h| pre[h] * s[h * e + i] as f64).sum()).collect();
            let r = 1.0 / (x.iter().map(|v| v * v).sum::<f64>() / e as f64 + c.rms_eps as f64).sqrt();
            let want: Vec<f64> = x.iter().zip(&norm).map(|(v, &w)| v * r * w as f64).collect();
            let err = rel_max(&out[t * e..(t + 1) * e], &want);
            assert!(err <= 1e-5, "HC read-out of {e} columns, token {t}: off the f64 sums by {err:.2e}");
        }
        for (k, ty) in tys.into_iter().enumerate() {
            match ty {
                Some(ty) => assert!(acts[k] == cpu_acts(ty, &out, e), "{e} columns, lane {k}: {ty} activations differ from the CPU's"),
                None => assert!(acts[k].is_empty()),
            }
        }
    }
    // A width the quantization cannot slice is refused.
    let one = |e: usize| gm.probe_hc_read(&gpu, &vec![0.5; hc * e], &vec![0.1; hc * parts], &vec![1.0; parts], &[1.0; 3], &[0.0; 4], &vec![1.0; e], hc, parts, [Some(q8_0), None]);
    assert!(one(1000).is_err() && one(1024).is_ok());

    let d = 1024;
    let x: Vec<f32> = (0..n * d).map(|i| next() * [0.01, 1.0, 30.0][i / d % 3]).collect();
    let w: Vec<f32> = (0..d).map(|_| 1.0 + 0.5 * next()).collect();
    for ty in [q8_0, q2_k] {
        let (y, acts) = gm.probe_norm_quant(&gpu, &x, &w, ty).unwrap();
        for t in 0..n {
            let row = &x[t * d..(t + 1) * d];
            let r = 1.0 / (row.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / d as f64 + c.rms_eps as f64).sqrt();
            let want: Vec<f64> = row.iter().zip(&w).map(|(&v, &wv)| v as f64 * r * wv as f64).collect();
            let err = rel_max(&y[t * d..(t + 1) * d], &want);
            assert!(err <= 1e-5, "q_a norm, token {t}: off the f64 sums by {err:.2e}");
        }
        assert!(acts == cpu_acts(ty, &y, d), "q_a norm: {ty} activations differ from the CPU's");
    }
}

/// Deterministic values in [-1, 1) (xorshift64).
fn uniform(mut seed: u64) -> impl FnMut() -> f32 {
    move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0
    }
}

#[test]
fn official_kernels_match_the_cpu_bit_for_bit() {
    let Some((gpu, gm, _)) = setup("official_kernels_match_the_cpu_bit_for_bit", 4) else {
        return;
    };
    let c = &model().cfg;
    // Deterministic values over several magnitudes, with planted edge cases: an all-zero
    // block, a block whose largest magnitude is negative, repeated maxima, exact halves.
    let mut next = uniform(0x9e37_79b9_7f4a_7c15);
    let len = 4096;
    let mut x: Vec<f32> = (0..len).map(|i| next() * [1e-3, 0.1, 1.0, 37.0, 900.0][i / 512 % 5]).collect();
    x[..256].fill(0.0);
    x[300] = -50.0;
    x[301] = 50.0;
    x[600] = -3.0;
    x[700..704].copy_from_slice(&[0.5, -0.5, 1.5, 2.5]);
    for ty in [dsv4_quant::GgmlType::Q8_0, dsv4_quant::GgmlType::Q2_K] {
        let cpu = dsv4_cuda::quant::matvec::pack_acts(&dsv4_quant::QuantizedActs::for_weight(ty, &x).unwrap());
        let g = gm.probe_quantize(&gpu, ty, &x).unwrap();
        let diff = g.iter().zip(&cpu).filter(|(a, b)| a != b).count();
        assert_eq!(g.len(), cpu.len());
        assert_eq!(diff, 0, "{ty}: {diff} bytes differ");
    }
    let same = |a: &[f32], b: &[f32]| a.iter().zip(b).filter(|(x, y)| x.to_bits() != y.to_bits()).count();
    let kv = &x[..c.head_dim * (len / c.head_dim)];
    let mut cpu = kv.to_vec();
    cpu.chunks_exact_mut(c.head_dim).for_each(|r| Numerics::Official.store_kv_row(r, c.rope_dim));
    let g = gm.probe_kv_round(&gpu, kv).unwrap();
    assert_eq!(same(&g, &cpu), 0, "KV rows differ");
    let id = c.indexer_head_dim;
    let ix = &x[..id * (len / id)];
    let mut cpu = ix.to_vec();
    cpu.chunks_exact_mut(id).for_each(|r| Numerics::Official.indexer_row(r));
    let g = gm.probe_index_round(&gpu, ix).unwrap();
    assert_eq!(same(&g, &cpu), 0, "indexer rows differ");
}

/// The indexer's top-k mask (the kernel every attention path uses) against the CPU's rule: a
/// stable sort by descending `f32::total_cmp`, so ties go to the lower index. Score sets with
/// many ties, signed zeros, infinities and NaNs of both signs, from just over k rows to a long
/// context's count.
#[test]
fn topk_mask_matches_the_cpu_rule() {
    let Some((gpu, gm, _)) = setup("topk_mask_matches_the_cpu_rule", 4) else {
        return;
    };
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    // (rows, k, distinct magnitudes: few means many ties)
    for (n, k, levels) in [(513, 512, 1 << 20), (600, 512, 3), (4096, 512, 7), (70_000, 512, 50), (70_000, 512, 1 << 20), (2000, 1, 2), (2000, 1999, 4)] {
        let mut s: Vec<f32> = (0..n)
            .map(|_| {
                let r = next();
                let mag = (r >> 32) % levels as u64;
                let v = mag as f32 * 0.37 + 0.01;
                if r & 1 == 1 { -v } else { v }
            })
            .collect();
        s[..6].copy_from_slice(&[-0.0, 0.0, f32::NAN, -f32::NAN, f32::INFINITY, f32::NEG_INFINITY]);
        s[n - 1] = f32::NAN;
        let g = gm.probe_topk(&gpu, &s, k).unwrap();
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| s[b].total_cmp(&s[a]));
        let mut want = vec![0u8; n];
        for &i in &order[..k] {
            want[i] = 1;
        }
        let diff = g.iter().zip(&want).filter(|(a, b)| a != b).count();
        assert_eq!(diff, 0, "{n} rows, top {k}, {levels} levels: {diff} rows differ");
    }
    assert!(gm.probe_topk(&gpu, &[1.0, 2.0], 2).is_err(), "k must be below the row count");
}

/// The official indexer's scores on the tensor cores (exact block sums of the FP4 codes)
/// against the exact scores in f64 and the f32 kernel, on the tiny model's shape, the Flash
/// shape and an odd one, for queries and keys through the official round trip; the CPU's
/// selection of the top rows from its own f32 scores is the GPU's.
#[test]
fn tensor_core_indexer_scores_match_exact_ones() {
    let Some((gpu, gm, _)) = setup("tensor_core_indexer_scores_match_exact_ones", 4) else {
        return;
    };
    let mut next = uniform(0x2545_f491_4f6c_dd1d);
    for (heads, dim, n) in [(4usize, 32usize, 77usize), (64, 128, 3000), (48, 64, 513)] {
        let round = |v: &mut Vec<f32>| v.chunks_exact_mut(dim).for_each(|r| Numerics::Official.indexer_row(r));
        // Magnitudes vary by row and block, so the blocks' powers of two differ.
        let mut q: Vec<f32> = (0..heads * dim).map(|i| next() * [0.05, 1.0, 20.0][i / 32 % 3]).collect();
        let mut keys: Vec<f32> = (0..n * dim).map(|i| next() * [1.0, 0.01, 3.0, 300.0][(i / dim) % 4]).collect();
        round(&mut q);
        round(&mut keys);
        let w: Vec<f32> = (0..heads).map(|_| next() / (heads as f32).sqrt()).collect();
        let mma = gm.probe_index_scores(&gpu, &q, &w, &keys, true).unwrap();
        let f32k = gm.probe_index_scores(&gpu, &q, &w, &keys, false).unwrap();
        let mut worst = 0f64;
        for c in 0..n {
            let k = &keys[c * dim..(c + 1) * dim];
            let (mut exact, mut mag) = (0f64, 0f64);
            for h in 0..heads {
                let d: f64 = q[h * dim..(h + 1) * dim].iter().zip(k).map(|(&a, &b)| a as f64 * b as f64).sum();
                exact += w[h] as f64 * d.max(0.0);
                mag += (w[h] as f64 * d).abs();
            }
            let err = (mma[c] as f64 - exact).abs() / mag.max(1e-30);
            assert!(mma[c].is_finite() && err <= 1e-6, "{heads}x{dim} key {c}: {} vs exact {exact} (f32 kernel {})", mma[c], f32k[c]);
            assert!((f32k[c] as f64 - exact).abs() / mag.max(1e-30) <= 1e-5, "f32 kernel key {c}");
            worst = worst.max(err);
        }
        let top_k = n / 5;
        let cpu = dsv4_model::indexer::select(&q, &w, &keys, n, top_k);
        let mask = gm.probe_topk(&gpu, &mma, top_k).unwrap();
        let gpu_sel: Vec<usize> = (0..n).filter(|&c| mask[c] == 1).collect();
        assert_eq!(gpu_sel, cpu, "{heads}x{dim}: the selections differ");
        eprintln!("{heads} heads x {dim}, {n} keys: worst error {worst:.2e} of the terms' magnitude; top {top_k} as the CPU's");
    }
    assert!(gm.probe_index_scores(&gpu, &[0.0; 65 * 32], &[0.0; 65], &[0.0; 32], true).is_err(), "65 heads are refused");
}

/// One token's attention as the exact sum in f64: `rows` in attention order (raw window oldest
/// first, then the kept compressed rows), `d` values each; heads × d out, no RoPE.
fn exact_attention(q: &[f32], rows: &[&[f32]], sinks: &[f32], d: usize) -> Vec<f64> {
    let mut out = vec![0f64; q.len()];
    for (h, o) in out.chunks_exact_mut(d).enumerate() {
        let qh = &q[h * d..(h + 1) * d];
        let s: Vec<f64> = rows.iter().map(|k| qh.iter().zip(*k).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>() / (d as f64).sqrt()).collect();
        let m = s.iter().copied().fold(sinks[h] as f64, f64::max);
        let den = (sinks[h] as f64 - m).exp() + s.iter().map(|x| (x - m).exp()).sum::<f64>();
        for (x, k) in s.iter().zip(rows) {
            let e = (x - m).exp() / den;
            o.iter_mut().zip(*k).for_each(|(o, &v)| *o += e * v as f64);
        }
    }
    out
}

/// The worst over heads of max |gpu - exact| / max |exact| (a head's output scale).
fn attention_error(gpu: &[f32], exact: &[f64], d: usize) -> f64 {
    gpu.chunks_exact(d)
        .zip(exact.chunks_exact(d))
        .map(|(g, e)| {
            let scale = e.iter().fold(0f64, |a, v| a.max(v.abs())).max(1e-30);
            g.iter().zip(e).fold(0f64, |a, (&x, &y)| a.max((x as f64 - y).abs())) / scale
        })
        .fold(0f64, f64::max)
}

/// The chunk path's attention on the BF16 tensor cores (official numerics: every KV row on the
/// BF16 grid, queries and weights split in three BF16 parts) and the decode step's attention
/// (f32, the rows split in runs merged afterwards) against the exact f64 sums, and against the
/// chunk path's f32 kernel with the output's RoPE tail. Shapes: Flash's ratio-4 layer deep in
/// a context (indexer mask, 16 heads a block), the same early on (window not yet full: 76
/// rows, 32 heads a block), Flash's ratio-128 layer at 300K tokens (2,471 rows: 16 heads a
/// block), the tiny model's 4 heads (one padded block) and 48 heads of 128. A NaN query value
/// makes its head NaN and leaves the other heads' bits alone.
#[test]
fn tensor_core_attention_matches_exact_sums() {
    let Some((gpu, gm, _)) = setup("tensor_core_attention_matches_exact_sums", 4) else {
        return;
    };
    let mut next = uniform(0x9e37_79b9_7f4a_7c15);
    for (heads, d, window, ratio, pos, top_k) in [
        (64usize, 512usize, 128usize, 4usize, 5000u64, Some(512usize)),
        (64, 512, 128, 4, 60, None),
        (64, 512, 128, 128, 300_000, None),
        (4, 64, 8, 4, 40, Some(4)),
        (48, 128, 32, 16, 700, None),
    ] {
        let rope = d / 8;
        let mut row = |scale: f32| {
            let mut r: Vec<f32> = (0..d).map(|_| next() * scale).collect();
            Numerics::Official.store_kv_row(&mut r, rope);
            r
        };
        let ring: Vec<Vec<f32>> = (0..window).map(|i| row([0.3, 1.0, 4.0][i % 3])).collect();
        let n_comp = (pos as usize + 1).checked_div(ratio).unwrap_or(0);
        let comp: Vec<Vec<f32>> = (0..n_comp).map(|i| row([2.0, 0.5][i % 2])).collect();
        let q: Vec<f32> = (0..heads * d).map(|i| next() * [0.5, 3.0, 12.0][i / d % 3]).collect();
        let sinks: Vec<f32> = (0..heads).map(|_| next() * 2.0).collect();
        // The indexer's choice: top_k rows at random.
        let mask: Option<Vec<u8>> = top_k.map(|k| {
            let mut order: Vec<(f32, usize)> = (0..n_comp).map(|c| (next(), c)).collect();
            order.sort_by(|a, b| a.0.total_cmp(&b.0));
            let mut m = vec![0u8; n_comp];
            order[..k].iter().for_each(|&(_, c)| m[c] = 1);
            m
        });
        let n_raw = (pos as usize + 1).min(window);
        let mut rows: Vec<&[f32]> = (pos as usize + 1 - n_raw..=pos as usize).map(|p| ring[p % window].as_slice()).collect();
        rows.extend(comp.iter().enumerate().filter(|(c, _)| mask.as_ref().is_none_or(|m| m[*c] == 1)).map(|(_, r)| r.as_slice()));
        let exact = exact_attention(&q, &rows, &sinks, d);
        let (ring_f, comp_f): (Vec<f32>, Vec<f32>) = (ring.concat(), comp.concat());
        let m = mask.as_deref().zip(top_k);
        let run = |q: &[f32], freqs: &[f32], mma: bool| gm.probe_attend_chunk(&gpu, q, &ring_f, &comp_f, ratio, pos, m, &sinks, d, freqs, mma).unwrap();
        // The step's merge also writes its heads' outputs as Q8_0 rows of hpg heads (the
        // grouped output projection's input): the CPU's quantization of those outputs.
        let hpg = if heads.is_multiple_of(8) { 8 } else { heads };
        let step_acts = |q: &[f32], freqs: &[f32]| gm.probe_attend_step(&gpu, q, &ring_f, &comp_f, ratio, pos, m, &sinks, d, freqs, hpg).unwrap();
        let step = |q: &[f32], freqs: &[f32]| {
            let (o, a) = step_acts(q, freqs);
            assert!(a == cpu_acts(dsv4_quant::GgmlType::Q8_0, &o, hpg * d), "{heads}x{d}: the merge's Q8_0 rows differ from the CPU's");
            o
        };
        let (mma, f32k, st) = (run(&q, &[], true), run(&q, &[], false), step(&q, &[]));
        assert!(mma.iter().chain(&st).all(|v| v.is_finite()), "{heads}x{d}: non-finite or unwritten outputs");
        let (em, ef, es) = (attention_error(&mma, &exact, d), attention_error(&f32k, &exact, d), attention_error(&st, &exact, d));
        assert!(em <= 1e-5, "{heads}x{d} at {pos}, {} rows: tensor cores off the exact sums by {em:.2e} (f32 kernel {ef:.2e})", rows.len());
        assert!(es <= 1e-5, "{heads}x{d} at {pos}, {} rows: the decode step's split attention off the exact sums by {es:.2e} (f32 kernel {ef:.2e})", rows.len());
        // With the output's RoPE tail: the same rotation on every kernel's output.
        let freqs: Vec<f32> = (0..rope / 2).map(|i| 10000f32.powf(-2.0 * i as f32 / rope as f32)).collect();
        let (mr, fr, sr) = (run(&q, &freqs, true), run(&q, &freqs, false), step(&q, &freqs));
        let scale = fr.iter().fold(0f32, |a, v| a.max(v.abs()));
        for (what, r) in [("tensor cores", &mr), ("decode step", &sr)] {
            let tail = r.iter().zip(&fr).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(tail <= 1e-5 * scale, "{heads}x{d}: rotated outputs of the {what} differ by {tail:.2e} of {scale:.2e}");
        }
        // A NaN in one query: that head is NaN, the others unchanged bit for bit.
        let mut qn = q.clone();
        qn[(heads - 1) * d + 3] = f32::NAN;
        for (what, nan, clean) in [("tensor cores", run(&qn, &[], true), &mma), ("decode step", step_acts(&qn, &[]).0, &st)] {
            assert!(nan[(heads - 1) * d..].iter().all(|v| v.is_nan()), "{heads}x{d}: the NaN head is not NaN ({what})");
            assert!(nan[..(heads - 1) * d].iter().zip(clean).all(|(a, b)| a.to_bits() == b.to_bits()), "{heads}x{d}: a NaN head changed the others ({what})");
        }
        eprintln!("{heads} heads x {d}, {} rows at {pos}: tensor cores {em:.2e}, decode step {es:.2e}, f32 kernel {ef:.2e} of each head's output scale", rows.len());
    }
    // Rows the kernel cannot hold are refused, not run.
    let big = vec![0f32; 8192 * 512];
    assert!(gm.probe_attend_chunk(&gpu, &vec![0f32; 64 * 512], &big, &[], 0, 8191, None, &[0f32; 64], 512, &[], true).is_err());
}

/// The grouping of routed picks by expert (`group_picks`, the decode step's grouped expert
/// products) against the table its rule gives: entries by expert id, each expert's picks in
/// order, 4 an entry (an expert with 9 picks spans three), counts, unused places -1, ids
/// outside the experts in no entry, the rest of the grid's entries skipped (-1); the gate-up
/// pair's table numbering picks as the routing's gate-then-up ids do. Flash's 256 experts at
/// 32 tokens of 6 picks, the tiny model's 8 experts (most picks shared), and 64 tokens.
#[test]
fn grouped_picks_follow_the_rule() {
    let Some((gpu, gm, _)) = setup("grouped_picks_follow_the_rule", 8) else {
        return;
    };
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |m: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % m as u64) as i32
    };
    const NT: usize = 4;
    for (tokens, used, ne) in [(32usize, 6usize, 256usize), (6, 2, 8), (64, 6, 256), (3, 6, 256), (1, 2, 8)] {
        let mut sel: Vec<i32> = (0..tokens * used).map(|_| next(ne)).collect();
        if tokens >= 3 {
            // Expert 5 picked 9 times (three entries), one id past the end, one negative.
            for j in 0..9 {
                sel[(j * 7) % (tokens * used)] = 5;
            }
            sel[1] = ne as i32;
            sel[2] = -1;
        }
        let picks = sel.len();
        let mut want = Vec::new();
        let mut want_gate = Vec::new();
        let mut want_up = Vec::new();
        for e in 0..ne as i32 {
            let js: Vec<i32> = (0..picks as i32).filter(|&j| sel[j as usize] == e).collect();
            for chunk in js.chunks(NT) {
                let place = |f: &dyn Fn(i32) -> i32| (0..NT).map(|k| chunk.get(k).map_or(-1, |&j| f(j))).collect::<Vec<i32>>();
                let g = |j: i32| (j / used as i32) * 2 * used as i32 + j % used as i32;
                want.extend([e, chunk.len() as i32]);
                want.extend(place(&|j| j));
                want_gate.extend([e, chunk.len() as i32]);
                want_gate.extend(place(&g));
                want_up.extend([e + ne as i32, chunk.len() as i32]);
                want_up.extend(place(&|j| g(j) + used as i32));
            }
        }
        let entries = want.len() / (2 + NT);
        let mut want_gu = [want_gate, want_up].concat();
        let (table, table_gu) = gm.probe_group_picks(&gpu, &sel, used, ne).unwrap();
        let what = format!("{tokens} tokens x {used} of {ne} experts");
        // Entries past the grouping's: skipped (expert -1, count 0), picks not read.
        let skip = |t: &[i32], from: usize| (from..t.len() / (2 + NT)).all(|k| t[k * (2 + NT)] == -1 && t[k * (2 + NT) + 1] == 0);
        assert_eq!(&table[..want.len()], &want[..], "{what}: the down table");
        assert!(skip(&table, entries), "{what}: entries past the last are not skipped");
        want_gu.truncate(2 * entries * (2 + NT));
        assert_eq!(&table_gu[..want_gu.len()], &want_gu[..], "{what}: the gate-up table");
        assert!(skip(&table_gu, 2 * entries), "{what}: gate-up entries past the last are not skipped");
        eprintln!("{what}: {entries} entries for {picks} picks");
    }
    assert!(gm.probe_group_picks(&gpu, &[0; 7], 2, 8).is_err(), "picks not a whole number of tokens");
    assert!(gm.probe_group_picks(&gpu, &[0; 6], 6, 513).is_err(), "more experts than the kernel takes");
}

/// The router kernel against the CPU's rule (`dsv4_model::moe::route`: a stable sort by
/// descending score + bias, ties to the lower expert id; weights scale · score / Σ scores):
/// Flash's 256 experts, the tiny model's count and the 512 the kernel takes, with rows of
/// many ties (few distinct logits, equal biases) and large and tiny logits (softplus's cut-offs).
#[test]
fn router_matches_the_cpu_rule() {
    let Some((gpu, gm, _)) = setup("router_matches_the_cpu_rule", 4) else {
        return;
    };
    let mut next = uniform(0x51_7cc1_b727_220a);
    for (ne, used, levels) in [(256usize, 6usize, 0usize), (256, 6, 3), (256, 8, 1), (16, 4, 2), (512, 64, 0), (33, 33, 5)] {
        let rows = 9;
        let logits: Vec<f32> = (0..rows * ne)
            .map(|i| {
                let v = next();
                let v = if levels > 0 { (v * levels as f32).floor() } else { v * 8.0 - 4.0 };
                match i % 97 {
                    0 => 30.0,
                    1 => -30.0,
                    _ => v,
                }
            })
            .collect();
        let bias: Vec<f32> = (0..ne).map(|i| if levels > 0 { 0.25 } else { (i % 7) as f32 * 0.01 }).collect();
        let scale = 1.5;
        let (sel, wts) = gm.probe_route(&gpu, &logits, &bias, used, scale, None).unwrap();
        for r in 0..rows {
            let l = &logits[r * ne..(r + 1) * ne];
            let probs: Vec<f32> = l.iter().map(|&z| dsv4_model::ops::softplus(z).sqrt()).collect();
            let mut order: Vec<usize> = (0..ne).collect();
            order.sort_by(|&a, &b| (probs[b] + bias[b]).total_cmp(&(probs[a] + bias[a])));
            let want: Vec<i32> = order[..used].iter().map(|&x| x as i32).collect();
            assert_eq!(&sel[r * used..(r + 1) * used], &want[..], "{ne} experts, {used} used, levels {levels}, row {r}");
            let sum: f32 = order[..used].iter().map(|&x| probs[x]).sum();
            for (k, &x) in order[..used].iter().enumerate() {
                let w = scale * probs[x] / sum;
                let got = wts[r * used + k];
                assert!((got - w).abs() <= 1e-6 * w.abs().max(1.0), "{ne} experts row {r} pick {k}: weight {got} vs {w}");
            }
        }
    }
    assert!(gm.probe_route(&gpu, &[0.0; 513], &[0.0; 513], 6, 1.0, None).is_err(), "more experts than the kernel takes");
    // Hash layers: row r takes table row toks[r] as it is (the bias is not used), weighted
    // by its experts' scores; 40 picks cover the lanes' second round.
    for (ne, used) in [(256usize, 6usize), (64, 40)] {
        let rows = 5;
        let logits: Vec<f32> = (0..rows * ne).map(|_| next() * 8.0 - 4.0).collect();
        let bias = vec![100.0f32; ne];
        let table: Vec<i32> = (0..7 * used).map(|i| ((i * 37 + i / used * 11) % ne) as i32).collect();
        let toks: Vec<i32> = vec![3, 0, 6, 3, 1];
        let (sel, wts) = gm.probe_route(&gpu, &logits, &bias, used, 2.0, Some((&table, &toks))).unwrap();
        for r in 0..rows {
            let want = &table[toks[r] as usize * used..(toks[r] as usize + 1) * used];
            assert_eq!(&sel[r * used..(r + 1) * used], want, "hash routing, {ne} experts, row {r}");
            let probs: Vec<f32> = want.iter().map(|&x| dsv4_model::ops::softplus(logits[r * ne + x as usize]).sqrt()).collect();
            let sum: f32 = probs.iter().sum();
            for (k, p) in probs.iter().enumerate() {
                let (got, w) = (wts[r * used + k], 2.0 * p / sum);
                assert!((got - w).abs() <= 1e-6 * w.abs().max(1.0), "hash row {r} pick {k}: weight {got} vs {w}");
            }
        }
    }
    let table = [0i32, 1, 2, 3, 4, 300];
    assert!(gm.probe_route(&gpu, &[0.0; 256], &[0.0; 256], 6, 1.0, Some((&table, &[0]))).is_err(), "an expert past the end");
}
