//! Who is calling and which request this is: request extensions shared by the layers that
//! sit in front of the handlers (authentication, admission control, rate limits, audit,
//! metrics). The request id comes first, so every later layer and every log line can name the
//! request: tower-http's `SetRequestId` keeps a client's sane `x-request-id` (a bad one is
//! dropped first, [`drop_bad_client_id`]) or makes one ([`MakeId`]), and
//! `PropagateRequestId` echoes it on every answer (`routes::outer_layers`). The
//! authentication layer (API keys) fills in [`Caller`].

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tower_http::request_id::MakeRequestId;

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

/// Makes the id of a request that came without a (sane) one: [`generate_request_id`].
#[derive(Clone, Copy, Debug, Default)]
pub struct MakeId;

impl MakeRequestId for MakeId {
    fn make_request_id<B>(
        &mut self,
        _: &axum::http::Request<B>,
    ) -> Option<tower_http::request_id::RequestId> {
        HeaderValue::from_str(&generate_request_id())
            .ok()
            .map(Into::into)
    }
}

/// Drop a client's `x-request-id` that is empty, longer than 128 bytes or not printable
/// ASCII, so that a fresh one is made in its place.
pub async fn drop_bad_client_id(mut req: Request) -> Request {
    let sane = req.headers().get(&REQUEST_ID_HEADER).is_none_or(|v| {
        let b = v.as_bytes();
        !b.is_empty() && b.len() <= MAX_CLIENT_REQUEST_ID && b.iter().all(u8::is_ascii_graphic)
    });
    if !sane {
        req.headers_mut().remove(&REQUEST_ID_HEADER);
    }
    req
}

/// Just inside the request-id layers: attach the [`RequestId`] and an anonymous [`Caller`]
/// (with the peer IP when the server was started with connect info).
pub async fn request_context(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(&REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(generate_request_id);
    let client_ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    req.extensions_mut().insert(RequestId(id));
    if req.extensions().get::<Caller>().is_none() {
        req.extensions_mut().insert(Caller {
            client_ip,
            ..Caller::default()
        });
    }
    next.run(req).await
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

    #[tokio::test]
    async fn bad_client_ids_are_dropped() {
        let with = |id: &str| {
            Request::builder()
                .header(&REQUEST_ID_HEADER, id)
                .body(axum::body::Body::empty())
                .unwrap()
        };
        let long = "x".repeat(129);
        for bad in ["", "two words", long.as_str()] {
            let r = drop_bad_client_id(with(bad)).await;
            assert!(r.headers().get(&REQUEST_ID_HEADER).is_none(), "{bad:?}");
        }
        let r = drop_bad_client_id(with("abc-123")).await;
        assert_eq!(r.headers()[&REQUEST_ID_HEADER], "abc-123");
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
