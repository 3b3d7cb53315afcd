//! Server-sent events: protocol chunks as `event:`/`data:` frames, keep-alive comments on a
//! wall-clock timer (so a long prefill keeps proxies and client idle timers quiet, and a
//! vanished client is noticed at the next write), headers sent at once.

use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use serde::Serialize;

use crate::error::ApiError;

pub(crate) type Item = Result<Event, Infallible>;

pub(crate) fn chunk<C: Serialize>(name: Option<&str>, c: &C) -> Item {
    let data = serde_json::to_string(c).unwrap_or_else(|e| format!("{{\"error\":{{\"message\":\"serializing a chunk failed: {e}\"}}}}"));
    // `event:` before `data:`, as OpenAI's and Anthropic's own streams write them.
    let ev = match name {
        Some(n) => Event::default().event(n),
        None => Event::default(),
    };
    Ok(ev.data(data))
}

pub(crate) fn data(s: String) -> Item {
    Ok(Event::default().data(s))
}

/// An error after the stream began: the protocol's error body as an `error` event.
pub(crate) fn error(e: &ApiError) -> Item {
    Ok(Event::default().event("error").data(e.body().to_string()))
}

pub(crate) fn respond<S: Stream<Item = Item> + Send + 'static>(stream: S, keepalive: Duration) -> Response {
    let mut resp = Sse::new(stream).keep_alive(KeepAlive::new().interval(keepalive).text("keep-alive")).into_response();
    // Reverse proxies (nginx) buffer responses unless told not to; a buffered stream would
    // look like a hung server to the client.
    resp.headers_mut().insert("x-accel-buffering", axum::http::HeaderValue::from_static("no"));
    resp
}
