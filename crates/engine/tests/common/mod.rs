//! Test bodies and fixtures shared by the engine's test binaries (each uses a part).
#![allow(dead_code)]

pub mod batch;

use std::sync::OnceLock;

use dsv4_engine::Runner;
use dsv4_model::Model;
use dsv4_synth::{Preset, SynthSpec};
use dsv4_tokenizer::Tokenizer;

/// The tiny synthetic model (seed 11) on a CPU runner, and the bundled tokenizer: loaded once
/// per test binary.
pub fn tiny_cpu() -> &'static (Runner, Tokenizer) {
    static M: OnceLock<(Runner, Tokenizer)> = OnceLock::new();
    M.get_or_init(|| {
        let spec = SynthSpec { preset: Preset::Tiny, mix: dsv4_model::ExpertMix::Q2, seed: 11 };
        let path = dsv4_synth::cached_model(std::path::Path::new(env!("CARGO_TARGET_TMPDIR")), &spec).unwrap();
        (Runner::cpu(std::sync::Arc::new(Model::load(&path).unwrap())), Tokenizer::bundled().unwrap())
    })
}
