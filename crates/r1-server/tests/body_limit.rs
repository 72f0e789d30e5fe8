//! One body limit for every POST route: with `--max-body-bytes 4096`, an 8 KiB body gets 413
//! with an OpenAI-style JSON error, whether the class queues are bounded (`--max-queue`) or
//! not, and whether or not the model has loaded (the limit comes before everything else).

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use r1_server::overload::classes::default_classes;
use r1_server::overload::OverloadConfig;
use r1_server::security::{Security, SecurityConfig};
use r1_server::{routes, AppState, ServerConfig};
use serde_json::Value;
use tower::ServiceExt;

const POST_ROUTES: &[&str] = &[
    "/v1/chat/completions",
    "/v1/completions",
    "/tokenize",
    "/detokenize",
    "/admin/keys/reload",
    "/admin/cache/flush",
    "/admin/drain",
    "/v1/models/model/load",
    "/v1/models/model/unload",
];

fn state(max_queue: Option<usize>) -> AppState {
    let mut classes = default_classes();
    for c in &mut classes {
        c.max_queue = max_queue;
    }
    let config = ServerConfig {
        served_model_name: "model".into(),
        overload: OverloadConfig {
            classes,
            ..OverloadConfig::default()
        },
        security: SecurityConfig {
            max_body_bytes: 4096,
            ..SecurityConfig::default()
        },
        ..ServerConfig::default()
    };
    let security = Security::open(config.security.clone()).expect("no keys, no audit log");
    AppState::new(config).with_security(Arc::new(security))
}

/// An 8 KiB JSON body that would be a valid chat request but for its size.
fn big_body() -> String {
    let text = "x".repeat(8 << 10);
    format!(r#"{{"messages":[{{"role":"user","content":"{text}"}}],"prompt":"{text}"}}"#)
}

async fn post(st: &AppState, path: &str, body: String, chunked: bool) -> (StatusCode, Value) {
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(header::CONTENT_TYPE, "application/json");
    let body = if chunked {
        // No Content-Length: the limit must hold while reading, too.
        let chunks: Vec<Result<String, std::io::Error>> = body
            .as_bytes()
            .chunks(1024)
            .map(|c| Ok(String::from_utf8_lossy(c).into_owned()))
            .collect();
        Body::from_stream(futures_util::stream::iter(chunks))
    } else {
        req = req.header(header::CONTENT_LENGTH, body.len());
        Body::from(body)
    };
    let resp = routes::router(st.clone())
        .oneshot(req.body(body).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let ct = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    assert!(
        ct.starts_with("application/json"),
        "{path}: content type {ct:?}"
    );
    let json = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{path}: {e}: {}", String::from_utf8_lossy(&bytes)));
    (status, json)
}

fn assert_openai_413(path: &str, status: StatusCode, body: &Value) {
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{path}: {body}");
    let e = &body["error"];
    assert!(
        e["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{path}: {body}"
    );
    assert_eq!(e["type"], "invalid_request_error", "{path}: {body}");
    assert!(
        e.get("param").is_some() && e.get("code").is_some(),
        "{path}: {body}"
    );
}

#[tokio::test]
async fn every_post_route_answers_413_to_an_8k_body_with_and_without_queue_caps() {
    for max_queue in [None, Some(1)] {
        let st = state(max_queue);
        for path in POST_ROUTES {
            for chunked in [false, true] {
                if chunked && (path.starts_with("/admin") || path.ends_with("load")) {
                    // Routes that take no body never read one; only a declared length can
                    // be refused before the handler.
                    continue;
                }
                let (status, body) = post(&st, path, big_body(), chunked).await;
                assert_openai_413(path, status, &body);
            }
        }
    }
}

#[tokio::test]
async fn a_body_under_the_limit_is_not_refused_for_its_size() {
    let st = state(Some(1));
    // No model is loaded: the generation routes answer 503 once the body has been read.
    let small = r#"{"messages":[{"role":"user","content":"hi"}]}"#.to_string();
    let (status, body) = post(&st, "/v1/chat/completions", small, false).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    // A malformed small body is a 400 naming the problem, not a 413.
    let (status, body) = post(&st, "/v1/completions", "{".into(), false).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}
