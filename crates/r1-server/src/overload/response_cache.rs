//! Response cache for deterministic requests (temperature 0, or a fixed seed): the engine's
//! event stream of a finished request, keyed by an exact match on the model, the prompt's
//! token ids and every parameter that shapes the output. A hit replays the events, so
//! streaming and non-streaming answers (and both endpoints) come out as the engine made them.
//! LRU, bounded in bytes, with a time to live: a `moka` cache.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use moka::notification::RemovalCause;
use moka::policy::EvictionPolicy;
use moka::sync::Cache;
use r1_engine::engine::{EngineEvent, Finish, GenerateRequest};

pub use crate::backend::EventStream;

/// Bytes charged per cached event beyond its text (enum, vectors, bookkeeping).
const EVENT_OVERHEAD: usize = 64;
/// Bytes charged per entry beyond its key and events.
const ENTRY_OVERHEAD: usize = 128;

/// What identifies a response exactly.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CacheKey {
    model: String,
    prompt: Vec<u32>,
    /// Every output-shaping parameter, printed exactly (`{:?}` of floats round-trips).
    params: String,
}

impl CacheKey {
    /// The key of a deterministic request; `None` when its output is random.
    pub fn for_request(model: &str, r: &GenerateRequest) -> Option<CacheKey> {
        let p = &r.params;
        if p.temperature != 0.0 && p.seed.is_none() {
            return None;
        }
        // A constraint is not part of the key (it is opaque): never answer a constrained
        // request with a free one's output, or the reverse.
        if r.constraint.is_some() {
            return None;
        }
        let params = format!(
            "{:?}|{}|{:?}|{:?}|{}|{}|{:?}|{}",
            p,
            r.max_tokens,
            r.stop_ids,
            r.stop_strings,
            r.ignore_eos,
            r.n,
            r.logprobs,
            r.skip_special_tokens
        );
        Some(CacheKey {
            model: model.to_string(),
            prompt: r.prompt.clone(),
            params,
        })
    }

    fn bytes(&self) -> usize {
        self.model.len() + self.prompt.len() * 4 + self.params.len()
    }
}

fn event_bytes(e: &EngineEvent) -> usize {
    EVENT_OVERHEAD
        + match e {
            EngineEvent::Token { text, logprob, .. } => {
                text.len() + logprob.as_ref().map_or(0, |l| 8 + l.top.len() * 8)
            }
            EngineEvent::Finished { text, .. } => text.len(),
            EngineEvent::Error(_) | EngineEvent::Admitted { .. } => 0,
        }
}

/// A cached response: the events and what they are charged.
struct Entry {
    events: Arc<Vec<EngineEvent>>,
    bytes: usize,
}

/// Counters and sizes of the response cache.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ResponseCacheStats {
    pub enabled: bool,
    pub hits: u64,
    pub misses: u64,
    pub inserts: u64,
    pub evictions: u64,
    pub expired: u64,
    /// Bytes of cached responses replayed.
    pub hit_bytes: u64,
    pub entries: usize,
    pub bytes: usize,
    pub capacity_bytes: usize,
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    inserts: AtomicU64,
    evictions: AtomicU64,
    expired: AtomicU64,
    hit_bytes: AtomicU64,
}

/// A moka cache: least recently used first out when the bytes run over the capacity, and a
/// time to live per entry; our counters come from its eviction listener.
pub struct ResponseCache {
    capacity: usize,
    cache: Cache<CacheKey, Arc<Entry>>,
    counters: Arc<Counters>,
}

