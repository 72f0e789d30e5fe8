//! The router: every route, the OpenAI-style 404, the body limit, an access log, and the
//! layers in front of the handlers (request id → metrics → audit → authentication → access
//! log → body limit → handlers). Generation routes do admission control in the handler, on
//! the typed request (see `crate::overload::admit`).

pub mod admit;
pub mod chat;
pub mod completions;
pub mod misc;

use std::time::Instant;

use axum::extract::{DefaultBodyLimit, Request};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};

use crate::caller;
use crate::error::ApiError;
use crate::generation::{EventStream, Generation};
use crate::security;
use crate::security::audit_slot::{audited, RequestGuard};
use crate::security::output_filter::redact;
use crate::state::AppState;

pub use crate::security::MAX_BODY_BYTES;

pub fn router(state: AppState) -> Router {
    let routes = Router::new()
        .route("/v1/chat/completions", post(chat::chat_completions))
        .route("/v1/completions", post(completions::completions))
        .route("/v1/overload/stats", get(misc_overload_stats))
        .route("/v1/models", get(misc::list_models))
        .route("/v1/models/{id}", get(misc::get_model))
        .route("/v1/engine/stats", get(misc::engine_stats))
        .route("/health", get(misc::health))
        .route("/ready", get(misc::ready))
        .route("/tokenize", post(misc::tokenize))
        .route("/detokenize", post(misc::detokenize))
        .route("/metrics", get(crate::metrics::exposition::metrics))
        .route("/v1/scaling", get(crate::scaling::get_scaling))
        .merge(crate::security::admin::routes())
        .merge(crate::webui::routes(state.config.webui))
        .fallback(not_found)
        // The one body limit (`--max-body-bytes`): a declared length over it is refused here
        // for every route; the extractor (`crate::extract::ApiJson`) reads under the same
        // limit, so a chunked body cannot pass it either.
        .layer(RequestBodyLimitLayer::new(state.body_limit.0))
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn(access_log));
    outer_layers(routes, &state).with_state(state)
}

/// The router the listener serves over-limit connections with: the same outer layers, then
/// 429 for everything (`security::listener::too_many_connections`).
pub fn over_limit_router(state: AppState) -> Router {
    let r = Router::new().fallback(security::listener::too_many_connections);
    outer_layers(r, &state).with_state(state)
}

/// The layers every answer passes, the listener's connection-limit refusal included (outer
/// to inner): request id (a bad client id dropped, tower-http's set and propagate) and
/// `Caller` → metrics → audit → authentication. Declared once.
pub fn outer_layers(r: Router<AppState>, state: &AppState) -> Router<AppState> {
    r.layer(middleware::from_fn_with_state(
        state.clone(),
        security::auth::layer,
    ))
    .layer(middleware::from_fn_with_state(
        state.clone(),
        security::audit_layer::layer,
    ))
    .layer(middleware::from_fn_with_state(
        state.clone(),
        crate::metrics::http::track,
    ))
    .layer(middleware::from_fn(caller::request_context))
    .layer(PropagateRequestIdLayer::new(
        caller::REQUEST_ID_HEADER.clone(),
    ))
    .layer(SetRequestIdLayer::new(
        caller::REQUEST_ID_HEADER.clone(),
        caller::MakeId,
    ))
    .layer(middleware::map_request(caller::drop_bad_client_id))
}

/// A generation's events as the writers get them: the engine's events turned into deltas
/// (`generation.rs`), then, when the security layer is on, the output filter and the audit
/// adapter over them.
pub fn events(gen: Generation, guard: Option<&RequestGuard>) -> EventStream {
    let prompt_tokens = gen.prompt_tokens;
    let events = gen.into_events();
    match guard {
        None => events,
        Some(g) => audited(redact(events, g), g, prompt_tokens),
    }
}

/// `GET /v1/overload/stats`: class queues, refusals, response-cache counters.
async fn misc_overload_stats(
    axum::extract::State(ov): axum::extract::State<std::sync::Arc<crate::overload::Overload>>,
) -> Response {
    axum::Json(ov.stats()).into_response()
}

async fn not_found(req: Request) -> Response {
    ApiError::not_found(format!(
        "No route for {} {}.",
        req.method(),
        req.uri().path()
    ))
    .into_response()
}

async fn access_log(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let request_id = req
        .extensions()
        .get::<crate::caller::RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    let path = req.uri().path().to_string();
    let t0 = Instant::now();
    let resp = next.run(req).await;
    let status = resp.status();
    // Rejections axum makes itself (body too large, ...) are plain text: wrap them.
    let resp = if status.is_client_error()
        && !resp
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/json"))
    {
        let mut e = ApiError::bad_request(status.canonical_reason().unwrap_or("bad request"), None);
        e.status = status;
        e.into_response()
    } else {
        resp
    };
    tracing::info!(
        %method,
        path,
        request_id,
        status = status.as_u16(),
        ms = t0.elapsed().as_millis() as u64,
        "request"
    );
    resp
}
