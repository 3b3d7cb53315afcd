//! Streamed-output parsing: generated tokens (or text) in, reasoning / content / tool-call
//! events out, by the recipe crate's `StreamProcessor`.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use deepseek_recipe::stream::{
    ChunkGenerator, CompletionUsage, FinishReason, InferenceChunk, InferenceFinishReason,
    InferenceTokenLogprob, OutputChunk, ParsingOptions, StreamError, StreamProcessor,
    ThinkingInitialStage,
};
use deepseek_recipe_core::conversation::{Conversation, ResponseFormat};
use deepseek_recipe_core::messages::InputMessage;
use deepseek_recipe_core::tools::ToolChoice;
use dsv4_tokenizer::Tokenizer;
use tokio_stream::Stream;

use crate::position::{Kind, OutputPosition, PositionTracker};
use crate::tokenizer::RecipeTokenizer;
use crate::ChatError;

// ------------------------------------------------------------------------------------
// Synchronous driver around the crate's async stream processor.

/// The processor's input: a queue we fill between polls. `Pending` when empty means "no
/// more input yet", which makes the processor's stream return `Pending` too, at which
/// point everything the input so far produces has been produced.
#[derive(Default)]
struct Feed {
    queue: VecDeque<InferenceChunk>,
    closed: bool,
}

struct FeedStream(Arc<Mutex<Feed>>);