impl ResponseCache {
    /// `capacity` bytes (0 turns the cache off); entries live `ttl`.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        let counters = Arc::new(Counters::default());
        let listen = counters.clone();
        let cache = Cache::builder()
            .max_capacity(capacity as u64)
            .weigher(|_, e: &Arc<Entry>| e.bytes.try_into().unwrap_or(u32::MAX))
            .time_to_live(ttl)
            .eviction_policy(EvictionPolicy::lru())
            .eviction_listener(move |_, _, cause| {
                let c = match cause {
                    RemovalCause::Size => &listen.evictions,
                    RemovalCause::Expired => &listen.expired,
                    RemovalCause::Explicit | RemovalCause::Replaced => return,
                };
                c.fetch_add(1, Ordering::Relaxed);
            })
            .build();
        ResponseCache {
            capacity,
            cache,
            counters,
        }
    }

    pub fn enabled(&self) -> bool {
        self.capacity > 0
    }

    pub fn get(&self, key: &CacheKey) -> Option<Arc<Vec<EngineEvent>>> {
        if !self.enabled() {
            return None;
        }
        let c = &self.counters;
        match self.cache.get(key) {
            Some(e) => {
                c.hits.fetch_add(1, Ordering::Relaxed);
                c.hit_bytes.fetch_add(e.bytes as u64, Ordering::Relaxed);
                Some(e.events.clone())
            }
            None => {
                c.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    pub fn insert(&self, key: CacheKey, events: Vec<EngineEvent>) {
        if !self.enabled() {
            return;
        }
        let bytes =
            ENTRY_OVERHEAD + key.bytes() * 2 + events.iter().map(event_bytes).sum::<usize>();
        if bytes > self.capacity {
            return;
        }
        let events = Arc::new(events);
        self.cache.insert(key, Arc::new(Entry { events, bytes }));
        // Evict now rather than on a later call, so the bytes never stay over the capacity.
        self.cache.run_pending_tasks();
        self.counters.inserts.fetch_add(1, Ordering::Relaxed);
    }

    /// Drop every entry; returns how many there were.
    pub fn flush(&self) -> usize {
        self.cache.run_pending_tasks();
        let n = self.cache.entry_count() as usize;
        self.cache.invalidate_all();
        self.cache.run_pending_tasks();
        n
    }

    pub fn stats(&self) -> ResponseCacheStats {
        self.cache.run_pending_tasks();
        let c = &self.counters;
        ResponseCacheStats {
            enabled: self.enabled(),
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            inserts: c.inserts.load(Ordering::Relaxed),
            evictions: c.evictions.load(Ordering::Relaxed),
            expired: c.expired.load(Ordering::Relaxed),
            hit_bytes: c.hit_bytes.load(Ordering::Relaxed),
            entries: self.cache.entry_count() as usize,
            bytes: self.cache.weighted_size() as usize,
            capacity_bytes: self.capacity,
        }
    }
}

/// Where a request's engine events come from.
pub enum Source {
    /// The engine; with `Some`, a complete successful run is recorded into the cache.
    Live(EventStream, Option<Recorder>),
    /// A cache hit.
    Replay(Arc<Vec<EngineEvent>>, usize),
}

/// Collects a live run's events for the cache.
pub struct Recorder {
    pub cache: Arc<ResponseCache>,
    pub key: CacheKey,
    pub choices: usize,
    events: Vec<EngineEvent>,
    finished: usize,
    ok: bool,
}

impl Recorder {
    pub fn new(cache: Arc<ResponseCache>, key: CacheKey, choices: usize) -> Self {
        Recorder {
            cache,
            key,
            choices,
            events: Vec::new(),
            finished: 0,
            ok: true,
        }
    }

    fn see(&mut self, e: &EngineEvent) {
        if !self.ok {
            return;
        }
        match e {
            EngineEvent::Admitted { .. } => return,
            EngineEvent::Error(_)
            | EngineEvent::Finished {
                reason: Finish::Cancelled,
                ..
            } => {
                self.ok = false;
                return;
            }
            EngineEvent::Finished { .. } => self.finished += 1,
            EngineEvent::Token { .. } => {}
        }
        self.events.push(e.clone());
        if self.finished == self.choices {
            self.ok = false; // recorded once
            self.cache
                .insert(self.key.clone(), std::mem::take(&mut self.events));
        }
    }
}

impl Source {
    pub fn into_events(self) -> EventStream {
        match self {
            Source::Live(rs, rec) => {
                Box::pin(stream::unfold((rs, rec), |(mut rs, mut rec)| async move {
                    let e = rs.next().await?;
                    if let Some(r) = &mut rec {
                        r.see(&e);
                    }
                    Some((e, (rs, rec)))
                }))
            }
            Source::Replay(events, prompt_len) => {
                let admitted = EngineEvent::Admitted {
                    cached_tokens: prompt_len,
                };
                let all =
                    std::iter::once(admitted).chain(events.iter().cloned().collect::<Vec<_>>());
                Box::pin(stream::iter(all))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(prompt: Vec<u32>, temperature: f32, seed: Option<u64>) -> Option<CacheKey> {
        let mut r = GenerateRequest::new(prompt, 8);
        r.params.temperature = temperature;
        r.params.seed = seed;
        CacheKey::for_request("m", &r)
    }

    fn events(text: &str) -> Vec<EngineEvent> {
        vec![
            EngineEvent::Token {
                index: 0,
                token: 1,
                text: text.to_string(),
                logprob: None,
            },
            EngineEvent::Finished {
                index: 0,
                reason: Finish::Stop,
                text: String::new(),
                completion_tokens: 1,
            },
        ]
    }

    #[test]
    fn only_deterministic_requests_have_keys_and_keys_are_exact() {
        assert!(key(vec![1, 2], 0.7, None).is_none());
        assert!(key(vec![1, 2], 0.7, Some(3)).is_some());
        let a = key(vec![1, 2], 0.0, None).unwrap();
        assert_ne!(a, key(vec![1, 3], 0.0, None).unwrap());
        assert_ne!(a, key(vec![1, 2], 0.0, Some(1)).unwrap());
        let mut r = GenerateRequest::new(vec![1, 2], 8);
        r.params.temperature = 0.0;
        r.priority = 100; // does not shape the output
        assert_eq!(CacheKey::for_request("m", &r).unwrap(), a);
        r.max_tokens = 9;
        assert_ne!(CacheKey::for_request("m", &r).unwrap(), a);
        r.max_tokens = 8;
        assert_ne!(CacheKey::for_request("other", &r).unwrap(), a);
    }

    #[test]
    fn hits_misses_lru_eviction_by_bytes_and_flush() {
        let k = |i: u32| key(vec![i; 10], 0.0, None).unwrap();
        let one = ENTRY_OVERHEAD + k(0).bytes() * 2 + 2 * EVENT_OVERHEAD + 5;
        let c = ResponseCache::new(3 * one, Duration::from_secs(60));
        assert!(c.get(&k(1)).is_none());
        for i in 1..=3 {
            c.insert(k(i), events("hello"));
        }
        assert_eq!(c.stats().bytes, 3 * one);
        assert_eq!(c.get(&k(1)).unwrap().len(), 2); // 1 is now the most recent
        c.insert(k(4), events("hello")); // evicts 2, the least recent
        assert!(c.get(&k(2)).is_none());
        assert!(c.get(&k(1)).is_some() && c.get(&k(3)).is_some() && c.get(&k(4)).is_some());
        let s = c.stats();
        assert_eq!((s.entries, s.evictions, s.hits, s.misses), (3, 1, 4, 2));
        assert_eq!(s.hit_bytes, 4 * one as u64);
        // Larger than the whole cache: not stored, nothing evicted.
        c.insert(k(5), events(&"x".repeat(4 * one)));
        assert_eq!(c.stats().entries, 3);
        assert_eq!(c.flush(), 3);
        assert_eq!(c.stats().bytes, 0);
        assert!(c.get(&k(1)).is_none());
    }

    #[test]
    fn entries_expire_and_a_disabled_cache_stores_nothing() {
        let c = ResponseCache::new(1 << 20, Duration::from_millis(300));
        let k = key(vec![7], 0.0, None).unwrap();
        c.insert(k.clone(), events("a"));
        assert!(c.get(&k).is_some());
        std::thread::sleep(Duration::from_millis(400));
        assert!(c.get(&k).is_none());
        let s = c.stats();
        assert_eq!((s.expired, s.entries, s.bytes), (1, 0, 0));
        let off = ResponseCache::new(0, Duration::from_secs(10));
        off.insert(k.clone(), events("a"));
        assert!(off.get(&k).is_none());
        assert_eq!(off.stats().entries, 0);
    }

    #[test]
    fn recorder_stores_complete_runs_only() {
        let cache = Arc::new(ResponseCache::new(1 << 20, Duration::from_secs(60)));
        let k = key(vec![1], 0.0, None).unwrap();
        let mut r = Recorder::new(cache.clone(), k.clone(), 1);
        r.see(&EngineEvent::Admitted { cached_tokens: 0 });
        for e in events("hi") {
            r.see(&e);
        }
        assert_eq!(cache.get(&k).unwrap().len(), 2);
        let k2 = key(vec![2], 0.0, None).unwrap();
        let mut r = Recorder::new(cache.clone(), k2.clone(), 1);
        r.see(&events("x")[0]);
        r.see(&EngineEvent::Finished {
            index: 0,
            reason: Finish::Cancelled,
            text: String::new(),
            completion_tokens: 1,
        });
        assert!(cache.get(&k2).is_none());
    }
}
