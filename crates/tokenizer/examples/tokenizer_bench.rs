//! Build time and encode throughput of the bundled tokenizer.
//!
//! `cargo run --release -p dsv4-tokenizer --example tokenizer_bench [FILE]`
//! (default FILE: the promessi_sposi benchmark text in `shared/bench/`).

use std::time::Instant;

use dsv4_tokenizer::{Tokenizer, VocabData};

fn main() {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "/work/shared/bench/promessi_sposi.txt".to_owned());
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("cannot read {path}: {e}");
            std::process::exit(1);
        }
    };

    let t = Instant::now();
    let v = VocabData::bundled_ref();
    let parse = t.elapsed();

    let mut builds = Vec::new();
    let mut tok = None;
    for _ in 0..5 {
        let t = Instant::now();
        tok = Some(Tokenizer::from_vocab(&v.tokens, &v.merges, &v.token_types).expect("build"));
        builds.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let tok = tok.expect("built");
    builds.sort_by(f64::total_cmp);
    println!(
        "bundled tokenizer.json parse: {:.1} ms; from_vocab (129,280 tokens): min {:.1} ms, median {:.1} ms",
        parse.as_secs_f64() * 1e3,
        builds[0],
        builds[builds.len() / 2]
    );

    for (name, f) in [
        (
            "encode",
            &(|s: &str| tok.encode(s)) as &dyn Fn(&str) -> Vec<u32>,
        ),
        ("encode_with_special", &|s: &str| tok.encode_with_special(s)),
    ] {
        let mut best = f64::MAX;
        let mut n = 0;
        for _ in 0..3 {
            let t = Instant::now();
            n = f(&text).len();
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!(
            "{name}: {} bytes -> {n} tokens in {:.1} ms = {:.2} M tokens/s ({:.1} MB/s)",
            text.len(),
            best * 1e3,
            n as f64 / best / 1e6,
            text.len() as f64 / best / 1e6
        );
    }
}
