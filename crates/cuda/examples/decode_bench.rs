//! Times single-token decode of the GPU forward pass on a synthetic model with DeepSeek V4
//! Flash's real shapes and a prefix of its layers (or on a given GGUF).
//!
//! `decode_bench [--layers N] [--quant q2|q4] [--prompt N] [--tokens N] [--gpu N] [--model PATH]
//! [--official] [--profile]`
//!
//! Without `--model`, it writes the synthetic file (what `dsv4 synth --preset flash --layers N
//! --quant q2` writes) to a temporary folder first. Greedy decode: each step feeds the
//! previous step's argmax; the time of a step is host wall time around `GpuModel::forward`,
//! which includes the launches, the read-backs of score-routed layers and the logits
//! download. Reported: median and mean over the decode steps, after the prompt (which runs in
//! chunks of `PREFILL_CHUNK` tokens; its rate is printed too). `--official` runs the official numerics
//! (default: plain).
//!
//! First measurement (H100 80GB HBM3, q2, 32-token prompt, 64 decode steps; one token per
//! call, no graph capture): 2 layers 1.50 ms/token, 6 layers 3.94 ms, 12 layers 7.51 ms, so
//! about 0.6 ms per layer, launch- and sync-bound (some 60 launches per layer, one host
//! read-back per score-routed layer), far from the weight-bandwidth ceiling.
//!
//! After chunked forward (same card and settings, plain): 2 layers 1.58 ms, 6 layers 4.00 ms,
//! 12 layers 7.78 ms (0.65 ms per layer: decode unchanged, it runs the same launches); official
//! numerics 1.65 ms at 2 layers. Prefill in chunks of 16: 512-token prompt on 6 layers 401 t/s
//! plain, 379 t/s official (the official products still run one token at a time).
//!
//! Prefill on tensor cores in 256-token chunks (branch prefill; H100, q2, official, 2048-token
//! prompt; `--profile` prints where the time goes): 2 layers 1,181 -> 18,688 t/s, 6 layers
//! 345 -> 5,728 t/s (bench/README.md, CUDA prefill).
//!
//! Routed experts on the device (no host read-back; same H100 run, plain, host path with
//! DSV4_CUDA_HOST_EXPERTS=1 first): 2 layers 1.53 -> 1.41 ms, 6 layers 3.96 -> 3.51 ms
//! (0.661 -> 0.584 ms per layer); official 2 layers 1.68 -> 1.50 ms. Plain greedy tokens
//! identical between the two paths over the 64 steps.

use std::path::PathBuf;
use std::time::Instant;

use dsv4_cuda::{Gpu, GpuModel};
use dsv4_model::{ExpertMix, Model, Numerics};
use dsv4_synth::{Preset, SynthSpec};

struct Args {
    layers: usize,
    mix: ExpertMix,
    prompt: usize,
    tokens: usize,
    gpu: usize,
    model: Option<PathBuf>,
    numerics: Numerics,
    /// Prefill once more with per-operation profiling and print the breakdown.
    profile: bool,
}

