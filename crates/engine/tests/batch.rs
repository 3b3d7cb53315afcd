//! The batch scheduler on the tiny model (CPU): identical output alone and in a batch of 8,
//! prefill interleaving, cancellation, busy sessions.

mod common;

use common::batch::{self as b, Outcome};
use dsv4_engine::{BatchEvent, Finish, GenerationParams, JobId, Placement, Runner, SamplingParams, Scheduler, Session, SessionPool, Verdict};
use dsv4_model::Numerics;
use dsv4_tokenizer::Tokenizer;

const CTX: usize = 4096;

fn model() -> &'static (Runner, Tokenizer) {
    common::tiny_cpu()
}

fn greedy(n: usize) -> GenerationParams {
    GenerationParams { sampling: SamplingParams::greedy(), max_tokens: n, loop_guard: None, ..Default::default() }
}

fn words(tok: &Tokenizer, n: usize) -> Vec<u32> {
    let s = tok.specials();
    let mut ids = vec![s.bos, s.user];
    ids.extend(tok.encode(&(0..n).map(|i| format!("w{i} ")).collect::<String>()));
    ids.extend([s.assistant, s.think_end]);
    ids
}

#[test]
fn each_job_generates_the_same_alone_and_in_a_batch_of_8() {
    let (m, tok) = model();
    b::batch_matches_alone(m, tok, CTX, Numerics::Official);
    b::batch_matches_alone(m, tok, CTX, Numerics::Plain);
}

#[test]
fn a_short_prompt_gets_its_first_token_while_a_long_prefill_runs() {
    let (m, tok) = model();
    let jobs = vec![(words(tok, 700), greedy(4)), (words(tok, 10), greedy(4))];
    let mut sched = Scheduler::new(SessionPool::new(4), 4, 32, CTX, tok.specials().eos);
    let Outcome { log, tokens, .. } = b::run(&mut sched, m, &jobs, &[0, 2]);
    let at = |job: JobId, kind: &str| log.iter().position(|&(_, j, k)| j == job && k == kind).unwrap();
    assert!(at(1, "token") < at(0, "ready"), "the newcomer waited for the long prefill: {log:?}");
    // The long prompt kept advancing meanwhile, and both answers are what they are alone.
    let want = b::alone(m, tok, CTX, &jobs);
    assert_eq!(tokens[&0], want[0].0);
    assert_eq!(tokens[&1], want[1].0);
}

#[test]
fn a_cancelled_job_leaves_the_batch_at_once_and_the_others_are_unchanged() {
    let (m, tok) = model();
    let jobs: Vec<_> = (0..3).map(|i| (words(tok, 20 + 10 * i), greedy(12))).collect();
    let want = b::alone(m, tok, CTX, &jobs);
    let mut sched = Scheduler::new(SessionPool::new(3), 3, 512, CTX, tok.specials().eos);
    for (i, (p, params)) in jobs.iter().enumerate() {
        sched.admit(m, i as JobId, p, params.clone(), &Session::new).unwrap();
    }
    let mut got: Vec<Vec<u32>> = vec![Vec::new(); 3];
    let mut ended = [false; 3];
    for step in 0..40 {
        if step == 4 {
            sched.cancel(1);
            assert_eq!(sched.active(), 2);
            assert!(sched.has_room());
        }
        sched.step(m, &mut |id, ev| {
            match ev {
                dsv4_engine::BatchEvent::Token(t) => got[id as usize].push(t),
                dsv4_engine::BatchEvent::Finished(_) => ended[id as usize] = true,
                _ => {}
            }
            Verdict::default()
        });
    }
    assert_eq!(got[0], want[0].0);
    assert_eq!(got[2], want[2].0);
    assert!(!ended[1], "a cancelled job reports nothing more");
    assert_eq!(got[1], want[1].0[..got[1].len()], "job 1 before its cancellation");
    assert!(got[1].len() <= 4);
    // The cancelled job's session kept what it consumed: the same prompt continues from it.
    let held = sched.pool().sessions().map(|s| s.common_prefix(&jobs[1].0)).max().unwrap();
    assert_eq!(held, jobs[1].0.len());
}

