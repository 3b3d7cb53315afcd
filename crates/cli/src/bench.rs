use anyhow::{bail, Context};
use dsv4_gguf::{GgmlType, GgufFile};
use dsv4_model::{Model, Numerics};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

/// The model and the text both benchmarks read.
#[derive(clap::Args)]
pub struct Input {
    #[arg(short, long)]
    pub model: PathBuf,
    /// The benchmark text; its tokens are fed in order (or cut into prompts).
    #[arg(long, default_value = "../shared/bench/promessi_sposi.txt")]
    pub text: PathBuf,
}

impl Input {
    /// The opened file, its tokenizer and the text's tokens (no BOS).
    pub fn load(&self) -> anyhow::Result<(Arc<GgufFile>, dsv4_tokenizer::Tokenizer, Vec<u32>)> {
        let file = Arc::new(GgufFile::open(&self.model).with_context(|| format!("reading {}", self.model.display()))?);
        let tok = crate::tokenize::from_gguf(&file)?;
        let text = std::fs::read_to_string(&self.text).with_context(|| format!("reading {}", self.text.display()))?;
        let ids = tok.encode(&text);
        Ok((file, tok, ids))
    }
}

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    input: Input,
    /// Context sizes (tokens) at which to stop and measure decoding; each interval between
    /// frontiers is one timed prefill.
    #[arg(long, value_delimiter = ',', default_value = "2048,4096,8192,16384,32768,65536")]
    frontiers: Vec<usize>,
    /// Greedy tokens decoded (and timed) at each frontier.
    #[arg(long, default_value_t = 16)]
    decode: usize,
    /// Prompt tokens per prefill step (default: what the device takes at once, as the
    /// server uses it: 1,024 on a GPU, 512 on the CPU).
    #[arg(long)]
    chunk: Option<usize>,
    #[arg(long)]
    plain_numerics: bool,
    #[command(flatten)]
    device: crate::device::DeviceArgs,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    if a.frontiers.is_empty() || a.frontiers.windows(2).any(|w| w[0] >= w[1]) || a.chunk == Some(0) {
        bail!("--frontiers must be increasing and --chunk positive");
    }
    let (file, tok, text_ids) = a.input.load()?;
    let mut ids = vec![tok.specials().bos];
    ids.extend(text_ids);
    let need = a.frontiers.last().unwrap() + a.decode;
    if ids.len() < need {
        bail!("the text has {} tokens, the last frontier needs {need}", ids.len());
    }
    let name = model_name(&file);
    let quant = quant_name(&file);
    let model = Arc::new(Model::from_file(file)?);
    let n_layer = model.cfg.n_layer;
    let runner = a.device.runner(model, need + 1, 1)?;
    let chunk = a.chunk.unwrap_or(runner.prefill_piece());
    let err = anyhow::Error::msg;
    let numerics = if a.plain_numerics { Numerics::Plain } else { Numerics::Official };
    // Issue #7: every row names the host (its CPU model: container host names mean nothing)
    // and the card, so rows from different machines are never mistaken for one another.
    let machine = cpu_name();
    let (card, backend) = card_and_backend(&runner);
    let date = crate::today();
    println!("{CSV_HEADER}");
    let mut state = runner.new_state().map_err(err)?;
    let mut done = 0;
    for &frontier in &a.frontiers {
        let t = Instant::now();
        let mut last = Vec::new();
        while done < frontier {
            let end = (done + chunk).min(frontier);
            last = runner.forward(&mut state, &ids[done..end], numerics).map_err(err)?;
            done = end;
        }
        let prefill_s = t.elapsed().as_secs_f64();
        // Decode from a copy so the next interval continues from the frontier itself.
        let mut st = runner.copy(&state).map_err(err)?;
        let t = Instant::now();
        let mut logits = last;
        for _ in 0..a.decode {
            let next = dsv4_engine::sampler::argmax(&logits);
            logits = runner.forward(&mut st, &[next], numerics).map_err(err)?;
        }
        let decode_s = t.elapsed().as_secs_f64();
        let prev = a.frontiers.iter().rev().find(|&&f| f < frontier).copied().unwrap_or(0);
        println!(
            "{date},{machine},{card},{backend},{},{name},{quant},{},{},{frontier},{},{:.2},{},{:.3}",
            rayon::current_num_threads(),
            n_layer,
            if a.plain_numerics { "plain" } else { "official" },
            frontier - prev,
            (frontier - prev) as f64 / prefill_s,
            a.decode,
            a.decode as f64 / decode_s
        );
    }
    Ok(ExitCode::SUCCESS)
}

const CSV_HEADER: &str =
    "date,machine,card,backend,threads,model,quant,layers,numerics,frontier,prefill_tokens,prefill_tps,decode_tokens,decode_tps";

/// The card's name out of the runner's description ("cuda:0 NVIDIA H100 80GB HBM3"), made safe
/// for a CSV field.
fn card_name(describe: &str) -> String {
    describe
        .split_once(' ')
        .map(|(_, n)| n.trim())
        .filter(|n| !n.is_empty())
        .map_or_else(|| "unknown gpu".to_owned(), |n| n.replace(',', " "))
}

/// The model's name, safe for a CSV field.
pub(crate) fn model_name(file: &GgufFile) -> String {
    file.get("general.name").and_then(|v| v.as_str()).unwrap_or("?").replace([',', '"'], " ")
}

/// The published mix a file follows, by its routed experts' type.
pub(crate) fn quant_name(file: &GgufFile) -> &'static str {
    match file.tensor("blk.0.ffn_gate_exps.weight").map(|t| t.ty()) {
        Some(GgmlType::IQ2_XXS) => "q2",
        Some(GgmlType::Q4_K) => "q4",
        _ => "other",
    }
}

/// (card, backend) columns for the runner's device.
pub(crate) fn card_and_backend(runner: &dsv4_engine::Runner) -> (String, &'static str) {
    match runner.device() {
        dsv4_engine::Device::Cpu => ("none".to_owned(), "cpu"),
        dsv4_engine::Device::Cuda(_) => (card_name(&runner.describe()), "cuda"),
    }
}

pub(crate) fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string()))
        .unwrap_or_else(|| "unknown cpu".into())
        .replace(',', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn card_name_drops_the_device_index_and_commas() {
        assert_eq!(card_name("cuda:0 NVIDIA H100 80GB HBM3"), "NVIDIA H100 80GB HBM3");
        assert_eq!(card_name("cuda:1 NVIDIA H200, rev 2"), "NVIDIA H200  rev 2");
        assert_eq!(card_name("cuda:0"), "unknown gpu");
    }

    #[test]
    fn header_names_machine_card_model_and_quant() {
        let cols: Vec<&str> = CSV_HEADER.split(',').collect();
        for c in ["date", "machine", "card", "backend", "model", "quant", "layers", "frontier", "prefill_tps", "decode_tps"] {
            assert!(cols.contains(&c), "{c} missing from {CSV_HEADER}");
        }
        assert_eq!(cols.len(), 14);
    }
}