fn lock(feed: &Mutex<Feed>) -> MutexGuard<'_, Feed> {
    // Nothing panics while holding the lock; recover the data anyway rather than panic.
    feed.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Stream for FeedStream {
    type Item = InferenceChunk;

    fn poll_next(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<InferenceChunk>> {
        let mut feed = lock(&self.0);
        match feed.queue.pop_front() {
            Some(chunk) => Poll::Ready(Some(chunk)),
            None if feed.closed => Poll::Ready(None),
            // No waker is stored: the driver polls again itself after every push.
            None => Poll::Pending,
        }
    }
}

type OutputStream<C> = Pin<Box<dyn Stream<Item = Result<C, StreamError>> + Send>>;

/// The recipe crate's [`StreamProcessor`] driven synchronously: push inference chunks,
/// get the protocol chunks they complete.
///
/// The crate exposes its parser only as an async stream transformer
/// (`into_protocol_stream`). Its chunk generators never wait on anything external, so
/// polling the output stream with a no-op waker until it is `Pending` runs the processor
/// exactly as far as the pushed input allows (the same adaptation the crate's Python
/// bindings make). `G` can be our event collector ([`StreamParser`] uses one) or any of
/// the crate's protocol chunk generators (`ChatCompletionRequest::chunk_generator` and
/// friends), for a server that wants the official SSE shapes directly.
pub struct SyncStream<G: ChunkGenerator>
where
    G::Chunk: Send,
{
    feed: Arc<Mutex<Feed>>,
    output: OutputStream<G::Chunk>,
    done: bool,
    tokenizer: Arc<Tokenizer>,
    /// Token ids that end inside a UTF-8 character, kept back until a later token completes
    /// it (see [`SyncStream::push`]), with their log probabilities while every pushed
    /// token had one.
    held: Vec<u32>,
    held_logprobs: Option<Vec<InferenceTokenLogprob>>,
}

impl<G: ChunkGenerator> SyncStream<G>
where
    G::Chunk: Send,
{
    /// Drive `generator` with `options`; token chunks are decoded with `tokenizer`.
    pub fn new(generator: G, options: ParsingOptions, tokenizer: Arc<Tokenizer>) -> Self {
        let feed = Arc::new(Mutex::new(Feed::default()));
        let processor = StreamProcessor::new(generator, options)
            .with_tokenizer(RecipeTokenizer::new(Arc::clone(&tokenizer)));
        let output: OutputStream<G::Chunk> =
            Box::pin(processor.into_protocol_stream(FeedStream(Arc::clone(&feed))));
        SyncStream {
            feed,
            output,
            done: false,
            tokenizer,
            held: Vec::new(),
            held_logprobs: Some(Vec::new()),
        }
    }

    /// Push one inference chunk and return the protocol chunks now complete.
    ///
    /// A stream error (a token id outside the vocabulary) ends the stream: this call and
    /// every later one return an error.
    ///
    /// The processor's decoder lets a pushed batch of tokens out only once its text does not
    /// end inside a UTF-8 character, and counts tokens in the usage as it lets them out; an
    /// output that ends in the middle of a character (at the token limit) would lose the
    /// whole last batch, text and count. So the tokens of an unfinished character are kept
    /// back here instead, and at the end only they are dropped from the text (counted, as
    /// an empty text piece).
    pub fn push(&mut self, chunk: InferenceChunk) -> Result<Vec<G::Chunk>, ChatError> {
        if self.done {
            return Err(ChatError::StreamClosed);
        }
        let chunk = match chunk {
            InferenceChunk::Tokens { token_ids, logprobs } => match self.complete_part(token_ids, logprobs) {
                Some(c) => c,
                None => return Ok(Vec::new()),
            },
            InferenceChunk::Finish { .. } => {
                self.count_held();
                chunk
            }
            other => other,
        };
        lock(&self.feed).queue.push_back(chunk);
        self.drain()
    }

    /// End the input (as if the backend closed its stream without a finish chunk, when
    /// none was pushed) and return the remaining chunks.
    pub fn close(&mut self) -> Result<Vec<G::Chunk>, ChatError> {
        if self.done {
            return Err(ChatError::StreamClosed);
        }
        self.count_held();
        lock(&self.feed).closed = true;
        self.drain()
    }

    /// The held tokens and `ids` up to the end of their last whole character (None when
    /// that is nothing); the rest is held. Only the last three tokens can be part of an
    /// unfinished character (one of at most four bytes whose first byte is already in),
    /// and a special token always ends one.
    fn complete_part(&mut self, ids: Vec<u32>, logprobs: Option<Vec<InferenceTokenLogprob>>) -> Option<InferenceChunk> {
        let mut all = std::mem::take(&mut self.held);
        all.extend_from_slice(&ids);
        let mut lps = match (self.held_logprobs.take(), logprobs) {
            (Some(mut h), Some(l)) if l.len() == ids.len() => {
                h.extend(l);
                Some(h)
            }
            _ => None,
        };
        let whole = |n: usize| {
            let text = self.tokenizer.decode_lossy(&all[..n]);
            !text.ends_with('\u{FFFD}')
        };
        let cut = if whole(all.len()) {
            all.len()
        } else {
            (all.len().saturating_sub(3)..all.len())
                .rev()
                .take_while(|&k| !self.tokenizer.is_added(all[k]))
                .find(|&k| whole(k))
                // Not a cut-off character after all (bytes that never form one): let it all
                // out, as the decoder would at the next whole character.
                .unwrap_or(all.len())
        };
        self.held = all.split_off(cut);
        // Held tokens keep their log probabilities only while all of them have one; with
        // nothing held, the next batch starts afresh.
        self.held_logprobs = match &mut lps {
            Some(l) => Some(l.split_off(cut)),
            None if self.held.is_empty() => Some(Vec::new()),
            None => None,
        };
        if all.is_empty() {
            return None;
        }
        Some(InferenceChunk::Tokens { token_ids: all, logprobs: lps })
    }

    /// Queues the held tokens' count (an empty text piece; their unfinished character is
    /// not shown) ahead of the end of input.
    fn count_held(&mut self) {
        if !self.held.is_empty() {
            let token_count = std::mem::take(&mut self.held).len();
            self.held_logprobs = Some(Vec::new());
            lock(&self.feed).queue.push_back(InferenceChunk::Text { content: String::new(), token_count });
        }
    }

    /// Whether the processor has ended (finish chunk, stop sequence, close, or error).
    pub fn is_done(&self) -> bool {
        self.done
    }

    fn drain(&mut self) -> Result<Vec<G::Chunk>, ChatError> {
        let mut cx = Context::from_waker(Waker::noop());
        let mut out = Vec::new();
        loop {
            match self.output.as_mut().poll_next(&mut cx) {
                Poll::Ready(Some(Ok(chunk))) => out.push(chunk),
                Poll::Ready(Some(Err(e))) => {
                    self.done = true;
                    return Err(ChatError::Stream(e.to_string()));
                }
                Poll::Ready(None) => {
                    self.done = true;
                    return Ok(out);
                }
                Poll::Pending => return Ok(out),
            }
        }
    }
}

/// A chunk generator that hands the parsed chunks through unchanged.
#[derive(Debug, Default)]
pub struct Passthrough;

impl ChunkGenerator for Passthrough {
    type Chunk = OutputChunk;

    async fn generate(&mut self, chunk: OutputChunk) -> Vec<OutputChunk> {
        vec![chunk]
    }
}

// ------------------------------------------------------------------------------------
// Protocol-neutral events.

/// One thing the generated output produced.
#[derive(Debug, Clone, PartialEq)]
pub enum ChatEvent {
    /// Reasoning text (inside `<think>`).
    Reasoning(String),
    /// Answer text.
    Content(String),
    /// A tool call's name is complete. `index` counts calls from 0 in this output.
    ToolCallStart {
        index: usize,
        id: String,
        name: String,
    },
    /// A piece of the call's arguments, a JSON object text built by the crate from the
    /// DSML parameters (`{"city": "Rome", "days": 3}`); the pieces concatenate to it.
    ToolCallArguments { index: usize, delta: String },
    /// No more argument text for this call. `complete` is false when the output ended
    /// (or the next call began) before the call's closing tag.
    ToolCallEnd { index: usize, complete: bool },
    /// The output ended. Always the last event.
    Finish(Finish),
}

/// How the output ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Finish {
    /// `ToolCalls` when a tool call was named and the backend stopped; `StopSequence`
    /// when a stop sequence matched; otherwise the backend's reason.
    pub reason: FinishReason,
    /// The stop sequence that matched, if any.
    pub stop_sequence: Option<String>,
    /// Tokens the output accounted for, and (thinking mode) reasoning tokens.
    pub usage: CompletionUsage,
    /// The output ended inside a tool-call block that never closed (ds4 reports this as
    /// an error: a streamed partial call cannot be retracted).
    pub unterminated_tool_call: bool,
}