#[test]
fn busy_sessions_are_copied_never_replaced() {
    let (m, tok) = model();
    let eos = tok.specials().eos;
    let mut sched = Scheduler::new(SessionPool::new(2), 2, 512, CTX, eos);
    let a = words(tok, 30);
    let mut b2 = a[..a.len() - 4].to_vec();
    b2.extend(tok.encode(" another ending"));
    sched.admit(m, 1, &a, greedy(50), &Session::new).unwrap();
    sched.step(m, &mut |_, _| Verdict::default());
    // A prompt sharing most of the running job's prompt: copied from it, the original untouched.
    let placement = sched.admit(m, 2, &b2, greedy(50), &Session::new).unwrap();
    assert!(matches!(placement, Placement::Forked { .. } | Placement::Fresh), "{placement:?}");
    assert!(!sched.has_room());
    let refused = sched.admit(m, 3, &words(tok, 5), greedy(5), &Session::new);
    assert!(refused.is_err(), "a third job must wait: every session is busy");
    for _ in 0..3 {
        sched.step(m, &mut |_, _| Verdict::default());
    }
    let held: Vec<usize> = sched.pool().sessions().map(|s| s.common_prefix(&a)).collect();
    assert!(held.contains(&a.len()), "the first job's session lost its prompt: {held:?}");
    // Stop verdicts end a job after the token they answer, and free its place.
    sched.step(m, &mut |id, _| Verdict { greedy: false, stop: id == 1 });
    assert_eq!(sched.active(), 1);
    assert!(sched.has_room());
    sched.admit(m, 3, &words(tok, 5), greedy(5), &Session::new).unwrap();
}

/// A job whose prompt is exactly what its session consumed reuses the logits the last job
/// left only when they serve its first draw: a sampled job leaves the min-p kept set (and
/// greedy jobs the argmax), which another such job can draw from, while a job that draws
/// otherwise rewinds to the session's last checkpoint before its last token and recomputes
/// from there.
#[test]
fn kept_reductions_serve_only_the_same_draw() {
    let (m, tok) = model();
    let sampled = |n: usize| GenerationParams {
        sampling: SamplingParams { seed: Some(3), ..SamplingParams::default() },
        max_tokens: n,
        loop_guard: None,
        ..Default::default()
    };
    let mut sched = Scheduler::new(SessionPool::new(1), 1, 512, CTX, tok.specials().eos);
    // (prefill stats, the tokens the session holds after the job)
    let mut run = |id: JobId, prompt: &[u32], params: GenerationParams| {
        sched.admit(m, id, prompt, params, &Session::new).unwrap();
        let (mut stats, mut tokens, mut finish) = (None, Vec::new(), None);
        while sched.active() > 0 {
            sched.step(m, &mut |_, ev| {
                match ev {
                    BatchEvent::Ready(s) => stats = Some(s),
                    BatchEvent::Token(t) => tokens.push(t),
                    BatchEvent::Finished(f) => finish = Some(f),
                    BatchEvent::Failed(e) => panic!("job {id} failed: {e}"),
                }
                Verdict::default()
            });
        }
        assert_eq!(finish, Some(Finish::Length), "job {id} must end by length for its logits to be kept");
        let mut held = prompt.to_vec();
        held.extend(&tokens);
        (stats.unwrap(), held)
    };
    let (_, held) = run(1, &words(tok, 12), sampled(3));
    let (s, held) = run(2, &held.clone(), sampled(3));
    assert_eq!((s.reused, s.prefilled), (held.len() - 3, 0), "a kept set serves the same draw");
    let (s, held) = run(3, &held.clone(), greedy(3));
    let prompt = held.len() - 3;
    assert!(s.prefilled >= 1 && s.reused + s.prefilled == prompt, "a greedy draw cannot use a kept set: {s:?}");
    let (s, held) = run(4, &held.clone(), greedy(2));
    assert_eq!((s.reused, s.prefilled), (held.len() - 2, 0), "an argmax serves the next greedy draw");
    let (s, _) = run(5, &held.clone(), sampled(2));
    assert!(s.prefilled >= 1 && s.reused + s.prefilled == held.len(), "a sampled draw cannot use an argmax: {s:?}");
}
