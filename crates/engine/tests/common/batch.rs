//! One test body for every runner (CPU here, CUDA in `cuda.rs`): jobs run together in the
//! scheduler generate exactly what each generates alone.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;

use dsv4_engine::{BatchEvent, Finish, Generation, GenerationParams, JobId, Runner, SamplingParams, Scheduler, Session, SessionPool, Verdict};
use dsv4_model::Numerics;
use dsv4_tokenizer::Tokenizer;

/// Eight jobs: prompts of different lengths (two sharing a long prefix, so one forks from the
/// other while it runs), greedy and seeded sampling, different lengths of answer.
pub fn jobs(tok: &Tokenizer, numerics: Numerics) -> Vec<(Vec<u32>, GenerationParams)> {
    let s = tok.specials();
    let long: String = (0..120).map(|i| format!("item {i}, ")).collect();
    let texts = [
        "Hi".to_owned(),
        format!("{long} first question"),
        "What is the capital of Italy?".to_owned(),
        format!("{long} a second, different question"),
        "Write a haiku about compilers.".to_owned(),
        "One".to_owned(),
        (0..40).map(|i| format!("step {i}; ")).collect(),
        "Summarise: the quick brown fox jumps over the lazy dog.".to_owned(),
    ];
    texts
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let mut ids = vec![s.bos, s.user];
            ids.extend(tok.encode(text));
            ids.extend([s.assistant, s.think_end]);
            let sampling = if i % 2 == 0 { SamplingParams::greedy() } else { SamplingParams { temperature: 0.9, seed: Some(100 + i as u64), ..SamplingParams::default() } };
            let params = GenerationParams { sampling, max_tokens: 10 + 3 * i, loop_guard: None, numerics, prefill_chunk: 64, ..Default::default() };
            (ids, params)
        })
        .collect()
}

/// Each job alone, on a fresh session: (tokens, finish).
pub fn alone(runner: &Runner, tok: &Tokenizer, ctx: usize, jobs: &[(Vec<u32>, GenerationParams)]) -> Vec<(Vec<u32>, Finish)> {
    let no = AtomicBool::new(false);
    jobs.iter()
        .map(|(p, params)| {
            let mut s = Session::new();
            let mut g = Generation::start(runner, tok, &mut s, p, params.clone(), ctx, &no, &mut |_, _| {}).unwrap();
            loop {
                if let Some(f) = g.next(false, &no).unwrap().finish {
                    break (g.generated().to_vec(), f);
                }
            }
        })
        .collect()
}

/// What a scheduler run reported per job, and the order of events.
#[derive(Default)]
pub struct Outcome {
    pub tokens: HashMap<JobId, Vec<u32>>,
    pub finish: HashMap<JobId, Finish>,
    /// (step, job, event kind) in order.
    pub log: Vec<(usize, JobId, &'static str)>,
}

/// Runs the scheduler until every job has ended, admitting job `i` at step `arrive[i]`.
pub fn run(sched: &mut Scheduler, runner: &Runner, jobs: &[(Vec<u32>, GenerationParams)], arrive: &[usize]) -> Outcome {
    let mut out = Outcome::default();
    let mut step = 0;
    loop {
        for (i, (p, params)) in jobs.iter().enumerate() {
            if arrive[i] == step {
                sched.admit(runner, i as JobId, p, params.clone(), &Session::new).unwrap();
                out.log.push((step, i as JobId, "admit"));
            }
        }
        if sched.active() == 0 && arrive.iter().all(|&a| a < step) {
            return out;
        }
        sched.step(runner, &mut |id, ev| {
            match ev {
                BatchEvent::Ready(_) => out.log.push((step, id, "ready")),
                BatchEvent::Token(t) => {
                    out.log.push((step, id, "token"));
                    out.tokens.entry(id).or_default().push(t);
                }
                BatchEvent::Finished(f) => {
                    out.log.push((step, id, "end"));
                    out.finish.insert(id, f);
                }
                BatchEvent::Failed(e) => panic!("job {id} failed: {e}"),
            }
            Verdict::default()
        });
        step += 1;
        assert!(step < 10_000, "the scheduler never finished");
    }
}

/// The identical-output check: all eight jobs at once (prefills interleaved with decodes in
/// 48-token steps) and staggered arrivals both give each job its tokens alone.
pub fn batch_matches_alone(runner: &Runner, tok: &Tokenizer, ctx: usize, numerics: Numerics) {
    let jobs = jobs(tok, numerics);
    let want = alone(runner, tok, ctx, &jobs);
    for arrive in [vec![0; 8], vec![0, 3, 3, 5, 9, 9, 14, 20]] {
        let mut sched = Scheduler::new(SessionPool::new(8), 8, 48, ctx, tok.specials().eos);
        let got = run(&mut sched, runner, &jobs, &arrive);
        for (i, (tokens, finish)) in want.iter().enumerate() {
            let id = i as JobId;
            assert_eq!(got.tokens.get(&id).cloned().unwrap_or_default(), *tokens, "job {i} (arrivals {arrive:?}) generated other tokens in the batch");
            assert_eq!(got.finish[&id], *finish, "job {i} ended otherwise in the batch");
        }
        // The batch really ran together: some step carried tokens of several jobs.
        let mut per_step: HashMap<usize, usize> = HashMap::new();
        for &(s, _, kind) in &got.log {
            if kind == "token" {
                *per_step.entry(s).or_default() += 1;
            }
        }
        assert!(per_step.values().any(|&n| n >= 4), "no step decoded four jobs at once: {per_step:?}");
    }
}
