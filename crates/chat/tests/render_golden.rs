//! Rendering and encoding are identical to DeepSeek's official encoder (the `deepseek-recipe`
//! Python package, tools/reference/gen_render_golden.py) for every message shape: system
//! messages, multi-turn, tools, DSML tool calls and results, reasoning content, non-think /
//! low / high / xhigh / max, prefix continuation, latest reminders, response formats, and
//! requests of all three protocols converted with our model names.

mod common;

use common::*;
use dsv4_chat::deepseek_recipe::request::ProtocolRequest;
use dsv4_chat::deepseek_recipe_core::conversation::ResponseFormat;
use dsv4_chat::deepseek_recipe_core::tools::ToolChoice;
use dsv4_chat::deepseek_recipe_encoding::dsv4::DeepseekV4Encoding;
use dsv4_chat::deepseek_recipe_encoding::PromptEncoding;
use dsv4_chat::{RecipeTokenizer, RequestConverter, ThinkingMode};
use serde_json::Value;

fn ranges(v: &Value) -> Vec<std::ops::Range<usize>> {
    v.as_array()
        .expect("special_ranges")
        .iter()
        .map(|r| r[0].as_u64().unwrap() as usize..r[1].as_u64().unwrap() as usize)
        .collect()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("token_ids")
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// Where two id sequences first differ, with the pieces around it.
fn first_difference(got: &[u32], want: &[u32]) -> String {
    let tok = tokenizer();
    let at = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    let show = |ids: &[u32]| {
        ids.iter()
            .skip(at.saturating_sub(3))
            .take(7)
            .map(|&id| format!("{id}:{:?}", tok.decode_lossy(&[id])))
            .collect::<Vec<_>>()
            .join(" ")
    };
    format!(
        "{} ids vs {} official; first difference at {at}\n  ours:     {}\n  official: {}",
        got.len(),
        want.len(),
        show(got),
        show(want)
    )
}

#[test]
fn golden_file_is_what_the_tests_expect() {
    let g = golden();
    assert_eq!(g["deepseek_recipe"], "0.2.0");
    assert_eq!(
        g["tokenizer_json_sha256"],
        dsv4_tokenizer::BUNDLED_TOKENIZER_JSON_SHA256,
        "golden ids were made with another tokenizer.json than the bundled one"
    );
    let cases = g["cases"].as_array().unwrap();
    assert!(
        cases.len() >= 30,
        "expected ~30+ cases, got {}",
        cases.len()
    );
    // The model table the generator used is ours.
    let models = dsv4_chat::ModelCatalog::standard();
    let table = g["model_default_thinking"].as_object().unwrap();
    assert_eq!(table.len(), models.names().count());
    for (name, thinks) in table {
        assert_eq!(models.thinks_by_default(name), thinks.as_bool(), "{name}");
    }
}

#[test]
fn conversations_render_and_encode_like_the_official_encoder() {
    let encoder = encoder();
    let tok = tokenizer();
    let mut checked = 0;
    for case in golden()["cases"].as_array().unwrap() {
        if case["kind"] != "conversation" {
            continue;
        }
        let name = case["name"].as_str().unwrap();
        let conversation = conversation_from_spec(&case["conversation"]);
        let encoded = encoder
            .encode(&conversation, ThinkingMode::of(&conversation))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            encoded.prompt,
            case["prompt"].as_str().unwrap(),
            "{name}: prompt text"
        );
        assert_eq!(
            encoded.special_ranges,
            ranges(&case["special_ranges"]),
            "{name}: special ranges"
        );
        let want = ids(&case["token_ids"]);
        assert!(
            encoded.token_ids == want,
            "{name}: token ids\n{}",
            first_difference(&encoded.token_ids, &want)
        );
        assert!(!encoded.think_max_downgraded, "{name}");
        // Decoding the ids gives back the prompt byte for byte.
        assert_eq!(
            tok.decode(&encoded.token_ids),
            encoded.prompt.as_bytes(),
            "{name}: round trip"
        );
        // The crate's own encode path, with our tokenizer attached, agrees.
        let via_crate = DeepseekV4Encoding::new()
            .with_tokenizer(RecipeTokenizer::new(tok.clone()))
            .encode(&conversation)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(via_crate, want, "{name}: PromptEncoding::encode");
        checked += 1;
    }
    assert!(checked >= 30, "only {checked} conversation cases");
}

