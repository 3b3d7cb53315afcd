//! Synthetic DeepSeek V4 GGUF files: exactly the tensor names, types and metadata of antirez's
//! files, random weights, deterministic from a seed.
//!
//! `tiny` has every mechanism at toy width (and the real vocabulary) for tests and the demo;
//! `flash` has the real shapes (a prefix of the 43 layers) for GPU benchmarks.

mod fill;
mod rng;

use dsv4_gguf::{Array, GgufWriter, Value};
use dsv4_model::config::LayerKind;
use dsv4_model::layout::{self, ExpertMix, TensorSpec};
use dsv4_model::ModelConfig;
use std::io::BufWriter;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("GGUF: {0}")]
    Gguf(#[from] dsv4_gguf::GgufError),
    #[error("{0}")]
    Invalid(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    Tiny,
    Flash { layers: usize },
}

#[derive(Clone, Debug)]
pub struct SynthSpec {
    pub preset: Preset,
    pub mix: ExpertMix,
    pub seed: u64,
}

impl SynthSpec {
    pub fn config(&self) -> ModelConfig {
        match self.preset {
            Preset::Tiny => tiny_config(),
            Preset::Flash { layers } => ModelConfig::flash(layers),
        }
    }

    fn name(&self) -> String {
        match self.preset {
            Preset::Tiny => format!("dsv4 synthetic tiny ({}, seed {})", self.mix.name(), self.seed),
            Preset::Flash { layers } => {
                format!("dsv4 synthetic DeepSeek V4 Flash ({layers} layers, {}, seed {})", self.mix.name(), self.seed)
            }
        }
    }
}

/// Toy geometry with every mechanism the real model has: window-only layers, ratio-4 layers
/// with the indexer, a ratio-128 layer like Flash's plus a ratio-16 one (the same
/// non-overlapping compressor, so that short prompts already emit several rows), hash-routed
/// and score-routed MoE, 4 HC streams. Widths are the smallest the 256-element quantization
/// blocks allow; the sliding window (8) and indexer top-k (4) are small so a few dozen tokens
/// cross every boundary.
pub fn tiny_config() -> ModelConfig {
    let n_layer = 6;
    ModelConfig {
        n_layer,
        n_embd: 256,
        vocab_size: 129280,
        n_head: 4,
        head_dim: 64,
        rope_dim: 16,
        q_lora_rank: 64,
        o_lora_rank: 32,
        o_groups: 2,
        n_expert: 8,
        n_expert_used: 2,
        expert_ffn: 256,
        n_hash_layers: 3,
        sliding_window: 8,
        indexer_heads: 4,
        indexer_head_dim: 32,
        indexer_top_k: 4,
        hc_count: 4,
        sinkhorn_iters: 20,
        layer_kinds: vec![
            LayerKind::Window,
            LayerKind::Window,
            LayerKind::Csa,
            LayerKind::Hca { ratio: 128 },
            LayerKind::Csa,
            LayerKind::Hca { ratio: 16 },
        ],
        swiglu_clamp: vec![10.0; n_layer],
        context_length: 1 << 20,
        ..ModelConfig::flash(n_layer)
    }
}

/// What was written.
#[derive(Debug)]
pub struct SynthReport {
    pub tensors: usize,
    pub tensor_bytes: u64,
    pub file_bytes: u64,
}

fn general_and_tokenizer_metadata(name: String) -> Vec<(String, Value)> {
    let vocab = dsv4_tokenizer::VocabData::bundled();
    let strings = |xs: &[String]| Value::Array(Array::String(xs.to_vec()));
    vec![
        ("general.architecture".into(), Value::String("deepseek4".into())),
        ("general.name".into(), Value::String(name)),
        ("general.alignment".into(), Value::U32(32)),
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Value::String("joyai-llm".into())),
        ("tokenizer.ggml.tokens".into(), strings(&vocab.tokens)),
        ("tokenizer.ggml.token_type".into(), Value::Array(Array::I32(vocab.token_types.clone()))),
        ("tokenizer.ggml.merges".into(), strings(&vocab.merges)),
        ("tokenizer.ggml.bos_token_id".into(), Value::U32(0)),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(1)),
        ("tokenizer.ggml.padding_token_id".into(), Value::U32(1)),
        ("tokenizer.ggml.add_bos_token".into(), Value::Bool(false)),
        ("tokenizer.ggml.add_eos_token".into(), Value::Bool(false)),
    ]
}

