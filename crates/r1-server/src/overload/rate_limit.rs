//! Per-key token buckets for requests per minute and tokens per minute, answered with
//! OpenAI's `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` headers. A bucket holds
//! a minute's allowance and refills continuously; a request takes one request and its
//! estimated tokens from the two buckets of its key, or from neither (429) when either is short.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Buckets are forgotten once this many keys exist and they are full again (an idle key).
const MAX_KEYS: usize = 10_000;

/// A bucket of `capacity` units refilling at `capacity` per minute.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenBucket {
    capacity: f64,
    level: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(per_min: u32, now: Instant) -> Self {
        TokenBucket {
            capacity: f64::from(per_min),
            level: f64::from(per_min),
            last: now,
        }
    }

    fn per_sec(&self) -> f64 {
        self.capacity / 60.0
    }

    pub fn limit(&self) -> u32 {
        self.capacity as u32
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.level = (self.level + dt * self.per_sec()).min(self.capacity);
        self.last = now;
    }

    /// Whole units available now.
    pub fn remaining(&mut self, now: Instant) -> u64 {
        self.refill(now);
        self.level.max(0.0).floor() as u64
    }

    /// How long until `n` units are available (zero if they are now; `None` if `n` is more
    /// than the bucket ever holds).
    pub fn wait_for(&mut self, n: u64, now: Instant) -> Option<Duration> {
        self.refill(now);
        let n = n as f64;
        if n > self.capacity {
            return None;
        }
        if self.level >= n {
            return Some(Duration::ZERO);
        }
        Some(Duration::from_secs_f64((n - self.level) / self.per_sec()))
    }

    pub fn take(&mut self, n: u64, now: Instant) {
        self.refill(now);
        self.level -= n as f64;
    }

    /// Time until the bucket is full again (OpenAI's `reset`).
    pub fn reset_after(&mut self, now: Instant) -> Duration {
        self.refill(now);
        if self.capacity <= 0.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64((self.capacity - self.level).max(0.0) / self.per_sec())
    }

    fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.level >= self.capacity
    }
}

/// OpenAI's duration format in the reset headers: `120ms`, `1.5s`, `6m0s`.
pub fn format_reset(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        let s = format!("{:.3}", d.as_secs_f64());
        let s = s.trim_end_matches('0').trim_end_matches('.');
        format!("{s}s")
    } else {
        let secs = d.as_secs();
        format!("{}m{}s", secs / 60, secs % 60)
    }
}

/// Which limit refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limited {
    Requests,
    Tokens,
}

/// The outcome of a check: headers for the response, and a refusal if any.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Decision {
    pub headers: Vec<(&'static str, String)>,
    /// (which limit, wait before a retry could pass, message).
    pub refused: Option<(Limited, Duration, String)>,
}

#[derive(Debug)]
struct KeyBuckets {
    requests: Option<TokenBucket>,
    tokens: Option<TokenBucket>,
}

/// The server's rate limiter. Without limits it passes everything and adds no headers.
#[derive(Debug)]
pub struct RateLimiter {
    requests_per_min: Option<u32>,
    tokens_per_min: Option<u32>,
    keys: Mutex<HashMap<String, KeyBuckets>>,
}

impl RateLimiter {
    pub fn new(requests_per_min: Option<u32>, tokens_per_min: Option<u32>) -> Self {
        RateLimiter {
            requests_per_min: requests_per_min.filter(|&n| n > 0),
            tokens_per_min: tokens_per_min.filter(|&n| n > 0),
            keys: Mutex::new(HashMap::new()),
        }
    }

