//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use dsv4_chat::deepseek_recipe_core::conversation::{
    Conversation, ReasoningEffort, ResponseFormat,
};
use dsv4_chat::deepseek_recipe_core::messages::{InputMessage, ToolCall};
use dsv4_chat::deepseek_recipe_core::prompt::Prompt;
use dsv4_chat::deepseek_recipe_core::tools::{ToolChoice, ToolDefinition};
use dsv4_chat::{ChatEvent, PromptEncoder, Protocol};
use dsv4_tokenizer::Tokenizer;
use serde_json::Value;

/// The real V4 tokenizer, built once per test binary.
pub fn tokenizer() -> Arc<Tokenizer> {
    static TOK: OnceLock<Arc<Tokenizer>> = OnceLock::new();
    TOK.get_or_init(|| Arc::new(Tokenizer::bundled().expect("bundled vocabulary must build")))
        .clone()
}

/// An encoder with a context large enough for Think Max.
pub fn encoder() -> PromptEncoder {
    PromptEncoder::new(tokenizer(), 1 << 20)
}

pub fn golden() -> &'static Value {
    static G: OnceLock<Value> = OnceLock::new();
    G.get_or_init(|| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/render_golden.json");
        let text = std::fs::read_to_string(path).expect("read render_golden.json");
        serde_json::from_str(&text).expect("parse render_golden.json")
    })
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} must be a string in {v}"))
}

/// Rebuild a conversation from the golden spec format (gen_render_golden.py `build_conversation`).
pub fn conversation_from_spec(spec: &Value) -> Conversation {
    let messages = spec["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| {
            let content = str_of(m, "content");
            match str_of(m, "role") {
                "system" => InputMessage::System {
                    content: Prompt::plain(content),
                    image_sources: vec![],
                    tools: None,
                },
                "user" => InputMessage::User {
                    content: Prompt::plain(content),
                    image_sources: vec![],
                },
                "assistant" => InputMessage::Assistant {
                    content: content.to_owned(),
                    reasoning_content: m["reasoning_content"].as_str().map(str::to_owned),
                    tool_calls: m["tool_calls"].as_array().map(|calls| {
                        calls
                            .iter()
                            .map(|c| ToolCall {
                                id: str_of(c, "id").to_owned(),
                                name: str_of(c, "name").to_owned(),
                                arguments: str_of(c, "arguments").to_owned(),
                            })
                            .collect()
                    }),
                    prefix: m["prefix"].as_bool().unwrap_or(false),
                },
                "tool" => InputMessage::Tool {
                    content: Prompt::plain(content),
                    image_sources: vec![],
                    tool_call_id: m["tool_call_id"].as_str().map(str::to_owned),
                },
                "latest_reminder" => InputMessage::LatestReminder {
                    content: content.to_owned(),
                },
                other => panic!("unknown role {other}"),
            }
        })
        .collect();
    let tools = spec["tools"]
        .as_array()
        .map(|tools| {
            tools
                .iter()
                .map(|t| ToolDefinition {
                    name: str_of(t, "name").to_owned(),
                    description: t["description"].as_str().map(str::to_owned),
                    parameters: t["parameters"].clone(),
                    strict: t["strict"].as_bool(),
                    defer_loading: t["defer_loading"].as_bool().unwrap_or(false),
                })
                .collect()
        })
        .unwrap_or_default();
    let response_format = if !spec["response_schema"].is_null() {
        ResponseFormat::JsonSchema(spec["response_schema"].clone())
    } else {
        match spec["response_format"].as_str().unwrap_or("text") {
            "text" => ResponseFormat::Text,
            "json_object" => ResponseFormat::JsonObject,
            other => panic!("unknown response_format {other}"),
        }
    };
    Conversation {
        messages,
        thinking_mode: spec["thinking_mode"].as_bool().unwrap_or(true),
        tools,
        tool_choice: match spec["tool_choice"].as_str().unwrap_or("auto") {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            other => panic!("unknown tool_choice {other}"),
        },
        reasoning_effort: spec["reasoning_effort"].as_str().map(effort_from_str),
        response_format,
    }
}

pub fn effort_from_str(s: &str) -> ReasoningEffort {
    match s {
        "low" => ReasoningEffort::Low,
        "high" => ReasoningEffort::High,
        "xhigh" => ReasoningEffort::Xhigh,
        "max" => ReasoningEffort::Max,
        other => panic!("unknown effort {other}"),
    }
}

pub fn effort_name(e: Option<ReasoningEffort>) -> Option<&'static str> {
    e.map(|e| match e {
        ReasoningEffort::Low => "low",
        ReasoningEffort::High => "high",
        ReasoningEffort::Xhigh => "xhigh",
        ReasoningEffort::Max => "max",
    })
}

pub fn protocol_of(kind: &str) -> Protocol {
    match kind {
        "chat_completions" => Protocol::ChatCompletions,
        "responses" => Protocol::Responses,
        "messages" => Protocol::Messages,
        other => panic!("unknown request kind {other}"),
    }
}

pub fn user(text: &str) -> InputMessage {
    InputMessage::User {
        content: Prompt::plain(text),
        image_sources: vec![],
    }
}

pub fn system(text: &str) -> InputMessage {
    InputMessage::System {
        content: Prompt::plain(text),
        image_sources: vec![],
        tools: None,
    }
}

/// Walk up from the crate until a `shared/test-vectors` directory exists; else
/// `/work/shared`. `None` when neither has the vectors.
pub fn shared_dir() -> Option<PathBuf> {
    let mut dir = Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    while let Some(d) = dir {
        let candidate = d.join("shared");
        if candidate.join("test-vectors").is_dir() {
            return Some(candidate);
        }
        dir = d.parent().map(PathBuf::from);
    }
    let fallback = PathBuf::from("/work/shared");
    fallback.join("test-vectors").is_dir().then_some(fallback)
}

/// Merge adjacent deltas of one kind, so that outputs split differently compare equal.
pub fn normalize(events: &[ChatEvent]) -> Vec<ChatEvent> {
    let mut out: Vec<ChatEvent> = Vec::new();
    for e in events {
        match (out.last_mut(), e) {
            (Some(ChatEvent::Reasoning(a)), ChatEvent::Reasoning(b)) => a.push_str(b),
            (Some(ChatEvent::Content(a)), ChatEvent::Content(b)) => a.push_str(b),
            (
                Some(ChatEvent::ToolCallArguments { index: i, delta: a }),
                ChatEvent::ToolCallArguments { index: j, delta: b },
            ) if i == j => a.push_str(b),
            _ => out.push(e.clone()),
        }
    }
    out
}

/// A tiny deterministic generator (SplitMix64) for random splits.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }
}