fn parse() -> Result<Args, String> {
    let mut a = Args { layers: 4, mix: ExpertMix::Q2, prompt: 32, tokens: 64, gpu: 0, model: None, numerics: Numerics::Plain, profile: false };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or(format!("{flag} needs a value"));
        let num = |v: String| v.parse::<usize>().map_err(|e| format!("{flag} {v}: {e}"));
        match flag.as_str() {
            "--layers" => a.layers = num(val()?)?,
            "--quant" => {
                let v = val()?;
                a.mix = ExpertMix::from_name(&v).ok_or(format!("--quant {v}: q2 or q4"))?;
            }
            "--prompt" => a.prompt = num(val()?)?,
            "--tokens" => a.tokens = num(val()?)?,
            "--gpu" => a.gpu = num(val()?)?,
            "--model" => a.model = Some(PathBuf::from(val()?)),
            "--official" => a.numerics = Numerics::Official,
            "--profile" => a.profile = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if a.layers == 0 || a.layers > 43 || a.tokens == 0 || a.prompt == 0 {
        return Err("--layers 1..=43, --prompt and --tokens at least 1".into());
    }
    Ok(a)
}

fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

fn run(a: Args) -> Result<(), Box<dyn std::error::Error>> {
    let gpu = Gpu::new(a.gpu)?;
    let _dir;
    let path = match &a.model {
        Some(p) => p.clone(),
        None => {
            let dir = tempfile::tempdir()?;
            let p = dir.path().join("flash.gguf");
            let t = Instant::now();
            let spec = SynthSpec { preset: Preset::Flash { layers: a.layers }, mix: a.mix, seed: 1 };
            let r = dsv4_synth::write_model(&p, &spec)?;
            eprintln!("synthesized {} layers ({:.2} GiB) in {:.1} s", a.layers, r.file_bytes as f64 / (1u64 << 30) as f64, t.elapsed().as_secs_f64());
            _dir = dir;
            p
        }
    };
    let model = Model::load(&path)?;
    let t = Instant::now();
    let gm = GpuModel::load(&gpu, &model)?;
    let (free, total) = gpu.mem_info()?;
    eprintln!(
        "{}: {} layers uploaded in {:.1} s ({:.1} of {:.1} GiB in use)",
        gpu.name(),
        model.cfg.n_layer,
        t.elapsed().as_secs_f64(),
        (total - free) as f64 / (1u64 << 30) as f64,
        total as f64 / (1u64 << 30) as f64
    );
    let mut st = gm.new_state(&gpu, (a.prompt + a.tokens) as u64)?;
    let prompt: Vec<u32> = (0..a.prompt as u64).map(|i| ((i * 2_654_435_761 + 17) % model.cfg.vocab_size as u64) as u32).collect();
    let t = Instant::now();
    let mut logits = gm.forward(&mut st, &prompt, a.numerics)?;
    let prefill = t.elapsed().as_secs_f64();
    let mut times = Vec::with_capacity(a.tokens);
    let mut chosen = Vec::with_capacity(a.tokens);
    for _ in 0..a.tokens {
        let tok = argmax(&logits);
        chosen.push(tok);
        let t = Instant::now();
        logits = gm.forward(&mut st, &[tok], a.numerics)?;
        times.push(t.elapsed().as_secs_f64());
        if logits.iter().any(|v| !v.is_finite()) {
            return Err("non-finite logits".into());
        }
    }
    // The greedy tokens, to compare runs (e.g. with DSV4_CUDA_HOST_EXPERTS=1).
    println!("tokens {chosen:?}");
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!(
        "layers {} ({}, {:?}), prompt {} tokens: {:.1} t/s in chunks of {}; decode {} tokens: median {:.2} ms ({:.1} t/s), mean {:.2} ms ({:.1} t/s), {:.3} ms per layer",
        model.cfg.n_layer,
        a.mix.name(),
        a.numerics,
        a.prompt,
        a.prompt as f64 / prefill,
        dsv4_cuda::model::PREFILL_CHUNK,
        a.tokens,
        median * 1e3,
        1.0 / median,
        mean * 1e3,
        1.0 / mean,
        median * 1e3 / model.cfg.n_layer as f64
    );
    if a.profile {
        // The same prompt on a fresh state, every operation timed on its own (a
        // synchronization before and after each, so the sum exceeds the plain run's time).
        let mut st = gm.new_state(&gpu, (a.prompt + a.tokens) as u64)?;
        gm.set_profiling(true);
        let t = Instant::now();
        gm.forward(&mut st, &prompt, a.numerics)?;
        let wall = t.elapsed().as_secs_f64();
        let prof = gm.profile();
        gm.set_profiling(false);
        let total: f64 = prof.iter().map(|p| p.2).sum();
        println!("profiled prefill: {:.1} ms wall, {:.1} ms in {} labelled operations", wall * 1e3, total * 1e3, prof.iter().map(|p| p.1).sum::<u64>());
        for (label, calls, secs) in prof.iter().take(40) {
            println!("{:>9.2} ms {:>5.1}% {:>7} calls  {label}", secs * 1e3, 100.0 * secs / total, calls);
        }
    }
    Ok(())
}

fn main() {
    let a = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("decode_bench: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(a) {
        eprintln!("decode_bench: {e}");
        std::process::exit(1);
    }
}
