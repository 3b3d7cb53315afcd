use anyhow::Context;
use dsv4_gguf::{GgmlType, GgufFile, Value};
use dsv4_model::layout::{self, ExpertMix, LayoutIssue};
use dsv4_model::ModelConfig;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    file: PathBuf,
    /// Print only the summary and the layout check, not every tensor.
    #[arg(long)]
    brief: bool,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let f = GgufFile::open(&a.file).with_context(|| format!("reading {}", a.file.display()))?;
    let mut o = String::new();
    writeln!(o, "file: {} ({} bytes)", a.file.display(), f.file_size()).unwrap();
    writeln!(o, "GGUF v{}, alignment {}, tensor data at {}", f.version(), f.alignment(), f.data_start()).unwrap();
    for w in f.warnings() {
        writeln!(o, "warning: {w}").unwrap();
    }
    writeln!(o, "\nmetadata ({} keys):", f.metadata().len()).unwrap();
    for (k, v) in f.metadata() {
        writeln!(o, "  {k} = {}", show_value(v)).unwrap();
    }
    let total: u64 = f.tensors().iter().map(|t| t.n_bytes()).sum();
    if !a.brief {
        writeln!(o, "\ntensors ({}):", f.tensors().len()).unwrap();
        for t in f.tensors() {
            writeln!(o, "  {:<44} {:<8} {:<24} {:>14} B  @{}", t.name(), t.ty().name(), format!("{:?}", t.dims()), t.n_bytes(), t.offset()).unwrap();
        }
    }
    writeln!(o, "\n{} tensors, {} bytes of tensor data ({:.2} GiB)", f.tensors().len(), total, total as f64 / (1u64 << 30) as f64).unwrap();

    let issues = check(&f, &mut o);
    // A closed pipe (`| head`) is not an error worth reporting.
    match std::io::stdout().lock().write_all(o.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e.into()),
        _ => {}
    }
    Ok(if issues.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(2) })
}

/// Prints the layout verdict and returns the mismatches.
fn check(f: &GgufFile, o: &mut String) -> Vec<String> {
    let is_mtp = f.tensors().iter().any(|t| t.name().starts_with("mtp.0.")) && f.tensor("token_embd.weight").is_none();
    let cfg = match ModelConfig::from_metadata(f.metadata()) {
        Ok(c) => c,
        // The published MTP file is bound by tensor names only; assume the Flash geometry.
        Err(_) if is_mtp => ModelConfig::flash(43),
        Err(e) => {
            writeln!(o, "layout: cannot check, the metadata is not a DeepSeek V4 geometry: {e}").unwrap();
            return vec![e.to_string()];
        }
    };
    let probe = if is_mtp { "mtp.0.ffn_gate_exps.weight" } else { "blk.0.ffn_gate_exps.weight" };
    let mix = match f.tensor(probe).map(|t| t.ty()) {
        Some(GgmlType::Q4_K) => ExpertMix::Q4,
        _ => ExpertMix::Q2,
    };
    let expected = if is_mtp { layout::mtp_tensors(&cfg, mix) } else { layout::main_tensors(&cfg, mix) };
    let found = f.tensors().iter().map(|t| (t.name(), t.dims(), t.ty()));
    let issues: Vec<LayoutIssue> = layout::check_layout(&expected, found);
    let geometry = if cfg.is_flash() {
        format!("DeepSeek V4 Flash geometry, {} of 43 layers", cfg.n_layer)
    } else {
        format!("custom DeepSeek V4 geometry ({} layers, width {})", cfg.n_layer, cfg.n_embd)
    };
    let what = if is_mtp { "MTP file" } else { "model file" };
    if issues.is_empty() {
        writeln!(o, "layout: OK, {what}, {geometry}, {} expert mix", mix.name()).unwrap();
    } else {
        writeln!(o, "layout: {} mismatches against the {} {what} layout ({geometry}):", issues.len(), mix.name()).unwrap();
        for i in &issues {
            writeln!(o, "  {i}").unwrap();
        }
    }
    issues.iter().map(|i| i.to_string()).collect()
}

fn show_value(v: &Value) -> String {
    match v {
        Value::String(s) if s.len() > 120 => format!("{:?}… ({} bytes)", &s[..s.floor_char_boundary(100)], s.len()),
        Value::Array(a) => {
            let items = format!("{a:?}");
            if items.len() > 160 {
                format!("{}… ({} items of {:?})", &items[..items.floor_char_boundary(120)], a.len(), a.elem_type())
            } else {
                items
            }
        }
        other => format!("{other:?}"),
    }
}