#[test]
fn requests_convert_render_and_encode_like_the_official_package() {
    let converter = RequestConverter::default();
    let encoder = encoder();
    let mut checked = 0;
    for case in golden()["cases"].as_array().unwrap() {
        let kind = case["kind"].as_str().unwrap();
        if kind == "conversation" {
            continue;
        }
        let name = case["name"].as_str().unwrap();
        let body = serde_json::to_vec(&case["body"]).unwrap();
        let mut converted = converter
            .convert_json(protocol_of(kind), &body)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(converted.model, case["body"]["model"].as_str().unwrap());
        let want = &case["converted"];
        let conversation = converted.conversation();
        assert_eq!(
            conversation.thinking_mode,
            want["thinking_mode"].as_bool().unwrap(),
            "{name}"
        );
        assert_eq!(
            effort_name(conversation.reasoning_effort),
            want["reasoning_effort"].as_str(),
            "{name}: effort"
        );
        let choice = match converted.tool_choice() {
            ToolChoice::Auto => "auto",
            ToolChoice::None => "none",
            ToolChoice::Required => "required",
        };
        assert_eq!(choice, want["tool_choice"], "{name}");
        let tool_names: Vec<&str> = converted.tools().iter().map(|t| t.name.as_str()).collect();
        let want_names: Vec<&str> = want["tool_names"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(tool_names, want_names, "{name}");
        let format = match converted.response_format() {
            ResponseFormat::Text => "text",
            ResponseFormat::JsonObject => "json_object",
            ResponseFormat::JsonSchema(_) => "json_schema",
            ResponseFormat::Regex(_) => "regex",
        };
        assert_eq!(format, want["response_format"], "{name}");

        let s = &converted.settings;
        assert_eq!(
            s.max_tokens.map(u64::from),
            want["max_tokens"].as_u64(),
            "{name}"
        );
        // Python reports the f32 widened to f64; narrowing back is exact.
        assert_eq!(
            s.temperature,
            want["temperature"].as_f64().unwrap() as f32,
            "{name}"
        );
        assert_eq!(s.top_p, want["top_p"].as_f64().unwrap() as f32, "{name}");
        assert_eq!(s.seed, want["seed"].as_u64(), "{name}");
        assert_eq!(
            s.output_constraint.as_ref().map(|c| c.kind()),
            want["constraint_kind"].as_str(),
            "{name}"
        );
        let stops: Vec<&str> = want["stop_sequences"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(s.stop, stops, "{name}");
        assert_eq!(
            s.thinking,
            ThinkingMode::of(converted.conversation()),
            "{name}"
        );

        let p = converted.parsing_options();
        assert_eq!(
            p.parse_tool_calls,
            want["parse_tool_calls"].as_bool().unwrap(),
            "{name}"
        );
        assert_eq!(
            p.starts_in_tool_calls,
            want["starts_in_tool_calls"].as_bool().unwrap(),
            "{name}"
        );
        assert_eq!(
            p.parse_json_output,
            want["parse_json_output"].as_bool().unwrap(),
            "{name}"
        );
        assert_eq!(p.stop_sequences, stops, "{name}");
        let stage = p.thinking_initial_stage.map(|st| format!("{st:?}"));
        assert_eq!(
            stage.as_deref(),
            want["thinking_initial_stage"].as_str(),
            "{name}"
        );
        assert_eq!(
            converted.stream(),
            want["stream"].as_bool().unwrap(),
            "{name}"
        );

        // Our derivation of parsing options for a bare conversation agrees with the
        // crate's adapters on every converted request.
        let derived =
            dsv4_chat::parsing_options_for(converted.conversation(), p.stop_sequences.clone());
        assert_eq!(derived.parse_tool_calls, p.parse_tool_calls, "{name}");
        assert_eq!(
            derived.starts_in_tool_calls, p.starts_in_tool_calls,
            "{name}"
        );
        assert_eq!(derived.parse_json_output, p.parse_json_output, "{name}");
        assert_eq!(
            derived.thinking_initial_stage.map(|st| format!("{st:?}")),
            stage,
            "{name}"
        );

        let encoded = encoder
            .encode_request(&mut converted)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            encoded.prompt,
            case["prompt"].as_str().unwrap(),
            "{name}: prompt text"
        );
        assert_eq!(
            encoded.special_ranges,
            ranges(&case["special_ranges"]),
            "{name}"
        );
        let want_ids = ids(&case["token_ids"]);
        assert!(
            encoded.token_ids == want_ids,
            "{name}: token ids\n{}",
            first_difference(&encoded.token_ids, &want_ids)
        );
        checked += 1;
    }
    assert!(checked >= 8, "only {checked} request cases");
}

/// The golden file covers the shapes the brief lists; if a regeneration drops one, fail.
#[test]
fn golden_cases_cover_every_message_shape() {
    let cases = golden()["cases"].as_array().unwrap();
    let prompts: Vec<&str> = cases
        .iter()
        .map(|c| c["prompt"].as_str().unwrap())
        .collect();
    let any = |needle: &str| prompts.iter().any(|p| p.contains(needle));
    assert!(any("<｜Assistant｜></think>"), "non-thinking");
    assert!(any("Reasoning Effort: Absolute maximum"), "high effort");
    assert!(any("Reasoning Effort: Beyond maximum"), "max effort");
    assert!(any("<｜DSML｜invoke name="), "DSML tool call");
    assert!(any("<tool_result>"), "tool result");
    assert!(any("## Tools"), "tool prompt");
    assert!(any("<｜latest_reminder｜>"), "latest reminder");
    assert!(any("## Response Format"), "response format");
    assert!(
        prompts
            .iter()
            .any(|p| p.ends_with("<｜DSML｜tool_calls>\n")),
        "required tool choice"
    );
    assert!(
        prompts.iter().any(|p| !p.ends_with("</think>")
            && !p.ends_with("<think>")
            && !p.ends_with("tool_calls>\n")),
        "prefix continuation"
    );
    assert!(
        !any("<think>old hidden reasoning"),
        "dropped reasoning must not appear"
    );
    let kinds: std::collections::BTreeSet<&str> =
        cases.iter().map(|c| c["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        ["chat_completions", "conversation", "messages", "responses"]
    );
}

/// A chunk generator from the crate works through our synchronous driver too: the
/// converted request's own Chat Completions generator yields the official chunk shapes.
#[test]
fn official_chunk_generator_runs_through_sync_stream() {
    use dsv4_chat::deepseek_recipe::openai::ChatCompletionRequest;
    use dsv4_chat::deepseek_recipe::stream::{InferenceChunk, InferenceFinishReason};
    let converted = RequestConverter::default()
        .convert_json(
            dsv4_chat::Protocol::ChatCompletions,
            br#"{"model":"deepseek-chat","messages":[{"role":"user","content":"hi"}]}"#,
        )
        .unwrap();
    let generator = ChatCompletionRequest::chunk_generator(
        &converted.request,
        "chatcmpl-1".into(),
        converted.model.clone(),
    );
    let mut stream =
        dsv4_chat::SyncStream::new(generator, converted.parsing_options().clone(), tokenizer());
    let ids = tokenizer().encode("Hello there");
    let mut chunks = stream
        .push(InferenceChunk::Tokens {
            token_ids: ids,
            logprobs: None,
        })
        .unwrap();
    chunks.extend(
        stream
            .push(InferenceChunk::Finish {
                finish_reason: InferenceFinishReason::Stop,
            })
            .unwrap(),
    );
    assert!(stream.is_done());
    let json: Vec<Value> = chunks
        .iter()
        .map(|c| serde_json::to_value(c).unwrap())
        .collect();
    let text: String = json
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Hello there");
    let last = json.last().unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert_eq!(last["model"], "deepseek-chat");
    assert_eq!(last["id"], "chatcmpl-1");
    assert_eq!(last["usage"]["completion_tokens"], 2);
}
