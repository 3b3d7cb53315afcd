//! Times single-token decode of the GPU forward pass on a synthetic model with DeepSeek V4
//! Flash's real shapes and a prefix of its layers (or on a given GGUF).
//!
//! `decode_bench [--layers N] [--quant q2|q4] [--prompt N] [--tokens N] [--gpu N] [--model PATH]
//! [--numerics plain,official] [--official] [--decode graph,eager,chunk] [--no-graph]
//! [--host-experts] [--profile] [--batch N,M,..] [--launches overlap,serial]
//! [--experts auto,slots,grouped] [--dense cores,tensor] [--batch-tokens random,greedy]
//! [--prompt-ids FILE]`
//!
//! Without `--model`, it writes the synthetic file (what `dsv4 synth --preset flash --layers N
//! --quant q2` writes) to a temporary folder first, then runs every combination of the listed
//! numerics (default plain; `--official` = `--numerics official`) and decode paths (default
//! graph; `--no-graph` = `--decode chunk`, the path of earlier versions) on that one upload,
//! each on a fresh state. Greedy decode: each step feeds the previous step's argmax; the time
//! of a step is host wall time around `GpuModel::forward` (upload of the token, the launches
//! or the graph replay, the logits download). Reported per combination: median and mean over
//! the decode steps after the prompt (which runs in chunks; its rate is printed too),
//! the first step's time (it captures the graph), kernel launches per token and per layer,
//! and whether the greedy tokens equal the first combination's of the same numerics.
//! `--launches` lists launch modes to run each combination under (default overlap: kernels
//! as programmatic dependent launches where the device has them; serial: each kernel after
//! the previous one; a mode may repeat, to alternate).
//! `--host-experts` makes the chunk path read the chosen experts back to the host (v2).
//! `--profile` then runs the prompt once more with every operation timed on its own (a
//! synchronization around each, so small operations read high) and prints where the time goes.
//! `--batch 1,8,32` then times decode steps of that many sessions together
//! (`GpuModel::forward_step`, each session with its own prompt and tokens, the first
//! numerics listed):
//! the step's host wall time (upload, graph replay, every session's argmax reduced on the device
//! and downloaded, as greedy serving asks; until v17 the whole logit rows) over
//! `--tokens` steps, and with `--profile` one eager step of each size, operation by operation;
//! `--experts` lists how the batches read the routed experts (`ExpertReads`; default auto), each
//! batch size timed under each in turn (a mode may repeat, to alternate); `--dense` likewise
//! lists where the batches' dense Q8_0 products run (CUDA cores or tensor cores, the default;
//! same bits); `--batch-tokens` likewise lists what a batch feeds back each step (pseudo-random
//! tokens, the default, or each session's own argmax, as greedy serving does: how alike the
//! tokens are decides how many experts a step reads, so each line reports the distinct tokens
//! a step); `--prompt-ids` cuts the batches' prompts from token ids (`dsv4 tokenize`'s JSON
//! array) instead of pseudo-random ones.
//!
//! First measurement (H100 80GB HBM3, q2, 32-token prompt, 64 decode steps; one token per
//! call, no graph capture): 2 layers 1.50 ms/token, 6 layers 3.94 ms, 12 layers 7.51 ms, so
//! about 0.6 ms per layer, launch- and sync-bound (some 60 launches per layer, one host
//! read-back per score-routed layer), far from the weight-bandwidth ceiling. Later versions:
//! `bench/README.md` ("CUDA forward pass").

use std::path::PathBuf;
use std::time::Instant;

use dsv4_cuda::{Decode, DecodeOptions, DenseProducts, ExpertReads, Gpu, GpuModel};
use dsv4_model::{ExpertMix, Model, Next, Numerics, Want};
use dsv4_synth::{Preset, SynthSpec};

