//! `dsv4 test-vectors`: the five official DeepSeek V4 Flash continuations. Without a model it
//! checks prompt rendering + tokenization against the API's `prompt_tokens`; with one it also
//! decodes greedily and compares tokens and top-20 log-probabilities with the official ones.

use anyhow::{bail, Context};
use dsv4_chat::deepseek_recipe_core::conversation::Conversation;
use dsv4_chat::deepseek_recipe_core::messages::InputMessage;
use dsv4_chat::deepseek_recipe_core::prompt::Prompt;
use dsv4_chat::{PromptEncoder, ThinkingMode};
use dsv4_model::{Model, Numerics};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

#[derive(clap::Args)]
pub struct Args {
    /// The test-vector folder (default: ../shared/test-vectors beside the repository).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// A real model: also compare greedy tokens and log-probabilities.
    #[arg(short, long)]
    model: Option<PathBuf>,
    #[arg(long)]
    plain_numerics: bool,
}

fn find_dir(explicit: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(d) = explicit {
        return Ok(d);
    }
    let mut here = std::env::current_dir()?;
    loop {
        let c = here.join("shared/test-vectors");
        if c.join("manifest.json").exists() {
            return Ok(c);
        }
        if !here.pop() {
            bail!("no shared/test-vectors found above the current directory; pass --dir");
        }
    }
}

fn read_json(p: &Path) -> anyhow::Result<Value> {
    serde_json::from_slice(&std::fs::read(p).with_context(|| format!("reading {}", p.display()))?)
        .with_context(|| format!("parsing {}", p.display()))
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let dir = find_dir(a.dir)?;
    let manifest = read_json(&dir.join("manifest.json"))?;
    let (tok, model) = match &a.model {
        Some(p) => {
            let file = Arc::new(dsv4_gguf::GgufFile::open(p).with_context(|| format!("reading {}", p.display()))?);
            let tok = crate::tokenize::from_gguf(&file)?;
            (Arc::new(tok), Some(Model::from_file(file)?))
        }
        None => (Arc::new(dsv4_tokenizer::Tokenizer::bundled()?), None),
    };
    let encoder = PromptEncoder::new(tok.clone(), 1 << 20);
    let numerics = if a.plain_numerics { Numerics::Plain } else { Numerics::Official };
    let mut failures = 0;
    for case in manifest["prompts"].as_array().context("manifest has no prompts")? {
        let id = case["id"].as_str().unwrap_or("?");
        let prompt = std::fs::read_to_string(dir.join(case["prompt_file"].as_str().unwrap_or("")))?;
        let official = read_json(&dir.join(case["official_file"].as_str().unwrap_or("")))?;
        let conv = Conversation {
            messages: vec![InputMessage::User { content: Prompt::plain(prompt), image_sources: vec![] }],
            ..Conversation::default()
        };
        let enc = encoder.encode(&conv, ThinkingMode::NonThink)?;
        let want = official["usage"]["prompt_tokens"].as_u64().unwrap_or(0) as usize;
        let ok = enc.token_ids.len() == want;
        failures += usize::from(!ok);
        print!("{id}: prompt tokens {} (official {want}) {}", enc.token_ids.len(), if ok { "ok" } else { "MISMATCH" });
        if let Some(m) = &model {
            let steps = official["steps"].as_array().map(|s| s.len()).unwrap_or(0);
            let mut st = m.new_state();
            let mut logits = m.forward(&mut st, &enc.token_ids, false, numerics)?.pop().unwrap();
            let (mut agree, mut max_err) = (0, 0f64);
            for s in official["steps"].as_array().into_iter().flatten() {
                let mx = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
                let lse = mx + logits.iter().map(|&x| (x as f64 - mx).exp()).sum::<f64>().ln();
                let chosen = dsv4_engine::sampler::argmax(&logits);
                let want_bytes: Vec<u8> =
                    s["token"]["bytes"].as_array().into_iter().flatten().filter_map(|b| b.as_u64()).map(|b| b as u8).collect();
                if tok.decode(&[chosen]) == want_bytes {
                    agree += 1;
                }
                for t in s["top_logprobs"].as_array().into_iter().flatten() {
                    let lp = t["logprob"].as_f64().unwrap_or(-9999.0);
                    let bytes: Vec<u8> =
                        t["token"]["bytes"].as_array().into_iter().flatten().filter_map(|b| b.as_u64()).map(|b| b as u8).collect();
                    // The API reports -9999 for alternatives it rounded away; only real values count.
                    if lp > -100.0 {
                        if let Some(id) = tok.token_to_id_bytes(&bytes) {
                            max_err = max_err.max((logits[id as usize] as f64 - lse - lp).abs());
                        }
                    }
                }
                logits = m.forward(&mut st, &[chosen], false, numerics)?.pop().unwrap();
            }
            failures += usize::from(agree != steps);
            print!("; greedy tokens {agree}/{steps} equal, max |logprob error| {max_err:.3}");
        }
        println!();
    }
    Ok(if failures == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
