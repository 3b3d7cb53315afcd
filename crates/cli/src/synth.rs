use anyhow::{bail, Context};
use dsv4_model::layout::ExpertMix;
use dsv4_synth::{Preset, SynthSpec};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// `tiny` (every mechanism at toy size, for tests and the demo) or `flash` (real shapes).
    #[arg(long)]
    preset: String,
    /// Number of layers for `--preset flash` (1..=43).
    #[arg(long, default_value_t = 43)]
    layers: usize,
    /// Routed-expert mix: `q2` (IQ2_XXS gate/up, Q2_K down) or `q4` (Q4_K).
    #[arg(long, default_value = "q2")]
    quant: String,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long)]
    out: PathBuf,
    /// Also write the MTP block as a separate GGUF, like the published MTP file.
    #[arg(long)]
    mtp_out: Option<PathBuf>,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let preset = match a.preset.as_str() {
        "tiny" => Preset::Tiny,
        "flash" if (1..=43).contains(&a.layers) => Preset::Flash { layers: a.layers },
        "flash" => bail!("--layers must be between 1 and 43, got {}", a.layers),
        other => bail!("unknown preset `{other}` (expected `tiny` or `flash`)"),
    };
    let mix = ExpertMix::from_name(&a.quant)
        .with_context(|| format!("unknown --quant `{}` (expected q2 or q4)", a.quant))?;
    let spec = SynthSpec { preset, mix, seed: a.seed };
    let t = Instant::now();
    let r = dsv4_synth::write_model(&a.out, &spec).with_context(|| format!("writing {}", a.out.display()))?;
    let secs = t.elapsed().as_secs_f64();
    eprintln!(
        "wrote {}: {} tensors, {:.2} GiB in {:.1} s ({:.2} GB/s)",
        a.out.display(),
        r.tensors,
        r.file_bytes as f64 / (1u64 << 30) as f64,
        secs,
        r.file_bytes as f64 / secs / 1e9
    );
    if let Some(mtp) = a.mtp_out {
        let r = dsv4_synth::write_mtp(&mtp, &spec).with_context(|| format!("writing {}", mtp.display()))?;
        eprintln!("wrote {}: {} tensors, {:.3} GiB", mtp.display(), r.tensors, r.file_bytes as f64 / (1u64 << 30) as f64);
    }
    Ok(ExitCode::SUCCESS)
}
