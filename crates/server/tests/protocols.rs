//! Protocol behaviour with scripted model output: reasoning, DSML tool calls, stop strings,
//! usage, stream event shapes, context overflow, in all three chat protocols.

mod common;

use common::{ids, parse_sse, tok, TestServer};
use dsv4_server::scripted::ScriptedBackend;
use serde_json::{json, Value};

const REASONING: &str = "I should check the weather.";
const CONTENT: &str = "Let me look.";
const TOOL_BLOCK: &str = "\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"get_weather\">\n<｜DSML｜parameter name=\"city\" string=\"true\">Rome</｜DSML｜parameter>\n<｜DSML｜parameter name=\"days\" string=\"false\">3</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>";

/// Thinking, an answer, a tool call, then junk the model would never reach (the worker must
/// stop at the block's end).
fn tool_script() -> Vec<u32> {
    ids(&format!("{REASONING}</think>{CONTENT}{TOOL_BLOCK} and more text after the block"))
}

fn openai_tools() -> Value {
    json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather forecast",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}, "required": ["city"]}}}])
}

fn anthropic_tools() -> Value {
    json!([{"name": "get_weather", "description": "Weather forecast",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}, "required": ["city"]}}])
}

/// Text of `emitted[..=i]` for each i.
fn prefixes(emitted: &[u32]) -> Vec<String> {
    (0..emitted.len()).map(|i| tok().decode_lossy(&emitted[..=i])).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn chat_completion_reasoning_content_and_tool_call() {
    let s = TestServer::scripted(ScriptedBackend::fixed(tool_script()), common::config()).await;
    let (status, r) = s
        .post("/v1/chat/completions", &json!({"model": "deepseek-v4-flash", "messages": [{"role": "user", "content": "Weather in Rome?"}], "tools": openai_tools()}))
        .await;
    assert_eq!(status, 200, "{r}");
    let m = &r["choices"][0]["message"];
    assert_eq!(m["reasoning_content"], REASONING);
    assert_eq!(m["content"], CONTENT);
    let call = &m["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    let args: Value = serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"city": "Rome", "days": 3}));
    assert_eq!(r["choices"][0]["finish_reason"], "tool_calls");

    let job = &s.jobs()[0];
    // Generation stopped where the block closed: nothing after it was sampled.
    let text = tok().decode_lossy(&job.emitted);
    assert!(text.ends_with("</｜DSML｜tool_calls>"), "generation ran past the tool block: {text:?}");
    assert_eq!(r["usage"]["prompt_tokens"], job.prompt.len());
    assert_eq!(r["usage"]["completion_tokens"], job.emitted.len());
    // DSML syntax is sampled greedily, payloads and prose with the request's settings.
    let pre = prefixes(&job.emitted);
    let at = |suffix: &str| pre.iter().position(|p| p.ends_with(suffix)).unwrap_or_else(|| panic!("no token boundary after {suffix:?}"));
    assert!(!job.greedy_after[at("check")], "reasoning sampled greedily");
    assert!(!job.greedy_after[at("string=\"true\">")], "string payload sampled greedily");
    // The payload may go on until a closing tag begins; from `</` on it is syntax again.
    assert!(!job.greedy_after[at("Rome")], "payload end guessed before the closing tag");
    assert!(job.greedy_after[at("Rome</")], "closing tag after a payload not greedy");
    assert!(job.greedy_after[at("<｜DSML｜tool_calls>\n")], "syntax inside the block not greedy");
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn chat_completion_stream_events() {
    let s = TestServer::scripted(ScriptedBackend::fixed(tool_script()), common::config()).await;
    let events = s
        .stream(
            "/v1/chat/completions",
            &json!({"model": "deepseek-v4-flash", "stream": true, "stream_options": {"include_usage": true},
                "messages": [{"role": "user", "content": "Weather?"}], "tools": openai_tools()}),
        )
        .await;
    assert_eq!(events.last().unwrap().1, "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|(_, d)| serde_json::from_str(d).unwrap()).collect();
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"));
    let mut reasoning = String::new();
    let mut content = String::new();
    let mut args = String::new();
    let mut names = Vec::new();
    for c in &chunks {
        let Some(d) = c["choices"].get(0).map(|c| &c["delta"]) else { continue };
        reasoning += d["reasoning_content"].as_str().unwrap_or("");
        content += d["content"].as_str().unwrap_or("");
        for t in d["tool_calls"].as_array().into_iter().flatten() {
            if let Some(n) = t["function"]["name"].as_str() {
                names.push(n.to_owned());
            }
            args += t["function"]["arguments"].as_str().unwrap_or("");
        }
    }
    assert_eq!(reasoning, REASONING);
    assert_eq!(content, CONTENT);
    assert_eq!(names, ["get_weather"]);
    assert_eq!(serde_json::from_str::<Value>(&args).unwrap(), json!({"city": "Rome", "days": 3}));
    let finish: Vec<&Value> = chunks.iter().filter_map(|c| c["choices"].get(0)).map(|c| &c["finish_reason"]).filter(|f| !f.is_null()).collect();
    assert_eq!(finish, [&json!("tool_calls")]);
    // With include_usage the last chunk carries the usage (DeepSeek's API puts it on the
    // finish chunk, and so does the official chunk generator).
    let last = chunks.last().unwrap();
    assert_eq!(last["usage"]["prompt_tokens"], s.jobs()[0].prompt.len());
    assert_eq!(last["usage"]["completion_tokens"], s.jobs()[0].emitted.len());
    assert!(chunks[..chunks.len() - 1].iter().all(|c| c["usage"].is_null()), "usage before the last chunk");
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn anthropic_messages_stream_and_body() {
    let s = TestServer::scripted(ScriptedBackend::fixed(tool_script()), common::config()).await;
    let body = json!({"model": "deepseek-v4-flash", "max_tokens": 1000, "tools": anthropic_tools(),
        "system": [{"type": "text", "text": "x-anthropic-billing-header: cc_version=1.0; cch=abc;"}, {"type": "text", "text": "You are helpful."}],
        "messages": [{"role": "user", "content": "Weather in Rome?"}]});
    let (status, r) = s.post("/v1/messages", &body).await;
    assert_eq!(status, 200, "{r}");
    let types: Vec<&str> = r["content"].as_array().unwrap().iter().map(|b| b["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["thinking", "text", "tool_use"]);
    assert_eq!(r["content"][0]["thinking"], REASONING);
    assert_eq!(r["content"][1]["text"], CONTENT);
    assert_eq!(r["content"][2]["name"], "get_weather");
    assert_eq!(r["content"][2]["input"], json!({"city": "Rome", "days": 3}));
    assert!(!r["content"][2]["id"].as_str().unwrap().is_empty());
    assert_eq!(r["stop_reason"], "tool_use");
    let jobs = s.jobs();
    let rendered = tok().decode_lossy(&jobs[0].prompt);
    assert!(!rendered.contains("x-anthropic-billing-header"), "billing header reached the prompt");
    assert!(rendered.contains("You are helpful."));

    let mut stream_body = body.clone();
    stream_body["stream"] = json!(true);
    let events = s.stream("/v1/messages", &stream_body).await;
    let names: Vec<&str> = events.iter().map(|(e, _)| e.as_deref().unwrap()).collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(names.last(), Some(&"message_stop"));
    let data: Vec<Value> = events.iter().map(|(_, d)| serde_json::from_str(d).unwrap()).collect();
    for (n, d) in names.iter().zip(&data) {
        assert_eq!(d["type"], *n, "event name and data type differ");
    }
    // The same prompt again: everything but the last token came from the live session.
    let start = &data[0]["message"]["usage"];
    let input = start["input_tokens"].as_u64().unwrap() + start["cache_read_input_tokens"].as_u64().unwrap();
    assert_eq!(input as usize, jobs[0].prompt.len());
    assert_eq!(start["cache_read_input_tokens"].as_u64().unwrap() as usize, jobs[0].prompt.len() - 1);
    let json_deltas: String = data
        .iter()
        .filter(|d| d["type"] == "content_block_delta" && d["delta"]["type"] == "input_json_delta")
        .map(|d| d["delta"]["partial_json"].as_str().unwrap())
        .collect();
    assert_eq!(serde_json::from_str::<Value>(&json_deltas).unwrap(), json!({"city": "Rome", "days": 3}));
    let thinking: String = data
        .iter()
        .filter(|d| d["delta"]["type"] == "thinking_delta")
        .map(|d| d["delta"]["thinking"].as_str().unwrap())
        .collect();
    assert_eq!(thinking, REASONING);
    let delta = data.iter().find(|d| d["type"] == "message_delta").unwrap();
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");

    // count_tokens agrees with what generation prefilled.
    let mut count_body = body.clone();
    count_body.as_object_mut().unwrap().remove("max_tokens");
    let (status, c) = s.post("/v1/messages/count_tokens", &count_body).await;
    assert_eq!(status, 200, "{c}");
    assert_eq!(c["input_tokens"].as_u64().unwrap() as usize, jobs[0].prompt.len());
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn responses_function_call_stream() {
    let s = TestServer::scripted(ScriptedBackend::fixed(tool_script()), common::config()).await;
    let tools = json!([{"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}}}]);
    let body = json!({"model": "deepseek-v4-flash", "input": "Weather in Rome?", "tools": tools, "stream": true});
    let events = s.stream("/v1/responses", &body).await;
    let data: Vec<Value> = events.iter().map(|(_, d)| serde_json::from_str(d).unwrap()).collect();
    for ((name, _), d) in events.iter().zip(&data) {
        assert_eq!(name.as_deref(), d["type"].as_str(), "event line and data type differ");
    }
    assert_eq!(data[0]["type"], "response.created");
    assert_eq!(data.last().unwrap()["type"], "response.completed");
    let done = data.iter().find(|d| d["type"] == "response.function_call_arguments.done").expect("function call arguments done");
    assert_eq!(serde_json::from_str::<Value>(done["arguments"].as_str().unwrap()).unwrap(), json!({"city": "Rome", "days": 3}));
    let output = &data.last().unwrap()["response"]["output"];
    let kinds: Vec<&str> = output.as_array().unwrap().iter().map(|o| o["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["reasoning", "message", "function_call"]);
    assert_eq!(output[2]["name"], "get_weather");

    let mut plain = body.clone();
    plain["stream"] = json!(false);
    let (status, r) = s.post("/v1/responses", &plain).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["status"], "completed");
    assert_eq!(r["output"][2]["type"], "function_call");
    assert_eq!(r["usage"]["input_tokens"], s.jobs()[1].prompt.len());
    assert!(r["usage"]["input_tokens_details"]["cached_tokens"].as_u64().unwrap() > 0);
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_sequences_cut_content_but_not_reasoning() {
    let script = ids("Thinking about STOP words.</think>Hello STOP world, more text.");
    let s = TestServer::scripted(ScriptedBackend::fixed(script.clone()), common::config()).await;
    let (status, r) = s
        .post("/v1/chat/completions", &json!({"model": "deepseek-v4-flash", "stop": ["STOP"], "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["choices"][0]["message"]["reasoning_content"], "Thinking about STOP words.");
    assert_eq!(r["choices"][0]["message"]["content"], "Hello ");
    assert_eq!(r["choices"][0]["finish_reason"], "stop");
    let job = &s.jobs()[0];
    assert!(job.emitted.len() < script.len(), "generation went on after the stop string");

    // Raw completions: the stop string cuts the raw text, in the stream too.
    let (status, r) = s.post("/v1/completions", &json!({"prompt": "Say", "max_tokens": 100, "stop": "STOP"})).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["choices"][0]["text"], "Thinking about ");
    assert_eq!(r["choices"][0]["finish_reason"], "stop");
    let events = s.stream("/v1/completions", &json!({"prompt": "Say", "max_tokens": 100, "stop": ["STOP"], "stream": true})).await;
    assert_eq!(events.last().unwrap().1, "[DONE]");
    let text: String = events[..events.len() - 1]
        .iter()
        .map(|(_, d)| serde_json::from_str::<Value>(d).unwrap()["choices"][0]["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(text, "Thinking about ");
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn max_tokens_and_non_thinking_model() {
    let s = TestServer::scripted(ScriptedBackend::fixed(ids("one two three four five six seven eight nine ten")), common::config()).await;
    let (status, r) =
        s.post("/v1/chat/completions", &json!({"model": "deepseek-chat", "max_tokens": 3, "messages": [{"role": "user", "content": "count"}]})).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["choices"][0]["finish_reason"], "length");
    assert_eq!(r["usage"]["completion_tokens"], 3);
    assert!(r["choices"][0]["message"].get("reasoning_content").is_none_or(Value::is_null), "non-thinking model produced reasoning: {r}");
    assert_eq!(r["choices"][0]["message"]["content"], tok().decode_lossy(&s.jobs()[0].emitted));
    assert_eq!(s.jobs()[0].max_tokens, 3);
    // OpenAI's newer name for the same limit.
    let (status, r) = s
        .post("/v1/chat/completions", &json!({"model": "deepseek-chat", "max_completion_tokens": 2, "messages": [{"role": "user", "content": "count"}]}))
        .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["usage"]["completion_tokens"], 2);
    assert_eq!(s.jobs()[1].max_tokens, 2);
    // Anthropic: max_tokens reached is stop_reason max_tokens.
    let (status, r) = s.post("/v1/messages", &json!({"model": "deepseek-chat", "max_tokens": 2, "messages": [{"role": "user", "content": "count"}]})).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["stop_reason"], "max_tokens");
    assert_eq!(r["usage"]["output_tokens"], 2);
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn context_overflow_in_each_protocols_shape() {
    let cfg = dsv4_server::ServerConfig { ctx: 64, ..common::config() };
    let s = TestServer::scripted(ScriptedBackend::fixed(ids("x")), cfg).await;
    let long = "word ".repeat(200);
    let (status, r) = s.post("/v1/chat/completions", &json!({"model": "m", "messages": [{"role": "user", "content": long}]})).await;
    assert_eq!(status, 400);
    assert_eq!(r["error"]["code"], "context_length_exceeded");
    assert_eq!(r["error"]["type"], "invalid_request_error");
    assert!(r["error"]["message"].as_str().unwrap().contains("64"), "{r}");
    let (status, r) = s.post("/v1/responses", &json!({"model": "m", "input": long})).await;
    assert_eq!(status, 400);
    assert_eq!(r["error"]["code"], "context_length_exceeded");
    let (status, r) = s.post("/v1/completions", &json!({"prompt": long})).await;
    assert_eq!(status, 400);
    assert_eq!(r["error"]["code"], "context_length_exceeded");
    assert_eq!(r["error"]["param"], "prompt");
    let (status, r) = s.post("/v1/messages", &json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": long}]})).await;
    assert_eq!(status, 400);
    assert_eq!(r["type"], "error");
    assert_eq!(r["error"]["type"], "invalid_request_error");
    assert!(r["error"]["message"].as_str().unwrap().contains("context length"), "{r}");
    // Nothing reached the worker.
    assert!(s.jobs().is_empty());
    // A prompt that fits with a max_tokens that does not is served, with max_tokens lowered.
    let (status, r) = s.post("/v1/chat/completions", &json!({"model": "deepseek-chat", "max_tokens": 100000, "messages": [{"role": "user", "content": "hi"}]})).await;
    assert_eq!(status, 200, "{r}");
    let job = &s.wait_jobs(1, std::time::Duration::from_secs(5)).await[0];
    assert_eq!(job.max_tokens, 64 - job.prompt.len());
    s.stop().await.unwrap();
}

#[test]
fn sse_parser_reads_names_data_and_skips_comments() {
    let ev = parse_sse(": keep-alive\n\nevent: a\ndata: {\"x\":1}\n\ndata: [DONE]\n\n");
    assert_eq!(ev, vec![(Some("a".to_owned()), "{\"x\":1}".to_owned()), (None, "[DONE]".to_owned())]);
}

#[tokio::test(flavor = "multi_thread")]
async fn responses_custom_tool_call_for_apply_patch() {
    let patch = "*** Begin Patch\n*** Update File: a.txt\n-old\n+new\n*** End Patch";
    let script = ids(&format!(
        "Patch it.</think>\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"apply_patch\">\n<｜DSML｜parameter name=\"input\" string=\"true\">{patch}</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>"
    ));
    let s = TestServer::scripted(ScriptedBackend::fixed(script), common::config()).await;
    let body = json!({"model": "deepseek-v4-flash", "input": "Fix a.txt", "stream": true,
        "tools": [{"type": "custom", "name": "apply_patch", "description": "Apply a patch"}]});
    let events = s.stream("/v1/responses", &body).await;
    let data: Vec<Value> = events.iter().map(|(_, d)| serde_json::from_str(d).unwrap()).collect();
    let done = data.iter().find(|d| d["type"] == "response.output_item.done" && d["item"]["type"] == "custom_tool_call").expect("no custom_tool_call item");
    assert_eq!(done["item"]["name"], "apply_patch");
    assert_eq!(done["item"]["input"], patch);
    let streamed: String = data
        .iter()
        .filter(|d| d["type"] == "response.custom_tool_call_input.delta")
        .map(|d| d["delta"].as_str().unwrap())
        .collect();
    assert_eq!(streamed, patch, "custom tool input deltas");
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_and_unterminated_dsml_still_give_well_formed_answers() {
    // A block that never closes (the answer ran out), and one with an unknown tag inside.
    let cases = [
        "Thinking.</think>Calling.\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"get_weather\">\n<｜DSML｜parameter name=\"city\" string=\"true\">Ro",
        "Thinking.</think>Calling.\n\n<｜DSML｜tool_calls>\n<｜DSML｜bogus>\n</｜DSML｜tool_calls>",
    ];
    for text in cases {
        let s = TestServer::scripted(ScriptedBackend::fixed(ids(text)), common::config()).await;
        let chat = json!({"model": "deepseek-v4-flash", "messages": [{"role": "user", "content": "Weather?"}], "tools": openai_tools()});
        let (status, r) = s.post("/v1/chat/completions", &chat).await;
        assert_eq!(status, 200, "{text:?}: {r}");
        let choice = &r["choices"][0];
        assert!(["stop", "length", "tool_calls"].contains(&choice["finish_reason"].as_str().unwrap()), "{r}");
        assert_eq!(choice["message"]["reasoning_content"], "Thinking.");
        // Whatever was parsed, a tool call that is reported has a name and JSON arguments.
        for call in choice["message"]["tool_calls"].as_array().into_iter().flatten() {
            assert!(call["function"]["name"].is_string());
            assert!(call["function"]["arguments"].is_string());
        }
        let mut stream = chat.clone();
        stream["stream"] = json!(true);
        let events = s.stream("/v1/chat/completions", &stream).await;
        assert_eq!(events.last().unwrap().1, "[DONE]", "{text:?}");
        let anthropic = json!({"model": "deepseek-v4-flash", "max_tokens": 100, "stream": true, "messages": [{"role": "user", "content": "Weather?"}], "tools": anthropic_tools()});
        let events = s.stream("/v1/messages", &anthropic).await;
        assert_eq!(events.last().unwrap().0.as_deref(), Some("message_stop"), "{text:?}");
        // Every content block that starts also stops.
        let data: Vec<Value> = events.iter().map(|(_, d)| serde_json::from_str(d).unwrap()).collect();
        let starts = data.iter().filter(|d| d["type"] == "content_block_start").count();
        let stops = data.iter().filter(|d| d["type"] == "content_block_stop").count();
        assert_eq!(starts, stops, "{text:?}");
        s.stop().await.unwrap();
    }
}

/// A tool call whose JSON argument the model wrote with its own spacing: re-rendered from the
/// client's JSON it would differ; replayed, the prompt holds exactly the sampled tokens.
#[tokio::test(flavor = "multi_thread")]
async fn tool_calls_sent_back_are_replayed_exactly_as_sampled() {
    let odd = "\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"get_weather\">\n<｜DSML｜parameter name=\"city\" string=\"true\">Rome</｜DSML｜parameter>\n<｜DSML｜parameter name=\"days\" string=\"false\">  3 </｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>";
    let first = ids(&format!("{REASONING}</think>{CONTENT}{odd}"));
    let s = TestServer::scripted(
        ScriptedBackend::new(move |job| if job.prompt.len() < 400 { first.clone() } else { ids("Sunny.</think>It is sunny.") }),
        common::config(),
    )
    .await;
    let user = json!({"role": "user", "content": "Weather in Rome?"});
    let (status, r) = s.post("/v1/chat/completions", &json!({"model": "deepseek-v4-flash", "messages": [user], "tools": openai_tools()})).await;
    assert_eq!(status, 200, "{r}");
    let msg = r["choices"][0]["message"].clone();
    let call = msg["tool_calls"][0].clone();
    assert_eq!(serde_json::from_str::<Value>(call["function"]["arguments"].as_str().unwrap()).unwrap(), json!({"city": "Rome", "days": 3}));
    let follow = |id: &Value| {
        let mut call = call.clone();
        call["id"] = id.clone();
        json!({"model": "deepseek-v4-flash", "tools": openai_tools(), "messages": [
            user, {"role": "assistant", "content": msg["content"], "reasoning_content": msg["reasoning_content"], "tool_calls": [call]},
            {"role": "tool", "tool_call_id": id, "content": "sunny, 24 C"}]})
    };
    // The real id: the block comes back as sampled.
    let (status, r2) = s.post("/v1/chat/completions", &follow(&call["id"])).await;
    assert_eq!(status, 200, "{r2}");
    let jobs = s.jobs();
    // The sampled block: the shortest tail of the first answer that holds the whole block.
    let emitted = &jobs[0].emitted;
    let k = (1..=emitted.len()).find(|&k| tok().decode_lossy(&emitted[emitted.len() - k..]).contains("<｜DSML｜tool_calls>")).unwrap();
    let sampled_block = &emitted[emitted.len() - k..];
    let replayed = &jobs[1].prompt;
    assert!(replayed.windows(sampled_block.len()).any(|w| w == sampled_block), "sampled block not in the prompt: {}", tok().decode_lossy(replayed));
    assert!(tok().decode_lossy(replayed).contains("string=\"false\">  3 </"));
    // An unknown id: the official canonical rendering.
    let (status, _) = s.post("/v1/chat/completions", &follow(&json!("call_unknown"))).await;
    assert_eq!(status, 200);
    let canonical = tok().decode_lossy(&s.jobs()[2].prompt);
    assert!(!canonical.contains("  3 </") && canonical.contains("string=\"false\">3</"), "{canonical}");

    // Anthropic: the tool_use id the client got brings the same block back.
    let body = json!({"model": "deepseek-v4-flash", "max_tokens": 500, "tools": anthropic_tools(), "messages": [{"role": "user", "content": "Weather in Rome?"}]});
    let (status, m) = s.post("/v1/messages", &body).await;
    assert_eq!(status, 200, "{m}");
    let tool_use = m["content"].as_array().unwrap().iter().find(|b| b["type"] == "tool_use").unwrap().clone();
    let mut follow = body.clone();
    follow["messages"] = json!([
        {"role": "user", "content": "Weather in Rome?"},
        {"role": "assistant", "content": m["content"]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_use["id"], "content": "sunny"}]}]);
    let (status, _) = s.post("/v1/messages", &follow).await;
    assert_eq!(status, 200);
    let prompt = tok().decode_lossy(&s.jobs().last().unwrap().prompt);
    assert!(prompt.contains("string=\"false\">  3 </"), "Anthropic tool_use not replayed: {prompt}");
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn tool_call_memory_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dsv4_server::ServerConfig { tool_memory: Some(dir.path().join("tool-calls.jsonl")), ..common::config() };
    let odd = "\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"get_weather\">\n<｜DSML｜parameter name=\"days\" string=\"false\"> 3</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>";
    let s = TestServer::scripted(ScriptedBackend::fixed(ids(&format!("Hm.</think>{odd}"))), cfg.clone()).await;
    let user = json!({"role": "user", "content": "Weather?"});
    let (_, r) = s.post("/v1/chat/completions", &json!({"model": "deepseek-v4-flash", "messages": [user], "tools": openai_tools()})).await;
    let msg = r["choices"][0]["message"].clone();
    s.stop().await.unwrap();
    // A garbage line in the file is skipped, not fatal.
    let path = dir.path().join("tool-calls.jsonl");
    let mut saved = std::fs::read_to_string(&path).unwrap();
    assert!(saved.contains(msg["tool_calls"][0]["id"].as_str().unwrap()));
    saved.insert_str(0, "{not json\n");
    std::fs::write(&path, saved).unwrap();

    let s = TestServer::scripted(ScriptedBackend::fixed(ids("ok")), cfg).await;
    let follow = json!({"model": "deepseek-v4-flash", "tools": openai_tools(), "messages": [
        user, {"role": "assistant", "content": msg["content"], "reasoning_content": msg["reasoning_content"], "tool_calls": msg["tool_calls"]},
        {"role": "tool", "tool_call_id": msg["tool_calls"][0]["id"], "content": "sunny"}]});
    let (status, _) = s.post("/v1/chat/completions", &follow).await;
    assert_eq!(status, 200);
    let prompt = tok().decode_lossy(&s.jobs()[0].prompt);
    assert!(prompt.contains("string=\"false\"> 3</"), "not replayed after the restart: {prompt}");
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_end_of_sentence_token_never_reaches_the_client() {
    let mut script = ids("Hello there.");
    script.push(tok().specials().eos);
    let s = TestServer::scripted(ScriptedBackend::fixed(script), common::config()).await;
    let (status, r) = s.post("/v1/chat/completions", &json!({"model": "deepseek-chat", "messages": [{"role": "user", "content": "hi"}]})).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["choices"][0]["message"]["content"], "Hello there.");
    let (_, m) = s.post("/v1/messages", &json!({"model": "deepseek-chat", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]})).await;
    assert_eq!(m["content"][0]["text"], "Hello there.");
    let (_, c) = s.post("/v1/completions", &json!({"prompt": "x", "max_tokens": 50})).await;
    assert_eq!(c["choices"][0]["text"], "Hello there.");
    s.stop().await.unwrap();
}
