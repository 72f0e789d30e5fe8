//! Extractors for the handlers: [`ApiJson`] reads the body once, under `--max-body-bytes`,
//! and parses it once into a typed request; [`RequestCtx`] carries what the layers in front
//! learnt about the request (the caller, the output filter) as a typed value taken from the
//! request's extensions, so nothing per-request travels in task-locals.

use axum::extract::{FromRef, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use http_body_util::LengthLimitError;
use serde::de::DeserializeOwned;

use crate::caller::{Caller, RequestId};
use crate::error::{parse_json, ApiError};
use crate::security::audit_slot::RequestGuard;

/// `--max-body-bytes`: the one body limit (a sub-state of the router's state).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyLimit(pub usize);

/// A JSON body parsed into `T`. Larger than `--max-body-bytes`: 413; unreadable: 400;
/// malformed or of the wrong shape: 400 naming the field. Every error is OpenAI-shaped.
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
    BodyLimit: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, st: &S) -> Result<Self, ApiError> {
        let BodyLimit(limit) = BodyLimit::from_ref(st);
        let bytes = axum::body::to_bytes(req.into_body(), limit)
            .await
            .map_err(|e| body_error(e, limit))?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Why a body could not be read: over the limit (413), or the connection failed (400).
pub fn body_error(e: axum::Error, limit: usize) -> ApiError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(s) = source {
        if s.is::<LengthLimitError>() {
            return too_large(limit);
        }
        source = s.source();
    }
    ApiError::bad_request(format!("The request body could not be read: {e}"), None)
}

/// 413 for a body over `limit` bytes.
pub fn too_large(limit: usize) -> ApiError {
    let mut e = ApiError::bad_request(
        format!("The request body is larger than {limit} bytes."),
        None,
    );
    e.status = StatusCode::PAYLOAD_TOO_LARGE;
    e.with_code("request_too_large")
}

/// What the layers learnt about the request: who calls ([`Caller`], from authentication),
/// its id, and its output filter (from the audit layer when detection or audit is on).
#[derive(Clone, Debug, Default)]
pub struct RequestCtx {
    pub caller: Caller,
    pub request_id: Option<RequestId>,
    pub output: Option<RequestGuard>,
}

impl RequestCtx {
    /// Note the request's `model` field for its audit record.
    pub fn record_model(&self, model: Option<&str>) {
        if let (Some(g), Some(m)) = (&self.output, model) {
            g.slot.with(|f| f.model = Some(m.to_string()));
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RequestCtx {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(RequestCtx {
            caller: parts
                .extensions
                .get::<Caller>()
                .cloned()
                .unwrap_or_default(),
            request_id: parts.extensions.get::<RequestId>().cloned(),
            output: parts.extensions.get::<RequestGuard>().cloned(),
        })
    }
}
