//! `dsv4 bench-batch`: the batch scheduler's throughput and latency, measured on the engine
//! itself (no HTTP): aggregate decode rate with N streams generating together, and the time
//! to first token of a short request that arrives while a long prompt is being prefilled.

use anyhow::bail;
use dsv4_engine::{BatchEvent, GenerationParams, SamplingParams, Scheduler, Session, SessionPool, Verdict};
use dsv4_model::{Model, Numerics};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// The model, and the text the prompts are cut from (each stream its own stretch).
    #[command(flatten)]
    input: crate::bench::Input,
    /// Numbers of streams to measure, each run on its own.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    streams: Vec<usize>,
    /// Prompt tokens per stream.
    #[arg(long, default_value_t = 512)]
    context: usize,
    /// Tokens each stream decodes (timed).
    #[arg(long, default_value_t = 32)]
    decode: usize,
    /// Draw with DeepSeek's default sampling (temperature 1, min-p 0.05, stream i seeded
    /// with i), what agents ask for, instead of greedily.
    #[arg(long)]
    sampled: bool,
    /// Instead of streams: a prompt of this many tokens is prefilled and a short request
    /// arrives after the first step; its time to first token is measured.
    #[arg(long)]
    ttft_long: Option<usize>,
    /// The short request's prompt tokens (with --ttft-long).
    #[arg(long, default_value_t = 200)]
    ttft_short: usize,
    /// Prompt tokens per scheduler step while prompts are being prefilled (default: the
    /// server's, what the device takes at once: 1,024 on a GPU, 512 on the CPU).
    #[arg(long)]
    step_tokens: Option<usize>,
    #[arg(long)]
    plain_numerics: bool,
    #[command(flatten)]
    device: crate::device::DeviceArgs,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    if a.streams.is_empty() || a.streams.contains(&0) || a.context == 0 || a.decode == 0 || a.step_tokens == Some(0) {
        bail!("--streams, --context, --decode and --step-tokens must be positive");
    }
    let (file, tok, ids) = a.input.load()?;
    let bos = tok.specials().bos;
    let most = *a.streams.iter().max().expect("checked non-empty");
    let (need, ctx) = match a.ttft_long {
        Some(long) => (long + a.ttft_short, long.max(a.ttft_short) + a.decode + 2),
        None => (most * a.context, a.context + a.decode + 2),
    };
    if ids.len() < need {
        bail!("the text has {} tokens; this run needs {need}", ids.len());
    }
    // Prompt i: BOS and the i-th stretch of `len` tokens starting at `from`.
    let prompt = |from: usize, len: usize| -> Vec<u32> { std::iter::once(bos).chain(ids[from..from + len].iter().copied()).collect() };
    let name = crate::bench::model_name(&file);
    let quant = crate::bench::quant_name(&file);
    let model = Arc::new(Model::from_file(file)?);
    let n_layer = model.cfg.n_layer;
    let sessions = if a.ttft_long.is_some() { 2 } else { most };
    let runner = a.device.runner(model, ctx, sessions)?;
    let step_tokens = a.step_tokens.unwrap_or(runner.prefill_piece());
    let numerics = if a.plain_numerics { Numerics::Plain } else { Numerics::Official };
    let params_of = |i: u64| {
        let sampling = if a.sampled { SamplingParams { seed: Some(i), ..SamplingParams::default() } } else { SamplingParams::greedy() };
        GenerationParams { sampling, max_tokens: a.decode, loop_guard: None, numerics, ..Default::default() }
    };
    let sampling = if a.sampled { "sampled" } else { "greedy" };
    let (machine, (card, backend)) = (crate::bench::cpu_name(), crate::bench::card_and_backend(&runner));
    let head = format!("{},{machine},{card},{backend},{name},{quant},{n_layer},{}", crate::today(), if a.plain_numerics { "plain" } else { "official" });
    let eos = tok.specials().eos;
    let err = |e: dsv4_engine::GenError| anyhow::anyhow!("{e}");

    if let Some(long) = a.ttft_long {
        let mut sched = Scheduler::new(SessionPool::new(2), 2, step_tokens, ctx, eos);
        sched.admit(&runner, 0, &prompt(0, long), params_of(0), &Session::new).map_err(err)?;
        let mut progress = Progress::default();
        sched.step(&runner, &mut |id, ev| progress.hear(id, &ev));
        let arrived = Instant::now();
        sched.admit(&runner, 1, &prompt(long, a.ttft_short), params_of(1), &Session::new).map_err(err)?;
        let mut ttft = None;
        while sched.active() > 0 {
            sched.step(&runner, &mut |id, ev| {
                if id == 1 && matches!(ev, BatchEvent::Token(_)) && ttft.is_none() {
                    ttft = Some(arrived.elapsed().as_secs_f64());
                }
                progress.hear(id, &ev)
            });
            if let Some(f) = progress.failed.take() {
                bail!("{f}");
            }
        }
        let long_ready = progress.ready_at.iter().find(|r| r.0 == 0).map_or(f64::NAN, |&(_, t)| t.duration_since(arrived).as_secs_f64());
        println!("date,machine,card,backend,model,quant,layers,numerics,long_prompt,short_prompt,step_tokens,short_ttft_s,long_ready_after_arrival_s");
        println!("{head},{long},{},{},{:.3},{long_ready:.3}", a.ttft_short, step_tokens, ttft.unwrap_or(f64::NAN));
        return Ok(ExitCode::SUCCESS);
    }

    println!("date,machine,card,backend,model,quant,layers,numerics,streams,context,decode_tokens,decode_s,aggregate_tps,per_stream_tps,vs_one_stream,sampling,median_step_ms,steady_tps,steady_vs_one_stream,end_step_ms");
    let mut single = None;
    for &n in &a.streams {
        // Every prompt prefilled in the first step, so the timed steps only decode.
        let mut sched = Scheduler::new(SessionPool::new(n), n, n * (a.context + 1), ctx, eos);
        for i in 0..n {
            sched.admit(&runner, i as u64, &prompt(i * a.context, a.context), params_of(i as u64), &Session::new).map_err(err)?;
        }
        let mut progress = Progress::default();
        while progress.ready_at.len() < n {
            sched.step(&runner, &mut |id, ev| progress.hear(id, &ev));
            if let Some(f) = progress.failed.take() {
                bail!("{f}");
            }
        }
        // One untimed step first: it captures the decode graph for this many sessions.
        sched.step(&runner, &mut |id, ev| progress.hear(id, &ev));
        let before = progress.tokens;
        let (mut distinct, mut steps) = (Vec::new(), Vec::new());
        let t = Instant::now();
        while sched.active() > 0 {
            progress.drawn.clear();
            let t0 = Instant::now();
            sched.step(&runner, &mut |id, ev| progress.hear(id, &ev));
            steps.push(t0.elapsed().as_secs_f64() * 1e3);
            if let Some(f) = progress.failed.take() {
                bail!("{f}");
            }
            progress.drawn.sort_unstable();
            progress.drawn.dedup();
            distinct.push(progress.drawn.len());
        }
        let secs = t.elapsed().as_secs_f64();
        // How alike the streams' tokens are decides how many routed experts a step reads.
        distinct.sort_unstable();
        if let (Some(least), Some(mid)) = (distinct.first(), distinct.get(distinct.len() / 2)) {
            eprintln!("{n} streams: distinct tokens a step: median {mid}, least {least}");
        }
        // The last step also ends every answer (`Scheduler::close`; until f6e2b1e a checkpoint
        // each), a cost of the answer rather than of its tokens: short runs like these pay it
        // over few tokens, so the steady rate (the median step) is reported beside the total.
        let end = steps.last().copied().unwrap_or(f64::NAN);
        steps.sort_by(f64::total_cmp);
        let median = steps.get(steps.len() / 2).copied().unwrap_or(f64::NAN);
        let steady = n as f64 * 1e3 / median;
        let tokens = progress.tokens - before;
        let agg = tokens as f64 / secs;
        let vs = single.map_or(String::new(), |s: (f64, f64)| format!("{:.2}", agg / s.0));
        let steady_vs = single.map_or(String::new(), |s: (f64, f64)| format!("{:.2}", steady / s.1));
        if n == 1 {
            single = Some((agg, steady));
        }
        println!("{head},{n},{},{tokens},{secs:.3},{agg:.2},{:.2},{vs},{sampling},{median:.3},{steady:.2},{steady_vs},{end:.3}", a.context, agg / n as f64);
    }
    Ok(ExitCode::SUCCESS)
}

/// What the steps reported so far.
#[derive(Default)]
struct Progress {
    tokens: usize,
    /// The tokens drawn in the current step.
    drawn: Vec<u32>,
    ready_at: Vec<(u64, Instant)>,
    failed: Option<String>,
}

impl Progress {
    fn hear(&mut self, id: u64, ev: &BatchEvent) -> Verdict {
        match ev {
            BatchEvent::Ready(_) => self.ready_at.push((id, Instant::now())),
            BatchEvent::Token(t) => {
                self.tokens += 1;
                self.drawn.push(*t);
            }
            BatchEvent::Failed(e) => self.failed = Some(format!("job {id}: {e}")),
            BatchEvent::Finished(_) => {}
        }
        Verdict::default()
    }
}
