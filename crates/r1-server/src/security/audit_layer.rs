//! The audit layer: wraps every request (outside authentication, so 401/403 and every other
//! rejection is recorded too), hashes the body, lets the generation code report token counts
//! and sensitivity findings through an [`AuditSlot`], and writes one record when the answer
//! is complete: at once for plain answers, when the stream ends (or the client leaves) for
//! SSE. It also puts the request's output filter ([`RequestGuard`]) in its extensions.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use r1_security::detect::score;
use r1_security::secret::sha256_hex;
use r1_security::{AuditRecord, RedactMode};

use crate::caller::{Caller, RequestId};
use crate::error::ApiError;
use crate::model::ModelSlot;
use crate::security::audit_slot::{AuditSlot, RequestGuard};
use crate::security::Security;

pub const SCORE_HEADER: &str = "x-sensitivity-score";
pub const CATEGORIES_HEADER: &str = "x-sensitivity-categories";

/// What the record needs from the request itself.
struct Pending {
    sec: Arc<Security>,
    model_slot: Arc<ModelSlot>,
    slot: AuditSlot,
    t0: Instant,
    request_id: String,
    client_ip: Option<String>,
    method: String,
    route: String,
    model: Option<String>,
    input_sha256: String,
    input_bytes: usize,
    input_text: Option<String>,
}

impl Pending {
    fn record(&self, status: u16) -> AuditRecord {
        let sec = &self.sec;
        self.slot.with(|f| {
            let mut cats: Vec<String> = f
                .categories
                .iter()
                .map(|c| c.as_str().to_string())
                .collect();
            cats.sort();
            cats.dedup();
            AuditRecord {
                timestamp: r1_security::time::rfc3339_millis(r1_security::time::unix_millis()),
                request_id: self.request_id.clone(),
                user_id: f.user_id.clone(),
                role: f.role.clone(),
                client_ip: self.client_ip.clone(),
                method: self.method.clone(),
                route: self.route.clone(),
                // A generation without a `model` field ran on the served model.
                model: self
                    .model
                    .clone()
                    .or_else(|| f.prompt_tokens.map(|_| self.model_slot.served_name.clone())),
                status,
                latency_ms: (self.t0.elapsed().as_secs_f64() * 1e4).round() / 10.0,
                input_sha256: self.input_sha256.clone(),
                input_bytes: self.input_bytes,
                prompt_tokens: f.prompt_tokens,
                completion_tokens: f.completion_tokens,
                sensitivity_score: score(&f.categories),
                sensitivity_categories: cats,
                redactions: f.redactions,
                error: f.error.clone(),
                input_text: self.input_text.clone(),
                output_text: if sec.config.audit_include_text {
                    f.output_text.clone()
                } else {
                    None
                },
            }
        })
    }

    /// Write the record (blocking I/O off the async threads). Err = it was not written.
    async fn write(self, status: u16) -> Result<(), ()> {
        let rec = self.record(status);
        let sec = self.sec.clone();
        tokio::task::spawn_blocking(move || match &sec.audit {
            Some(log) => log.write(&rec).map_err(|_| ()),
            None => Ok(()),
        })
        .await
        .unwrap_or(Err(()))
    }
}

fn audit_unavailable() -> Response {
    ApiError::unavailable("The audit log cannot be written and --audit-required is set.")
        .with_code("audit_unavailable")
        .into_response()
}

