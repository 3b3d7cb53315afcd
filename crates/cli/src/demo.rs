//! The built-in demo model: the tiny synthetic preset, generated on first use and cached.

use dsv4_model::ExpertMix;
use dsv4_synth::{Preset, SynthSpec};
use std::path::PathBuf;

/// Where the generated demo model is cached between runs.
fn demo_path() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    // The geometry's fingerprint is in the name, so a newer dsv4 with another tiny preset never
    // picks up a stale cached file.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in format!("{:?}{}", dsv4_synth::tiny_config(), env!("CARGO_PKG_VERSION")).bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
    }
    base.join("dsv4").join(format!("demo-tiny-q2-seed0-{:08x}.gguf", h as u32))
}

/// The demo model's path, generating it on first use.
pub fn ensure_demo_model() -> anyhow::Result<PathBuf> {
    let path = demo_path();
    if !path.exists() {
        std::fs::create_dir_all(path.parent().unwrap())?;
        eprintln!("generating the tiny demo model at {} …", path.display());
        let spec = SynthSpec { preset: Preset::Tiny, mix: ExpertMix::Q2, seed: 0 };
        dsv4_synth::write_model(&path, &spec)?;
    }
    Ok(path)
}


/// Which model a command runs: `-m FILE`, `--demo`, or discovery.
#[derive(clap::Args, Clone, Debug)]
pub struct ModelSource {
    /// Model file (default: $DSV4_MODEL, ./ds4flash.gguf, then the per-user data dir).
    #[arg(short, long)]
    pub model: Option<PathBuf>,
    /// Use the built-in tiny synthetic model (its output is noise).
    #[arg(long)]
    pub demo: bool,
}

impl ModelSource {
    /// The file to load: the demo model (generated on first use), the given file, or the
    /// first one discovery finds.
    pub fn path(&self) -> anyhow::Result<PathBuf> {
        if self.demo {
            if self.model.is_some() {
                anyhow::bail!("--demo and --model exclude each other");
            }
            return ensure_demo_model();
        }
        Ok(dsv4_download::find_model(self.model.as_deref())?)
    }
}
