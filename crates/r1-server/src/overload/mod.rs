//! Overload handling in front of the generation routes, so that the server answers a busy
//! hour with fast, honest refusals instead of timeouts: priority classes, a bounded waiting
//! queue per class (429 with `Retry-After`), an opt-in wait mode, per-key rate limits, and a
//! response cache for deterministic requests. Adaptive batching lives in the engine; the
//! class's latency target reaches it through the request.
//!
//! `routes/admit.rs` runs admission once a handler has parsed its typed request (see
//! `crate::extract`): the class (from the API key's tier or the request's `priority`; its
//! scheduler priority is what the engine request carries, so a client can only claim a class
//! the configuration lets it claim), the rate limit, a place in the class queue, then the rest
//! of the handler with a [`RequestContext`] value that `generation::submit` uses for the queue
//! ticket, the cache and the latency target. Nothing here knows HTTP responses.

pub mod admission;
pub mod classes;
pub mod rate_limit;
pub mod response_cache;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::HeaderName;
use serde_json::Value;

use crate::caller::Caller;
use crate::error::ApiError;
use admission::{AdmissionQueue, ClassQueue, Ticket};
use classes::{ClassConfig, Classes};
use rate_limit::RateLimiter;
use response_cache::{ResponseCache, ResponseCacheStats};

/// Cache status header of generation responses.
pub static CACHE_HEADER: HeaderName = HeaderName::from_static("x-r1serve-cache");
/// The priority class a request ran in.
pub static CLASS_HEADER: HeaderName = HeaderName::from_static("x-r1serve-priority-class");
/// Output tokens assumed for the tokens-per-minute estimate when `max_tokens` is absent.
pub const DEFAULT_MAX_TOKENS_ESTIMATE: u64 = 256;
/// How long a wait-mode request waits for a place when its class sets no `max_queue_wait`.
pub const DEFAULT_WAIT_MODE_LIMIT: Duration = Duration::from_secs(60);

/// The overload settings (the `serve` flags).
#[derive(Clone, Debug)]
pub struct OverloadConfig {
    pub classes: Vec<ClassConfig>,
    pub default_class: String,
    /// Let a request pick its class with its `priority` field (an API-key tier always wins).
    pub allow_request_priority: bool,
    pub requests_per_min: Option<u32>,
    pub tokens_per_min: Option<u32>,
    /// Response cache size in bytes (0: off).
    pub response_cache_bytes: usize,
    pub response_cache_ttl: Duration,
}

impl Default for OverloadConfig {
    fn default() -> Self {
        OverloadConfig {
            classes: classes::default_classes(),
            default_class: "normal".into(),
            allow_request_priority: true,
            requests_per_min: None,
            tokens_per_min: None,
            response_cache_bytes: 0,
            response_cache_ttl: Duration::from_secs(600),
        }
    }
}

impl OverloadConfig {
    /// Check the settings (the CLI calls this to report mistakes before serving).
    pub fn validate(&self) -> Result<(), String> {
        Classes::new(
            self.classes.clone(),
            &self.default_class,
            self.allow_request_priority,
        )
        .map(|_| ())
    }
}

/// Per-class counters for the stats snapshot.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ClassStats {
    pub name: String,
    pub priority: i32,
    pub queued: usize,
    pub max_queue: Option<usize>,
    pub admitted: u64,
    pub refused_queue_full: u64,
    pub timed_out: u64,
    pub drain_per_sec: Option<f64>,
}

/// A snapshot of the overload machinery (for metrics and the stats route).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct OverloadStats {
    pub classes: Vec<ClassStats>,
    pub rate_limited: u64,
    pub response_cache: ResponseCacheStats,
}

pub struct Overload {
    pub classes: Classes,
    /// The one admission queue (every class's places and waiters).
    queue: Arc<AdmissionQueue>,
    pub limiter: RateLimiter,
    pub cache: Arc<ResponseCache>,
    rate_limited: std::sync::atomic::AtomicU64,
}

impl Overload {
    /// The queue of the class at `idx` in [`Classes::all`].
    pub fn queue(&self, idx: usize) -> ClassQueue {
        self.queue.class(idx)
    }

