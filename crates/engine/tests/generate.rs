//! The generation loop on the tiny synthetic model.

mod common;

use dsv4_engine::{Finish, Generation, GenerationParams, Runner, SamplingParams, Session};
use dsv4_model::Numerics;
use dsv4_tokenizer::Tokenizer;
use std::sync::atomic::AtomicBool;

fn model() -> &'static (Runner, Tokenizer) {
    common::tiny_cpu()
}

const CTX: usize = 4096;

fn params(max_tokens: usize) -> GenerationParams {
    GenerationParams { sampling: SamplingParams::greedy(), max_tokens, loop_guard: None, ..Default::default() }
}

fn prompt(tok: &Tokenizer, text: &str) -> Vec<u32> {
    let s = tok.specials();
    let mut ids = vec![s.bos, s.user];
    ids.extend(tok.encode(text));
    ids.extend([s.assistant, s.think_end]);
    ids
}

fn generate(session: &mut Session, p: &[u32], gp: GenerationParams) -> (Vec<u32>, String, Finish, usize) {
    let (m, tok) = model();
    let no = AtomicBool::new(false);
    let mut g = Generation::start(m, tok, session, p, gp, CTX, &no, &mut |_, _| {}).unwrap();
    let reused = g.prefill.reused;
    let mut text = String::new();
    loop {
        let s = g.next(false, &no).unwrap();
        text.push_str(&s.text);
        if let Some(f) = s.finish {
            return (g.generated().to_vec(), text, f, reused);
        }
    }
}

#[test]
fn greedy_generation_is_the_argmax_chain() {
    let (m, tok) = model();
    let p = prompt(tok, "Tell me about Lake Como.");
    let (ids, text, finish, _) = generate(&mut Session::new(), &p, params(12));
    assert_eq!(finish, Finish::Length);
    assert_eq!(ids.len(), 12);
    let mut st = m.model().new_state();
    let mut logits = m.model().forward(&mut st, &p, false, Numerics::Official).unwrap().pop().unwrap();
    for &want in &ids {
        let got = dsv4_engine::sampler::argmax(&logits);
        assert_eq!(got, want);
        logits = m.model().forward(&mut st, &[got], false, Numerics::Official).unwrap().pop().unwrap();
    }
    assert_eq!(text.as_bytes(), tok.decode(&ids).as_slice());
}

#[test]
fn a_new_turn_only_prefills_its_own_tokens() {
    let (_, tok) = model();
    let first = prompt(tok, "First question?");
    let mut live = Session::new();
    let (ids1, _, _, reused) = generate(&mut live, &first, params(5));
    assert_eq!(reused, 0);
    let mut second = first.clone();
    second.extend(&ids1);
    second.extend(tok.encode(" and a follow-up"));
    let held = live.tokens.len();
    let (ids2, _, _, reused) = generate(&mut live, &second, params(6));
    assert_eq!(reused, held, "the whole first turn is reused");
    let (fresh, _, _, _) = generate(&mut Session::new(), &second, params(6));
    assert_eq!(ids2, fresh, "reusing the session changes nothing");
}

#[test]
fn stop_strings_cut_the_text_and_finish() {
    let (_, tok) = model();
    let p = prompt(tok, "Count to ten.");
    let (_, text, _, _) = generate(&mut Session::new(), &p, params(24));
    let chars: Vec<char> = text.chars().collect();
    assert!(chars.len() > 8, "{text:?}");
    let stop: String = chars[5..8].iter().collect();
    let before: String = text[..text.find(&stop).unwrap()].to_string();
    let (_, cut, finish, _) = generate(&mut Session::new(), &p, GenerationParams { stop: vec![stop], ..params(24) });
    assert_eq!(finish, Finish::Stop);
    assert_eq!(cut, before);
}

#[test]
fn seeded_sampling_is_reproducible_and_cancel_stops() {
    let (m, tok) = model();
    let p = prompt(tok, "Write freely.");
    let sampled = GenerationParams {
        sampling: SamplingParams { temperature: 1.0, seed: Some(9), ..Default::default() },
        ..params(10)
    };
    let a = generate(&mut Session::new(), &p, sampled.clone());
    let b = generate(&mut Session::new(), &p, sampled);
    assert_eq!(a.0, b.0);

    let cancel = AtomicBool::new(true);
    let mut s = Session::new();
    assert!(Generation::start(m, tok, &mut s, &p, params(4), CTX, &cancel, &mut |_, _| {}).is_err());
    let no = AtomicBool::new(false);
    let mut s = Session::new();
    let mut g = Generation::start(m, tok, &mut s, &p, params(4), CTX, &no, &mut |_, _| {}).unwrap();
    assert_eq!(g.next(false, &cancel).unwrap().finish, Some(Finish::Cancelled));
}