    /// Charge one request of `tokens` (estimated) to `key`, whose own limits (from its API
    /// key) override the server's.
    pub fn check(
        &self,
        key: &str,
        rpm_override: Option<u32>,
        tpm_override: Option<u32>,
        tokens: u64,
        now: Instant,
    ) -> Decision {
        let rpm = rpm_override.or(self.requests_per_min).filter(|&n| n > 0);
        let tpm = tpm_override.or(self.tokens_per_min).filter(|&n| n > 0);
        if rpm.is_none() && tpm.is_none() {
            return Decision::default();
        }
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        if keys.len() >= MAX_KEYS && !keys.contains_key(key) {
            keys.retain(|_, b| {
                !(b.requests.as_mut().is_none_or(|r| r.is_full(now))
                    && b.tokens.as_mut().is_none_or(|t| t.is_full(now)))
            });
        }
        let b = keys.entry(key.to_string()).or_insert(KeyBuckets {
            requests: None,
            tokens: None,
        });
        // A changed limit (config or key override) starts a fresh bucket.
        sync_bucket(&mut b.requests, rpm, now);
        sync_bucket(&mut b.tokens, tpm, now);
        let mut refused = None;
        if let Some(r) = &mut b.requests {
            match r.wait_for(1, now) {
                Some(w) if w.is_zero() => {}
                w => {
                    let w = w.unwrap_or(Duration::from_secs(60));
                    refused = Some((
                        Limited::Requests,
                        w,
                        format!(
                            "Rate limit reached for requests per min (RPM): Limit {}, \
                             Remaining 0. Please try again in {}.",
                            r.limit(),
                            format_reset(w)
                        ),
                    ));
                }
            }
        }
        if let (None, Some(t)) = (&refused, &mut b.tokens) {
            match t.wait_for(tokens, now) {
                Some(w) if w.is_zero() => {}
                Some(w) => {
                    refused = Some((
                        Limited::Tokens,
                        w,
                        format!(
                            "Rate limit reached for tokens per min (TPM): Limit {}, Remaining \
                             {}, Requested {tokens}. Please try again in {}.",
                            t.limit(),
                            t.remaining(now),
                            format_reset(w)
                        ),
                    ));
                }
                None => {
                    refused = Some((
                        Limited::Tokens,
                        Duration::from_secs(60),
                        format!(
                            "Request too large: about {tokens} tokens (prompt plus max_tokens) \
                             exceeds the limit of {} tokens per min (TPM). Lower max_tokens or \
                             shorten the prompt.",
                            t.limit()
                        ),
                    ));
                }
            }
        }
        if refused.is_none() {
            if let Some(r) = &mut b.requests {
                r.take(1, now);
            }
            if let Some(t) = &mut b.tokens {
                t.take(tokens, now);
            }
        }
        let mut headers = Vec::new();
        if let Some(r) = &mut b.requests {
            headers.push(("x-ratelimit-limit-requests", r.limit().to_string()));
            headers.push((
                "x-ratelimit-remaining-requests",
                r.remaining(now).to_string(),
            ));
            headers.push((
                "x-ratelimit-reset-requests",
                format_reset(r.reset_after(now)),
            ));
        }
        if let Some(t) = &mut b.tokens {
            headers.push(("x-ratelimit-limit-tokens", t.limit().to_string()));
            headers.push(("x-ratelimit-remaining-tokens", t.remaining(now).to_string()));
            headers.push(("x-ratelimit-reset-tokens", format_reset(t.reset_after(now))));
        }
        Decision { headers, refused }
    }
}

