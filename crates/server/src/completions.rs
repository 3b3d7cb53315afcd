//! `POST /v1/completions`: raw text completion, OpenAI's legacy endpoint. The prompt is
//! BOS followed by the text's tokens (no chat template: that is what this endpoint means to
//! every other server), the output is the raw continuation cut at the first stop string.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use dsv4_engine::SamplingParams;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::backend::{End, GenJob, PromptReport};
use crate::chat::read_body;
use crate::error::ApiError;
use crate::sse;
use crate::worker::{Event, Job, OutputMode};
use crate::AppState;

/// OpenAI's default for this endpoint.
const DEFAULT_MAX_TOKENS: i64 = 16;

#[derive(Deserialize)]
#[serde(untagged)]
enum PromptField {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<i64>),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum StopField {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct StreamOptions {
    include_usage: Option<bool>,
}

#[derive(Deserialize)]
struct CompletionRequest {
    #[serde(default)]
    model: Option<String>,
    prompt: PromptField,
    max_tokens: Option<i64>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    top_k: Option<i64>,
    min_p: Option<f32>,
    seed: Option<u64>,
    stop: Option<StopField>,
    #[serde(default)]
    stream: bool,
    stream_options: Option<StreamOptions>,
    n: Option<i64>,
    best_of: Option<i64>,
    #[serde(default)]
    echo: bool,
    logprobs: Option<Value>,
    suffix: Option<String>,
}

pub(crate) async fn handle(State(st): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    let resp = match run(&st, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    st.metrics.request("completions", resp.status().as_u16());
    resp
}

async fn run(st: &Arc<AppState>, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let ready = st.ready()?;
    let bytes = read_body(body, st.cfg.body_limit)?;
    let req: CompletionRequest = crate::error::parse_json(&bytes)?;
    refuse_unsupported(&req)?;
    let tok = ready.tok.clone();
    let vocab = tok.vocab_size();
    let text_prompt = match req.prompt {
        PromptField::Text(t) => Some(t),
        PromptField::Texts(mut v) if v.len() == 1 => v.pop(),
        PromptField::Texts(v) => return Err(ApiError::bad_request(format!("prompt: {} prompts given; this server completes one prompt per request", v.len()))),
        PromptField::Tokens(ids) => {
            if let Some(bad) = ids.iter().find(|&&i| i < 0 || i as u64 >= vocab as u64) {
                return Err(ApiError::bad_request(format!("prompt: token id {bad} is outside the vocabulary (0..{vocab})")));
            }
            let mut prompt: Vec<u32> = ids.into_iter().map(|i| i as u32).collect();
            if prompt.is_empty() {
                prompt.push(tok.specials().bos);
            }
            return finish_run(st, ready, req.model, prompt, req.max_tokens, req.stream, req.stream_options, sampling(&req.temperature, &req.top_p, req.top_k, req.min_p, req.seed)?, req.stop).await;
        }
    };
    let text = text_prompt.unwrap_or_default();
    let tok2 = tok.clone();
    let prompt = tokio::task::spawn_blocking(move || {
        let mut p = vec![tok2.specials().bos];
        p.extend(tok2.encode(&text));
        p
    })
    .await
    .map_err(|e| ApiError::internal(format!("tokenizing failed: {e}")))?;
    let sampling = sampling(&req.temperature, &req.top_p, req.top_k, req.min_p, req.seed)?;
    finish_run(st, ready, req.model, prompt, req.max_tokens, req.stream, req.stream_options, sampling, req.stop).await
}

fn sampling(temperature: &Option<f32>, top_p: &Option<f32>, top_k: Option<i64>, min_p: Option<f32>, seed: Option<u64>) -> Result<SamplingParams, ApiError> {
    let d = SamplingParams::default();
    let top_k = match top_k {
        None => 0,
        Some(k) if (0..=1 << 20).contains(&k) => k as usize,
        Some(k) => return Err(ApiError::bad_request(format!("top_k {k} is outside 0..=1048576"))),
    };
    let s = SamplingParams {
        temperature: temperature.unwrap_or(d.temperature),
        top_p: top_p.unwrap_or(d.top_p),
        top_k,
        min_p: min_p.unwrap_or(d.min_p),
        seed,
    };
    s.validate().map_err(ApiError::bad_request)?;
    Ok(s)
}

fn refuse_unsupported(r: &CompletionRequest) -> Result<(), ApiError> {
    if r.n.is_some_and(|n| n != 1) {
        return Err(ApiError::bad_request("n: only one completion per request is supported"));
    }
    if r.best_of.is_some_and(|n| n != 1) {
        return Err(ApiError::bad_request("best_of: only 1 is supported"));
    }
    if r.echo {
        return Err(ApiError::bad_request("echo is not supported"));
    }
    if r.logprobs.as_ref().is_some_and(|v| !v.is_null()) {
        return Err(ApiError::bad_request("logprobs are not supported by /v1/completions"));
    }
    if r.suffix.as_ref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::bad_request("suffix (fill-in-the-middle) is not supported"));
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn finish_run(
    st: &Arc<AppState>,
    ready: &crate::Ready,
    model: Option<String>,
    prompt: Vec<u32>,
    max_tokens: Option<i64>,
    stream: bool,
    stream_options: Option<StreamOptions>,
    sampling: SamplingParams,
    stop: Option<StopField>,
) -> Result<Response, ApiError> {
    let ctx = st.cfg.ctx;
    if prompt.len() >= ctx {
        return Err(ApiError {
            param: Some("prompt"),
            ..ApiError::context_exceeded(format!(
                "This model's maximum context length is {ctx} tokens. However, your prompt resulted in {} tokens. Please reduce the length of the prompt.",
                prompt.len()
            ))
        });
    }
    let max_tokens = match max_tokens.unwrap_or(DEFAULT_MAX_TOKENS) {
        m if m < 0 => return Err(ApiError::bad_request(format!("max_tokens {m} is negative"))),
        m => (m as u64).min((ctx - prompt.len()) as u64) as usize,
    };
    let stop: Vec<String> = match stop {
        None => Vec::new(),
        Some(StopField::One(s)) => vec![s],
        Some(StopField::Many(v)) => v,
    }
    .into_iter()
    .filter(|s| !s.is_empty())
    .collect();
    let model = model.unwrap_or_else(|| dsv4_chat::MODEL_ID.to_owned());
    let id = st.new_id("cmpl-");
    let created = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    if max_tokens == 0 {
        let body = completion(&id, created, &model, "", Some("length"), Some(usage(prompt.len(), 0, 0)));
        return Ok(Json(body).into_response());
    }
    let guard = st.cancel_guard();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let job = Job { id: id.clone(), gen: GenJob { prompt, text: None, max_tokens, sampling }, output: OutputMode::Raw { stop }, cancel: guard.0.clone(), events: tx };
    if !ready.worker.submit(job, &st.metrics) {
        return Err(ApiError::unavailable("the server is shutting down"));
    }
    let include_usage = stream_options.and_then(|o| o.include_usage).unwrap_or(false);
    if stream {
        let s = futures_util::stream::unfold((rx, guard, 0usize, None::<PromptReport>, false), move |(mut rx, guard, n, report, done)| {
            let (id, model) = (id.clone(), model.clone());
            async move {
                if done {
                    return None;
                }
                let mut items = Vec::new();
                let (mut n, mut report, mut done) = (n, report, false);
                match rx.recv().await {
                    Some(Event::Ready(r)) => report = Some(r),
                    Some(Event::Token { text, .. }) => {
                        n += 1;
                        if !text.is_empty() {
                            items.push(sse::chunk(None, &completion(&id, created, &model, &text, None, None)));
                        }
                    }
                    Some(Event::Tail(text)) => items.push(sse::chunk(None, &completion(&id, created, &model, &text, None, None))),
                    Some(Event::Finish(End::Cancelled)) | None => {
                        items.push(sse::error(&ApiError::unavailable("the request was cancelled")));
                        done = true;
                    }
                    Some(Event::Finish(end)) => {
                        items.push(sse::chunk(None, &completion(&id, created, &model, "", Some(finish_reason(end)), None)));
                        if include_usage {
                            let r = report.unwrap_or(PromptReport { prompt_tokens: 0, cached_tokens: 0, source: crate::CacheSource::Live, prefill_seconds: 0.0 });
                            let mut u = completion(&id, created, &model, "", None, Some(usage(r.prompt_tokens, r.cached_tokens, n)));
                            u["choices"] = json!([]);
                            items.push(sse::chunk(None, &u));
                        }
                        items.push(sse::data("[DONE]".into()));
                        done = true;
                    }
                    Some(Event::Failed(e)) => {
                        items.push(sse::error(&ApiError::internal(format!("generation failed: {e}"))));
                        done = true;
                    }
                }
                Some((items, (rx, guard, n, report, done)))
            }
        })
        .flat_map(futures_util::stream::iter);
        return Ok(sse::respond(s, st.cfg.keepalive));
    }
    let (mut text, mut n, mut report) = (String::new(), 0usize, None);
    loop {
        match rx.recv().await {
            Some(Event::Ready(r)) => report = Some(r),
            Some(Event::Token { text: t, .. }) => {
                n += 1;
                text.push_str(&t);
            }
            Some(Event::Tail(t)) => text.push_str(&t),
            Some(Event::Finish(End::Cancelled)) | None => return Err(ApiError::unavailable("the request was cancelled")),
            Some(Event::Finish(end)) => {
                drop(guard);
                let r = report.map(|r| (r.prompt_tokens, r.cached_tokens)).unwrap_or((0, 0));
                let body = completion(&id, created, &model, &text, Some(finish_reason(end)), Some(usage(r.0, r.1, n)));
                return Ok(Json(body).into_response());
            }
            Some(Event::Failed(e)) => return Err(ApiError::internal(format!("generation failed: {e}"))),
        }
    }
}

fn finish_reason(end: End) -> &'static str {
    match end {
        End::Length | End::Loop => "length",
        _ => "stop",
    }
}

fn usage(prompt: usize, cached: usize, completion: usize) -> Value {
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    })
}

fn completion(id: &str, created: u64, model: &str, text: &str, finish: Option<&str>, usage: Option<Value>) -> Value {
    let mut v = json!({
        "id": id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [{"text": text, "index": 0, "logprobs": null, "finish_reason": finish}],
    });
    if let Some(u) = usage {
        v["usage"] = u;
    }
    v
}