/// Tool call id source: `(call index, thinking turn without reasoning)` to id.
pub type ToolCallIdFn = Box<dyn FnMut(usize, bool) -> String + Send>;

/// Incremental parser of generated output into [`ChatEvent`]s, plus the position the
/// sampler needs ([`StreamParser::position`]).
///
/// Feed token ids as they are sampled ([`StreamParser::push_tokens`]) or text
/// ([`StreamParser::push_text`]), then [`StreamParser::finish`] with the backend's reason.
/// Token input is the precise one: a control token (`</think>`, `｜DSML｜`) counts as
/// markup only when it was generated as that token, never when spelled by plain tokens.
pub struct StreamParser {
    stream: SyncStream<Passthrough>,
    tracker: PositionTracker,
    tokenizer: Arc<Tokenizer>,
    thinking_mode: bool,
    reasoning_seen: bool,
    next_index: usize,
    /// The call whose events are being emitted (its index = its ordinal among invokes).
    open: Option<usize>,
    id_fn: ToolCallIdFn,
    finished: bool,
    finish_emitted: bool,
}

impl std::fmt::Debug for StreamParser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamParser")
            .field("position", &self.tracker.position())
            .field("open_call", &self.open)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

impl StreamParser {
    /// `options` come from conversion ([`crate::ConvertedRequest::parsing_options`]) or
    /// [`parsing_options_for`] for a conversation built directly.
    pub fn new(tokenizer: Arc<Tokenizer>, options: ParsingOptions) -> StreamParser {
        let tracker = PositionTracker::new(&options);
        let thinking_mode = options.thinking_initial_stage.is_some();
        StreamParser {
            stream: SyncStream::new(Passthrough, options, Arc::clone(&tokenizer)),
            tracker,
            tokenizer,
            thinking_mode,
            reasoning_seen: false,
            next_index: 0,
            open: None,
            id_fn: Box::new(new_tool_call_id),
            finished: false,
            finish_emitted: false,
        }
    }

