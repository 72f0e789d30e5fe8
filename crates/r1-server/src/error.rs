//! [`ApiError`] is what a handler answers with (an OpenAI error body and status); engine
//! errors become one in a single place (`From<EngineError>`). (`crate::ServerError` is what
//! stops the server.)

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use r1_engine::engine::EngineError;
use r1_engine::scheduler::SchedError;
use serde::Serialize;

/// An error a request gets back, as OpenAI writes it:
/// `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<String>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

impl ApiError {
    /// 400 `invalid_request_error`, naming the offending field when there is one.
    pub fn bad_request(message: impl Into<String>, param: Option<&str>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: param.map(str::to_string),
            code: None,
        }
    }

    /// 404 for a model name the server does not serve (OpenAI's `model_not_found`).
    pub fn model_not_found(requested: &str, served: &str) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!(
                "The model `{requested}` does not exist; this server serves `{served}`."
            ),
            kind: "invalid_request_error",
            param: Some("model".into()),
            code: Some("model_not_found".into()),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
            kind: "invalid_request_error",
            param: None,
            code: Some("not_found".into()),
        }
    }

    /// 503 while the model loads or the server drains.
    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: message.into(),
            kind: "server_error",
            param: None,
            code: Some("service_unavailable".into()),
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
            kind: "server_error",
            param: None,
            code: None,
        }
    }

    pub fn with_code(mut self, code: &str) -> Self {
        self.code = Some(code.to_string());
        self
    }

    /// The JSON body (also used as an SSE `data:` payload when a stream fails midway).
    pub fn body_json(&self) -> String {
        serde_json::to_string(&ErrorBody {
            error: ErrorDetail {
                message: &self.message,
                kind: self.kind,
                param: self.param.as_deref(),
                code: self.code.as_deref(),
            },
        })
        .unwrap_or_else(|_| r#"{"error":{"message":"internal error"}}"#.to_string())
    }
}

/// The one place where engine errors become HTTP answers: the client's mistakes are 400s,
/// a stopped or stopping engine is 503, anything else is the server's fault (500).
impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Rejected(s) => match s {
                SchedError::ExceedsModelLen { .. } => {
                    ApiError::bad_request(s.to_string(), None).with_code("context_length_exceeded")
                }
                SchedError::EmptyPrompt { .. }
                | SchedError::ZeroMaxTokens { .. }
                | SchedError::ZeroN { .. }
                | SchedError::TooManyChoices { .. }
                | SchedError::ExceedsCache { .. } => ApiError::bad_request(s.to_string(), None),
                other => ApiError::internal(format!("the scheduler failed: {other}")),
            },
            EngineError::Invalid(m) => ApiError::bad_request(m, None),
            EngineError::Stopped => ApiError::unavailable("The engine has stopped."),
            EngineError::ShuttingDown => ApiError::unavailable("The server is shutting down."),
            EngineError::Config(m) => ApiError::internal(m),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (
            self.status,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            self.body_json(),
        )
            .into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("5"),
            );
        }
        resp
    }
}

/// Parse a JSON request body. Malformed JSON and wrong types become 400 errors whose message
/// and `param` name the field (`messages[0].content`, `temperature`, ...).
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::bad_request(format!("The request body is not valid JSON: {inner}"), None)
        } else if path == "." || path.is_empty() {
            let param = missing_field(&inner.to_string());
            ApiError::bad_request(format!("Invalid request: {inner}"), param.as_deref())
        } else {
            ApiError::bad_request(format!("Invalid value for `{path}`: {inner}"), Some(&path))
        }
    })?;
    de.end().map_err(|e| {
        ApiError::bad_request(format!("The request body is not valid JSON: {e}"), None)
    })?;
    Ok(value)
}

/// serde says "missing field `messages` at line 1 column 20": take the field's name.
fn missing_field(msg: &str) -> Option<String> {
    let rest = msg.strip_prefix("missing field `")?;
    Some(rest.split('`').next()?.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Req {
        model: String,
        temperature: Option<f32>,
        messages: Vec<Msg>,
    }
    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Msg {
        role: String,
    }

    #[test]
    fn wrong_type_names_the_field() {
        let e =
            parse_json::<Req>(br#"{"model":"m","temperature":"hot","messages":[]}"#).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.param.as_deref(), Some("temperature"));
        assert!(e.message.contains("temperature"), "{}", e.message);
        let e = parse_json::<Req>(br#"{"model":"m","messages":[{"role":3}]}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages[0].role"));
    }

    #[test]
    fn malformed_and_missing() {
        let e = parse_json::<Req>(br#"{"model": "m", "#).unwrap_err();
        assert!(e.message.contains("not valid JSON"), "{}", e.message);
        assert_eq!(e.param, None);
        let e = parse_json::<Req>(br#"{"model": "m"}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages"));
        let e = parse_json::<Req>(br#"{"model":"m","messages":[]} x"#).unwrap_err();
        assert!(e.message.contains("not valid JSON"), "{}", e.message);
    }

    #[test]
    fn engine_errors_map_by_variant() {
        let e = ApiError::from(EngineError::Rejected(SchedError::TooManyChoices {
            id: 17,
            n: 9,
            max: 4,
        }));
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            e.message,
            "n = 9 exceeds the 4 sequences the server runs at once"
        );
        let body: serde_json::Value = serde_json::from_str(&e.body_json()).unwrap();
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert!(body["error"]["param"].is_null());
        for gone in [EngineError::Stopped, EngineError::ShuttingDown] {
            let e = ApiError::from(gone);
            assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(e.kind, "server_error");
        }
        let e = ApiError::from(EngineError::Rejected(SchedError::Internal("x".into())));
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
        let e = ApiError::from(EngineError::Rejected(SchedError::ExceedsModelLen {
            id: 1,
            prompt: 10,
            max_new: 10,
            total: 20,
            max_model_len: 16,
        }));
        assert_eq!(e.code.as_deref(), Some("context_length_exceeded"));
        assert_eq!(
            ApiError::from(EngineError::Invalid("bad".into())).status,
            StatusCode::BAD_REQUEST
        );
    }
}
