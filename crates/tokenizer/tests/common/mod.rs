//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::io::Read;
use std::sync::OnceLock;

use dsv4_tokenizer::Tokenizer;

/// The real tokenizer, built once per test binary.
pub fn tokenizer() -> &'static Tokenizer {
    static TOK: OnceLock<Tokenizer> = OnceLock::new();
    TOK.get_or_init(|| Tokenizer::bundled().expect("bundled vocabulary must build"))
}

#[derive(serde::Deserialize)]
pub struct GoldenCase {
    pub cat: String,
    pub text: String,
    /// HF ids with added tokens recognised.
    pub special: Vec<u32>,
    /// HF ids without added-token matching; absent when equal to `special`.
    pub plain: Option<Vec<u32>>,
}

#[derive(serde::Deserialize)]
pub struct Golden {
    pub tokenizers: String,
    pub tokenizer_json_sha256: String,
    pub cases: Vec<GoldenCase>,
}

pub fn golden() -> &'static Golden {
    static G: OnceLock<Golden> = OnceLock::new();
    G.get_or_init(|| {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/tokenizer_golden.json.gz"
        );
        let gz = std::fs::read(path).expect("read golden file");
        let mut json = String::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_string(&mut json)
            .expect("decompress golden file");
        serde_json::from_str(&json).expect("parse golden file")
    })
}

/// A readable account of where two id sequences first differ.
pub fn describe_mismatch(
    tok: &Tokenizer,
    what: &str,
    idx: usize,
    cat: &str,
    text: &str,
    got: &[u32],
    want: &[u32],
) -> String {
    let first = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    let lo = first.saturating_sub(3);
    let show = |ids: &[u32]| {
        ids.iter()
            .skip(lo)
            .take(8)
            .map(|&id| {
                format!(
                    "{id}:{:?}",
                    String::from_utf8_lossy(tok.token_bytes(id).unwrap_or(b"<?>"))
                )
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let shown: String = text.chars().take(200).collect();
    format!(
        "{what}: case #{idx} [{cat}] text {shown:?}{}\n  {} ids (Rust) vs {} ids (HF); first difference at token {first}\n  Rust from {lo}: {}\n  HF   from {lo}: {}",
        if text.chars().count() > 200 { "…" } else { "" },
        got.len(),
        want.len(),
        show(got),
        show(want),
    )
}
