//! Who is calling and which request this is: request extensions shared by the layers that
//! sit in front of the handlers (authentication, admission control, rate limits, audit,
//! metrics). The request-id layer runs first, so every later layer and every log line can
//! name the request; the authentication layer (API keys) fills in [`Caller`].

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

/// The header a request id travels in (accepted from the client, always returned).
pub static REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-supplied request id kept; longer or non-printable ones are replaced.
const MAX_CLIENT_REQUEST_ID: usize = 128;

/// The request's id: the client's `x-request-id` when it sent a sane one, else generated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId(pub String);

/// The authenticated caller. Without API keys every request is anonymous: `user_id`,
/// `role` and `tier` are `None` and limits fall back to per-IP defaults.
#[derive(Clone, Debug, Default)]
pub struct Caller {
    pub user_id: Option<String>,
    pub role: Option<String>,
    /// The key's priority tier (a priority class name such as "vip").
    pub tier: Option<String>,
    /// The peer address (per-IP rate limits when there are no keys).
    pub client_ip: Option<IpAddr>,
    /// Per-key limits overriding the server defaults.
    pub requests_per_min: Option<u32>,
    pub tokens_per_min: Option<u32>,
}

impl Caller {
    /// The key rate limits are accounted under: the user id, else the client IP.
    pub fn limit_key(&self) -> String {
        match (&self.user_id, &self.client_ip) {
            (Some(u), _) => format!("user:{u}"),
            (None, Some(ip)) => format!("ip:{ip}"),
            (None, None) => "anonymous".into(),
        }
    }
}

/// Outermost layer: attach a [`RequestId`] and an anonymous [`Caller`] (with the peer IP
/// when the server was started with connect info), and echo the id in the response.
pub async fn request_context(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(&REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|s| {
            !s.is_empty()
                && s.len() <= MAX_CLIENT_REQUEST_ID
                && s.bytes().all(|b| b.is_ascii_graphic())
        })
        .map(str::to_string)
        .unwrap_or_else(generate_request_id);
    let client_ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    req.extensions_mut().insert(RequestId(id.clone()));
    if req.extensions().get::<Caller>().is_none() {
        req.extensions_mut().insert(Caller {
            client_ip,
            ..Caller::default()
        });
    }
    let mut resp = next.run(req).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(REQUEST_ID_HEADER.clone(), v);
    }
    resp
}

/// A process-unique, hard-to-guess id (`req-` + 24 hex digits).
pub fn generate_request_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(1);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mixed = (nanos ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15)).rotate_left(17);
    format!("req-{mixed:016x}{:08x}", n as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_unique() {
        let a = generate_request_id();
        let b = generate_request_id();
        assert_ne!(a, b);
        assert!(a.starts_with("req-") && a.len() == 28, "{a}");
    }

    #[test]
    fn limit_key_prefers_the_user() {
        let mut c = Caller {
            client_ip: Some("10.0.0.1".parse().unwrap()),
            ..Caller::default()
        };
        assert_eq!(c.limit_key(), "ip:10.0.0.1");
        c.user_id = Some("alice".into());
        assert_eq!(c.limit_key(), "user:alice");
    }
}
