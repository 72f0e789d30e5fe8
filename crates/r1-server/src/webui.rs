//! The browser UI: a chat page at `/` and an operations dashboard at `/dashboard`, plain
//! HTML/CSS/JS from `crates/r1-server/webui/` compiled into the binary (`include_bytes!`), so
//! the server needs no files at run time and the pages load nothing from another host. The
//! pages are public (`security::auth::required_access`); the API calls they make carry the key
//! the user types in and are checked like any other client's. `--no-webui` leaves these routes
//! out (then `/` is the API's 404).

use axum::extract::Path;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::error::ApiError;

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $ty:literal) => {
        Asset {
            name: $name,
            content_type: $ty,
            body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/webui/", $name)),
        }
    };
}

const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("dashboard.html", "text/html; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("common.js", "text/javascript; charset=utf-8"),
    asset!("markdown.js", "text/javascript; charset=utf-8"),
    asset!("chat.js", "text/javascript; charset=utf-8"),
    asset!("stream.js", "text/javascript; charset=utf-8"),
    asset!("dashboard.js", "text/javascript; charset=utf-8"),
    asset!("prometheus.js", "text/javascript; charset=utf-8"),
];

/// Only this server's own scripts, styles and API: a stray external URL (or injected markup
/// in a model's answer) cannot load anything from elsewhere.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The UI's routes, or none when the UI is off.
pub fn routes<S: Clone + Send + Sync + 'static>(enabled: bool) -> Router<S> {
    if !enabled {
        return Router::new();
    }
    Router::new()
        .route("/", get(|| async { serve("index.html") }))
        .route("/dashboard", get(|| async { serve("dashboard.html") }))
        .route(
            "/ui/{file}",
            get(|Path(f): Path<String>| async move { serve(&f) }),
        )
}

/// Whether a path is one of the UI's (public even when API keys are on).
pub fn is_ui_path(path: &str) -> bool {
    matches!(path, "" | "/" | "/dashboard") || path.starts_with("/ui/")
}

fn serve(name: &str) -> Response {
    let Some(a) = ASSETS.iter().find(|a| a.name == name) else {
        return ApiError::not_found(format!("No web UI file `{name}`.")).into_response();
    };
    let mut r = a.body.into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(a.content_type),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // Small files; revalidating each load means an upgraded binary is picked up at once.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_the_pages_name_is_embedded() {
        for page in ASSETS.iter().filter(|a| !a.name.ends_with(".css")) {
            let text = std::str::from_utf8(page.body).unwrap();
            for part in text.split("/ui/").skip(1) {
                let name: String = part
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '-')
                    .collect();
                assert!(
                    ASSETS.iter().any(|a| a.name == name),
                    "{} names /ui/{name}, which is not embedded",
                    page.name
                );
            }
        }
        // Nothing loaded from another host.
        for page in ["index.html", "dashboard.html"] {
            let html = ASSETS.iter().find(|a| a.name == page).unwrap().body;
            let html = std::str::from_utf8(html).unwrap();
            assert!(
                !html.contains("http://") && !html.contains("https://"),
                "{page}"
            );
        }
    }

    #[test]
    fn ui_paths() {
        assert!(is_ui_path(""));
        assert!(is_ui_path("/dashboard"));
        assert!(is_ui_path("/ui/chat.js"));
        assert!(!is_ui_path("/v1/models"));
        assert!(!is_ui_path("/dashboards"));
    }
}