#[test]
fn prompts_that_do_not_fit_are_refused() {
    let (m, tok) = model();
    let p = prompt(tok, "x");
    let no = AtomicBool::new(false);
    let mut s = Session::new();
    assert!(Generation::start(m, tok, &mut s, &p, params(4), p.len(), &no, &mut |_, _| {}).is_err());
    assert!(Generation::start(m, tok, &mut s, &[], params(4), CTX, &no, &mut |_, _| {}).is_err());
    let bad = GenerationParams { sampling: SamplingParams { top_p: 2.0, ..Default::default() }, ..params(4) };
    assert!(Generation::start(m, tok, &mut s, &p, bad, CTX, &no, &mut |_, _| {}).is_err());
}

/// Regenerating, or editing the last turn, rewinds the live session to where the prompts
/// diverge instead of prefilling everything again, and the result equals a fresh session's.
#[test]
fn edits_and_regenerations_rewind_the_live_session() {
    let (_, tok) = model();
    let first = prompt(tok, "Describe the river Adda in detail, please.");
    let mut live = Session::new();
    let (a, _, _, _) = generate(&mut live, &first, params(6));
    // Regenerate: the same prompt again reuses everything but its last token.
    let (b, _, _, reused) = generate(&mut live, &first, params(6));
    assert_eq!(a, b);
    assert_eq!(reused, first.len() - 1);
    // Edit the last turn: a different user message shares only the template's start.
    let edited = prompt(tok, "Describe the river Ticino in detail, please.");
    let shared = first.iter().zip(&edited).take_while(|(x, y)| x == y).count();
    let (c, _, _, reused) = generate(&mut live, &edited, params(6));
    let (fresh, _, _, _) = generate(&mut Session::new(), &edited, params(6));
    assert_eq!(c, fresh);
    assert!(reused <= shared);
}

/// A long prompt is saved to the disk cache; a new session (as after a restart) restores the
/// longest stored prefix and produces exactly what a cold prefill produces.
#[test]
fn disk_cache_restores_long_prefixes_across_sessions() {
    let (m, tok) = model();
    let dir = tempfile::tempdir().unwrap();
    let open = || std::sync::Arc::new(dsv4_engine::DiskCache::open(dir.path(), 1 << 30, m.model(), Numerics::Official).unwrap());
    let long: String = (0..400).map(|i| format!("w{i} ")).collect();
    let first = prompt(tok, &long);
    assert!(first.len() > dsv4_engine::disk::MIN_SAVE_TOKENS);
    let no = AtomicBool::new(false);

    let mut a = Session::new();
    a.attach_disk(open());
    let g = Generation::start(m, tok, &mut a, &first, params(3), CTX, &no, &mut |_, _| {}).unwrap();
    assert_eq!(g.prefill.saved_to_disk, first.len() - 1);
    assert_eq!(g.prefill.from_disk, 0);
    drop(g);
    // The save is written in the background; another cache on the same folder sees it once
    // it lands.
    a.disk().unwrap().flush();

    let mut second = first.clone();
    second.extend(tok.encode(" and then some more words"));
    let mut b = Session::new();
    b.attach_disk(open());
    let (ids, _, _, reused) = generate(&mut b, &second, params(5));
    assert_eq!(reused, first.len() - 1, "restored from disk");
    let (cold, _, _, _) = generate(&mut Session::new(), &second, params(5));
    assert_eq!(ids, cold, "a restored state continues exactly like a cold prefill");

    // Another numerics mode is another fingerprint: nothing to restore.
    let plain = dsv4_engine::DiskCache::open(dir.path(), 1 << 30, m.model(), Numerics::Plain).unwrap();
    assert!(plain.restore(m.model(), &second, 0).is_none());
}

/// An answer's end asks for a checkpoint, taken only when the session moves on: a third turn
/// that diverges right after the first answer rewinds exactly to that answer's end.
#[test]
fn an_answers_end_is_a_rewind_point_for_later_turns() {
    let (_, tok) = model();
    let first = prompt(tok, "Name three colours of the rainbow.");
    let mut s = Session::new();
    generate(&mut s, &first, params(6));
    let end = s.tokens.len();
    assert!(end > first.len());

    let mut second = s.tokens.clone();
    second.extend(tok.encode(" next question one"));
    let (_, _, _, reused) = generate(&mut s, &second, params(3));
    assert_eq!(reused, end, "the second turn extends the first answer");

    let mut third = s.tokens[..end].to_vec();
    third.extend(tok.encode(" a different question"));
    assert_ne!(third[end], second[end]);
    let (ids, _, _, reused) = generate(&mut s, &third, params(3));
    assert_eq!(reused, end, "rewound to the first answer's end, not to its prompt's");
    let (cold, _, _, _) = generate(&mut Session::new(), &third, params(3));
    assert_eq!(ids, cold);
}

