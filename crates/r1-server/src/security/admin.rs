//! Administrative routes (permission `system:configure`, model loading `model:write`; see
//! `auth::required_access`): keys, effective configuration, response-cache flush, drain.

use std::sync::Arc;

use axum::extract::{FromRef, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use r1_security::{KeysFile, RedactMode};
use serde_json::json;

use crate::error::ApiError;
use crate::model::ModelSlot;
use crate::overload::Overload;
use crate::security::Security;

/// The admin routes, for any router state that holds the sub-states they take.
pub fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    Arc<Security>: FromRef<S>,
    Arc<Overload>: FromRef<S>,
    Arc<ModelSlot>: FromRef<S>,
{
    Router::new()
        .route("/admin/keys", get(list_keys))
        .route("/admin/keys/reload", post(reload_keys))
        .route("/admin/config", get(config))
        .route("/admin/cache/flush", post(flush_cache))
        .route("/admin/drain", post(drain))
        .route("/v1/models/{id}/load", post(load_model))
        .route("/v1/models/{id}/unload", post(unload_model))
}

fn not_implemented(message: &str, code: &str) -> Response {
    ApiError {
        status: StatusCode::NOT_IMPLEMENTED,
        message: message.to_string(),
        kind: "invalid_request_error",
        param: None,
        code: Some(code.to_string()),
    }
    .into_response()
}

/// `GET /admin/keys`: the keys file without salts and hashes.
async fn list_keys(State(sec): State<Arc<Security>>) -> Response {
    let Some(path) = &sec.config.keys_file else {
        return Json(json!({ "object": "list", "data": [], "open": true })).into_response();
    };
    match KeysFile::load(path) {
        Ok(f) => Json(json!({
            "object": "list",
            "open": false,
            "data": f.keys.iter().map(|k| json!({
                "id": k.id, "user": k.user, "role": k.role, "tier": k.tier,
                "requests_per_min": k.requests_per_min, "tokens_per_min": k.tokens_per_min,
                "created": k.created,
            })).collect::<Vec<_>>(),
            "roles": f.roles.iter().map(|(n, r)| (n.clone(), json!(r.permissions))).collect::<serde_json::Map<_, _>>(),
        }))
        .into_response(),
        Err(e) => ApiError::internal(e.to_string()).into_response(),
    }
}

/// `POST /admin/keys/reload`: re-read the keys file now (as SIGHUP does).
async fn reload_keys(State(sec): State<Arc<Security>>) -> Response {
    match sec.reload_keys() {
        Ok(n) => Json(json!({ "reloaded": true, "keys": n })).into_response(),
        Err(e) => {
            let mut err =
                ApiError::bad_request(format!("{e}; the previous keys stay in force"), None);
            err.status = StatusCode::UNPROCESSABLE_ENTITY;
            err.into_response()
        }
    }
}

/// `GET /admin/config`: the security settings in force (no secrets) and audit health.
async fn config(State(s): State<Arc<Security>>, State(model): State<Arc<ModelSlot>>) -> Response {
    let c = &s.config;
    let redact = match c.redact {
        RedactMode::Off => "off",
        RedactMode::Flag => "flag",
        RedactMode::Redact => "redact",
    };
    Json(json!({
        "served_model_name": model.served_name,
        "auth": {
            "open": s.is_open(),
            "keys_file": c.keys_file.as_ref().map(|p| p.display().to_string()),
            "keys": s.keys().map(|k| k.len()),
            "reloads": s.reloads(),
        },
        "audit": s.audit.as_ref().map(|a| json!({
            "path": a.path().display().to_string(),
            "records_written": a.written(),
            "write_failures": a.failures(),
            "healthy": a.is_healthy(),
            "include_text": c.audit_include_text,
            "required": c.audit_required,
        })),
        "redact": redact,
        "sensitivity_header": c.sensitivity_header,
        "tls": c.tls.is_some(),
        "limits": {
            "max_connections": c.max_connections,
            "header_read_timeout_s": c.header_read_timeout.as_secs_f64(),
            "max_header_bytes": c.max_header_bytes,
            "max_body_bytes": c.max_body_bytes,
        },
    }))
    .into_response()
}

/// `POST /admin/cache/flush`: empty the response cache (see `crate::overload`).
async fn flush_cache(State(ov): State<Arc<Overload>>) -> Response {
    let n = ov.flush_cache();
    Json(json!({ "flushed": n })).into_response()
}

/// `POST /admin/drain`: stop taking requests, finish the running ones, exit (as SIGTERM).
async fn drain(State(sec): State<Arc<Security>>) -> Response {
    sec.drain_requested.notify_one();
    (StatusCode::ACCEPTED, Json(json!({ "status": "draining" }))).into_response()
}

/// `POST /v1/models/{id}/load` and `/unload`: the server serves the one model it was started
/// with; switching models at run time is not supported.
async fn load_model(Path(id): Path<String>) -> Response {
    not_implemented(
        &format!("Loading `{id}` at run time is not supported: restart the server with --model."),
        "not_supported",
    )
}

async fn unload_model(Path(id): Path<String>) -> Response {
    not_implemented(
        &format!("Unloading `{id}` at run time is not supported: stop the server instead."),
        "not_supported",
    )
}
