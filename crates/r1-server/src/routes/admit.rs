//! Admission control on the HTTP side (generation routes): 503 while loading or draining,
//! the class, the rate limit, a place in the class queue (429 with `Retry-After` when full),
//! then the rest of the handler with the request's [`RequestContext`]. The decisions are
//! `crate::overload`'s; this file turns them into answers.
//!
//! Wait mode (opt-in per class): when the class is full, the request waits in the one
//! admission queue (`overload/admission.rs`, places handed over by priority then arrival)
//! instead of being refused, up to the class's `max_queue_wait`, then gets 503. A streaming
//! request gets its `200` and SSE headers at once and `: keep-alive` comments while it waits,
//! as DeepSeek's API does, so proxies and clients keep the connection; if the wait runs out
//! the stream carries the 503 error object and ends. A non-streaming request just holds the
//! connection and gets a real 503 status.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;

use crate::error::ApiError;
use crate::model::ModelSlot;
use crate::overload::admission::ClassQueue;
use crate::overload::rate_limit::Limited;
use crate::overload::{
    queue_timeout, Admission, Overload, RequestContext, CACHE_HEADER, CLASS_HEADER,
    DEFAULT_WAIT_MODE_LIMIT,
};
use crate::sse::{event_stream_response, is_event_stream, DONE, KEEP_ALIVE};

/// 429 in OpenAI's shape (`type` says which limit: "requests" or "tokens").
fn too_many(message: String, kind: &'static str, code: &str, retry_after: u64) -> Response {
    let e = ApiError {
        status: StatusCode::TOO_MANY_REQUESTS,
        message,
        kind,
        param: None,
        code: Some(code.to_string()),
    };
    let mut r = e.into_response();
    r.headers_mut().insert(
        axum::http::header::RETRY_AFTER,
        HeaderValue::from(retry_after),
    );
    r
}

/// Admission control for one generation request: 503 while loading or draining, the class,
/// the rate limit, a place in the class queue (429 when full, or wait mode), then `handler`
/// with the request's [`RequestContext`]; the cache and class headers go on its answer.
pub async fn admit<F, Fut>(
    ov: &Overload,
    model: &ModelSlot,
    keep_alive: Duration,
    a: Admission,
    handler: F,
) -> Response
where
    F: FnOnce(Arc<RequestContext>) -> Fut + Send + 'static,
    Fut: Future<Output = Response> + Send + 'static,
{
    if model.is_draining() {
        return unavailable("The server is shutting down.", 5);
    }
    if model.get().is_none() {
        return unavailable("The model is still loading; retry shortly.", 1);
    }
    let class_idx = match ov
        .classes
        .resolve(a.caller.tier.as_deref(), a.priority.as_ref())
    {
        Ok(i) => i,
        Err(e) => return e.into_response(),
    };
    let class = &ov.classes.all()[class_idx];
    let decision = ov.limiter.check(
        &a.caller.limit_key(),
        a.caller.requests_per_min,
        a.caller.tokens_per_min,
        a.tokens,
        Instant::now(),
    );
    let add_limit_headers = |resp: &mut Response| {
        for (name, value) in &decision.headers {
            if let Ok(v) = HeaderValue::from_str(value) {
                resp.headers_mut().insert(*name, v);
            }
        }
        if let Ok(v) = HeaderValue::from_str(&class.name) {
            resp.headers_mut().insert(CLASS_HEADER.clone(), v);
        }
    };
    if let Some((which, wait, message)) = &decision.refused {
        ov.count_rate_limited();
        let kind = match which {
            Limited::Requests => "requests",
            Limited::Tokens => "tokens",
        };
        let retry_after = wait.as_secs_f64().ceil().max(1.0) as u64;
        let mut r = too_many(message.clone(), kind, "rate_limit_exceeded", retry_after);
        add_limit_headers(&mut r);
        return r;
    }
    let queue = ov.queue(class_idx);
    let arrival = Instant::now();
    let deadline = class.max_queue_wait.map(|w| arrival + w);
    let ctx = Arc::new(RequestContext {
        ticket: Mutex::new(None),
        cache: ov.cache.clone(),
        model: model.served_name.clone(),
        priority: class.priority,
        target_itl: class.target_itl,
        cache_status: Mutex::new(None),
    });
    let mut resp = match queue.try_enter(deadline) {
        Some(ticket) => {
            *ctx.ticket.lock().unwrap_or_else(|e| e.into_inner()) = Some(ticket);
            let resp = handler(ctx.clone()).await;
            finish(resp, &ctx, &queue)
        }
        None if class.wait_mode => {
            let limit = deadline.unwrap_or(arrival + DEFAULT_WAIT_MODE_LIMIT);
            let w = Waiting {
                queue: queue.clone(),
                limit,
                deadline,
                keep_alive,
            };
            w.run(a.stream, ctx, handler).await
        }
        None => {
            queue.count_refused();
            too_many(
                format!(
                    "The server is busy: the `{}` queue is full ({} waiting). Please retry \
                     after the time in the Retry-After header.",
                    class.name,
                    queue.queued()
                ),
                "requests",
                "queue_full",
                queue.retry_after(),
            )
        }
    };
    add_limit_headers(&mut resp);
    resp
}