    /// Replace the tool call id source (default [`new_tool_call_id`]), e.g. for
    /// deterministic tests or another id scheme.
    pub fn with_tool_call_ids(
        mut self,
        ids: impl FnMut(usize, bool) -> String + Send + 'static,
    ) -> Self {
        self.id_fn = Box::new(ids);
        self
    }

    /// Where the next token goes (reasoning, content, DSML syntax, argument payload, …).
    pub fn position(&self) -> OutputPosition {
        self.tracker.position()
    }

    /// True when the next token is DSML syntax, to be sampled greedily.
    pub fn in_dsml_syntax(&self) -> bool {
        self.tracker.position().is_dsml_syntax()
    }

    /// The tool-call block has closed (or a stop sequence matched): nothing generated
    /// from now on reaches the client, so generation can stop.
    pub fn output_complete(&self) -> bool {
        self.tracker.position() == OutputPosition::Finished
    }

    /// The tool-call block's closing tag was generated.
    pub fn tool_block_closed(&self) -> bool {
        self.tracker.block_closed()
    }

    /// A stop sequence matched (the finish reason will be `StopSequence`).
    pub fn stop_sequence_matched(&self) -> bool {
        self.tracker.stopped()
    }

    /// The output has ended: [`ChatEvent::Finish`] was emitted (by
    /// [`StreamParser::finish`], or by a push whose text matched a stop sequence), or the
    /// stream failed. Later pushes return [`ChatError::StreamClosed`].
    pub fn is_finished(&self) -> bool {
        self.finished || self.finish_emitted
    }

