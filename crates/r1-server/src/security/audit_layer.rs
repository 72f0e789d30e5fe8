//! The audit layer: wraps every request (outside authentication, so 401/403 and every other
//! rejection is recorded too), hashes the body (every record carries the input's hash, so the
//! body is read here, under the body limit; the handler's extractor parses it, once), and puts
//! the request's [`AuditSlot`] and output filter settings ([`RequestGuard`]) in its
//! extensions. Authentication and the adapters over the generation's events
//! (`output_filter::redact`, `audit_slot::audited`) report to the slot. One record is written
//! when the answer is complete: at once for plain answers; for SSE when the stream's adapters
//! let go of the slot (the stream ended, or the client left).

use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use r1_security::detect::score;
use r1_security::secret::sha256_hex;
use r1_security::{AuditRecord, RedactMode};

use crate::caller::{Caller, RequestId};
use crate::error::ApiError;
use crate::model::ModelSlot;
use crate::security::audit_slot::{AuditFacts, AuditSlot, RequestGuard};
use crate::security::Security;

pub const SCORE_HEADER: &str = "x-sensitivity-score";
pub const CATEGORIES_HEADER: &str = "x-sensitivity-categories";

/// What the record needs from the request itself.
struct Pending {
    sec: Arc<Security>,
    model_slot: Arc<ModelSlot>,
    t0: Instant,
    request_id: String,
    client_ip: Option<String>,
    method: String,
    route: String,
    input_sha256: String,
    input_bytes: usize,
    input_text: Option<String>,
}

impl Pending {
    fn record(&self, f: &AuditFacts, status: u16) -> AuditRecord {
        let sec = &self.sec;
        {
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
                model: f
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
        }
    }

    /// Write the record (blocking I/O off the async threads). Err = it was not written.
    async fn write(self, slot: &AuditSlot, status: u16) -> Result<(), ()> {
        let rec = slot.with(|f| self.record(f, status));
        let sec = self.sec.clone();
        tokio::task::spawn_blocking(move || match &sec.audit {
            Some(log) => log.write(&rec).map_err(|_| ()),
            None => Ok(()),
        })
        .await
        .unwrap_or(Err(()))
    }

    /// Write the record once the slot is released: off the async threads when there is a
    /// runtime, here otherwise (shutdown).
    fn write_when_released(self, slot: AuditSlot, status: u16) {
        slot.write_when_released(move |facts| {
            let rec = self.record(facts, status);
            let Some(log) = self.sec.audit.as_ref() else {
                return;
            };
            match tokio::runtime::Handle::try_current() {
                Ok(h) => {
                    let sec = self.sec.clone();
                    h.spawn_blocking(move || {
                        if let Some(log) = &sec.audit {
                            let _ = log.write(&rec);
                        }
                    });
                }
                Err(_) => {
                    let _ = log.write(&rec);
                }
            }
        });
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
        let _ = pending.write(&slot, resp.status().as_u16()).await;
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
        // Recorded when the stream's adapters let go of the slot (see `audit_slot`).
        pending.write_when_released(slot, status);
        return resp;
    }
    let route = pending.route.clone();
    if pending.write(&slot, status).await.is_err()
        && sec.config.audit_required
        && route != "/health"
    {
        return audit_unavailable();
    }
    resp
}
