//! The engine on the CUDA runner against the CPU runner, on the tiny model with plain
//! numerics: greedy generation, rewinds, forks and the disk cache give the same tokens.
//! Skips (saying so) without a GPU; `DSV4_REQUIRE_GPU=1` makes that a failure.

mod common;

use dsv4_engine::{DiskCache, Generation, GenerationParams, Runner, SamplingParams, Session, SessionPool};
use dsv4_model::{Model, Numerics};
use dsv4_synth::{Preset, SynthSpec};
use dsv4_tokenizer::Tokenizer;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

const CTX: usize = 2048;

fn runners(test: &str) -> Option<(Runner, Runner, Tokenizer, tempfile::TempDir)> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    dsv4_synth::write_model(&path, &SynthSpec { preset: Preset::Tiny, mix: dsv4_model::ExpertMix::Q2, seed: 21 }).unwrap();
    let model = Arc::new(Model::load(&path).unwrap());
    let gpu = match Runner::cuda(model.clone(), 0, CTX, 2) {
        Ok((r, _)) => r,
        Err(e) => {
            if std::env::var("DSV4_REQUIRE_GPU").is_ok_and(|v| v == "1") {
                panic!("{test}: DSV4_REQUIRE_GPU=1 but the CUDA runner failed: {e}");
            }
            eprintln!("SKIPPED {test}: no usable CUDA GPU here ({e})");
            return None;
        }
    };
    Some((Runner::cpu(model), gpu, Tokenizer::bundled().unwrap(), dir))
}

fn params(n: usize) -> GenerationParams {
    GenerationParams { sampling: SamplingParams::greedy(), max_tokens: n, loop_guard: None, numerics: Numerics::Plain, prefill_chunk: 64, ..Default::default() }
}

fn run(r: &Runner, tok: &Tokenizer, s: &mut Session, prompt: &[u32], n: usize) -> (Vec<u32>, usize) {
    let no = AtomicBool::new(false);
    let mut g = Generation::start(r, tok, s, prompt, params(n), CTX, &no, &mut |_, _| {}).unwrap();
    let reused = g.prefill.reused;
    while g.next(false, &no).unwrap().finish.is_none() {}
    (g.generated().to_vec(), reused)
}

fn prompt(tok: &Tokenizer, text: &str) -> Vec<u32> {
    let s = tok.specials();
    let mut ids = vec![s.bos, s.user];
    ids.extend(tok.encode(text));
    ids.extend([s.assistant, s.think_end]);
    ids
}

#[test]
fn cuda_runner_generates_like_the_cpu_through_rewinds_forks_and_disk() {
    let Some((cpu, gpu, tok, dir)) = runners("cuda_runner_generates_like_the_cpu") else { return };
    let long: String = (0..300).map(|i| format!("w{i} ")).collect();
    let p = prompt(&tok, &long);
    let (c, _) = run(&cpu, &tok, &mut Session::new(), &p, 64);
    let mut gs = Session::new();
    let (g, _) = run(&gpu, &tok, &mut gs, &p, 64);
    assert_eq!(g, c, "greedy tokens differ between the GPU and the CPU");
    // Regenerate on the GPU session: rewinds to the prompt's checkpoint, same answer.
    let (again, reused) = run(&gpu, &tok, &mut gs, &p, 64);
    assert_eq!(reused, p.len() - 1);
    assert_eq!(again, c);
    // A fork (copy through the host) continues like the original.
    let mut pool = SessionPool::new(2);
    let (s, _) = pool.acquire(&gpu, &p, &Session::new);
    run(&gpu, &tok, s, &p, 8);
    let mut side = p[..p.len() / 2].to_vec();
    side.extend(tok.encode(" another question"));
    let (s, placement) = pool.acquire(&gpu, &side, &Session::new);
    assert!(matches!(placement, dsv4_engine::Placement::Forked { .. } | dsv4_engine::Placement::Fresh), "{placement:?}");
    let (forked, _) = run(&gpu, &tok, s, &side, 16);
    let (want, _) = run(&cpu, &tok, &mut Session::new(), &side, 16);
    assert_eq!(forked, want);
    // Disk: a GPU state saved, restored into a fresh GPU session, continues like the CPU.
    let disk = Arc::new(DiskCache::open(dir.path(), 1 << 30, cpu.model(), Numerics::Plain).unwrap());
    let mut a = Session::new();
    a.attach_disk(disk.clone());
    run(&gpu, &tok, &mut a, &p, 4);
    let mut next = p.clone();
    next.extend(tok.encode(" and more"));
    let mut b = Session::new();
    b.attach_disk(disk);
    let (restored, reused) = run(&gpu, &tok, &mut b, &next, 16);
    assert_eq!(reused, p.len() - 1, "not restored from disk");
    let (want, _) = run(&cpu, &tok, &mut Session::new(), &next, 16);
    assert_eq!(restored, want);
    eprintln!("cuda runner: 64 greedy tokens, rewind, fork and disk restore all equal to the CPU ({})", gpu.describe());
}

#[test]
fn cuda_batch_of_8_generates_what_each_job_does_alone() {
    let Some((_, gpu, tok, _dir)) = runners("cuda_batch_of_8_generates_what_each_job_does_alone") else { return };
    common::batch::batch_matches_alone(&gpu, &tok, CTX, Numerics::Plain);
    common::batch::batch_matches_alone(&gpu, &tok, CTX, Numerics::Official);
}