fn sync_bucket(b: &mut Option<TokenBucket>, limit: Option<u32>, now: Instant) {
    match (limit, b.as_ref()) {
        (None, _) => *b = None,
        (Some(l), Some(cur)) if cur.limit() == l => {}
        (Some(l), _) => *b = Some(TokenBucket::new(l, now)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(d: &'a Decision, name: &str) -> &'a str {
        d.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no {name} in {:?}", d.headers))
    }

    #[test]
    fn bucket_refills_continuously_up_to_capacity() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(60, t0); // one per second
        b.take(60, t0);
        assert_eq!(b.remaining(t0), 0);
        let w = b.wait_for(1, t0).unwrap();
        assert!((w.as_secs_f64() - 1.0).abs() < 1e-6, "{w:?}");
        assert_eq!(b.remaining(t0 + Duration::from_millis(2500)), 2);
        assert_eq!(b.remaining(t0 + Duration::from_secs(600)), 60);
        assert_eq!(b.wait_for(61, t0), None);
        b.take(30, t0 + Duration::from_secs(600));
        let r = b.reset_after(t0 + Duration::from_secs(600));
        assert!((r.as_secs_f64() - 30.0).abs() < 1e-6, "{r:?}");
    }

    #[test]
    fn requests_per_minute_refuses_when_empty_and_recovers() {
        let rl = RateLimiter::new(Some(3), None);
        let t0 = Instant::now();
        for left in [2, 1, 0] {
            let d = rl.check("ip:1", None, None, 10, t0);
            assert!(d.refused.is_none());
            assert_eq!(
                header(&d, "x-ratelimit-remaining-requests"),
                left.to_string()
            );
            assert_eq!(header(&d, "x-ratelimit-limit-requests"), "3");
        }
        let d = rl.check("ip:1", None, None, 10, t0);
        let (which, wait, msg) = d.refused.clone().unwrap();
        assert_eq!(which, Limited::Requests);
        assert!((wait.as_secs_f64() - 20.0).abs() < 1e-6, "{wait:?}"); // 3/min: one per 20 s
        assert!(msg.contains("Limit 3"), "{msg}");
        assert_eq!(header(&d, "x-ratelimit-reset-requests"), "1m0s");
        // Another key has its own bucket.
        assert!(rl.check("ip:2", None, None, 10, t0).refused.is_none());
        // 20 s later one request passes again (and only one).
        let t1 = t0 + Duration::from_millis(20_100);
        assert!(rl.check("ip:1", None, None, 10, t1).refused.is_none());
        assert!(rl.check("ip:1", None, None, 10, t1).refused.is_some());
    }

    #[test]
    fn tokens_per_minute_and_refusals_take_nothing() {
        let rl = RateLimiter::new(Some(100), Some(1000));
        let t0 = Instant::now();
        assert!(rl.check("k", None, None, 900, t0).refused.is_none());
        let d = rl.check("k", None, None, 200, t0);
        let (which, wait, _) = d.refused.clone().unwrap();
        assert_eq!(which, Limited::Tokens);
        // 100 missing at 1000/min: 6 s.
        assert!((wait.as_secs_f64() - 6.0).abs() < 1e-6, "{wait:?}");
        // The refused request charged neither bucket.
        assert_eq!(header(&d, "x-ratelimit-remaining-requests"), "99");
        assert_eq!(header(&d, "x-ratelimit-remaining-tokens"), "100");
        assert!(rl.check("k", None, None, 100, t0).refused.is_none());
        // Larger than a minute's allowance: refused with a message saying so.
        let d = rl.check("big", None, None, 5000, t0);
        assert!(d.refused.unwrap().2.contains("Request too large"));
    }

    #[test]
    fn per_key_overrides_and_no_limits() {
        let rl = RateLimiter::new(Some(1), None);
        let t0 = Instant::now();
        assert!(rl.check("user:a", Some(5), None, 1, t0).refused.is_none());
        assert!(rl.check("user:a", Some(5), None, 1, t0).refused.is_none());
        assert!(rl.check("ip:x", None, None, 1, t0).refused.is_none());
        assert!(rl.check("ip:x", None, None, 1, t0).refused.is_some());
        let none = RateLimiter::new(None, Some(0));
        assert_eq!(
            none.check("k", None, None, 1_000_000, t0),
            Decision::default()
        );
    }

    #[test]
    fn reset_format_matches_openai() {
        assert_eq!(format_reset(Duration::from_millis(120)), "120ms");
        assert_eq!(format_reset(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_reset(Duration::from_secs(7)), "7s");
        assert_eq!(format_reset(Duration::from_secs(360)), "6m0s");
    }
}
