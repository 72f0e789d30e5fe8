//! Authentication and authorisation: the API key (`Authorization: Bearer KEY` or
//! `x-api-key: KEY`) is verified against the keys in force, the [`Caller`] extension is
//! filled from it (user, role, tier, per-key limits: the admission and rate-limit layers read
//! them), and the route's permission is checked. Missing/invalid key → 401, a key without
//! the permission → 403, both as OpenAI-style error bodies.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use r1_security::{Identity, Permission};

use crate::caller::Caller;
use crate::error::ApiError;
use crate::security::audit_slot::AuditSlot;
use crate::security::Security;

/// What a route needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// No key needed (health checks for load balancers).
    Public,
    /// Any valid key (routes not in the table, so unknown paths do not reveal themselves).
    Authenticated,
    Needs(Permission),
}

/// The route permission table.
pub fn required_access(method: &Method, path: &str) -> Access {
    use Permission::*;
    let path = path.trim_end_matches('/');
    // The web UI's pages and files: the API calls they make are checked like any client's.
    if crate::webui::is_ui_path(path) {
        return Access::Public;
    }
    match path {
        "/health" | "/ready" => return Access::Public,
        "/v1/models" | "/v1/engine/stats" => return Access::Needs(ModelRead),
        "/v1/chat/completions" | "/v1/completions" | "/tokenize" | "/detokenize" => {
            return Access::Needs(ModelQuery)
        }
        _ => {}
    }
    if path == "/admin" || path.starts_with("/admin/") {
        return Access::Needs(SystemConfigure);
    }
    if let Some(rest) = path.strip_prefix("/v1/models/") {
        if rest.ends_with("/load") || rest.ends_with("/unload") {
            return Access::Needs(ModelWrite);
        }
        if *method == Method::GET && !rest.contains('/') {
            return Access::Needs(ModelRead);
        }
    }
    Access::Authenticated
}

/// The key a request presents, if any.
fn presented_key(req: &Request) -> Option<&str> {
    let h = req.headers();
    if let Some(v) = h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        return Some(match v.split_once(' ') {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
            _ => v,
        });
    }
    h.get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

pub fn unauthorized(message: &str) -> Response {
    let mut r = ApiError {
        status: StatusCode::UNAUTHORIZED,
        message: message.to_string(),
        kind: "invalid_request_error",
        param: None,
        code: Some("invalid_api_key".into()),
    }
    .into_response();
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

pub fn forbidden(id: &Identity, p: Permission) -> Response {
    ApiError {
        status: StatusCode::FORBIDDEN,
        message: format!(
            "You have insufficient permissions for this operation: role `{}` lacks `{p}`.",
            id.role
        ),
        kind: "invalid_request_error",
        param: None,
        code: Some("insufficient_permissions".into()),
    }
    .into_response()
}

/// The authentication layer (inside the audit layer, so rejections are audited).
pub async fn layer(State(sec): State<Arc<Security>>, mut req: Request, next: Next) -> Response {
    let Some(keys) = sec.keys() else {
        // Open server: every caller is anonymous and may do everything.
        return next.run(req).await;
    };
    let access = required_access(req.method(), req.uri().path());
    let identity = presented_key(&req).and_then(|k| keys.verify(k));
    let slot = req.extensions().get::<AuditSlot>().cloned();
    if let (Some(id), Some(slot)) = (&identity, &slot) {
        slot.with(|f| {
            f.user_id = Some(id.user.clone());
            f.role = Some(id.role.clone());
        });
    }
    let reject = |slot: &Option<AuditSlot>, why: &str, resp: Response| {
        if let Some(s) = slot {
            s.with(|f| f.error = Some(why.to_string()));
        }
        resp
    };
    match (access, &identity) {
        (Access::Public, _) => {}
        (_, None) => {
            let (why, msg) = if presented_key(&req).is_some() {
                ("invalid api key", "Incorrect API key provided.")
            } else {
                (
                    "missing api key",
                    "You didn't provide an API key. Send it as `Authorization: Bearer KEY`.",
                )
            };
            return reject(&slot, why, unauthorized(msg));
        }
        (Access::Authenticated, Some(_)) => {}
        (Access::Needs(p), Some(id)) => {
            if !id.can(p) {
                return reject(&slot, &format!("lacks {p}"), forbidden(id, p));
            }
        }
    }
    if let Some(id) = identity {
        let ip = req.extensions().get::<Caller>().and_then(|c| c.client_ip);
        req.extensions_mut().insert(Caller {
            user_id: Some(id.user),
            role: Some(id.role),
            tier: id.tier,
            client_ip: ip,
            requests_per_min: id.requests_per_min,
            tokens_per_min: id.tokens_per_min,
        });
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use Permission::*;

    #[test]
    fn route_table() {
        let g = Method::GET;
        let p = Method::POST;
        assert_eq!(required_access(&g, "/health"), Access::Public);
        assert_eq!(required_access(&g, "/"), Access::Public);
        assert_eq!(required_access(&g, "/dashboard"), Access::Public);
        assert_eq!(required_access(&g, "/ui/chat.js"), Access::Public);
        assert_eq!(required_access(&g, "/metrics"), Access::Authenticated);
        assert_eq!(required_access(&g, "/v1/models"), Access::Needs(ModelRead));
        assert_eq!(
            required_access(&g, "/v1/models/x"),
            Access::Needs(ModelRead)
        );
        assert_eq!(
            required_access(&p, "/v1/chat/completions"),
            Access::Needs(ModelQuery)
        );
        assert_eq!(
            required_access(&p, "/v1/models/x/load"),
            Access::Needs(ModelWrite)
        );
        assert_eq!(
            required_access(&p, "/v1/models/x/unload"),
            Access::Needs(ModelWrite)
        );
        assert_eq!(
            required_access(&g, "/admin/keys"),
            Access::Needs(SystemConfigure)
        );
        assert_eq!(
            required_access(&p, "/admin/drain"),
            Access::Needs(SystemConfigure)
        );
        assert_eq!(required_access(&g, "/nope"), Access::Authenticated);
        assert_eq!(required_access(&g, "/administrator"), Access::Authenticated);
    }
}
