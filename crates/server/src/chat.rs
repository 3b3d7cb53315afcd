//! The three chat protocols (Chat Completions, Responses, Messages) through one generic
//! handler: convert and render with the recipe crates, queue the tokens, then turn the
//! worker's token stream into the protocol's own chunks with the recipe's chunk generator,
//! streamed as SSE or accumulated into one response body.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use dsv4_chat::deepseek_recipe::anthropic::MessagesRequest;
use dsv4_chat::deepseek_recipe::openai::{ChatCompletionRequest, ResponsesRequest};
use dsv4_chat::deepseek_recipe::request::{OutputConstraint, ProtocolRequest};
use dsv4_chat::deepseek_recipe::response::{Accumulate, ProtocolResponse};
use dsv4_chat::deepseek_recipe::stream::{ChunkGenerator, InferenceChunk, InferenceFinishReason, PromptUsage};
use dsv4_chat::{ApiRequest, ConvertedRequest, EncodedPrompt, SyncStream};
use dsv4_engine::SamplingParams;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;
use tokio::sync::mpsc;

use crate::backend::{End, GenJob, PromptReport};
use crate::error::{ApiError, Flavor};
use crate::sse;
use crate::worker::{Event, Job, OutputMode};
use crate::{AppState, CancelOnDrop};

type Generator<P> = <<P as ProtocolRequest>::Response as ProtocolResponse>::ChunkGenerator;
type Chunk<P> = <Generator<P> as ChunkGenerator>::Chunk;

/// What differs between the three protocols beyond what the recipe's traits already say.
pub(crate) trait ChatProtocol: ProtocolRequest + DeserializeOwned
where
    Chunk<Self>: Serialize + Send,
{
    /// Label in `/metrics`.
    const ENDPOINT: &'static str;
    const FLAVOR: Flavor;
    const ID_PREFIX: &'static str;
    fn into_api(self) -> ApiRequest;

    /// Deserializes a body, with any fix-up the recipe's schema needs first.
    fn parse(bytes: &[u8]) -> Result<Self, ApiError> {
        crate::error::parse_json(bytes)
    }
}

impl ChatProtocol for ChatCompletionRequest {
    const ENDPOINT: &'static str = "chat_completions";
    const FLAVOR: Flavor = Flavor::OpenAi;
    const ID_PREFIX: &'static str = "chatcmpl-";
    fn into_api(self) -> ApiRequest {
        ApiRequest::ChatCompletions(self)
    }

    /// `max_completion_tokens` is OpenAI's current name for `max_tokens` (its SDKs send it);
    /// deepseek-recipe 0.2.0's schema only knows `max_tokens`, so it is renamed here rather
    /// than silently ignored.
    fn parse(bytes: &[u8]) -> Result<Self, ApiError> {
        let mut v: serde_json::Value = crate::error::parse_json(bytes)?;
        if let Some(obj) = v.as_object_mut() {
            if let Some(m) = obj.remove("max_completion_tokens").filter(|m| !m.is_null()) {
                obj.insert("max_tokens".into(), m);
            }
        }
        crate::error::from_value(v)
    }
}

impl ChatProtocol for ResponsesRequest {
    const ENDPOINT: &'static str = "responses";
    const FLAVOR: Flavor = Flavor::OpenAi;
    const ID_PREFIX: &'static str = "resp_";
    fn into_api(self) -> ApiRequest {
        ApiRequest::Responses(self)
    }
}

impl ChatProtocol for MessagesRequest {
    const ENDPOINT: &'static str = "messages";
    const FLAVOR: Flavor = Flavor::Anthropic;
    const ID_PREFIX: &'static str = "msg_";
    fn into_api(self) -> ApiRequest {
        ApiRequest::Messages(self)
    }
}

/// A request ready for the worker.
struct Prepared {
    conv: ConvertedRequest,
    prompt: Vec<u32>,
    text: Arc<EncodedPrompt>,
    max_tokens: usize,
}

