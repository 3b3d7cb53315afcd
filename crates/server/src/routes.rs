//! The route table and the small endpoints (health, models, metrics).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use dsv4_chat::deepseek_recipe::anthropic::MessagesRequest;
use dsv4_chat::deepseek_recipe::openai::{ChatCompletionRequest, ResponsesRequest};
use dsv4_chat::MODEL_ID;
use serde_json::{json, Value};

use crate::error::{ApiError, Flavor};
use crate::{auth, chat, completions, AppState};

pub(crate) fn router(state: Arc<AppState>) -> Router {
    let mut app = Router::new()
        .route("/v1/chat/completions", post(chat::handle::<ChatCompletionRequest>))
        .route("/v1/responses", post(chat::handle::<ResponsesRequest>))
        .route("/v1/messages", post(chat::handle::<MessagesRequest>))
        .route("/v1/messages/count_tokens", post(chat::count_tokens))
        .route("/v1/completions", post(completions::handle))
        .route("/v1/models", get(models))
        .route("/v1/models/{*id}", get(model))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::check))
        // Added after the auth layer, so it needs no key (load balancers, start-up scripts).
        .route("/health", get(health));
    // Bodies are read whole by the handlers, which answer an oversize body in the protocol's
    // own error shape; axum's own limit (2 MB) would otherwise answer first, in plain text.
    app = app.layer(axum::extract::DefaultBodyLimit::max(state.cfg.body_limit));
    if state.cfg.cors {
        app = app.layer(
            tower_http::cors::CorsLayer::new()
                .allow_origin(tower_http::cors::Any)
                .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
                .allow_headers(tower_http::cors::Any),
        );
    }
    // CORS wraps everything, auth included: browsers' preflight requests carry no key.
    app.with_state(state)
}

async fn health(State(st): State<Arc<AppState>>) -> Response {
    match st.ready() {
        Ok(_) => (StatusCode::OK, Json(json!({"status": "ok"}))).into_response(),
        Err(e) => (e.status, Json(json!({"status": if st.ready.get().is_some() { "shutting_down" } else { "loading" }, "message": e.message})))
            .into_response(),
    }
}

fn model_object(st: &AppState, id: &str) -> Value {
    let ctx = st.cfg.ctx;
    json!({
        "id": id,
        "object": "model",
        "created": 1767225600u64,
        "owned_by": "dsv4",
        "name": "DeepSeek V4 Flash",
        "context_length": ctx,
        "max_model_len": ctx,
        "top_provider": {"context_length": ctx, "max_completion_tokens": ctx, "is_moderated": false},
    })
}

async fn models(State(st): State<Arc<AppState>>) -> Response {
    st.metrics.request("models", 200);
    let data: Vec<Value> = st.converter.models().names().map(|n| model_object(&st, n)).collect();
    Json(json!({"object": "list", "data": data})).into_response()
}

async fn model(State(st): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    if st.converter.models().names().any(|n| n == id) || (id == MODEL_ID) {
        st.metrics.request("models", 200);
        return Json(model_object(&st, &id)).into_response();
    }
    st.metrics.request("models", 404);
    ApiError::new(StatusCode::NOT_FOUND, format!("the model {id:?} does not exist; this server serves {MODEL_ID}")).into_response()
}

async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    let depth = st.ready.get().map(|r| r.worker.queue_depth()).unwrap_or(0);
    st.metrics.set_queue_depth(depth);
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], st.metrics.render()).into_response()
}

async fn not_found(State(st): State<Arc<AppState>>, method: Method, uri: axum::http::Uri) -> Response {
    st.metrics.request("other", 404);
    let flavor = if uri.path().starts_with("/v1/messages") { Flavor::Anthropic } else { Flavor::OpenAi };
    ApiError::new(StatusCode::NOT_FOUND, format!("no endpoint {method} {}", uri.path())).with_flavor(flavor).into_response()
}
