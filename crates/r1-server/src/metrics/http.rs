//! The layer that counts every response by route and status code. It sits just inside the
//! request-id layer, outside everything else, so responses made by other layers
//! (authentication 401/403, rate limits and shedding 429, body limits 413) are counted too.
//! It also opens the `request` tracing span that puts the request id on every log line
//! written while the handler runs.

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use super::ServerMetrics;
use crate::caller::RequestId;

/// Route label for requests no route matched (kept as one series, not one per path).
pub const UNMATCHED_ROUTE: &str = "unmatched";

pub async fn track(State(m): State<Arc<ServerMetrics>>, req: Request, next: Next) -> Response {
    // The route template (`/v1/models/{id}`), never the raw path: label values stay few.
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED_ROUTE, |p| p.as_str())
        .to_string();
    let request_id = req
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    let span = tracing::info_span!("request", request_id = %request_id);
    let resp = next.run(req).instrument(span).await;
    m.record_response(&route, resp.status().as_u16());
    resp
}
