//! Streaming output parsing: scripted model outputs fed token by token, in random token
//! chunks and as text give the same events, and the syntax/payload position is right after
//! every token.

mod common;

use common::*;
use dsv4_chat::deepseek_recipe::stream::{
    FinishReason, InferenceFinishReason, ParsingOptions, ThinkingInitialStage,
};
use dsv4_chat::{ChatError, ChatEvent, Finish, OutputPosition, StreamParser};

use OutputPosition::{Content, DsmlSyntax, Finished, Reasoning, StringArgument};

const DSML: &str = "｜DSML｜";
const THINK_END: &str = "</think>";

fn json(in_string_literal: bool) -> OutputPosition {
    OutputPosition::JsonArgument { in_string_literal }
}

/// One piece of scripted output: plain text (BPE-encoded on its own) or one special token.
#[derive(Clone, Copy)]
enum Seg {
    T(&'static str),
    S(&'static str),
}

/// A segment and the position expected after each of its tokens: `inner` after all but
/// the last (unchecked when `None`), `last` after the last.
#[derive(Clone, Copy)]
struct Step {
    seg: Seg,
    inner: Option<OutputPosition>,
    last: OutputPosition,
}

fn t(text: &'static str, inner: impl Into<Option<OutputPosition>>, last: OutputPosition) -> Step {
    Step {
        seg: Seg::T(text),
        inner: inner.into(),
        last,
    }
}

fn s(token: &'static str, last: OutputPosition) -> Step {
    Step {
        seg: Seg::S(token),
        inner: None,
        last,
    }
}

fn seg_tokens(seg: Seg) -> Vec<u32> {
    let tok = tokenizer();
    match seg {
        Seg::T(text) => tok.encode(text),
        Seg::S(special) => {
            let id = tok.token_to_id(special).expect("special token");
            assert!(tok.is_added(id), "{special} must be an added token");
            vec![id]
        }
    }
}

fn script_text(steps: &[Step]) -> String {
    steps
        .iter()
        .map(|st| match st.seg {
            Seg::T(x) | Seg::S(x) => x,
        })
        .collect()
}

fn parser(options: &ParsingOptions) -> StreamParser {
    StreamParser::new(tokenizer(), options.clone()).with_tool_call_ids(|i, empty_thinking| {
        format!("id{i}{}", if empty_thinking { "ET" } else { "" })
    })
}

fn finish_of(events: &[ChatEvent]) -> Finish {
    match events.last() {
        Some(ChatEvent::Finish(f)) => f.clone(),
        other => panic!("last event must be Finish, got {other:?}"),
    }
}

/// Events without the usage block (which depends on how input was chunked).
fn without_usage(events: &[ChatEvent]) -> Vec<ChatEvent> {
    events
        .iter()
        .map(|e| match e {
            ChatEvent::Finish(f) => ChatEvent::Finish(Finish {
                usage: Default::default(),
                ..f.clone()
            }),
            other => other.clone(),
        })
        .collect()
}

struct Outcome {
    events: Vec<ChatEvent>,
    /// Position after each token, token-by-token run.
    positions: Vec<OutputPosition>,
    tokens: Vec<u32>,
}

/// Run a script every way and check the ways agree. Returns the token-by-token outcome.
fn run_script(
    name: &str,
    options: &ParsingOptions,
    steps: &[Step],
    reason: InferenceFinishReason,
) -> Outcome {
    // 1. Token by token, checking the position after every token.
    let mut p = parser(options);
    let mut events = Vec::new();
    let mut positions = Vec::new();
    let mut tokens = Vec::new();
    for (k, st) in steps.iter().enumerate() {
        let ids = seg_tokens(st.seg);
        for (j, &id) in ids.iter().enumerate() {
            events.extend(p.push_token(id).unwrap_or_else(|e| panic!("{name}: {e}")));
            let pos = p.position();
            let want = if j + 1 == ids.len() {
                Some(st.last)
            } else {
                st.inner
            };
            if let Some(want) = want {
                let piece = tokenizer().decode_lossy(&[id]);
                assert_eq!(
                    pos,
                    want,
                    "{name}: step {k}, token {j} ({piece:?}) of {:?}",
                    script_text(&steps[k..=k])
                );
            }
            assert_eq!(p.in_dsml_syntax(), pos == DsmlSyntax);
            positions.push(pos);
            tokens.push(id);
        }
    }
    events.extend(p.finish(reason).unwrap());
    assert!(p.is_finished());
    assert!(matches!(
        p.push_token(tokens[0]),
        Err(ChatError::StreamClosed)
    ));
    let reference = normalize(&events);

    // 2. Random token chunks: same events, same position at every chunk boundary.
    for seed in 1..=6u64 {
        let mut rng = Rng::new(seed * 7919);
        let mut p = parser(options);
        let mut ev = Vec::new();
        let mut at = 0;
        while at < tokens.len() {
            let n = rng.range(1, 9).min(tokens.len() - at);
            ev.extend(p.push_tokens(&tokens[at..at + n]).unwrap());
            at += n;
            assert_eq!(
                p.position(),
                positions[at - 1],
                "{name}: seed {seed}, after {at} tokens"
            );
        }
        ev.extend(p.finish(reason).unwrap());
        assert_eq!(
            without_usage(&normalize(&ev)),
            without_usage(&reference),
            "{name}: seed {seed}"
        );
        // Usage counts every token whatever the chunking (no stop sequence in these scripts).
        assert_eq!(
            finish_of(&ev).usage,
            finish_of(&events).usage,
            "{name}: seed {seed}"
        );
    }

    // 3. Text without token boundaries, in random splits on character boundaries: markers
    // match by spelling, which gives the same result for these scripts.
    let text = script_text(steps);
    let chars: Vec<char> = text.chars().collect();
    for seed in 0..=4u64 {
        let mut rng = Rng::new(seed + 101);
        let mut p = parser(options);
        let mut ev = Vec::new();
        let mut at = 0;
        while at < chars.len() {
            let n = if seed == 0 {
                1
            } else {
                rng.range(1, 12).min(chars.len() - at)
            };
            let piece: String = chars[at..at + n].iter().collect();
            ev.extend(p.push_text(&piece).unwrap());
            at += n;
        }
        assert_eq!(
            p.position(),
            *positions.last().unwrap(),
            "{name}: text seed {seed}"
        );
        ev.extend(p.finish(reason).unwrap());
        assert_eq!(
            without_usage(&normalize(&ev)),
            without_usage(&reference),
            "{name}: text seed {seed}"
        );
    }

    Outcome {
        events: reference,
        positions,
        tokens,
    }
}

fn thinking_tools() -> ParsingOptions {
    ParsingOptions {
        parse_tool_calls: true,
        thinking_initial_stage: Some(ThinkingInitialStage::ReasoningStart),
        ..ParsingOptions::default()
    }
}

fn tools_only() -> ParsingOptions {
    ParsingOptions {
        parse_tool_calls: true,
        ..ParsingOptions::default()
    }
}

fn plain() -> ParsingOptions {
    ParsingOptions {
        parse_tool_calls: false,
        ..ParsingOptions::default()
    }
}

fn fin(reason: FinishReason, unterminated: bool) -> ChatEvent {
    ChatEvent::Finish(Finish {
        reason,
        stop_sequence: None,
        usage: Default::default(),
        unterminated_tool_call: unterminated,
    })
}

fn start(index: usize, id: &str, name: &str) -> ChatEvent {
    ChatEvent::ToolCallStart {
        index,
        id: id.into(),
        name: name.into(),
    }
}

fn args(index: usize, delta: &str) -> ChatEvent {
    ChatEvent::ToolCallArguments {
        index,
        delta: delta.into(),
    }
}

fn end(index: usize, complete: bool) -> ChatEvent {
    ChatEvent::ToolCallEnd { index, complete }
}

#[test]
fn plain_content() {
    let steps = [t("\n\nHello, world! 東京 🌧️ done.", None, Content)];
    let out = run_script("plain", &plain(), &steps, InferenceFinishReason::Stop);
    assert_eq!(
        without_usage(&out.events),
        [
            ChatEvent::Content("Hello, world! 東京 🌧️ done.".into()),
            fin(FinishReason::Stop, false)
        ]
    );
    let usage = finish_of(&out.events).usage;
    assert_eq!(usage.completion_tokens, out.tokens.len());
    assert_eq!(usage.reasoning_tokens, None);
    assert!(out.positions.iter().all(|&p| p == Content));
}

#[test]
fn reasoning_then_content() {
    let options = ParsingOptions {
        thinking_initial_stage: Some(ThinkingInitialStage::ReasoningStart),
        ..plain()
    };
    let steps = [
        t("\nLet me think: 2+2=4, and 3<4.", Reasoning, Reasoning),
        s(THINK_END, Content),
        t("\n\nThe answer is **4**.", Content, Content),
    ];
    let out = run_script("reasoning", &options, &steps, InferenceFinishReason::Stop);
    assert_eq!(
        without_usage(&out.events),
        [
            ChatEvent::Reasoning("Let me think: 2+2=4, and 3<4.".into()),
            ChatEvent::Content("The answer is **4**.".into()),
            fin(FinishReason::Stop, false),
        ]
    );
    let usage = finish_of(&out.events).usage;
    assert_eq!(usage.completion_tokens, out.tokens.len());
    assert_eq!(
        usage.reasoning_tokens,
        Some(tokenizer().encode("Let me think: 2+2=4, and 3<4.").len())
    );
}

/// The full single-call script of the tests below (thinking mode).
fn one_call_steps() -> Vec<Step> {
    vec![
        t("Checking the weather.", Reasoning, Reasoning),
        s(THINK_END, Content),
        t("Let me look.", Content, Content),
        t("\n\n<", Content, Content),
        s(DSML, DsmlSyntax),
        t("tool_calls>\n<", DsmlSyntax, DsmlSyntax),
        s(DSML, DsmlSyntax),
        t("invoke name=\"get_weather\">\n<", DsmlSyntax, DsmlSyntax),
        s(DSML, DsmlSyntax),
        t(
            "parameter name=\"city\" string=\"true\">",
            DsmlSyntax,
            StringArgument,
        ),
        t("New York & <b>Paris", StringArgument, StringArgument),
        // `</` inside a value may start the closing tag: syntax until the next token
        // shows it does not.
        t("</", None, DsmlSyntax),
        t("b>", StringArgument, StringArgument),
        t("</", None, DsmlSyntax),
        s(DSML, DsmlSyntax),
        t("parameter>\n<", DsmlSyntax, DsmlSyntax),
        s(DSML, DsmlSyntax),
        t(
            "parameter name=\"days\" string=\"false\">",
            DsmlSyntax,
            json(false),
        ),
        t("3", json(false), json(false)),
        t("</", None, DsmlSyntax),
        s(DSML, DsmlSyntax),
        t("parameter>\n</", DsmlSyntax, DsmlSyntax),
        s(DSML, DsmlSyntax),
        t("invoke>\n</", DsmlSyntax, DsmlSyntax),
        s(DSML, DsmlSyntax),
        t("tool_calls>", DsmlSyntax, Finished),
    ]
}

#[test]
fn one_tool_call_with_string_and_json_arguments() {
    let out = run_script(
        "one call",
        &thinking_tools(),
        &one_call_steps(),
        InferenceFinishReason::Stop,
    );
    assert_eq!(
        without_usage(&out.events),
        [
            ChatEvent::Reasoning("Checking the weather.".into()),
            ChatEvent::Content("Let me look.".into()),
            start(0, "id0", "get_weather"),
            args(0, r#"{"city": "New York & <b>Paris</b>", "days": 3}"#),
            end(0, true),
            fin(FinishReason::ToolCalls, false),
        ]
    );
}

/// In token-by-token feeding a call ends with the token that completes its closing tag
/// (`</` + `｜DSML｜` of `</｜DSML｜invoke>`), together with the closing brace.
#[test]
fn tool_call_end_follows_the_closing_brace_immediately() {
    let steps = one_call_steps();
    let invoke_close = steps
        .windows(2)
        .position(|w| matches!(w[0].seg, Seg::T("parameter>\n</")) && matches!(w[1].seg, Seg::S(_)))
        .unwrap()
        + 1;
    let mut p = parser(&thinking_tools());
    let mut end_push = None;
    for (k, st) in steps.iter().enumerate() {
        for id in seg_tokens(st.seg) {
            let ev = p.push_token(id).unwrap();
            if let Some(at) = ev
                .iter()
                .position(|e| matches!(e, ChatEvent::ToolCallEnd { .. }))
            {
                assert_eq!(ev[at], end(0, true));
                assert!(
                    at > 0 && ev[at - 1] == args(0, "}"),
                    "closing brace right before the end: {ev:?}"
                );
                assert!(end_push.is_none());
                end_push = Some(k);
            }
        }
    }
    assert_eq!(end_push, Some(invoke_close));
    assert!(p.tool_block_closed());
    assert!(p.output_complete());
    assert!(!p.stop_sequence_matched());
}

#[test]
fn several_tool_calls_with_json_and_string_arguments() {
    let steps = [
        t("I'll run two tools.", Content, Content),
        t("\n\n<", Content, Content),
        s(DSML, DsmlSyntax),
        t("tool_calls>\n<", DsmlSyntax, DsmlSyntax),
        s(DSML, DsmlSyntax),
        t("invoke name=\"get_weather\">\n<", DsmlSyntax, DsmlSyntax),
        s(DSML, DsmlSyntax),
        t(
            "parameter name=\"city\" string=\"true\">",
            DsmlSyntax,
            StringArgument,
        ),
        t("Paris", StringArgument, StringArgument),
        t("</", None, DsmlSyntax),
        s(DSML, DsmlSyntax),
        t("parameter>\n</", DsmlSyntax, DsmlSyntax),
        s(DSML, DsmlSyntax),
        t("invoke>\n<", DsmlSyntax, DsmlSyntax),
        s(DSML, DsmlSyntax),
        t("invoke name=\"bash\">\n<", DsmlSyntax, DsmlSyntax),
        s(DSML, DsmlSyntax),
        t(
            "parameter name=\"command\" string=\"true\">",
            DsmlSyntax,
            StringArgument,
        ),
        t(
            "ls -la | grep \"x\"\n\twc -l 2>&1",
            StringArgument,
            StringArgument,
        ),
        t("</", None, DsmlSyntax),
        s(DSML, DsmlSyntax),
        t("parameter>\n<", DsmlSyntax, DsmlSyntax),
        s(DSML, DsmlSyntax),
        t(
            "parameter name=\"opts\" string=\"false\">",
            DsmlSyntax,
            json(false),
        ),
        t("{\"a\": [1, ", None, json(false)),
        t("\"", None, json(true)),
        t("b\\\"}", None, json(true)),
        t("\"", None, json(false)),
        t("], \"c\": null}", None, json(false)),
        t("</", None, DsmlSyntax),
        s(DSML, DsmlSyntax),
        t("parameter>\n<", DsmlSyntax, DsmlSyntax),
        s(DSML, DsmlSyntax),
        t(
            "parameter name=\"n\" string=\"false\">",
            DsmlSyntax,
            json(false),
        ),
        t("-2.5e3", json(false), json(false)),
        t("</", None, DsmlSyntax),
        s(DSML, DsmlSyntax),
        t("parameter>\n</", DsmlSyntax, DsmlSyntax),
        s(DSML, DsmlSyntax),
        t("invoke>\n</", DsmlSyntax, DsmlSyntax),
        s(DSML, DsmlSyntax),
        t("tool_calls>", DsmlSyntax, Finished),
    ];
    let out = run_script(
        "two calls",
        &tools_only(),
        &steps,
        InferenceFinishReason::Stop,
    );
    assert_eq!(
        without_usage(&out.events),
        [
            ChatEvent::Content("I'll run two tools.".into()),
            start(0, "id0", "get_weather"),
            args(0, r#"{"city": "Paris"}"#),
            end(0, true),
            start(1, "id1", "bash"),
            args(
                1,
                r#"{"command": "ls -la | grep \"x\"\n\twc -l 2>&1", "opts": {"a": [1, "b\"}"], "c": null}, "n": -2.5e3}"#
            ),
            end(1, true),
            fin(FinishReason::ToolCalls, false),
        ]
    );
    // Each call's arguments are a JSON object.
    for ev in &out.events {
        if let ChatEvent::ToolCallArguments { delta, .. } = ev {
            assert!(
                serde_json::from_str::<serde_json::Value>(delta)
                    .unwrap()
                    .is_object(),
                "{delta}"
            );
        }
    }
}

#[test]
fn zero_argument_call_and_required_tool_choice() {
    // With a required tool choice the prompt already opened the block.
    let options = ParsingOptions {
        starts_in_tool_calls: true,
        ..tools_only()
    };
    let mut p = parser(&options);
    assert_eq!(p.position(), DsmlSyntax);
    drop(p.push_tokens(&[]).unwrap());
    let steps = [
        t("<", DsmlSyntax, DsmlSyntax),
        s(DSML, DsmlSyntax),
        t("invoke name=\"now\">\n</", DsmlSyntax, DsmlSyntax),
        s(DSML, DsmlSyntax),
        t("invoke>\n</", DsmlSyntax, DsmlSyntax),
        s(DSML, DsmlSyntax),
        t("tool_calls>", DsmlSyntax, Finished),
    ];
    let out = run_script("required", &options, &steps, InferenceFinishReason::Stop);
    assert_eq!(
        without_usage(&out.events),
        [
            start(0, "id0", "now"),
            args(0, "{}"),
            end(0, true),
            fin(FinishReason::ToolCalls, false)
        ]
    );
}

#[test]
fn tool_call_inside_reasoning_is_still_a_tool_call() {
    // The crate enters the tool-call block from reasoning too (no `</think>` needed).
    let steps = [
        t("I will call it now.", Reasoning, Reasoning),
        t("\n\n<", Reasoning, Reasoning),
        s(DSML, DsmlSyntax),
        t("tool_calls>\n<", DsmlSyntax, DsmlSyntax),
        s(DSML, DsmlSyntax),
        t("invoke name=\"f\">\n<", DsmlSyntax, DsmlSyntax),
        s(DSML, DsmlSyntax),
        t(
            "parameter name=\"q\" string=\"true\">",
            DsmlSyntax,
            StringArgument,
        ),
        t("x", StringArgument, StringArgument),
        t("</", None, DsmlSyntax),
        s(DSML, DsmlSyntax),
        t("parameter>\n</", DsmlSyntax, DsmlSyntax),
        s(DSML, DsmlSyntax),
        t("invoke>\n</", DsmlSyntax, DsmlSyntax),
        s(DSML, DsmlSyntax),
        t("tool_calls>", DsmlSyntax, Finished),
    ];
    let out = run_script(
        "dsml in reasoning",
        &thinking_tools(),
        &steps,
        InferenceFinishReason::Stop,
    );
    assert_eq!(
        without_usage(&out.events),
        [
            ChatEvent::Reasoning("I will call it now.".into()),
            start(0, "id0", "f"),
            args(0, r#"{"q": "x"}"#),
            end(0, true),
            fin(FinishReason::ToolCalls, false),
        ]
    );
}

#[test]
fn empty_thinking_turn_marks_the_tool_call_id() {
    let steps = [
        s(THINK_END, Content),
        t("<", Content, Content),
        s(DSML, DsmlSyntax),
        t("tool_calls>\n<", DsmlSyntax, DsmlSyntax),
        s(DSML, DsmlSyntax),
        t("invoke name=\"f\">\n</", DsmlSyntax, DsmlSyntax),
        s(DSML, DsmlSyntax),
        t("invoke>\n</", DsmlSyntax, DsmlSyntax),
        s(DSML, DsmlSyntax),
        t("tool_calls>", DsmlSyntax, Finished),
    ];
    let out = run_script(
        "empty thinking",
        &thinking_tools(),
        &steps,
        InferenceFinishReason::Stop,
    );
    assert_eq!(out.events[0], start(0, "id0ET", "f"));
}

#[test]
fn malformed_dsml_parameter_without_string_attribute() {
    // The crate's grammar needs ` string="…">` after the parameter name; without it the
    // name stage never ends and the rest of the block becomes argument text. The events
    // say exactly that, and the call is reported unterminated.
    let steps = [
        t("<", Content, Content),
        s(DSML, DsmlSyntax),
        t("tool_calls>\n<", DsmlSyntax, DsmlSyntax),
        s(DSML, DsmlSyntax),
        t("invoke name=\"f\">\n<", DsmlSyntax, DsmlSyntax),
        s(DSML, DsmlSyntax),
        t("parameter name=\"x\">42</", DsmlSyntax, DsmlSyntax),
        s(DSML, DsmlSyntax),
        t("parameter>\n</", DsmlSyntax, DsmlSyntax),
        s(DSML, DsmlSyntax),
        t("invoke>\n</", DsmlSyntax, DsmlSyntax),
        s(DSML, DsmlSyntax),
        t("tool_calls>", DsmlSyntax, DsmlSyntax),
    ];
    let out = run_script(
        "malformed",
        &tools_only(),
        &steps,
        InferenceFinishReason::Stop,
    );
    assert_eq!(
        without_usage(&out.events),
        [
            start(0, "id0", "f"),
            args(
                0,
                "{\"x\">42</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>"
            ),
            end(0, false),
            fin(FinishReason::ToolCalls, true),
        ]
    );
}

#[test]
fn malformed_dsml_stray_text_inside_invoke_is_skipped() {
    let steps = [
        t("<", Content, Content),
        s(DSML, DsmlSyntax),
        t("tool_calls>\n<", DsmlSyntax, DsmlSyntax),
        s(DSML, DsmlSyntax),
        t(
            "invoke name=\"f\">\nsome stray words\n</",
            DsmlSyntax,
            DsmlSyntax,
        ),
        s(DSML, DsmlSyntax),
        t("invoke>\n</", DsmlSyntax, DsmlSyntax),
        s(DSML, DsmlSyntax),
        t("tool_calls>", DsmlSyntax, Finished),
        t("\ntrailing text is dropped", Finished, Finished),
    ];
    let out = run_script("stray", &tools_only(), &steps, InferenceFinishReason::Stop);
    assert_eq!(
        without_usage(&out.events),
        [
            start(0, "id0", "f"),
            args(0, "{}"),
            end(0, true),
            fin(FinishReason::ToolCalls, false)
        ]
    );
}

#[test]
fn output_cut_inside_a_call() {
    let steps = [
        t("<", Content, Content),
        s(DSML, DsmlSyntax),
        t("tool_calls>\n<", DsmlSyntax, DsmlSyntax),
        s(DSML, DsmlSyntax),
        t("invoke name=\"bash\">\n<", DsmlSyntax, DsmlSyntax),
        s(DSML, DsmlSyntax),
        t(
            "parameter name=\"command\" string=\"true\">",
            DsmlSyntax,
            StringArgument,
        ),
        t("echo \"hel", StringArgument, StringArgument),
    ];
    let out = run_script("cut", &tools_only(), &steps, InferenceFinishReason::Length);
    assert_eq!(
        without_usage(&out.events),
        [
            start(0, "id0", "bash"),
            args(0, r#"{"command": "echo \"hel"#),
            end(0, false),
            fin(FinishReason::Length, true),
        ]
    );
}

#[test]
fn output_cut_before_the_tool_name_completes() {
    let steps = [
        t("<", Content, Content),
        s(DSML, DsmlSyntax),
        t("tool_calls>\n<", DsmlSyntax, DsmlSyntax),
        s(DSML, DsmlSyntax),
        t("invoke name=\"get_wea", DsmlSyntax, DsmlSyntax),
    ];
    let out = run_script(
        "cut name",
        &tools_only(),
        &steps,
        InferenceFinishReason::Length,
    );
    // No name, no call: nothing to report but the unterminated block.
    assert_eq!(
        without_usage(&out.events),
        [fin(FinishReason::Length, true)]
    );
}

#[test]
fn dsml_without_tools_is_plain_content() {
    let steps = [
        t("See: <", Content, Content),
        s(DSML, Content),
        t("invoke name=\"f\">", Content, Content),
    ];
    let out = run_script("no tools", &plain(), &steps, InferenceFinishReason::Stop);
    assert_eq!(
        without_usage(&out.events),
        [
            ChatEvent::Content("See: <｜DSML｜invoke name=\"f\">".into()),
            fin(FinishReason::Stop, false)
        ]
    );
}

/// Markers spelled with ordinary tokens are text: only the generated special token counts.
#[test]
fn spelled_control_tokens_are_not_markup_in_token_input() {
    let tok = tokenizer();
    let mut p = parser(&thinking_tools());
    let mut ev = p
        .push_tokens(&tok.encode("a</think>b\n\n<｜DSML｜tool_calls>"))
        .unwrap();
    assert_eq!(p.position(), Reasoning);
    ev.extend(p.finish(InferenceFinishReason::Stop).unwrap());
    assert_eq!(
        without_usage(&normalize(&ev)),
        [
            ChatEvent::Reasoning("a</think>b\n\n<｜DSML｜tool_calls>".into()),
            fin(FinishReason::Stop, false)
        ]
    );
    // The same text pushed as text (no token boundaries) does end reasoning.
    let mut p = parser(&thinking_tools());
    p.push_text("a</think>b").unwrap();
    assert_eq!(p.position(), Content);
}

#[test]
fn extra_think_end_in_content_is_dropped() {
    let options = ParsingOptions {
        thinking_initial_stage: Some(ThinkingInitialStage::ReasoningStart),
        ..plain()
    };
    let steps = [
        t("r", Reasoning, Reasoning),
        s(THINK_END, Content),
        t("a", Content, Content),
        s(THINK_END, Content),
        t("b", Content, Content),
    ];
    let out = run_script(
        "extra think end",
        &options,
        &steps,
        InferenceFinishReason::Stop,
    );
    assert_eq!(
        without_usage(&out.events),
        [
            ChatEvent::Reasoning("r".into()),
            ChatEvent::Content("ab".into()),
            fin(FinishReason::Stop, false)
        ]
    );
}

#[test]
fn stop_sequence_ends_the_output() {
    let options = ParsingOptions {
        stop_sequences: vec!["END".into(), String::new()],
        ..plain()
    };
    let tok = tokenizer();
    let mut p = parser(&options);
    let mut ev = Vec::new();
    for piece in ["Hello ", "EN"] {
        for id in tok.encode(piece) {
            ev.extend(p.push_token(id).unwrap());
            assert_eq!(p.position(), Content);
        }
    }
    assert!(!p.is_finished());
    let d = tok.encode("D");
    ev.extend(p.push_tokens(&d).unwrap());
    assert_eq!(p.position(), Finished);
    assert!(p.output_complete() && p.stop_sequence_matched() && !p.tool_block_closed());
    // The crate ends the output at the stop by itself; finishing is then a no-op.
    assert!(p.is_finished());
    assert!(matches!(
        p.push_tokens(&tok.encode(" more")),
        Err(ChatError::StreamClosed)
    ));
    assert!(p.finish(InferenceFinishReason::Stop).unwrap().is_empty());
    let n_tokens = tok.encode("Hello ").len() + tok.encode("EN").len() + d.len();
    assert_eq!(
        normalize(&ev),
        [
            ChatEvent::Content("Hello ".into()),
            ChatEvent::Finish(Finish {
                reason: FinishReason::StopSequence,
                stop_sequence: Some("END".into()),
                usage: dsv4_chat::deepseek_recipe::stream::CompletionUsage {
                    completion_tokens: n_tokens,
                    reasoning_tokens: None,
                },
                unterminated_tool_call: false,
            }),
        ]
    );
}

#[test]
fn json_output_mode() {
    // json_object responses: the crate keeps the JSON and replaces the surrounding text by
    // one space per source chunk it spans (so, unlike the other scripts, the spaces depend
    // on how the output was chunked; the JSON does not).
    let options = ParsingOptions {
        parse_json_output: true,
        ..plain()
    };
    let tok = tokenizer();
    let mut p = parser(&options);
    let mut ev = Vec::new();
    for piece in [
        "Here:\n",
        "```json\n",
        "{\"a\": [1, \"x\"]}",
        "\n```",
        "\nBye",
    ] {
        ev.extend(p.push_tokens(&tok.encode(piece)).unwrap());
        assert_eq!(p.position(), Content);
    }
    ev.extend(p.finish(InferenceFinishReason::Stop).unwrap());
    let content: String = ev
        .iter()
        .filter_map(|e| match e {
            ChatEvent::Content(c) => Some(c.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(content.trim(), "{\"a\": [1, \"x\"]}");
    assert_eq!(finish_of(&ev).reason, FinishReason::Stop);
}

#[test]
fn unknown_token_ids_are_rejected_and_the_parser_survives() {
    let tok = tokenizer();
    let mut p = parser(&plain());
    let bad = tok.vocab_size() as u32;
    match p.push_tokens(&[tok.encode("ok")[0], bad]) {
        Err(ChatError::UnknownToken { id, vocab_size }) => {
            assert_eq!((id, vocab_size), (bad, tok.vocab_size()))
        }
        other => panic!("expected UnknownToken, got {other:?}"),
    }
    let mut ev = p.push_tokens(&tok.encode("fine")).unwrap();
    ev.extend(p.finish(InferenceFinishReason::Stop).unwrap());
    assert_eq!(
        without_usage(&normalize(&ev)),
        [
            ChatEvent::Content("fine".into()),
            fin(FinishReason::Stop, false)
        ]
    );
    assert!(matches!(p.finish(InferenceFinishReason::Stop), Ok(v) if v.is_empty()));
}

#[test]
fn multibyte_characters_split_across_tokens_are_held_until_complete() {
    let tok = tokenizer();
    let text = "🌧️東京🤭";
    let ids = tok.encode(text);
    assert!(ids.len() > 2, "want a character split across tokens");
    let mut p = parser(&plain());
    let mut got = String::new();
    for &id in &ids {
        for e in p.push_token(id).unwrap() {
            if let ChatEvent::Content(c) = e {
                assert!(!c.contains('\u{FFFD}'), "broken character streamed: {c:?}");
                got.push_str(&c);
            }
        }
    }
    p.finish(InferenceFinishReason::Stop).unwrap();
    assert_eq!(got, text);
}

#[test]
fn tool_call_ids_follow_the_official_format() {
    let id = dsv4_chat::new_tool_call_id(3, true);
    assert_eq!(id.len(), 35);
    assert!(id.starts_with("call_03_ET_"), "{id}");
    let (body, checksum) = id.split_at(id.len() - 4);
    assert_eq!(dsv4_chat::tool_call_id_with(3, true, &body[11..]), id);
    assert!(checksum.bytes().all(|b| b.is_ascii_digit()));
    let plain_id = dsv4_chat::new_tool_call_id(12, false);
    assert!(plain_id.starts_with("call_12_") && !plain_id.starts_with("call_12_ET_"));
    assert_eq!(plain_id.len(), 32);
    assert_ne!(
        dsv4_chat::new_tool_call_id(0, false),
        dsv4_chat::new_tool_call_id(0, false)
    );
    // A fixed vector: xxh3_64("call00abcdefghijklmnopqrst") % 10000.
    let fixed = dsv4_chat::tool_call_id_with(0, false, "abcdefghijklmnopqrst");
    let want = xxh3_checksum("call00abcdefghijklmnopqrst");
    assert_eq!(fixed, format!("call_00_abcdefghijklmnopqrst{want:04}"));
}

/// Reference XXH3-64 checksum (mod 10000), computed independently of the crate's helper.
fn xxh3_checksum(s: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(s.as_bytes()) % 10_000
}

/// Many random splits of an output whose argument values end in `}` (the same text as the
/// closing brace) and with a call without parameters (`{}`): every call still ends after
/// its complete arguments, whatever the chunking.
#[test]
fn tool_call_ends_are_right_for_any_chunking() {
    let tok = tokenizer();
    let d = |s: &str| s.replace('§', "｜DSML｜");
    let text = d(concat!(
        "ok\n\n<§tool_calls>\n",
        "<§invoke name=\"a\">\n<§parameter name=\"o\" string=\"false\">{\"k\": {}}</§parameter>\n</§invoke>\n",
        "<§invoke name=\"b\">\n</§invoke>\n",
        "<§invoke name=\"c\">\n<§parameter name=\"s\" string=\"true\">}</§parameter>\n",
        "<§parameter name=\"o\" string=\"false\">}</§parameter>\n</§invoke>\n",
        "</§tool_calls>"
    ));
    // Token ids: the DSML spelling as the special token, the rest plain.
    let mut ids = Vec::new();
    for (i, part) in text.split("｜DSML｜").enumerate() {
        if i > 0 {
            ids.push(tok.specials().dsml);
        }
        ids.extend(tok.encode(part));
    }
    let want = vec![
        ChatEvent::Content("ok".into()),
        start(0, "id0", "a"),
        args(0, r#"{"o": {"k": {}}}"#),
        end(0, true),
        start(1, "id1", "b"),
        args(1, "{}"),
        end(1, true),
        start(2, "id2", "c"),
        args(2, r#"{"s": "}", "o": }}"#),
        end(2, true),
        fin(FinishReason::ToolCalls, false),
    ];
    let chars: Vec<char> = text.chars().collect();
    for seed in 0..150u64 {
        let mut rng = Rng::new(seed);
        // Small chunks split markers; large ones put a value's end and the invoke's
        // closing tag in one push.
        let max = [3, 8, 40][seed as usize % 3];
        // Tokens.
        let mut p = parser(&tools_only());
        let mut ev = Vec::new();
        let mut at = 0;
        while at < ids.len() {
            let n = rng.range(1, max).min(ids.len() - at);
            ev.extend(p.push_tokens(&ids[at..at + n]).unwrap());
            at += n;
        }
        assert!(p.tool_block_closed());
        ev.extend(p.finish(InferenceFinishReason::Stop).unwrap());
        assert_eq!(without_usage(&normalize(&ev)), want, "tokens, seed {seed}");
        // Text.
        let mut p = parser(&tools_only());
        let mut ev = Vec::new();
        let mut at = 0;
        while at < chars.len() {
            let n = rng.range(1, 2 * max).min(chars.len() - at);
            ev.extend(
                p.push_text(&chars[at..at + n].iter().collect::<String>())
                    .unwrap(),
            );
            at += n;
        }
        ev.extend(p.finish(InferenceFinishReason::Stop).unwrap());
        assert_eq!(without_usage(&normalize(&ev)), want, "text, seed {seed}");
    }
}

/// Random tool-call outputs, well formed and then mutated (segments dropped, duplicated,
/// garbage inserted, output cut): however they are chunked, the parser never fails, the
/// events are well formed (calls numbered in order, arguments only inside a call, one end
/// per call, finish last) and identical after merging deltas.
#[test]
fn random_tool_call_outputs_are_handled_consistently() {
    let tok = tokenizer();
    let sp = tok.specials();
    let names = ["f", "get_weather", "bash"];
    let keys = ["x", "city", "opts"];
    let values = [
        "}",
        "{\"a\": {}}",
        "x</b>",
        "\"q\"",
        "",
        "a\\\"b",
        "3",
        "[1, \"}\"]",
        "é東",
    ];
    let garbage = [
        "<",
        "</",
        ">",
        "\"",
        "}",
        "\n",
        " ",
        "invoke",
        "END",
        "parameter name=\"",
    ];
    let (mut complete, mut incomplete, mut stopped) = (0, 0, 0);
    for seed in 0..400u64 {
        let mut rng = Rng::new(seed ^ 0xDEAD_BEEF);
        let thinking = seed % 2 == 0;
        // Build the output as segments: Some(text) or None for the DSML token.
        let mut segs: Vec<Option<String>> = Vec::new();
        let t = |segs: &mut Vec<Option<String>>, x: &str| segs.push(Some(x.to_owned()));
        if thinking {
            t(&mut segs, "hmm");
            segs.push(Some("\u{0}think_end".into()));
        }
        t(
            &mut segs,
            if seed % 10 == 0 {
                "ok END\n\n<"
            } else {
                "ok\n\n<"
            },
        );
        segs.push(None);
        t(&mut segs, "tool_calls>\n");
        for _ in 0..rng.range(1, 3) {
            t(&mut segs, "<");
            segs.push(None);
            t(
                &mut segs,
                &format!("invoke name=\"{}\">\n", names[rng.range(0, 2)]),
            );
            for _ in 0..rng.range(0, 3) {
                t(&mut segs, "<");
                segs.push(None);
                let string = rng.range(0, 1) == 0;
                t(
                    &mut segs,
                    &format!(
                        "parameter name=\"{}\" string=\"{string}\">",
                        keys[rng.range(0, 2)]
                    ),
                );
                t(&mut segs, values[rng.range(0, values.len() - 1)]);
                t(&mut segs, "</");
                segs.push(None);
                t(&mut segs, "parameter>\n");
            }
            t(&mut segs, "</");
            segs.push(None);
            t(&mut segs, "invoke>\n");
        }
        t(&mut segs, "</");
        segs.push(None);
        t(&mut segs, "tool_calls>");
        for _ in 0..[0, 0, 1, 3][rng.range(0, 3)] {
            let at = rng.range(0, segs.len() - 1);
            match rng.range(0, 3) {
                0 => drop(segs.remove(at)),
                1 => segs.insert(at, segs[at].clone()),
                2 => segs.insert(at, Some(garbage[rng.range(0, garbage.len() - 1)].into())),
                _ => segs.truncate(at.max(1)),
            }
        }
        let mut ids = Vec::new();
        for seg in &segs {
            match seg.as_deref() {
                None => ids.push(sp.dsml),
                Some("\u{0}think_end") => ids.push(sp.think_end),
                Some(text) => ids.extend(tok.encode(text)),
            }
        }
        let options = ParsingOptions {
            parse_tool_calls: true,
            thinking_initial_stage: thinking.then_some(ThinkingInitialStage::ReasoningStart),
            stop_sequences: if seed % 5 == 0 {
                vec!["END".into()]
            } else {
                vec![]
            },
            ..ParsingOptions::default()
        };
        let reason = if seed % 3 == 0 {
            InferenceFinishReason::Length
        } else {
            InferenceFinishReason::Stop
        };
        let run = |chunk_max: usize, rng: &mut Rng| {
            let mut p = parser(&options);
            let mut ev = Vec::new();
            let mut at = 0;
            while at < ids.len() && !p.is_finished() {
                let n = rng.range(1, chunk_max).min(ids.len() - at);
                ev.extend(p.push_tokens(&ids[at..at + n]).unwrap());
                at += n;
            }
            ev.extend(p.finish(reason).unwrap());
            ev
        };
        let one = run(1, &mut rng);
        check_well_formed(&one, seed);
        for e in &one {
            match e {
                ChatEvent::ToolCallEnd { complete: true, .. } => complete += 1,
                ChatEvent::ToolCallEnd {
                    complete: false, ..
                } => incomplete += 1,
                ChatEvent::Finish(f) if f.reason == FinishReason::StopSequence => stopped += 1,
                _ => {}
            }
        }
        for max in [3, 12, 64] {
            let other = run(max, &mut rng);
            check_well_formed(&other, seed);
            // After a stop the crate ignores the rest of the chunk that held it, so usage
            // may differ; the events may not.
            assert_eq!(
                without_usage(&normalize(&other)),
                without_usage(&normalize(&one)),
                "seed {seed}, chunks ≤ {max}"
            );
        }
    }
    // The generator does reach the interesting cases.
    assert!(
        complete >= 100 && incomplete >= 10 && stopped >= 1,
        "complete {complete}, incomplete {incomplete}, stopped {stopped}"
    );
}

fn check_well_formed(events: &[ChatEvent], seed: u64) {
    let mut open: Option<usize> = None;
    let mut next = 0;
    for (i, e) in events.iter().enumerate() {
        match e {
            ChatEvent::ToolCallStart { index, .. } => {
                assert!(
                    open.is_none(),
                    "seed {seed}: start while a call is open: {events:?}"
                );
                assert_eq!(*index, next, "seed {seed}");
                open = Some(*index);
                next += 1;
            }
            ChatEvent::ToolCallArguments { index, .. } => {
                assert_eq!(
                    open,
                    Some(*index),
                    "seed {seed}: arguments outside their call: {events:?}"
                )
            }
            ChatEvent::ToolCallEnd { index, .. } => {
                assert_eq!(
                    open.take(),
                    Some(*index),
                    "seed {seed}: end without start: {events:?}"
                )
            }
            ChatEvent::Finish(_) => {
                assert_eq!(i + 1, events.len(), "seed {seed}: finish not last");
                assert!(open.is_none(), "seed {seed}: call left open at finish");
            }
            ChatEvent::Reasoning(_) | ChatEvent::Content(_) => {}
        }
    }
    assert!(
        matches!(events.last(), Some(ChatEvent::Finish(_))),
        "seed {seed}"
    );
}

/// Output cut off inside a UTF-8 character (the token limit falls between the byte tokens of
/// 世): the held-back bytes are not shown, but every generated token is in the usage, pushed
/// in one batch or token by token; a character completed by a later token comes out whole, in
/// every chunking.
#[test]
fn output_ending_inside_a_character_counts_every_token() {
    let tok = tokenizer();
    let byte_token = |b: u8| (0..tok.vocab_size() as u32).find(|&id| tok.token_bytes(id) == Some(&[b][..])).expect("a token for every byte");
    // The content text and the usage's token count of `ids` pushed `batch` at a time.
    let run = |ids: &[u32], batch: usize, reason: InferenceFinishReason| {
        let mut p = parser(&plain());
        let mut events = Vec::new();
        for chunk in ids.chunks(batch) {
            events.extend(p.push_tokens(chunk).unwrap());
        }
        events.extend(p.finish(reason).unwrap());
        let text: String = events.iter().filter_map(|e| if let ChatEvent::Content(c) = e { Some(c.as_str()) } else { None }).collect();
        (text, finish_of(&events).usage.completion_tokens)
    };
    let shi = "世".as_bytes();
    let mut cut = tok.encode("Hello ");
    cut.extend([shi[0], shi[1]].map(byte_token));
    for batch in [cut.len(), 1] {
        assert_eq!(run(&cut, batch, InferenceFinishReason::Length), ("Hello ".to_owned(), cut.len()), "batch {batch}");
    }
    let mut whole = cut.clone();
    whole.push(byte_token(shi[2]));
    whole.extend(tok.encode("!"));
    for batch in 1..=whole.len() {
        assert_eq!(run(&whole, batch, InferenceFinishReason::Stop), ("Hello 世!".to_owned(), whole.len()), "batch {batch}");
    }
}
