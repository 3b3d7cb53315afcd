//! Diagnostics: exact tokenization, greedy log-probabilities in the official vectors' shape,
//! and a trace of what each turn rendered, reused and generated.

use super::{Args, Loaded};
use anyhow::Context;
use dsv4_chat::deepseek_recipe_core::conversation::Conversation;
use dsv4_chat::deepseek_recipe_core::messages::InputMessage;
use dsv4_chat::deepseek_recipe_core::prompt::Prompt;
use dsv4_chat::ThinkingMode;
use dsv4_tokenizer::Tokenizer;
use serde_json::{json, Value};
use std::io::Write;
use std::path::Path;

/// The text tokenized exactly as written, special-token strings recognised, no template.
pub fn dump_tokens(tok: &Tokenizer, text: &str) -> anyhow::Result<()> {
    let ids = tok.encode_with_special(text);
    let mut o = std::io::stdout().lock();
    writeln!(o, "{}", serde_json::to_string(&ids)?)?;
    for id in ids {
        writeln!(o, "{id:6}  {}", tok.token_piece(id).unwrap_or("?"))?;
    }
    Ok(())
}

fn token_json(tok: &Tokenizer, id: u32) -> Value {
    let bytes = tok.decode(&[id]);
    json!({"id": id, "text": String::from_utf8_lossy(&bytes), "bytes": bytes})
}

/// Renders the prompt as a single user message (plus the system prompt), then decodes
/// greedily for up to `-n` tokens (the EOS step included), recording the top-k
/// log-probabilities of every step.
pub fn dump_logprobs(l: &Loaded, a: &Args, mode: ThinkingMode, text: &str, out: &Path, trace: &mut Trace) -> anyhow::Result<()> {
    let mut messages = Vec::new();
    if !a.system.is_empty() {
        messages.push(InputMessage::System { content: Prompt::plain(a.system.clone()), image_sources: vec![], tools: None });
    }
    messages.push(InputMessage::User { content: Prompt::plain(text), image_sources: vec![] });
    let mut conv = Conversation { messages, ..Conversation::default() };
    let mode = l.encoder.effective_mode(mode);
    mode.apply(&mut conv);
    let prompt = l.encoder.encode(&conv, mode)?;
    trace.prompt(&prompt.prompt, prompt.token_ids.len());
    let numerics = a.numerics();
    let mut state = l.runner.new_state().map_err(anyhow::Error::msg)?;
    let mut logits = l.runner.forward(&mut state, &prompt.token_ids, numerics).map_err(anyhow::Error::msg)?;
    let eos = l.tok.specials().eos;
    let k = a.logprobs_top_k.clamp(1, 128);
    let mut steps = Vec::new();
    for step in 0..a.tokens {
        let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let lse = m + logits.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln();
        let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
        idx.sort_by(|&x, &y| logits[y as usize].total_cmp(&logits[x as usize]).then(x.cmp(&y)));
        let chosen = idx[0];
        let top: Vec<Value> = idx[..k]
            .iter()
            .map(|&t| json!({"token": token_json(&l.tok, t), "logit": logits[t as usize], "logprob": logits[t as usize] as f64 - lse}))
            .collect();
        steps.push(json!({
            "step": step,
            "token": token_json(&l.tok, chosen),
            "logprob": logits[chosen as usize] as f64 - lse,
            "top_logprobs": top,
        }));
        if chosen == eos || step + 1 == a.tokens {
            break;
        }
        logits = l.runner.forward(&mut state, &[chosen], numerics).map_err(anyhow::Error::msg)?;
    }
    let doc = json!({
        "source": "dsv4",
        "prompt_tokens": prompt.token_ids.len(),
        "ctx": a.ctx,
        "top_k": k,
        "numerics": if a.plain_numerics { "plain" } else { "official" },
        "steps": steps,
    });
    std::fs::write(out, serde_json::to_vec_pretty(&doc)?).with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

/// JSON lines appended to the `--trace` file, when one was given.
pub struct Trace(Option<std::fs::File>);

impl Trace {
    pub fn open(path: Option<&Path>) -> anyhow::Result<Trace> {
        Ok(Trace(match path {
            Some(p) => Some(
                std::fs::OpenOptions::new().create(true).append(true).open(p).with_context(|| format!("opening {}", p.display()))?,
            ),
            None => None,
        }))
    }

    fn write(&mut self, v: Value) {
        if let Some(f) = &mut self.0 {
            let _ = writeln!(f, "{v}");
        }
    }

    pub fn prompt(&mut self, rendered: &str, tokens: usize) {
        self.write(json!({"event": "prompt", "tokens": tokens, "rendered": rendered}));
    }

    pub fn cache(&mut self, p: &dsv4_engine::PrefillStats) {
        self.write(json!({
            "event": "cache",
            "reused_tokens": p.reused,
            "from_disk_tokens": p.from_disk,
            "prefilled_tokens": p.prefilled,
            "saved_to_disk_tokens": p.saved_to_disk,
        }));
    }

    pub fn generated(&mut self, content: &str, reasoning: &str, tokens: usize, finish: &str) {
        self.write(json!({"event": "generated", "tokens": tokens, "finish": finish, "reasoning": reasoning, "content": content}));
    }
}
