//! Exact tool-call replay: the tokens the model sampled for a tool-call block, remembered by
//! tool-call id, put back in place of the official re-rendering when a client sends the calls
//! back as JSON.
//!
//! A client returns a tool call as a name and JSON arguments; the official encoder renders it
//! canonically (its own spacing, JSON formatting, parameter order). Whenever that differs
//! from what the model wrote, the prompt would diverge from the live session right there and
//! everything after it (the tool result, the next turns) would be prefilled again, and the
//! model would see a transcript it did not write. With the sampled block back in place, the
//! prompt is what the model produced, token for token.

use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::sync::{Arc, Mutex};

use dsv4_chat::deepseek_recipe_core::conversation::Conversation;
use dsv4_chat::deepseek_recipe_core::messages::InputMessage;
use dsv4_chat::EncodedPrompt;
use dsv4_tokenizer::Tokenizer;
use serde_json::Value;

const BLOCK_START: &str = "<｜DSML｜tool_calls>";
const BLOCK_END: &str = "</｜DSML｜tool_calls>";
/// The special token inside both markers; a marker counts only where it is that token.
const DSML: &str = "｜DSML｜";
/// Blocks remembered (oldest forgotten first).
const CAPACITY: usize = 4096;

/// A sampled tool-call block: its tokens, and how many bytes of the first token come before
/// the block's start marker (a `"\n\n"` merged into the same token).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Block {
    tokens: Vec<u32>,
    lead: usize,
}

/// Blocks by tool-call id, and the ids in the order they were remembered.
type Remembered = (HashMap<String, Arc<Block>>, VecDeque<String>);

#[derive(Default)]
pub(crate) struct ToolMemory {
    inner: Mutex<Remembered>,
}

impl ToolMemory {
    /// Remembers the block in `generated` under each of `ids` (the ids the client was given).
    pub fn record(&self, tok: &Tokenizer, generated: &[u32], ids: &[String]) {
        let Some(block) = extract(tok, generated) else { return };
        let block = Arc::new(block);
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (map, order) = &mut *g;
        for id in ids {
            if map.insert(id.clone(), block.clone()).is_none() {
                order.push_back(id.clone());
            }
        }
        while order.len() > CAPACITY {
            if let Some(old) = order.pop_front() {
                map.remove(&old);
            }
        }
    }

    /// Writes every remembered block (JSON lines, oldest first) to `path` atomically; the
    /// next server started on the same disk cache reads it back, so a tool call sent back
    /// after a restart still replays exactly.
    pub fn save(&self, path: &std::path::Path) -> std::io::Result<()> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (map, order) = &*g;
        let mut out = String::new();
        for id in order {
            if let Some(b) = map.get(id) {
                out += &serde_json::json!({"id": id, "lead": b.lead, "tokens": b.tokens}).to_string();
                out.push('\n');
            }
        }
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, out)?;
        std::fs::rename(&tmp, path)
    }

    /// Reads what [`ToolMemory::save`] wrote; lines that do not parse, or name tokens outside
    /// the vocabulary, are skipped (and counted in the returned warning count).
    pub fn load(&self, path: &std::path::Path, vocab: usize) -> std::io::Result<usize> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (map, order) = &mut *g;
        let mut skipped = 0;
        let mut last: Option<Arc<Block>> = None;
        for line in text.lines() {
            let parsed = serde_json::from_str::<Value>(line).ok().and_then(|v| {
                let id = v["id"].as_str()?.to_owned();
                let lead = v["lead"].as_u64()? as usize;
                let tokens: Vec<u32> = v["tokens"].as_array()?.iter().map(|t| t.as_u64().filter(|&t| (t as usize) < vocab).map(|t| t as u32)).collect::<Option<_>>()?;
                (!tokens.is_empty()).then_some((id, Block { tokens, lead }))
            });
            let Some((id, block)) = parsed else {
                skipped += 1;
                continue;
            };
            // Calls of one block were saved one after another: share the block again.
            let block = match &last {
                Some(b) if **b == block => b.clone(),
                _ => Arc::new(block),
            };
            last = Some(block.clone());
            if map.insert(id.clone(), block).is_none() {
                order.push_back(id);
            }
        }
        Ok(skipped)
    }

    fn get(&self, id: &str) -> Option<Arc<Block>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).0.get(id).cloned()
    }

    /// `prompt` with every remembered block put back; `None` when nothing applies.
    pub fn replay(&self, tok: &Arc<Tokenizer>, conv: &Conversation, prompt: &EncodedPrompt) -> Option<EncodedPrompt> {
        let calls: Vec<Vec<String>> = conv
            .messages
            .iter()
            .filter_map(|m| match m {
                InputMessage::Assistant { tool_calls: Some(calls), .. } => Some(calls.iter().map(|c| c.id.clone()).collect()),
                _ => None,
            })
            .collect();
        if calls.is_empty() {
            return None;
        }
        let blocks = blocks(prompt);
        // The assistant turns' blocks are the last ones (the tool instructions may show one).
        let first = blocks.len().checked_sub(calls.len())?;
        let mut swaps: Vec<(Range<usize>, Arc<Block>)> = Vec::new();
        for (ids, range) in calls.iter().zip(&blocks[first..]) {
            let Some(block) = ids.first().and_then(|id| self.get(id)) else { continue };
            if !ids.iter().all(|id| self.get(id).is_some_and(|b| Arc::ptr_eq(&b, &block))) {
                continue;
            }
            // The bytes before the marker that the first sampled token carries must be there.
            let lead_bytes = &tok.decode(&block.tokens[..1])[..block.lead];
            if range.start < block.lead || prompt.prompt.as_bytes()[range.start - block.lead..range.start] != *lead_bytes {
                continue;
            }
            swaps.push((range.start - block.lead..range.end, block));
        }
        if swaps.is_empty() {
            return None;
        }
        rebuild(tok, prompt, &swaps)
    }
}

