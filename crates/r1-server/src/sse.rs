//! Server-sent events exactly as OpenAI sends them: `data: {json}\n\n` per chunk, then
//! `data: [DONE]\n\n`, written by axum's [`Sse`]. While a stream is silent (the request waits
//! in the queue, or a long prompt is being read) axum's [`KeepAlive`] sends a
//! `: keep-alive\n\n` comment every interval, as DeepSeek's API does, so proxies keep the
//! connection.
//!
//! The response body owns the request's [`EventStream`]: when the client goes away, hyper drops
//! the body, which drops the engine's request streams, which cancels the request.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
pub use axum::response::sse::Event;
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::error::ApiError;
use futures_util::StreamExt;

use crate::generation::{Delta, EventStream, GenEvent};
use crate::openai_types::Usage;

/// How streams keep the connection alive (a sub-state of the router's state).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamSettings {
    /// A `: keep-alive` comment goes out when a stream has been silent this long.
    pub keep_alive: Duration,
}

/// The keep-alive comment (also sent by the wait-mode stream, see `overload::wait`).
pub const KEEP_ALIVE: &str = ": keep-alive\n\n";
pub const DONE: &str = "data: [DONE]\n\n";

/// Turns generation events into the endpoint's chunk events.
pub trait ChunkFormat: Send + 'static {
    /// Chunks sent when the request is admitted (chat: the `role` chunk of each choice).
    fn admitted(&mut self) -> Vec<Event>;
    /// Chunks for one choice's delta (may be none, e.g. for text held back).
    fn delta(&mut self, d: Delta) -> Vec<Event>;
    /// The final usage chunk (`choices: []`).
    fn usage(&mut self, u: Usage) -> Event;
    /// Whether the client asked for `stream_options.include_usage`.
    fn include_usage(&self) -> bool;
}

/// One `data:` event carrying `v` as JSON (serialized straight into the event's buffer).
pub fn data_line<T: Serialize>(v: &T) -> Event {
    Event::default().json_data(v).unwrap_or_else(|e| {
        let e = ApiError::internal(format!("serializing a chunk failed: {e}"));
        Event::default().data(e.body_json())
    })
}

fn done() -> Event {
    Event::default().data("[DONE]")
}

struct SseState<F: ChunkFormat> {
    events: EventStream,
    fmt: F,
    queue: VecDeque<Event>,
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
            GenEvent::Usage(u) => {
                if self.fmt.include_usage() {
                    let chunk = self.fmt.usage(u);
                    self.queue.push_back(chunk);
                }
            }
            GenEvent::Error(e) => {
                self.queue.push_back(Event::default().data(e.body_json()));
                self.queue.push_back(done());
                self.done = true;
            }
        }
    }

    async fn next_event(&mut self) -> Option<Event> {
        loop {
            if let Some(f) = self.queue.pop_front() {
                return Some(f);
            }
            if self.done {
                return None;
            }
            match self.events.next().await {
                Some(ev) => self.push_event(ev),
                None => {
                    self.queue.push_back(done());
                    self.done = true;
                }
            }
        }
    }
}

/// Start streaming `events`. `first` is an event already taken from it (see [`first_event`]).
pub fn response<F: ChunkFormat>(
    events: EventStream,
    fmt: F,
    first: Option<GenEvent>,
    keep_alive: Duration,
) -> Response {
    let mut st = SseState {
        events,
        fmt,
        queue: VecDeque::new(),
        done: false,
    };
    if let Some(ev) = first {
        st.push_event(ev);
    }
    let events = futures_util::stream::unfold(st, |mut st| async move {
        let ev = st.next_event().await?;
        Some((Ok::<_, Infallible>(ev), st))
    });
    let sse = Sse::new(events).keep_alive(KeepAlive::new().interval(keep_alive).text("keep-alive"));
    with_stream_headers(sse.into_response())
}

/// A `200` carrying `body` (already SSE-framed) as server-sent events.
pub fn event_stream_response(body: Body) -> Response {
    with_stream_headers((StatusCode::OK, body).into_response())
}

/// The headers of every stream: the content type, no caching, and no proxy buffering
/// (nginx's `x-accel-buffering`), so every frame reaches the client at once.
fn with_stream_headers(mut resp: Response) -> Response {
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
    events: &mut EventStream,
    wait: Duration,
) -> Result<Option<GenEvent>, ApiError> {
    match tokio::time::timeout(wait, events.next()).await {
        Err(_) => Ok(None),
        Ok(Some(GenEvent::Error(e))) => Err(e),
        Ok(ev) => Ok(ev),
    }
}
