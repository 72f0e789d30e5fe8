//! Server-sent events exactly as OpenAI sends them: `data: {json}\n\n` per chunk, then
//! `data: [DONE]\n\n`. While a stream is silent (the request waits in the queue, or a long
//! prompt is being read) a `: keep-alive\n\n` comment goes out every interval, as DeepSeek's
//! API does, so proxies keep the connection.
//!
//! The response body owns the [`Generation`]: when the client goes away, hyper drops the body,
//! which drops the engine's request streams, which cancels the request.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::error::ApiError;
use crate::generation::{Delta, GenEvent, Generation};
use crate::openai_types::Usage;

pub const KEEP_ALIVE: &str = ": keep-alive\n\n";
pub const DONE: &str = "data: [DONE]\n\n";

/// Turns generation events into the endpoint's chunk JSON.
pub trait ChunkFormat: Send + 'static {
    /// Chunks sent when the request is admitted (chat: the `role` chunk of each choice).
    fn admitted(&mut self) -> Vec<String>;
    /// Chunks for one choice's delta (may be none, e.g. for text held back).
    fn delta(&mut self, d: Delta) -> Vec<String>;
    /// The final usage chunk (`choices: []`).
    fn usage(&mut self, u: Usage) -> String;
    /// Whether the client asked for `stream_options.include_usage`.
    fn include_usage(&self) -> bool;
}

pub fn data_line<T: Serialize>(v: &T) -> String {
    match serde_json::to_string(v) {
        Ok(j) => format!("data: {j}\n\n"),
        Err(e) => format!(
            "data: {}\n\n",
            ApiError::internal(format!("serializing a chunk failed: {e}")).body_json()
        ),
    }
}

struct SseState<F: ChunkFormat> {
    gen: Generation,
    fmt: F,
    queue: VecDeque<String>,
    keep_alive: Duration,
    done: bool,
}

impl<F: ChunkFormat> SseState<F> {
    fn push_event(&mut self, ev: GenEvent) {
        match ev {
            GenEvent::Admitted => {
                let chunks = self.fmt.admitted();
                self.queue.extend(chunks);
            }
            GenEvent::Delta(d) => {
                let chunks = self.fmt.delta(d);
                self.queue.extend(chunks);
            }
            GenEvent::Error(e) => {
                self.queue.push_back(format!("data: {}\n\n", e.body_json()));
                self.queue.push_back(DONE.to_string());
                self.done = true;
            }
        }
    }

    async fn next_frame(&mut self) -> Option<String> {
        loop {
            if let Some(f) = self.queue.pop_front() {
                return Some(f);
            }
            if self.done {
                return None;
            }
            match tokio::time::timeout(self.keep_alive, self.gen.next()).await {
                Err(_) => return Some(KEEP_ALIVE.to_string()),
                Ok(Some(ev)) => self.push_event(ev),
                Ok(None) => {
                    if self.fmt.include_usage() {
                        let u = self.fmt.usage(self.gen.usage());
                        self.queue.push_back(u);
                    }
                    self.queue.push_back(DONE.to_string());
                    self.done = true;
                }
            }
        }
    }
}

/// Start streaming `gen`. `first` is an event already taken from it (see [`first_event`]).
pub fn response<F: ChunkFormat>(
    gen: Generation,
    fmt: F,
    first: Option<GenEvent>,
    keep_alive: Duration,
) -> Response {
    let mut st = SseState {
        gen,
        fmt,
        queue: VecDeque::new(),
        keep_alive,
        done: false,
    };
    if let Some(ev) = first {
        st.push_event(ev);
    }
    let body = futures_util::stream::unfold(st, |mut st| async move {
        let frame = st.next_frame().await?;
        Some((Ok::<_, Infallible>(Bytes::from(frame)), st))
    });
    event_stream_response(Body::from_stream(body))
}

/// A `200` carrying `body` as server-sent events: the content type, no caching, and no
/// proxy buffering (nginx's `x-accel-buffering`), so every frame reaches the client at once.
pub fn event_stream_response(body: Body) -> Response {
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}

/// Whether a response is a server-sent event stream (the layers that watch answers treat
/// streams apart).
pub fn is_event_stream(resp: &Response) -> bool {
    resp.headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"))
}

/// Wait briefly for the first event, so that a request the engine rejects at once gets a
/// plain HTTP error instead of an error inside a stream.
pub async fn first_event(
    gen: &mut Generation,
    wait: Duration,
) -> Result<Option<GenEvent>, ApiError> {
    match tokio::time::timeout(wait, gen.next()).await {
        Err(_) => Ok(None),
        Ok(Some(GenEvent::Error(e))) => Err(e),
        Ok(ev) => Ok(ev),
    }
}