/// Byte ranges of the real tool-call blocks in a rendered prompt (markers whose `｜DSML｜` is a
/// special token, not text that spells one).
fn blocks(prompt: &EncodedPrompt) -> Vec<Range<usize>> {
    let text = &prompt.prompt;
    let special = |at: usize| prompt.special_ranges.iter().any(|r| r.start == at && r.end == at + DSML.len());
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = text[from..].find(BLOCK_START).map(|i| i + from) {
        from = i + BLOCK_START.len();
        if !special(i + 1) {
            continue;
        }
        let Some(j) = text[from..].find(BLOCK_END).map(|j| j + from) else { break };
        if special(j + 2) {
            out.push(i..j + BLOCK_END.len());
            from = j + BLOCK_END.len();
        }
    }
    out
}

/// The tool-call block in generated tokens: from the token holding the start marker to the one
/// ending exactly with the end marker (a block that ends inside a token is not replayable).
fn extract(tok: &Tokenizer, generated: &[u32]) -> Option<Block> {
    let pieces: Vec<Vec<u8>> = generated.iter().map(|&t| tok.decode(&[t])).collect();
    let text: Vec<u8> = pieces.concat();
    let find = |hay: &[u8], needle: &str, from: usize| hay[from..].windows(needle.len()).position(|w| w == needle.as_bytes()).map(|p| p + from);
    // Tool calls follow the reasoning; a marker spelled inside it is not a block.
    let after_think = find(&text, "</think>", 0).map_or(0, |i| i + "</think>".len());
    let start = find(&text, BLOCK_START, after_think)?;
    let end = find(&text, BLOCK_END, start)? + BLOCK_END.len();
    let (mut at, mut first, mut last) = (0usize, None, None);
    let mut lead = 0;
    for (i, p) in pieces.iter().enumerate() {
        let next = at + p.len();
        if first.is_none() && next > start {
            first = Some(i);
            lead = start - at;
        }
        if next == end {
            last = Some(i);
            break;
        }
        if next > end {
            return None;
        }
        at = next;
    }
    Some(Block { tokens: generated[first?..=last?].to_vec(), lead })
}

/// The prompt with `swaps` (ascending, disjoint byte ranges) replaced by sampled blocks: text,
/// special ranges and token ids kept consistent, so later matching against a live session
/// works on either.
fn rebuild(tok: &Arc<Tokenizer>, p: &EncodedPrompt, swaps: &[(Range<usize>, Arc<Block>)]) -> Option<EncodedPrompt> {
    let mut text = String::new();
    let mut special = Vec::new();
    let mut ids = Vec::new();
    let mut at = 0;
    for (range, block) in swaps {
        ids.extend(p.ids_between(tok, at, range.start)?);
        let shift = text.len() as isize - at as isize;
        special.extend(
            p.special_ranges.iter().filter(|r| r.start >= at && r.end <= range.start).map(|r| {
                (r.start as isize + shift) as usize..(r.end as isize + shift) as usize
            }),
        );
        text.push_str(&p.prompt[at..range.start]);
        for &t in &block.tokens {
            let piece = tok.decode(&[t]);
            let s = text.len();
            text.push_str(std::str::from_utf8(&piece).ok()?);
            if tok.is_added(t) {
                special.push(s..text.len());
            }
        }
        ids.extend(&block.tokens);
        at = range.end;
    }
    ids.extend(p.ids_from(tok, at)?);
    let shift = text.len() as isize - at as isize;
    special.extend(p.special_ranges.iter().filter(|r| r.start >= at).map(|r| (r.start as isize + shift) as usize..(r.end as isize + shift) as usize));
    text.push_str(&p.prompt[at..]);
    Some(EncodedPrompt { prompt: text, special_ranges: special, token_ids: ids, mode: p.mode, think_max_downgraded: p.think_max_downgraded })
}

/// Tool-call ids in a protocol chunk, whatever the protocol: Chat Completions `tool_calls[].id`,
/// Anthropic `tool_use.id`, Responses `function_call` / `custom_tool_call` `call_id`.
pub(crate) fn tool_call_ids(chunk: &Value, out: &mut Vec<String>) {
    match chunk {
        Value::Object(o) => {
            let kind = o.get("type").and_then(Value::as_str);
            let id = match kind {
                Some("tool_use") => o.get("id"),
                Some("function_call") | Some("custom_tool_call") => o.get("call_id"),
                _ if o.contains_key("function") => o.get("id"),
                _ => None,
            };
            if let Some(id) = id.and_then(Value::as_str).filter(|s| !s.is_empty()) {
                if !out.iter().any(|x| x == id) {
                    out.push(id.to_owned());
                }
            }
            o.values().for_each(|v| tool_call_ids(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| tool_call_ids(v, out)),
        _ => {}
    }
}