/// Saves are written by the cache's own thread: a restore a queued save could serve waits for
/// it, `wants` refuses what is stored, and dropping the cache lands every queued save.
#[test]
fn disk_saves_land_in_the_background() {
    let (m, tok) = model();
    let dir = tempfile::tempdir().unwrap();
    let open = |d: &std::path::Path| std::sync::Arc::new(dsv4_engine::DiskCache::open(d, 1 << 30, m.model(), Numerics::Official).unwrap());
    let long: String = (0..400).map(|i| format!("q{i} ")).collect();
    let first = prompt(tok, &long);
    let stored = first[..first.len() - 1].to_vec();
    let mut second = first.clone();
    second.extend(tok.encode(" and a new question"));
    let held = std::time::Duration::from_millis(300);

    let disk = open(dir.path());
    let mut a = Session::new();
    a.attach_disk(disk.clone());
    let (ids, restored) = std::thread::scope(|s| {
        let hold = disk.hold_writes();
        let (ids, _, _, _) = generate(&mut a, &first, params(2));
        // The save is queued and cannot land: a restore it could serve waits for it.
        let restore = s.spawn(|| disk.restore(m.model(), &second, 0));
        std::thread::sleep(held);
        assert!(!restore.is_finished(), "the restore did not wait for the queued save");
        drop(hold);
        (ids, restore.join().unwrap())
    });
    let (state, tokens) = restored.expect("the queued save, restored once written");
    assert_eq!((tokens.as_slice(), state.pos as usize), (stored.as_slice(), stored.len()));
    assert!(!disk.wants(m.model(), &stored), "stored already");
    assert!(!disk.wants(m.model(), &first[..100]), "too short to be worth a file");
    let mut b = Session::new();
    b.attach_disk(disk.clone());
    let (again, _, _, reused) = generate(&mut b, &first, params(2));
    assert_eq!((again, reused), (ids, stored.len()));

    // Dropping the last handle waits for the writer: a fresh store then lists the save.
    let other = tempfile::tempdir().unwrap();
    let d2 = open(other.path());
    let mut c = Session::new();
    c.attach_disk(d2.clone());
    let hold = d2.hold_writes();
    generate(&mut c, &second, params(1));
    let dropping = std::thread::spawn(move || drop((c, d2)));
    std::thread::sleep(held);
    assert!(!dropping.is_finished(), "the cache went before its queued save landed");
    drop(hold);
    dropping.join().unwrap();
    let store = dsv4_kvstore::KvStore::open(other.path(), 1 << 30).unwrap();
    let saved: Vec<u32> = store.list().unwrap().iter().map(|e| e.tokens).collect();
    assert_eq!(saved, vec![second.len() as u32 - 1]);
}

/// Long prefills and generations are saved at every save-interval boundary, and a session
/// that later restores one of them continues exactly like a cold prefill.
#[test]
fn long_prefills_and_generations_save_at_aligned_intervals() {
    let (m, tok) = model();
    let dir = tempfile::tempdir().unwrap();
    let disk = std::sync::Arc::new(dsv4_engine::DiskCache::open(dir.path(), 1 << 30, m.model(), Numerics::Official).unwrap().with_save_interval(1024));
    let long: String = (0..1100).map(|i| format!("v{i} ")).collect();
    let p = prompt(tok, &long);
    assert!(p.len() > 2100 && p.len() < 3000, "{}", p.len());
    let mut a = Session::new();
    a.attach_disk(disk.clone());
    // Generating past the next boundary saves there too.
    let n = 3072 - p.len() + 5;
    let (ids, _, _, _) = generate(&mut a, &p, params(n));
    assert_eq!(ids.len(), n);
    disk.flush();
    let store = dsv4_kvstore::KvStore::open(dir.path(), 1 << 30).unwrap();
    let mut saved: Vec<u32> = store.list().unwrap().iter().map(|e| e.tokens).collect();
    saved.sort();
    assert_eq!(saved, vec![1024, 2048, p.len() as u32 - 1, 3072]);
    // A fresh session for a prompt that shares only the first 2100 tokens restores 2048.
    let mut other = p[..2100].to_vec();
    other.extend(tok.encode(" a different ending"));
    let mut b = Session::new();
    b.attach_disk(disk);
    let (got, _, _, reused) = generate(&mut b, &other, params(4));
    assert_eq!(reused, 2048);
    let (cold, _, _, _) = generate(&mut Session::new(), &other, params(4));
    assert_eq!(got, cold);
}