/// The model for `spec` in `dir`, written on first use and reused afterwards (by other test
/// processes too: nextest runs each test in its own process). Written to a temporary name and
/// renamed, so a concurrent reader never sees half a file; the name carries everything the
/// contents depend on.
pub fn cached_model(dir: &Path, spec: &SynthSpec) -> Result<std::path::PathBuf, SynthError> {
    let name = format!("{:?}-{}", spec, env!("CARGO_PKG_VERSION"));
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in format!("{name}{:?}", spec.config()).bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
    }
    let path = dir.join(format!("synth-{h:016x}.gguf"));
    if !path.exists() {
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(format!("synth-{h:016x}.{}.tmp", std::process::id()));
        write_model(&tmp, spec)?;
        std::fs::rename(&tmp, &path)?;
    }
    Ok(path)
}

/// Writes the main model file.
pub fn write_model(path: &Path, spec: &SynthSpec) -> Result<SynthReport, SynthError> {
    let cfg = spec.config();
    cfg.validate().map_err(|e| SynthError::Invalid(e.to_string()))?;
    if cfg.vocab_size != dsv4_tokenizer::VocabData::bundled().tokens.len() {
        return Err(SynthError::Invalid("the bundled vocabulary does not match vocab_size".into()));
    }
    let mut kv = general_and_tokenizer_metadata(spec.name());
    kv.extend(cfg.to_metadata());
    write_file(path, kv, &layout::main_tensors(&cfg, spec.mix), &cfg, spec.seed)
}

/// Writes the separate MTP file (`mtp.0.*` tensors; the published one carries no model
/// metadata the loader needs, but the geometry keys are kept so the file is self-describing).
pub fn write_mtp(path: &Path, spec: &SynthSpec) -> Result<SynthReport, SynthError> {
    let cfg = spec.config();
    let mut kv: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String("deepseek4".into())),
        ("general.name".into(), Value::String(format!("{} MTP", spec.name()))),
        ("general.alignment".into(), Value::U32(32)),
    ];
    kv.extend(cfg.to_metadata());
    // Seed offset keeps MTP weights independent of the main file's.
    write_file(path, kv, &layout::mtp_tensors(&cfg, spec.mix), &cfg, spec.seed ^ 0x6d74_7000)
}

fn write_file(
    path: &Path,
    kv: Vec<(String, Value)>,
    tensors: &[TensorSpec],
    cfg: &ModelConfig,
    seed: u64,
) -> Result<SynthReport, SynthError> {
    let mut w = GgufWriter::new();
    for (k, v) in kv {
        w.add_kv(k, v)?;
    }
    for t in tensors {
        w.add_tensor(&t.name, &t.dims, t.ty)?;
    }
    // Per-process temporary name: concurrent writers of the same file (tests, two shells
    // generating the demo model) must not interleave their bytes; the last rename wins whole.
    let tmp = path.with_extension(format!("gguf.partial.{}", std::process::id()));
    let written = (|| -> Result<u64, SynthError> {
        let file = std::fs::File::create(&tmp)?;
        let mut stream = w.begin(BufWriter::with_capacity(8 << 20, file))?;
        let mut tensor_bytes = 0;
        for (i, t) in tensors.iter().enumerate() {
            fill::write_tensor(&mut stream, t, cfg, rng::mix(seed, i as u64))?;
            stream.finish_tensor()?;
            tensor_bytes += t.n_bytes();
        }
        let file = stream.finish()?.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        // Rename last so an interrupted run never leaves a file that looks complete.
        std::fs::rename(&tmp, path)?;
        Ok(tensor_bytes)
    })();
    let tensor_bytes = match written {
        Ok(n) => n,
        Err(e) => {
            // A failed write (a full disk, most often) must not leave gigabytes behind.
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    Ok(SynthReport { tensors: tensors.len(), tensor_bytes, file_bytes: std::fs::metadata(path)?.len() })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A write that fails at the end (here the final rename, onto a directory) removes its
    /// partial file: a full disk must not be left fuller.
    #[test]
    fn a_failed_write_leaves_no_partial_file() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("model");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("keep"), b"x").unwrap();
        let spec = SynthSpec { preset: Preset::Tiny, mix: ExpertMix::Q2, seed: 1 };
        assert!(write_model(&target, &spec).is_err());
        let mut left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        left.sort();
        assert_eq!(left, vec![std::ffi::OsString::from("model")], "only the directory that was there");
        assert!(target.join("keep").exists());

        let ok = dir.path().join("tiny.gguf");
        let report = write_model(&ok, &spec).unwrap();
        assert_eq!(std::fs::metadata(&ok).unwrap().len(), report.file_bytes);
    }
}