/// After the handler: the cache header, and a drain-based Retry-After on a 503 (a request
/// that waited past its class's `max_queue_wait`).
fn finish(mut resp: Response, c: &RequestContext, queue: &ClassQueue) -> Response {
    if let Some(hit) = *c.cache_status.lock().unwrap_or_else(|e| e.into_inner()) {
        resp.headers_mut().insert(
            CACHE_HEADER.clone(),
            HeaderValue::from_static(if hit { "hit" } else { "miss" }),
        );
    }
    if resp.status() == StatusCode::SERVICE_UNAVAILABLE {
        resp.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            HeaderValue::from(queue.retry_after()),
        );
    }
    resp
}

fn unavailable(message: &str, retry_after: u64) -> Response {
    let mut r = ApiError::unavailable(message).into_response();
    r.headers_mut().insert(
        axum::http::header::RETRY_AFTER,
        HeaderValue::from(retry_after),
    );
    r
}

/// Stops the waiting task when the client goes away (the response body is dropped).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A request that found its class queue full and waits for a place.
struct Waiting {
    pub queue: ClassQueue,
    /// When it stops waiting.
    pub limit: Instant,
    /// The class's `max_queue_wait` deadline, carried by the ticket.
    pub deadline: Option<Instant>,
    pub keep_alive: Duration,
}

impl Waiting {
    /// Wait for a place, then run `handler`; see the module doc for what each kind of
    /// request gets meanwhile.
    async fn run<F, Fut>(self, streaming: bool, ctx: Arc<RequestContext>, handler: F) -> Response
    where
        F: FnOnce(Arc<RequestContext>) -> Fut + Send + 'static,
        Fut: Future<Output = Response> + Send + 'static,
    {
        let Waiting {
            queue,
            limit,
            deadline,
            keep_alive,
        } = self;
        let arrival = Instant::now();
        if !streaming {
            return match queue.wait(limit, deadline, std::future::pending()).await {
                Some(t) => {
                    *ctx.ticket.lock().unwrap_or_else(|e| e.into_inner()) = Some(t);
                    let resp = handler(ctx.clone()).await;
                    finish(resp, &ctx, &queue)
                }
                None => {
                    queue.count_timed_out();
                    let mut r = queue_timeout(queue.name(), arrival.elapsed()).into_response();
                    r.headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from(queue.retry_after()));
                    r
                }
            };
        }
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
        let task = tokio::spawn(async move {
            let Some(ticket) = queue.wait(limit, deadline, tx.closed()).await else {
                if !tx.is_closed() {
                    queue.count_timed_out();
                    let e = queue_timeout(queue.name(), arrival.elapsed());
                    let _ = tx
                        .send(Bytes::from(format!("data: {}\n\n", e.body_json())))
                        .await;
                    let _ = tx.send(Bytes::from_static(DONE.as_bytes())).await;
                }
                return;
            };
            *ctx.ticket.lock().unwrap_or_else(|e| e.into_inner()) = Some(ticket);
            let resp = handler(ctx.clone()).await;
            let is_sse = is_event_stream(&resp);
            if resp.status() == StatusCode::OK && is_sse {
                let mut body = resp.into_body().into_data_stream();
                while let Some(Ok(chunk)) = body.next().await {
                    if tx.send(chunk).await.is_err() {
                        return;
                    }
                }
            } else {
                // An error answer (400, 503, ...): its JSON body becomes the stream's error event.
                let b = axum::body::to_bytes(resp.into_body(), 1 << 20)
                    .await
                    .unwrap_or_default();
                let _ = tx
                    .send(Bytes::from(format!(
                        "data: {}\n\n",
                        String::from_utf8_lossy(&b)
                    )))
                    .await;
                let _ = tx.send(Bytes::from_static(DONE.as_bytes())).await;
            }
        });
        let guard = AbortOnDrop(task);
        let body = futures_util::stream::unfold((rx, guard), move |(mut rx, g)| async move {
            let frame = match tokio::time::timeout(keep_alive, rx.recv()).await {
                Err(_) => Bytes::from_static(KEEP_ALIVE.as_bytes()),
                Ok(b) => b?,
            };
            Some((Ok::<_, std::convert::Infallible>(frame), (rx, g)))
        });
        event_stream_response(Body::from_stream(body))
    }
}