    /// A request refused by the rate limits.
    pub fn count_rate_limited(&self) {
        self.rate_limited
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Build from settings; invalid ones (see [`OverloadConfig::validate`]) fall back to the
    /// default classes, logged.
    pub fn new(cfg: &OverloadConfig) -> Self {
        let classes = Classes::new(
            cfg.classes.clone(),
            &cfg.default_class,
            cfg.allow_request_priority,
        )
        .unwrap_or_else(|e| {
            tracing::error!("overload settings: {e}; using the default classes");
            Classes::new(
                classes::default_classes(),
                "normal",
                cfg.allow_request_priority,
            )
            .expect("the default classes are valid")
        });
        let queue = AdmissionQueue::new(classes.all());
        Overload {
            classes,
            queue,
            limiter: RateLimiter::new(cfg.requests_per_min, cfg.tokens_per_min),
            cache: Arc::new(ResponseCache::new(
                cfg.response_cache_bytes,
                cfg.response_cache_ttl,
            )),
            rate_limited: Default::default(),
        }
    }

    pub fn stats(&self) -> OverloadStats {
        OverloadStats {
            classes: self
                .classes
                .all()
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let q = self.queue.class(i);
                    ClassStats {
                        name: c.name.clone(),
                        priority: c.priority,
                        queued: q.queued(),
                        max_queue: c.max_queue,
                        admitted: q.admitted(),
                        refused_queue_full: q.refused(),
                        timed_out: q.timed_out(),
                        drain_per_sec: q.drain_rate(),
                    }
                })
                .collect(),
            rate_limited: self.rate_limited.load(std::sync::atomic::Ordering::Relaxed),
            response_cache: self.cache.stats(),
        }
    }

    pub fn cache_stats(&self) -> ResponseCacheStats {
        self.cache.stats()
    }

    /// Empty the response cache (the admin route calls this); returns the entries dropped.
    pub fn flush_cache(&self) -> usize {
        self.cache.flush()
    }
}

/// Tokens a request may use, for the tokens-per-minute limit: about a quarter of the
/// prompt's bytes plus `max_tokens` (or [`DEFAULT_MAX_TOKENS_ESTIMATE`]) per choice.
pub fn estimate_tokens(prompt_bytes: usize, max_tokens: Option<u32>, n: Option<u32>) -> u64 {
    let max_out = max_tokens.map_or(DEFAULT_MAX_TOKENS_ESTIMATE, u64::from);
    let n = u64::from(n.unwrap_or(1).max(1));
    (prompt_bytes as u64).div_ceil(4) + max_out.saturating_mul(n)
}

/// What the handler of one request sees of admission control.
pub struct RequestContext {
    /// The queue place, taken by `generation::submit` (dropped with the context otherwise).
    pub ticket: Mutex<Option<Arc<Ticket>>>,
    pub cache: Arc<ResponseCache>,
    /// The served model's name (part of the cache key).
    pub model: String,
    /// The scheduler priority of the request's class (what the engine request carries).
    pub priority: i32,
    pub target_itl: Option<Duration>,
    /// Set by `generation::submit`: whether the answer came from the cache.
    pub cache_status: Mutex<Option<bool>>,
}

/// What admission needs to know about a generation request, taken from its typed body.
pub struct Admission {
    pub caller: Caller,
    /// The request's `priority` field: a class name or a number (see [`Classes::resolve`]).
    pub priority: Option<Value>,
    pub stream: bool,
    /// Tokens it may use, for the tokens-per-minute limit (see [`estimate_tokens`]).
    pub tokens: u64,
}

/// The 503 of a request that waited past its class's `max_queue_wait`.
pub fn queue_timeout(class: &str, waited: Duration) -> ApiError {
    ApiError::unavailable(format!(
        "The server is busy: the request waited {:.1}s in the `{class}` queue without being \
         scheduled. Please retry later.",
        waited.as_secs_f64()
    ))
    .with_code("queue_timeout")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_estimates() {
        // 8 bytes of prompt, 10 new tokens.
        assert_eq!(estimate_tokens(8, Some(10), None), 2 + 10);
        // No max_tokens: the default per choice.
        assert_eq!(
            estimate_tokens(8, None, Some(2)),
            2 + 2 * DEFAULT_MAX_TOKENS_ESTIMATE
        );
        // n = 0 counts as one choice; bytes round up.
        assert_eq!(estimate_tokens(5, Some(3), Some(0)), 2 + 3);
    }
}