struct Args {
    layers: usize,
    mix: ExpertMix,
    prompt: usize,
    tokens: usize,
    gpu: usize,
    model: Option<PathBuf>,
    numerics: Vec<Numerics>,
    decode: Vec<Decode>,
    host_experts: bool,
    profile: bool,
    batch: Vec<usize>,
    /// `serial_launches` of each run, in order.
    launches: Vec<bool>,
    /// How the batches read the routed experts, each in turn.
    experts: Vec<ExpertReads>,
    /// Where the batches' dense Q8_0 products run, each in turn.
    dense: Vec<DenseProducts>,
    /// What the batches feed back each step, each in turn: pseudo-random tokens (false) or
    /// each session's own argmax (true), as greedy serving does.
    greedy_feed: Vec<bool>,
    /// Token ids (a JSON array, `dsv4 tokenize`'s output) the batches' prompts are cut from,
    /// each session its own stretch, instead of pseudo-random prompts.
    prompt_ids: Option<Vec<u32>>,
}

/// A comma-separated list of the names in `names`, as their values.
fn list<T: Copy>(flag: &str, v: &str, names: &[(&str, T)]) -> Result<Vec<T>, String> {
    v.split(',')
        .map(|w| {
            names.iter().find(|(n, _)| *n == w).map(|&(_, t)| t).ok_or_else(|| {
                let all: Vec<&str> = names.iter().map(|(n, _)| *n).collect();
                format!("{flag} {w}: one of {}", all.join(", "))
            })
        })
        .collect()
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        layers: 4,
        mix: ExpertMix::Q2,
        prompt: 32,
        tokens: 64,
        gpu: 0,
        model: None,
        numerics: vec![Numerics::Plain],
        decode: vec![Decode::Graph],
        host_experts: false,
        profile: false,
        batch: Vec::new(),
        launches: vec![false],
        experts: vec![ExpertReads::Auto],
        dense: vec![DenseProducts::default()],
        greedy_feed: vec![false],
        prompt_ids: None,
    };
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
            "--official" => a.numerics = vec![Numerics::Official],
            "--numerics" => a.numerics = list(&flag, &val()?, &[("plain", Numerics::Plain), ("official", Numerics::Official)])?,
            "--no-graph" => a.decode = vec![Decode::Chunk],
            "--decode" => a.decode = list(&flag, &val()?, &[("graph", Decode::Graph), ("eager", Decode::Eager), ("chunk", Decode::Chunk)])?,
            "--host-experts" => a.host_experts = true,
            "--profile" => a.profile = true,
            "--batch" => {
                a.batch = val()?.split(',').map(|v| num(v.to_owned())).collect::<Result<Vec<usize>, String>>()?;
                if a.batch.contains(&0) {
                    return Err("--batch sizes must be positive".into());
                }
            }
            "--launches" => a.launches = list(&flag, &val()?, &[("overlap", false), ("serial", true)])?,
            "--experts" => {
                a.experts = list(&flag, &val()?, &[("auto", ExpertReads::Auto), ("slots", ExpertReads::Slots), ("grouped", ExpertReads::Grouped)])?
            }
            "--dense" => a.dense = list(&flag, &val()?, &[("cores", DenseProducts::CudaCores), ("tensor", DenseProducts::TensorCores)])?,
            "--prompt-ids" => {
                let path = val()?;
                let text = std::fs::read_to_string(&path).map_err(|e| format!("--prompt-ids {path}: {e}"))?;
                let ids = text
                    .trim()
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .split(',')
                    .filter(|w| !w.trim().is_empty())
                    .map(|w| w.trim().parse::<u32>().map_err(|e| format!("--prompt-ids {path}: {w:?}: {e}")))
                    .collect::<Result<Vec<u32>, String>>()?;
                a.prompt_ids = Some(ids);
            }
            "--batch-tokens" => a.greedy_feed = list(&flag, &val()?, &[("random", false), ("greedy", true)])?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if a.layers == 0 || a.layers > 43 || a.tokens < 2 || a.prompt == 0 || a.numerics.is_empty() || a.decode.is_empty() || a.launches.is_empty() || a.experts.is_empty() || a.dense.is_empty() || a.greedy_feed.is_empty() {
        return Err("--layers 1..=43, --prompt at least 1, --tokens at least 2, non-empty lists".into());
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
    let mut gm = GpuModel::load(&gpu, &model)?;
    let (free, total) = gpu.mem_info()?;
    eprintln!(
        "{}: {} layers uploaded in {:.1} s ({:.1} of {:.1} GiB in use)",
        gpu.name(),
        model.cfg.n_layer,
        t.elapsed().as_secs_f64(),
        (total - free) as f64 / (1u64 << 30) as f64,
        total as f64 / (1u64 << 30) as f64
    );
    let layers = model.cfg.n_layer as f64;
    let prompt: Vec<u32> = (0..a.prompt as u64).map(|i| ((i * 2_654_435_761 + 17) % model.cfg.vocab_size as u64) as u32).collect();
    let mut table = Vec::new();
    for &num in &a.numerics {
        let mut first_tokens: Option<Vec<u32>> = None;
        for (&decode, &serial_launches) in a.decode.iter().flat_map(|d| a.launches.iter().map(move |l| (d, l))) {
            gm.set_options(DecodeOptions { decode, host_experts: a.host_experts, serial_launches, experts: ExpertReads::Auto, dense: DenseProducts::default() });
            let mode = if serial_launches { "serial" } else { "overlap" };
            let mut st = gm.new_state(&gpu, (a.prompt + a.tokens) as u64)?;
            let t = Instant::now();
            let mut logits = gm.forward(&mut st, &prompt, num)?;
            let prefill = t.elapsed().as_secs_f64();
            let mut times = Vec::with_capacity(a.tokens);
            let mut chosen = Vec::with_capacity(a.tokens);
            let mut launches = Vec::with_capacity(a.tokens);
            for _ in 0..a.tokens {
                let tok = argmax(&logits);
                chosen.push(tok);
                let before = gm.launch_count();
                let t = Instant::now();
                logits = gm.forward(&mut st, &[tok], num)?;
                times.push(t.elapsed().as_secs_f64());
                launches.push(gm.launch_count() - before);
                if logits.iter().any(|v| !v.is_finite()) {
                    return Err("non-finite logits".into());
                }
            }
            // Kernels per token: what the graph holds, else what a step queued (the second
            // step: the first may also capture).
            let kernels = gm.graph_kernels(1, num).unwrap_or(launches[1]);
            let first = times[0];
            let (median, mean) = after_first(&times);
            let same = match &first_tokens {
                None => {
                    first_tokens = Some(chosen.clone());
                    "reference".to_string()
                }
                Some(f) => format!("{} of {} tokens as the reference", f.iter().zip(&chosen).take_while(|(x, y)| x == y).count(), f.len()),
            };
            println!("tokens {num:?} {decode:?} {mode}: {chosen:?}");
            println!(
                "layers {} ({}, {num:?}, {decode:?}, {mode}{}), prompt {} tokens: {:.1} t/s; decode {} tokens: median {:.3} ms ({:.1} t/s), mean {:.3} ms, first {:.1} ms, {:.3} ms per layer; {} kernels per token ({:.1} per layer); greedy: {same}",
                model.cfg.n_layer,
                a.mix.name(),
                if a.host_experts && decode == Decode::Chunk { ", host experts" } else { "" },
                a.prompt,
                a.prompt as f64 / prefill,
                times.len() - 1,
                median * 1e3,
                1.0 / median,
                mean * 1e3,
                first * 1e3,
                median * 1e3 / layers,
                kernels,
                kernels as f64 / layers
            );
            table.push(format!("| {} | {num:?} | {decode:?} {mode} | {:.3} | {:.3} | {kernels} | {:.1} |", model.cfg.n_layer, median * 1e3, median * 1e3 / layers, kernels as f64 / layers));
        }
    }
    println!("| layers | numerics | decode | median ms/token | ms/layer | kernels/token | kernels/layer |");
    println!("|---:|---|---|---:|---:|---:|---:|");
    for row in table {
        println!("{row}");
    }
    if a.profile {
        let num = a.numerics[0];
        gm.set_options(DecodeOptions { decode: Decode::Chunk, host_experts: a.host_experts, serial_launches: a.launches[0], experts: ExpertReads::Auto, dense: DenseProducts::default() });
        let mut st = gm.new_state(&gpu, (a.prompt + a.tokens) as u64)?;
        profiled(&gm, &format!("prompt ({num:?})"), || gm.forward(&mut st, &prompt, num).map(drop))?;
    }
    for &n in &a.batch {
        for &serial in &a.launches {
            for &experts in &a.experts {
                for &dense in &a.dense {
                    for &greedy in &a.greedy_feed {
                        batch_steps(&gpu, &mut gm, &a, n, serial, (experts, dense), greedy)?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// Decode steps of `n` sessions together: each session has its own prompt (pseudo-random, or
/// its stretch of `--prompt-ids`), and
/// its step tokens are pseudo-random too, or (`greedy`) its own argmax of the step before,
/// as in greedy serving; which experts a batch reads depends on how alike its tokens are, so
/// the distinct tokens a step are reported.
fn batch_steps(
    gpu: &Gpu,
    gm: &mut GpuModel,
    a: &Args,
    n: usize,
    serial_launches: bool,
    (experts, dense): (ExpertReads, DenseProducts),
    greedy: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let num = a.numerics[0];
    let vocab = gm.config().vocab_size as u64;
    let tok = |i: u64| ((i * 2_654_435_761 + 17) % vocab) as u32;
    gm.set_options(DecodeOptions { decode: Decode::Graph, host_experts: false, serial_launches, experts, dense });
    let mut states = Vec::with_capacity(n);
    for i in 0..n {
        let mut st = gm.new_state(gpu, (a.prompt + a.tokens + 2) as u64)?;
        // Distinct prompts (as in serving): their tokens route to different experts.
        let p: Vec<u32> = match &a.prompt_ids {
            Some(ids) => {
                let from = i * a.prompt;
                ids.get(from..from + a.prompt).ok_or_else(|| format!("--prompt-ids has {} ids; {n} prompts of {} need {}", ids.len(), a.prompt, n * a.prompt))?.to_vec()
            }
            None => (0..a.prompt as u64).map(|k| tok(k * (i as u64 + 1) + 7919 * i as u64)).collect(),
        };
        gm.forward(&mut st, &p, num)?;
        states.push(st);
    }
    // Each session's argmax, reduced on the device, as greedy serving asks for it.
    let wants = vec![Want::Argmax; n];
    let mut times = Vec::with_capacity(a.tokens);
    let mut distinct = Vec::with_capacity(a.tokens);
    let mut toks: Vec<u32> = (0..n).map(|i| tok((a.prompt * (i + 1) + 7919 * i) as u64)).collect();
    for step in 0..a.tokens {
        let mut refs: Vec<&mut dsv4_cuda::GpuState> = states.iter_mut().collect();
        let mut sorted = toks.clone();
        sorted.sort_unstable();
        sorted.dedup();
        distinct.push(sorted.len());
        let t = Instant::now();
        let out = gm.forward_step_picked(&mut refs, &toks, &wants, num)?;
        times.push(t.elapsed().as_secs_f64());
        let finite = |next: &Next| match next {
            Next::Reduced(r) => r.max.is_finite(),
            Next::Logits(l) => l.iter().all(|v| v.is_finite()),
        };
        if !out.iter().all(finite) {
            return Err("non-finite logits".into());
        }
        toks = if greedy {
            out.iter()
                .map(|next| match next {
                    Next::Reduced(r) => r.argmax,
                    Next::Logits(l) => argmax(l),
                })
                .collect()
        } else {
            (0..n).map(|i| tok(((a.prompt + step + 1) * (i + 1) + 7919 * i) as u64)).collect()
        };
    }
    let first = times[0];
    let (median, mean) = after_first(&times);
    distinct.sort_unstable();
    println!(
        "batch {n} ({num:?}, {}, experts {experts:?}, dense {}, {} tokens, {} layers, {} prompt {}): median step {:.3} ms, {:.1} t/s in all, {:.1} t/s per session; mean {:.3} ms; first step {:.1} ms; distinct tokens a step: median {}, least {}",
        if serial_launches { "serial" } else { "overlap" },
        if dense == DenseProducts::TensorCores { "tensor" } else { "cores" },
        if greedy { "greedy" } else { "random" },
        gm.config().n_layer,
        if a.prompt_ids.is_some() { "text" } else { "random" },
        a.prompt,
        median * 1e3,
        n as f64 / median,
        1.0 / median,
        mean * 1e3,
        first * 1e3,
        distinct[distinct.len() / 2],
        distinct[0]
    );
    // What the engine does every 1,024 tokens, before a prompt's last token and when a session
    // continues past an answer's end (a checkpoint), and for disk saves and forks (the whole
    // state), while every session of the batch waits.
    // Each result is kept, as a session keeps its checkpoints: the next one lands in fresh
    // host pages.
    let (mut cks, mut hosts, mut t_ck, mut t_host) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for st in states.iter().cycle().take(5) {
        let t0 = Instant::now();
        cks.push(gm.checkpoint(st)?);
        t_ck.push(t0.elapsed().as_secs_f64());
        let t0 = Instant::now();
        hosts.push(gm.to_host(st)?);
        t_host.push(t0.elapsed().as_secs_f64());
    }
    println!(
        "one session of {} tokens: checkpoint {:.2} ms ({:.1} MB), whole state to the host {:.2} ms (medians of 4)",
        states[0].pos(),
        after_first(&t_ck).0 * 1e3,
        cks[0].bytes() as f64 / 1e6,
        after_first(&t_host).0 * 1e3
    );
    drop((cks, hosts));
    if a.profile {
        gm.set_options(DecodeOptions { decode: Decode::Eager, host_experts: false, serial_launches, experts, dense });
        // The next step's tokens: the profile sees the experts this mode reads.
        let mut refs: Vec<&mut dsv4_cuda::GpuState> = states.iter_mut().collect();
        profiled(gm, &format!("batch {n} step ({num:?})"), || gm.forward_step_picked(&mut refs, &toks, &wants, num).map(drop))?;
    }
    Ok(())
}

/// Runs `f` once with per-operation profiling on and prints where its time went.
fn profiled(gm: &GpuModel, what: &str, f: impl FnOnce() -> dsv4_cuda::Result<()>) -> Result<(), Box<dyn std::error::Error>> {
    gm.set_profiling(true);
    let t = Instant::now();
    let r = f();
    let wall = t.elapsed().as_secs_f64();
    let prof = gm.profile();
    gm.set_profiling(false);
    r?;
    let total: f64 = prof.iter().map(|p| p.2).sum();
    println!("profiled {what}: {:.2} ms wall, {:.2} ms in {} labelled operations", wall * 1e3, total * 1e3, prof.iter().map(|p| p.1).sum::<u64>());
    for (label, calls, secs) in prof.iter().take(30) {
        println!("{:>9.3} ms {:>5.1}% {calls:>6}x  {label}", secs * 1e3, 100.0 * secs / total.max(1e-12));
    }
    Ok(())
}

/// The median of the steps after the first (which may capture a graph), and their mean.
fn after_first(times: &[f64]) -> (f64, f64) {
    let mut steps = times[1..].to_vec();
    let mean = steps.iter().sum::<f64>() / steps.len() as f64;
    steps.sort_by(f64::total_cmp);
    (steps[steps.len() / 2], mean)
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
