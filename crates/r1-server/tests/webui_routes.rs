//! The web UI's routes in process (no model needed): the pages and their files are served
//! from the binary with a strict content-security policy, unknown files are the API's JSON
//! 404, and with the UI off (`--no-webui`) `/` is the API's 404 as before.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use r1_server::security::Security;
use r1_server::{routes, AppState, ServerConfig};
use tower::ServiceExt;

fn state(webui: bool) -> AppState {
    let config = ServerConfig {
        webui,
        ..ServerConfig::default()
    };
    let security = Security::open(config.security.clone()).expect("no keys, no audit log");
    AppState::new(config).with_security(Arc::new(security))
}

async fn get(st: &AppState, path: &str) -> (StatusCode, String, String, String) {
    let resp = routes::router(st.clone())
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let h = |name| {
        resp.headers()
            .get(name)
            .map(|v: &header::HeaderValue| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    let (ct, csp) = (h(header::CONTENT_TYPE), h(header::CONTENT_SECURITY_POLICY));
    let status = resp.status();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 22)
        .await
        .unwrap();
    (status, ct, csp, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn pages_and_files_are_served_from_the_binary() {
    let st = state(true);
    for (path, ct, needle) in [
        ("/", "text/html", "/ui/chat.js"),
        ("/dashboard", "text/html", "/ui/dashboard.js"),
        ("/ui/chat.js", "text/javascript", "/v1/chat/completions"),
        ("/ui/dashboard.js", "text/javascript", "/metrics"),
        ("/ui/style.css", "text/css", "--accent"),
    ] {
        let (status, got_ct, csp, body) = get(&st, path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(got_ct.starts_with(ct), "{path}: {got_ct}");
        assert!(csp.contains("default-src 'none'"), "{path}: {csp}");
        assert!(csp.contains("connect-src 'self'"), "{path}: {csp}");
        assert!(body.contains(needle), "{path} lacks {needle}");
    }
    let (status, ct, _, body) = get(&st, "/ui/missing.js").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(ct.starts_with("application/json"), "{ct}");
    assert!(body.contains("not_found"), "{body}");
}

#[tokio::test]
async fn no_webui_leaves_the_api_404() {
    let st = state(false);
    for path in ["/", "/dashboard", "/ui/chat.js"] {
        let (status, ct, _, body) = get(&st, path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert!(ct.starts_with("application/json"), "{path}: {ct}");
        assert!(body.contains("No route for GET"), "{path}: {body}");
    }
}