    /// Push generated token ids. An id outside the vocabulary is rejected before anything
    /// is consumed, so the parser stays usable.
    pub fn push_tokens(&mut self, ids: &[u32]) -> Result<Vec<ChatEvent>, ChatError> {
        self.check_open()?;
        let vocab_size = self.tokenizer.vocab_size();
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= vocab_size) {
            return Err(ChatError::UnknownToken { id, vocab_size });
        }
        let before = self.snapshot();
        for &id in ids {
            let kind = if self.tokenizer.is_added(id) {
                Kind::Special
            } else {
                Kind::Plain
            };
            self.tracker
                .feed(self.tokenizer.token_bytes(id).unwrap_or_default(), kind);
        }
        let chunks = self.run(InferenceChunk::Tokens {
            token_ids: ids.to_vec(),
            logprobs: None,
        })?;
        Ok(self.translate(chunks, before))
    }

    /// Push one generated token id.
    pub fn push_token(&mut self, id: u32) -> Result<Vec<ChatEvent>, ChatError> {
        self.push_tokens(&[id])
    }

    /// Push generated text without token boundaries: markers then match by spelling.
    pub fn push_text(&mut self, text: &str) -> Result<Vec<ChatEvent>, ChatError> {
        self.check_open()?;
        let before = self.snapshot();
        self.tracker.feed(text.as_bytes(), Kind::Text);
        let chunks = self.run(InferenceChunk::Text {
            content: text.to_owned(),
            // One chunk of text counts as one token in usage; token input counts exactly.
            token_count: 1,
        })?;
        Ok(self.translate(chunks, before))
    }

    /// End the output with the backend's reason; returns the last events, ending with
    /// [`ChatEvent::Finish`]. Token ids the backend produced after EOS must not be pushed;
    /// for `Length`, push them before calling this.
    ///
    /// When the output already ended by itself (a stop sequence matched, and the crate's
    /// processor emitted [`ChatEvent::Finish`] from a push), this returns no events.
    pub fn finish(&mut self, reason: InferenceFinishReason) -> Result<Vec<ChatEvent>, ChatError> {
        if self.finish_emitted {
            self.finished = true;
            return Ok(Vec::new());
        }
        self.check_open()?;
        let before = self.snapshot();
        let chunks = self.run(InferenceChunk::Finish {
            finish_reason: reason,
        })?;
        let mut events = self.translate(chunks, before);
        // The crate stops reading after a finish chunk; make sure its stream has ended.
        if !self.stream.is_done() {
            let before = self.snapshot();
            let rest = self.stream.close()?;
            events.extend(self.translate(rest, before));
        }
        self.finished = true;
        Ok(events)
    }

    fn check_open(&self) -> Result<(), ChatError> {
        if self.finished || self.finish_emitted || self.stream.is_done() {
            Err(ChatError::StreamClosed)
        } else {
            Ok(())
        }
    }

    fn run(&mut self, chunk: InferenceChunk) -> Result<Vec<OutputChunk>, ChatError> {
        let result = self.stream.push(chunk);
        if result.is_err() {
            self.finished = true;
        }
        result
    }

    fn end_open_call(&mut self, events: &mut Vec<ChatEvent>) {
        if let Some(index) = self.open.take() {
            events.push(ChatEvent::ToolCallEnd {
                index,
                complete: self.tracker.invokes_closed() > index,
            });
        }
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            in_value: self.tracker.in_value(),
            values_opened: self.tracker.values_opened(),
        }
    }

    /// Crate chunks to our events.
    ///
    /// Tool call boundaries: the crate reports a call's start (`ToolCallNamed`) but not its
    /// end; the closing `}` (or `{}` without parameters) is just another argument delta,
    /// emitted when the crate's pending-segment logic releases it, which depends on chunk
    /// boundaries. We end a call right after that delta when we can tell it apart from
    /// argument text: the tracker has seen the invoke's closing tag, and no value was
    /// open or opened during this push (all value text is released, at the latest, in the
    /// push that completes the value's closing tag). Otherwise the call ends when the next
    /// one begins, when the block's closing tag has been seen (by then the crate has
    /// released the brace: the tag's own bytes form a later segment), or at the finish.
    fn translate(&mut self, chunks: Vec<OutputChunk>, before: Snapshot) -> Vec<ChatEvent> {
        let clean = !before.in_value && self.tracker.values_opened() == before.values_opened;
        let mut events = Vec::with_capacity(chunks.len());
        for chunk in chunks {
            match chunk {
                OutputChunk::Start { .. } => {}
                OutputChunk::Reasoning { content, .. } => {
                    self.reasoning_seen |= !content.is_empty();
                    events.push(ChatEvent::Reasoning(content));
                }
                OutputChunk::Content { content, .. } => events.push(ChatEvent::Content(content)),
                OutputChunk::ToolCallBegin => self.end_open_call(&mut events),
                OutputChunk::ToolCallNamed { tool_name } => {
                    self.end_open_call(&mut events);
                    let index = self.next_index;
                    self.next_index += 1;
                    let empty_thinking = self.thinking_mode && !self.reasoning_seen;
                    let id = (self.id_fn)(index, empty_thinking);
                    self.open = Some(index);
                    events.push(ChatEvent::ToolCallStart {
                        index,
                        id,
                        name: tool_name,
                    });
                }
                OutputChunk::ToolCallArgumentsDelta { arguments } => {
                    // The crate emits deltas only after a name; a stray one has no call.
                    if let Some(index) = self.open {
                        let closing = clean
                            && self.tracker.invokes_closed() > index
                            && (arguments == "}" || arguments == "{}");
                        events.push(ChatEvent::ToolCallArguments {
                            index,
                            delta: arguments,
                        });
                        if closing {
                            self.end_open_call(&mut events);
                        }
                    }
                }
                OutputChunk::Finish {
                    finish_reason,
                    stop_sequence,
                    completion_usage,
                } => {
                    self.end_open_call(&mut events);
                    self.finish_emitted = true;
                    events.push(ChatEvent::Finish(Finish {
                        reason: finish_reason,
                        stop_sequence,
                        usage: completion_usage,
                        unterminated_tool_call: self.tracker.in_tool_block(),
                    }));
                }
            }
        }
        if self.tracker.block_closed() {
            self.end_open_call(&mut events);
        }
        events
    }
}