pub(crate) async fn handle<P: ChatProtocol>(State(st): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response
where
    Chunk<P>: Serialize + Send,
{
    let resp = match run::<P>(&st, body).await {
        Ok(r) => r,
        Err(e) => e.with_flavor(P::FLAVOR).into_response(),
    };
    st.metrics.request(P::ENDPOINT, resp.status().as_u16());
    resp
}

pub(crate) fn read_body(body: Result<Bytes, BytesRejection>, limit: usize) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("the request body is larger than the server's limit of {limit} bytes"))
        } else {
            ApiError::bad_request(format!("could not read the request body: {e}"))
        }
    })
}

async fn run<P: ChatProtocol>(st: &Arc<AppState>, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError>
where
    Chunk<P>: Serialize + Send,
{
    let ready = st.ready()?;
    let bytes = read_body(body, st.cfg.body_limit)?;
    // Rendering and tokenizing a long transcript takes milliseconds to seconds: off the
    // async threads.
    let prep_state = st.clone();
    let prepared = tokio::task::spawn_blocking(move || prepare::<P>(&prep_state, &bytes))
        .await
        .map_err(|e| ApiError::internal(format!("request preparation failed: {e}")))??;
    let Prepared { conv, prompt, text, max_tokens } = prepared;
    let s = &conv.settings;
    let sampling = SamplingParams { temperature: s.temperature, top_p: s.top_p, seed: s.seed, ..SamplingParams::default() };
    sampling.validate().map_err(ApiError::bad_request)?;
    let id = st.new_id(P::ID_PREFIX);
    let guard = st.cancel_guard();
    let (tx, rx) = mpsc::unbounded_channel();
    let job = Job {
        id: id.clone(),
        gen: GenJob { prompt, text: Some(text), max_tokens, sampling },
        output: OutputMode::Parsed(conv.parsing_options().clone()),
        cancel: guard.0.clone(),
        events: tx,
    };
    if !ready.worker.submit(job, &st.metrics) {
        return Err(ApiError::unavailable("the server is shutting down"));
    }
    let generator = P::chunk_generator(&conv.request, id.clone(), conv.model.clone());
    let stream = SyncStream::new(generator, conv.parsing_options().clone(), ready.tok.clone());
    let dsml = ready.tok.token_to_id("｜DSML｜");
    let out = Output::<P> { stream, rx, guard, done: false, report: None, state: st.clone(), generated: Vec::new(), call_ids: Vec::new(), dsml, dsml_seen: false };
    if conv.stream() {
        Ok(sse::respond(out.into_sse_stream(), st.cfg.keepalive))
    } else {
        out.collect(id, conv.model).await
    }
}

/// Convert, check what we cannot honour, render, tokenize and size the answer.
fn prepare<P: ChatProtocol>(st: &AppState, bytes: &[u8]) -> Result<Prepared, ApiError>
where
    Chunk<P>: Serialize + Send,
{
    let ready = st.ready()?;
    let req = P::parse(bytes)?;
    let mut conv = st.converter.convert(req.into_api())?;
    refuse_unsupported(&conv)?;
    let mut encoded = ready.encoder.encode_request(&mut conv)?;
    if let Some(replayed) = st.tools.replay(&ready.tok, conv.conversation(), &encoded) {
        encoded = replayed;
    }
    let prompt = encoded.token_ids.clone();
    let ctx = st.cfg.ctx;
    if prompt.len() >= ctx {
        return Err(ApiError::context_exceeded(format!(
            "This model's maximum context length is {ctx} tokens. However, your messages resulted in {} tokens. Please reduce the length of the messages.",
            prompt.len()
        )));
    }
    // A client's max_tokens larger than what the context leaves is lowered to fit rather than
    // refused: agents send fixed large values (32K, 64K) whatever the server's context is.
    let remaining = (ctx - prompt.len()) as u32;
    let opts = &mut conv.request.inference_options;
    opts.max_tokens = opts.max_tokens.map(|m| m.min(remaining));
    let max_tokens = conv.resolve_max_tokens(prompt.len(), ctx as u32).map_err(|e| ApiError::context_exceeded(e.to_string()))?;
    Ok(Prepared { conv, prompt, text: Arc::new(encoded), max_tokens: max_tokens as usize })
}

/// Structured output would need constrained decoding, which this engine does not do:
/// refusing is better than an answer that silently ignores the requested format.
fn refuse_unsupported(conv: &ConvertedRequest) -> Result<(), ApiError> {
    match &conv.settings.output_constraint {
        Some(OutputConstraint::Json { .. }) => {
            return Err(ApiError::bad_request(
                "response_format json_object / json_schema is not supported by this server (no constrained decoding); ask for JSON in the prompt instead",
            ))
        }
        Some(OutputConstraint::Regex(_)) => {
            return Err(ApiError::bad_request("response_format regex is not supported by this server (no constrained decoding)"))
        }
        _ => {}
    }
    if conv.settings.logprobs || conv.settings.top_logprobs.is_some_and(|k| k > 0) {
        return Err(ApiError::bad_request("logprobs are not supported by this server's chat endpoints"));
    }
    Ok(())
}

/// The worker's events turned into protocol chunks.
struct Output<P: ChatProtocol>
where
    Chunk<P>: Serialize + Send,
{
    stream: SyncStream<Generator<P>>,
    rx: mpsc::UnboundedReceiver<Event>,
    /// Dropped with the response (client gone): cancels the job.
    #[allow(dead_code)]
    guard: CancelOnDrop,
    done: bool,
    report: Option<PromptReport>,
    state: Arc<AppState>,
    /// What the model sampled, and the tool-call ids the client was given for it: remembered
    /// for exact replay when the calls come back.
    generated: Vec<u32>,
    call_ids: Vec<String>,
    dsml: Option<u32>,
    dsml_seen: bool,
}

/// One step of output: chunks to send, or the end (with an error to report, if any).
enum Step<C> {
    Chunks(Vec<C>),
    Failed(ApiError),
    End,
}

impl<P: ChatProtocol> Output<P>
where
    Chunk<P>: Serialize + Send,
{
    /// Waits for the next worker event and returns the chunks it completes. Consecutive
    /// tokens already waiting are decoded together (a slow client gets fewer, larger
    /// chunks rather than a growing backlog).
    async fn next(&mut self) -> Step<Chunk<P>> {
        if self.done {
            return Step::End;
        }
        let Some(first) = self.rx.recv().await else {
            self.done = true;
            return Step::Failed(ApiError::internal("the inference worker stopped"));
        };
        let mut ids = Vec::new();
        let mut ev = Some(first);
        let mut chunks = Vec::new();
        while let Some(e) = ev.take() {
            match e {
                Event::Token { id, .. } => {
                    ids.push(id);
                    ev = self.rx.try_recv().ok();
                    continue;
                }
                other => {
                    if !ids.is_empty() {
                        chunks.extend(self.push_tokens(std::mem::take(&mut ids)));
                    }
                    match other {
                        Event::Ready(r) => {
                            self.report = Some(r);
                            chunks.extend(self.push(InferenceChunk::Ready { system_fingerprint: None, prompt_usage: usage(&r) }));
                        }
                        Event::Finish(End::Cancelled) => {
                            self.done = true;
                            return Step::Failed(ApiError::unavailable("the request was cancelled (server shutting down)"));
                        }
                        Event::Finish(end) => {
                            let finish_reason = match end {
                                End::Length | End::Loop => InferenceFinishReason::Length,
                                _ => InferenceFinishReason::Stop,
                            };
                            chunks.extend(self.push(InferenceChunk::Finish { finish_reason }));
                            self.done = true;
                            if !self.call_ids.is_empty() {
                                if let Some(r) = self.state.ready.get() {
                                    self.state.tools.record(&r.tok, &self.generated, &self.call_ids);
                                }
                            }
                        }
                        Event::Failed(e) => {
                            self.done = true;
                            return Step::Failed(ApiError::internal(format!("generation failed: {e}")));
                        }
                        Event::Token { .. } | Event::Tail(_) => {}
                    }
                }
            }
        }
        if !ids.is_empty() {
            chunks.extend(self.push_tokens(ids));
        }
        Step::Chunks(chunks)
    }

    fn push_tokens(&mut self, ids: Vec<u32>) -> Vec<Chunk<P>> {
        self.generated.extend(&ids);
        self.dsml_seen |= self.dsml.is_some_and(|d| ids.contains(&d));
        self.push(InferenceChunk::Tokens { token_ids: ids, logprobs: None })
    }

    fn push(&mut self, chunk: InferenceChunk) -> Vec<Chunk<P>> {
        if self.stream.is_done() {
            return Vec::new();
        }
        // A parse failure cannot be retracted from a stream already sent; what was parsed
        // stands and the processor closes, which ends the output.
        let chunks = self.stream.push(chunk).unwrap_or_default();
        if self.dsml_seen {
            for c in &chunks {
                if let Ok(v) = serde_json::to_value(c) {
                    crate::replay::tool_call_ids(&v, &mut self.call_ids);
                }
            }
        }
        chunks
    }

    fn into_sse_stream(self) -> impl futures_util::Stream<Item = sse::Item> + Send + 'static {
        futures_util::stream::unfold(Some(self), |state| async move {
            let mut out = state?;
            let items = match out.next().await {
                Step::Chunks(chunks) => chunks.iter().map(|c| sse::chunk(P::Response::sse_event_name(c), c)).collect(),
                Step::Failed(e) => vec![sse::error(&e.with_flavor(P::FLAVOR))],
                Step::End => {
                    let done = P::Response::sse_done_data().map(sse::data).into_iter().collect::<Vec<_>>();
                    drop(out);
                    return Some((done, None));
                }
            };
            Some((items, Some(out)))
        })
        .flat_map(futures_util::stream::iter)
    }

    async fn collect(mut self, id: String, model: String) -> Result<Response, ApiError> {
        let created = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let mut response: Option<P::Response> = None;
        loop {
            match self.next().await {
                Step::Chunks(chunks) => {
                    for c in chunks {
                        let (p, k) = self.report.map(|r| (r.prompt_tokens, r.cached_tokens)).unwrap_or((0, 0));
                        response.get_or_insert_with(|| P::Response::new(id.clone(), model.clone(), created, p, k)).accumulate(c);
                    }
                }
                Step::Failed(e) => return Err(e),
                Step::End => break,
            }
        }
        let body = response.unwrap_or_else(|| P::Response::new(id, model, created, 0, 0));
        Ok(Json(body).into_response())
    }
}

fn usage(r: &PromptReport) -> PromptUsage {
    PromptUsage { prompt_tokens: r.prompt_tokens, prompt_cache_hit_tokens: r.cached_tokens }
}

/// `POST /v1/messages/count_tokens`: the rendered prompt's length, as Claude Code asks
/// before deciding to compact.
pub(crate) async fn count_tokens(State(st): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    let result = async {
        st.ready()?;
        let bytes = read_body(body, st.cfg.body_limit)?;
        let prep = st.clone();
        tokio::task::spawn_blocking(move || -> Result<usize, ApiError> {
            let ready = prep.ready()?;
            let req: MessagesRequest = crate::error::parse_json(&bytes)?;
            let mut conv = prep.converter.convert(ApiRequest::Messages(req))?;
            Ok(ready.encoder.encode_request(&mut conv)?.token_ids.len())
        })
        .await
        .map_err(|e| ApiError::internal(format!("token counting failed: {e}")))?
    }
    .await;
    let resp = match result {
        Ok(n) => Json(json!({"input_tokens": n})).into_response(),
        Err(e) => e.with_flavor(Flavor::Anthropic).into_response(),
    };
    st.metrics.request("count_tokens", resp.status().as_u16());
    resp
}