/// The layer.
pub async fn layer(
    State(sec): State<Arc<Security>>,
    State(model_slot): State<Arc<ModelSlot>>,
    req: Request,
    next: Next,
) -> Response {
    let auditing = sec.audit.is_some();
    let filtering = sec.config.redact != RedactMode::Off;
    if !auditing && !filtering {
        return next.run(req).await;
    }
    let t0 = Instant::now();
    let (parts, body) = req.into_parts();
    let limit = sec.config.max_body_bytes;
    let slot = AuditSlot::default();
    let (bytes, too_large) = match axum::body::to_bytes(body, limit).await {
        Ok(b) => (b, false),
        Err(_) => (Bytes::new(), true),
    };
    let pending = Pending {
        sec: sec.clone(),
        model_slot,
        slot: slot.clone(),
        t0,
        request_id: parts
            .extensions
            .get::<RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_default(),
        client_ip: parts
            .extensions
            .get::<Caller>()
            .and_then(|c| c.client_ip)
            .map(|ip| ip.to_string()),
        method: parts.method.to_string(),
        route: parts.uri.path().to_string(),
        model: model_field(&bytes),
        input_sha256: sha256_hex(&bytes),
        input_bytes: bytes.len(),
        input_text: sec
            .config
            .audit_include_text
            .then(|| String::from_utf8_lossy(&bytes).into_owned()),
    };
    let early = if too_large {
        slot.with(|f| f.error = Some(format!("body larger than {limit} bytes")));
        let mut e = ApiError::bad_request(
            format!("The request body is larger than {limit} bytes."),
            None,
        );
        e.status = StatusCode::PAYLOAD_TOO_LARGE;
        Some(e.into_response())
    } else if sec.config.audit_required
        && pending.route != "/health"
        && sec.audit.as_ref().is_some_and(|a| !a.is_healthy())
    {
        // (/health stays a liveness probe; /ready fails, so a balancer stops sending work.)
        slot.with(|f| f.error = Some("audit log unavailable".into()));
        Some(audit_unavailable())
    } else {
        None
    };
    if let Some(resp) = early {
        let _ = pending.write(resp.status().as_u16()).await;
        return resp;
    }
    let mut req = Request::from_parts(parts, Body::from(bytes));
    req.extensions_mut().insert(slot.clone());
    req.extensions_mut().insert(RequestGuard {
        mode: sec.config.redact,
        slot: slot.clone(),
        keep_text: auditing && sec.config.audit_include_text,
    });
    let mut resp = next.run(req).await;
    let streaming = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    let generated = slot.with(|f| f.prompt_tokens.is_some());
    if !streaming && sec.config.sensitivity_header && filtering && generated {
        let (s, cats) = slot.with(|f| {
            let mut c: Vec<&str> = f.categories.iter().map(|c| c.as_str()).collect();
            c.sort();
            c.dedup();
            (score(&f.categories), c.join(","))
        });
        let h = resp.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
            h.insert(SCORE_HEADER, v);
        }
        if let Ok(v) = HeaderValue::from_str(&cats) {
            h.insert(CATEGORIES_HEADER, v);
        }
    }
    if !auditing {
        return resp;
    }
    let status = resp.status().as_u16();
    if streaming {
        // Recorded when the stream ends or is dropped (client gone).
        let (parts, body) = resp.into_parts();
        let body = AuditedBody {
            inner: Some(body),
            pending: Some((pending, status)),
        };
        return Response::from_parts(parts, Body::new(body));
    }
    let route = pending.route.clone();
    if pending.write(status).await.is_err() && sec.config.audit_required && route != "/health" {
        return audit_unavailable();
    }
    resp
}

/// The request's `model` field, if the body is a JSON object with one.
fn model_field(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct M {
        model: Option<String>,
    }
    if body.first().is_none_or(|&b| b != b'{') {
        return None;
    }
    serde_json::from_slice::<M>(body).ok().and_then(|m| m.model)
}

/// A streamed answer that writes its audit record once it is over.
struct AuditedBody {
    inner: Option<Body>,
    pending: Option<(Pending, u16)>,
}

impl AuditedBody {
    fn finish(&mut self) {
        // Drop the stream first: that ends the generation, which reports its counts.
        self.inner = None;
        if let Some((p, status)) = self.pending.take() {
            match tokio::runtime::Handle::try_current() {
                Ok(h) => {
                    h.spawn(async move {
                        let _ = p.write(status).await;
                    });
                }
                // Outside the runtime (shutdown): write here.
                Err(_) => {
                    if let Some(log) = &p.sec.audit {
                        let _ = log.write(&p.record(status));
                    }
                }
            }
        }
    }
}

impl HttpBody for AuditedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let r = Pin::new(inner).poll_frame(cx);
        if let Poll::Ready(None) = r {
            self.finish();
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map(|b| b.size_hint())
            .unwrap_or_default()
    }
}

impl Drop for AuditedBody {
    fn drop(&mut self) {
        if self.pending.is_some() {
            self.finish();
        }
    }
}