mod pool {
    use super::*;
    use dsv4_engine::{Placement, SessionPool};

    fn long_prompt(tok: &Tokenizer, topic: &str, words: usize) -> Vec<u32> {
        let body: String = (0..words).map(|i| format!("{topic}{} ", i % 97)).collect();
        prompt(tok, &body)
    }

    fn run(pool: &mut SessionPool, p: &[u32], n: usize) -> (Vec<u32>, Placement, usize) {
        let (m, _) = model();
        let (session, placement) = pool.acquire(m, p, &Session::new);
        let (ids, _, _, reused) = generate(session, p, params(n));
        (ids, placement, reused)
    }

    #[test]
    fn side_requests_do_not_evict_the_main_conversation() {
        let (_, tok) = model();
        let mut pool = SessionPool::new(3);
        let main = long_prompt(tok, "agent", 700);
        assert!(main.len() > 1200, "main prompt too short to be worth keeping: {}", main.len());
        let (answer, placement, _) = run(&mut pool, &main, 8);
        assert_eq!(placement, Placement::Fresh);
        // A title request shares only the first tokens: it gets its own session.
        let title = prompt(tok, "Write a five-word title for this conversation.");
        let (_, placement, _) = run(&mut pool, &title, 4);
        assert!(matches!(placement, Placement::Fresh | Placement::Forked { .. }), "{placement:?}");
        assert_eq!(pool.len(), 2);
        // The main conversation's next turn reuses all it had.
        let mut next = main.clone();
        next.extend(&answer);
        next.extend(tok.encode(" and then?"));
        let (_, placement, reused) = run(&mut pool, &next, 4);
        assert_eq!(placement, Placement::Reused { common: main.len() + answer.len() });
        assert_eq!(reused, main.len() + answer.len());
    }

    #[test]
    fn a_sub_agent_forks_the_shared_prefix_and_matches_a_fresh_run() {
        let (_, tok) = model();
        let mut pool = SessionPool::new(2);
        // Longer than a checkpoint interval, so the fork starts from a checkpoint inside it.
        let system = long_prompt(tok, "tools", 700);
        let mut main = system.clone();
        main.extend(long_prompt(tok, "main", 800));
        run(&mut pool, &main, 4);
        let mut sub = system.clone();
        sub.extend(tok.encode(" sub-agent task: list the files"));
        let (ids, placement, reused) = run(&mut pool, &sub, 10);
        let Placement::Forked { common } = placement else { panic!("sub-agent not forked: {placement:?}") };
        assert!(common <= system.len() && common > 0);
        assert_eq!(reused, common);
        // Bit-identical to computing the sub-agent prompt from scratch.
        let (fresh, _, _, _) = generate(&mut Session::new(), &sub, params(10));
        assert_eq!(ids, fresh);
        // The main conversation is still resident, untouched.
        assert_eq!(pool.len(), 2);
        let (_, placement, _) = run(&mut pool, &main, 2);
        assert!(matches!(placement, Placement::Reused { common } if common == main.len() - 1 || common == main.len()), "{placement:?}");
    }

    #[test]
    fn regenerate_forks_while_there_is_room_then_rewinds_in_place_and_evicts_least_recent() {
        let (_, tok) = model();
        let mut pool = SessionPool::new(2);
        let a = prompt(tok, "First conversation about rivers.");
        run(&mut pool, &a, 6);
        // Regenerate with a free slot: a copy cut back to the prompt, the first answer kept.
        let (_, placement, reused) = run(&mut pool, &a, 6);
        assert_eq!(placement, Placement::Forked { common: a.len() - 1 });
        assert_eq!(reused, a.len() - 1);
        assert_eq!(pool.len(), 2);
        // Full pool: another regenerate rewinds in place.
        let (_, placement, reused) = run(&mut pool, &a, 6);
        assert!(matches!(placement, Placement::Reused { .. }), "{placement:?}");
        assert_eq!(reused, a.len() - 1);
        assert_eq!(pool.len(), 2);
        let b = long_prompt(tok, "mountains", 30);
        let c = long_prompt(tok, "oceans", 30);
        run(&mut pool, &b, 2);
        run(&mut pool, &c, 2);
        assert_eq!(pool.len(), 2, "capacity exceeded");
        // Both `a` sessions were least recently used: gone; `c` is resident.
        let (_, placement, _) = run(&mut pool, &c, 2);
        assert!(matches!(placement, Placement::Reused { .. }));
        let (_, placement, reused) = run(&mut pool, &a, 2);
        assert!(matches!(placement, Placement::Fresh | Placement::Forked { .. }) && reused < 4, "{placement:?} reused {reused}");
    }
}
