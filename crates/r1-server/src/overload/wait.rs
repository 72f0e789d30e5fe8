//! Wait mode (opt-in per class): when the class queue is full, the request waits for a place
//! instead of being refused, up to the class's `max_queue_wait`, then gets 503. A streaming
//! request gets its `200` and SSE headers at once and `: keep-alive` comments while it waits,
//! as DeepSeek's API does, so proxies and clients keep the connection; if the wait runs out
//! the stream carries the 503 error object and ends. A non-streaming request just holds the
//! connection and gets a real 503 status. Waiting is on the queue's `Notify` (no polling).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;

use super::admission::{ClassQueue, Ticket};
use super::{finish, queue_timeout, RequestContext};
use crate::sse::{event_stream_response, is_event_stream, DONE, KEEP_ALIVE};

/// Wait for a place in `queue` until `limit`, or until `gone` completes (the client left).
/// No polling: the queue's [`tokio::sync::Notify`] wakes the waiters whenever a place is
/// given back, and they race for it with `try_enter` (the queue's cap is never exceeded).
pub(super) async fn acquire(
    queue: &Arc<ClassQueue>,
    limit: Instant,
    deadline: Option<Instant>,
    gone: impl Future<Output = ()>,
) -> Option<Arc<Ticket>> {
    let limit = tokio::time::Instant::from_std(limit);
    tokio::pin!(gone);
    loop {
        // Registered before looking, so a place freed in between is not missed.
        let freed = queue.freed.notified();
        tokio::pin!(freed);
        freed.as_mut().enable();
        if let Some(t) = queue.try_enter(deadline) {
            return Some(t);
        }
        tokio::select! {
            _ = &mut freed => {}
            _ = tokio::time::sleep_until(limit) => return None,
            _ = &mut gone => return None,
        }
    }
}

/// Stops the waiting task when the client goes away (the response body is dropped).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A request that found its class queue full and waits for a place.
pub(super) struct Waiting {
    pub queue: Arc<ClassQueue>,
    /// When it stops waiting.
    pub limit: Instant,
    /// The class's `max_queue_wait` deadline, carried by the ticket.
    pub deadline: Option<Instant>,
    pub keep_alive: Duration,
}

impl Waiting {
    /// Wait for a place, then run `handler`; see the module doc for what each kind of
    /// request gets meanwhile.
    pub(super) async fn run<F, Fut>(
        self,
        streaming: bool,
        ctx: Arc<RequestContext>,
        handler: F,
    ) -> Response
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
            return match acquire(&queue, limit, deadline, std::future::pending()).await {
                Some(t) => {
                    *ctx.ticket.lock().unwrap_or_else(|e| e.into_inner()) = Some(t);
                    let resp = handler(ctx.clone()).await;
                    finish(resp, &ctx, &queue)
                }
                None => {
                    queue
                        .timed_out
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let mut r = queue_timeout(&queue.name, arrival.elapsed()).into_response();
                    r.headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from(queue.retry_after()));
                    r
                }
            };
        }
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
        let task = tokio::spawn(async move {
            let Some(ticket) = acquire(&queue, limit, deadline, tx.closed()).await else {
                if !tx.is_closed() {
                    queue
                        .timed_out
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let e = queue_timeout(&queue.name, arrival.elapsed());
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

#[cfg(test)]
mod tests {
    use super::*;

    // The clock is paused: a waiter that polled on a timer would move it; one woken by the
    // queue does not.
    #[tokio::test(start_paused = true)]
    async fn a_waiter_gets_a_freed_place_without_polling() {
        let q = ClassQueue::new("normal", Some(1));
        let held = q.try_enter(None).unwrap();
        let t0 = tokio::time::Instant::now();
        let limit = Instant::now() + Duration::from_secs(30);
        let waiter = tokio::spawn({
            let q = q.clone();
            async move { acquire(&q, limit, None, std::future::pending()).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(held);
        let got = waiter.await.unwrap();
        assert!(got.is_some());
        assert_eq!(q.queued(), 1);
        assert_eq!(
            tokio::time::Instant::now(),
            t0,
            "the waiter slept on a timer"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_gives_up_at_its_limit_or_when_the_client_leaves() {
        let q = ClassQueue::new("normal", Some(1));
        let _held = q.try_enter(None).unwrap();
        let t0 = tokio::time::Instant::now();
        let limit = Instant::now() + Duration::from_secs(2);
        assert!(acquire(&q, limit, None, std::future::pending())
            .await
            .is_none());
        let waited = tokio::time::Instant::now() - t0;
        assert!(waited >= Duration::from_secs(2) && waited < Duration::from_millis(2100));
        let far = Instant::now() + Duration::from_secs(3600);
        assert!(acquire(&q, far, None, std::future::ready(()))
            .await
            .is_none());
        assert_eq!(q.queued(), 1);
    }
}
