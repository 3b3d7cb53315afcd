//! `--api-key`: every route but `/health` needs `Authorization: Bearer KEY` or `x-api-key:
//! KEY` (OpenAI SDKs send the first, Anthropic's the second).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::{ApiError, Flavor};
use crate::AppState;

pub(crate) async fn check(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let Some(key) = st.cfg.api_key.as_deref() else {
        return next.run(req).await;
    };
    let h = req.headers();
    let bearer = h.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    let x_api = h.get("x-api-key").and_then(|v| v.to_str().ok());
    if [bearer, x_api].into_iter().flatten().any(|given| constant_time_eq(given.trim().as_bytes(), key.as_bytes())) {
        return next.run(req).await;
    }
    let flavor = if req.uri().path().starts_with("/v1/messages") { Flavor::Anthropic } else { Flavor::OpenAi };
    st.metrics.request("auth", 401);
    ApiError::new(StatusCode::UNAUTHORIZED, "missing or invalid API key (send Authorization: Bearer KEY or x-api-key: KEY)")
        .with_flavor(flavor)
        .into_response()
}

/// Compares without an early exit, so response timing does not reveal how much of a guessed
/// key was right. Only the length leaks, which says nothing about the key's bytes.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn compares_exactly() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }
}
