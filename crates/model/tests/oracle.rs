//! The CPU forward pass against an independent implementation: HF transformers 5.23's own
//! DeepseekV4 model, run by `tools/reference/transformers_oracle.py` on small random models
//! exported in antirez's GGUF layout (F16/F32 weights, and the q2 and q4 mixes with
//! Q8_0/IQ2_XXS/Q2_K/Q4_K blocks). With `--plain-numerics` the engine computes what
//! transformers computes in float32, so every position must have the same top-1 token and a
//! relative L2 logit error below 2e-5 (measured: 3.2e-6 at worst; the issue asks for 1e-3, and
//! a Sinkhorn iteration off by one already moves the logits by ~1e-4).
//!
//! The f32 GGUF is committed; the q2/q4 ones are rebuilt bit-exactly by
//! `tools/reference/oracle_ggufs.py` (scripts/test runs it into `target/oracle`).

use dsv4_model::{Model, Numerics};
use std::io::Read;
use std::path::{Path, PathBuf};

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/oracle")
}

fn gguf_path(variant: &str) -> Option<PathBuf> {
    let name = format!("oracle-{variant}.gguf");
    let committed = data_dir().join(&name);
    if committed.exists() {
        return Some(committed);
    }
    let built = std::env::var_os("DSV4_ORACLE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/oracle"))
        .join(&name);
    built.exists().then_some(built)
}

fn read_logits(file: &str, vocab: usize) -> Vec<Vec<f32>> {
    let gz = std::fs::File::open(data_dir().join(file)).unwrap();
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(gz).read_to_end(&mut raw).unwrap();
    let vals: Vec<f32> = raw.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    vals.chunks_exact(vocab).map(|r| r.to_vec()).collect()
}

fn argmax(v: &[f32]) -> usize {
    (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b })
}

fn check_variant(variant: &str) {
    let Some(path) = gguf_path(variant) else {
        let msg = format!(
            "oracle-{variant}.gguf not found: run `python tools/reference/oracle_ggufs.py --out target/oracle` \
             (scripts/test does) or set DSV4_ORACLE_DIR"
        );
        assert!(std::env::var_os("CI").is_none(), "{msg}");
        eprintln!("skipping: {msg}");
        return;
    };
    let manifest: serde_json::Value =
        serde_json::from_reader(std::fs::File::open(data_dir().join("oracle.json")).unwrap()).unwrap();
    let model = Model::load(&path).unwrap();
    let vocab = model.cfg.vocab_size;
    let mut worst = 0f64;
    for (seq, info) in manifest["variants"][variant]["logits"].as_object().unwrap() {
        let tokens: Vec<u32> =
            manifest["sequences"][seq].as_array().unwrap().iter().map(|t| t.as_u64().unwrap() as u32).collect();
        let want = read_logits(info["file"].as_str().unwrap(), vocab);
        let mut state = model.new_state();
        let got = model.forward(&mut state, &tokens, true, Numerics::Plain).unwrap();
        assert_eq!(got.len(), want.len());
        for (p, (g, w)) in got.iter().zip(&want).enumerate() {
            let num: f64 = g.iter().zip(w).map(|(a, b)| ((a - b) as f64).powi(2)).sum();
            let den: f64 = w.iter().map(|b| (*b as f64).powi(2)).sum();
            let rel = (num / den).sqrt();
            worst = worst.max(rel);
            assert!(rel < 2e-5, "{variant}/{seq} position {p}: relative L2 error {rel:.3e}");
            assert_eq!(argmax(g), argmax(w), "{variant}/{seq} position {p}: top-1 differs");
        }
    }
    eprintln!("{variant}: worst per-position relative L2 error {worst:.3e}");
}

#[test]
fn f32_model_matches_transformers() {
    check_variant("f32");
}

#[test]
fn q2_model_matches_transformers() {
    check_variant("q2");
}

#[test]
fn q4_model_matches_transformers() {
    check_variant("q4");
}