/// Tracker state before a push, to know what the push could have released.
#[derive(Debug, Clone, Copy)]
struct Snapshot {
    in_value: bool,
    values_opened: usize,
}

/// The crate's tool call id format (`deepseek-recipe` `protocol/tool_call_id.rs`, private
/// there): `call_{index:02}_`, `ET_` when a thinking turn produced no reasoning, 20 random
/// alphanumerics, then a 4-digit checksum (XXH3-64 of the id without underscores, mod
/// 10000). The marker is what lets a later request's conversion tell "this turn had no
/// reasoning" from "the client dropped the reasoning"; matching the format keeps ids from
/// this engine meaningful to the crate.
pub fn new_tool_call_id(index: usize, empty_thinking: bool) -> String {
    use rand::distr::{Alphanumeric, SampleString};
    let random = Alphanumeric.sample_string(&mut rand::rng(), 20);
    tool_call_id_with(index, empty_thinking, &random)
}

/// [`new_tool_call_id`] with a given random part.
pub fn tool_call_id_with(index: usize, empty_thinking: bool, random: &str) -> String {
    let marker = if empty_thinking { "ET_" } else { "" };
    let base = format!("call_{index:02}_{marker}{random}");
    let without_underscores: String = base.chars().filter(|&c| c != '_').collect();
    let checksum = xxhash_rust::xxh3::xxh3_64(without_underscores.as_bytes()) % 10_000;
    format!("{base}{checksum:04}")
}

/// Parsing options for a conversation built directly (not by request conversion), by the
/// rules the crate's adapters apply (their helper is private): tool calls are parsed when
/// the tool prompt is rendered; a required tool choice starts inside the block the prompt
/// opened; JSON output is recognised for the `json_object` format; in thinking mode the
/// parser starts in reasoning, or continues a prefix message's reasoning or content.
pub fn parsing_options_for(
    conversation: &Conversation,
    stop_sequences: Vec<String>,
) -> ParsingOptions {
    let renders_tools =
        !conversation.tools.is_empty() && conversation.tool_choice != ToolChoice::None;
    let thinking_initial_stage =
        conversation
            .thinking_mode
            .then(|| match conversation.messages.last() {
                Some(InputMessage::Assistant {
                    content,
                    reasoning_content,
                    prefix: true,
                    ..
                }) => {
                    if !content.is_empty() {
                        ThinkingInitialStage::ContentContinuation
                    } else if reasoning_content.as_deref().is_some_and(|r| !r.is_empty()) {
                        ThinkingInitialStage::ReasoningContinuation
                    } else {
                        ThinkingInitialStage::ReasoningStart
                    }
                }
                _ => ThinkingInitialStage::ReasoningStart,
            });
    ParsingOptions {
        parse_tool_calls: renders_tools,
        starts_in_tool_calls: renders_tools && conversation.tool_choice == ToolChoice::Required,
        parse_json_output: matches!(conversation.response_format, ResponseFormat::JsonObject),
        thinking_initial_stage,
        stop_sequences,
        ..ParsingOptions::default()
    }
}
