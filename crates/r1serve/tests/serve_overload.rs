//! Overload handling on a real server (smollm2): a flood against tiny queue caps gets fast
//! 429s with Retry-After while VIP requests still finish ahead of the queued ones; rate-limit
//! headers and refusals; the response cache (hit/miss, streams replayed); a queue wait that
//! runs out gives 503; bad priority classes are 400.

mod serve_support;

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use serve_support::{read_sse, Server};

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
    /// Seconds from send to the complete answer.
    secs: f64,
    /// When it finished, since the test's start.
    done_at: f64,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

fn post(s: &Server, path: &str, body: &Value, t0: Instant) -> Answer {
    let t = Instant::now();
    let r = ureq::post(&s.url(path))
        .timeout(Duration::from_secs(120))
        .set("Content-Type", "application/json")
        .send_string(&body.to_string());
    let r = match r {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("POST {path}: {e}"),
    };
    let headers = r
        .headers_names()
        .into_iter()
        .map(|n| {
            let v = r.header(&n).unwrap_or("").to_string();
            (n, v)
        })
        .collect();
    let status = r.status();
    let body = r.into_string().unwrap();
    Answer {
        status,
        headers,
        body,
        secs: t.elapsed().as_secs_f64(),
        done_at: t0.elapsed().as_secs_f64(),
    }
}

fn completion(i: usize, priority: &str, max_tokens: u32) -> Value {
    json!({
        "prompt": format!("Request {i}: tell me a long story about the sea and the ships"),
        "max_tokens": max_tokens,
        "ignore_eos": true,
        "temperature": 0,
        "priority": priority,
    })
}

#[test]
fn a_flood_gets_fast_429s_and_vip_requests_still_finish_first() {
    let Some(s) = Server::start(&[
        "--max-num-seqs",
        "2",
        "--max-queue",
        "normal=2",
        "--max-queue",
        "vip=8",
    ]) else {
        eprintln!("SKIP: smollm2.gguf missing (scripts/fetch-models.sh)");
        return;
    };
    let s = Arc::new(s);
    let t0 = Instant::now();
    let send = |i: usize, max_tokens: u32, barrier: Option<Arc<Barrier>>| {
        let s = s.clone();
        std::thread::spawn(move || {
            if let Some(b) = barrier {
                b.wait();
            }
            post(
                &s,
                "/v1/completions",
                &completion(i, "normal", max_tokens),
                t0,
            )
        })
    };
    // Two long requests take both running slots first. Sending all at once instead lets a
    // slow machine refuse everything after the first two tickets, before the engine has
    // admitted either, and the queue never fills.
    let mut normals: Vec<_> = (0..2).map(|i| send(i, 400, None)).collect();
    serve_support::wait_until(60, "two running normal requests", || {
        let (_, v) = s.get("/v1/overload/stats");
        v["classes"][1]["admitted"] == 2
    });
    // Then the flood: two of it queue, the rest are refused.
    let n_flood = 22;
    let barrier = Arc::new(Barrier::new(n_flood));
    normals.extend((2..2 + n_flood).map(|i| send(i, 48, Some(barrier.clone()))));
    let n_normal = normals.len();
    // Once the normal queue is full, VIPs arrive.
    serve_support::wait_until(60, "the normal queue to fill", || {
        let (_, v) = s.get("/v1/overload/stats");
        v["classes"][1]["queued"] == 2
    });
    let vip_sent = t0.elapsed().as_secs_f64();
    let vips: Vec<_> = (0..3)
        .map(|i| {
            let s = s.clone();
            std::thread::spawn(move || {
                post(&s, "/v1/completions", &completion(100 + i, "vip", 8), t0)
            })
        })
        .collect();
    let normals: Vec<Answer> = normals.into_iter().map(|h| h.join().unwrap()).collect();
    let vips: Vec<Answer> = vips.into_iter().map(|h| h.join().unwrap()).collect();

    let ok: Vec<&Answer> = normals.iter().filter(|a| a.status == 200).collect();
    let refused: Vec<&Answer> = normals.iter().filter(|a| a.status == 429).collect();
    assert_eq!(
        ok.len() + refused.len(),
        n_normal,
        "only 200 and 429 expected"
    );
    assert!(
        ok.len() >= 4 && refused.len() >= 10,
        "{} ok, {} refused",
        ok.len(),
        refused.len()
    );
    for r in &refused {
        let e = r.json();
        assert_eq!(e["error"]["code"], "queue_full", "{}", r.body);
        assert_eq!(e["error"]["type"], "requests");
        assert!(e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`normal` queue is full"));
        let ra: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=60).contains(&ra), "Retry-After {ra}");
        assert_eq!(r.header("x-r1serve-priority-class"), Some("normal"));
        // Refused at once, not after a wait (generous: the machine is shared).
        assert!(r.secs < 2.0, "a 429 took {:.3}s", r.secs);
    }
    for v in &vips {
        assert_eq!(v.status, 200, "{}", v.body);
        assert_eq!(v.header("x-r1serve-priority-class"), Some("vip"));
        assert!(v.secs < 30.0, "a VIP request took {:.1}s", v.secs);
    }
    // The normal requests still running or queued when the VIPs came finish after them:
    // VIPs jumped the queue (and preempted a running one).
    let last_vip = vips.iter().map(|v| v.done_at).fold(0.0, f64::max);
    let last_normal = ok.iter().map(|a| a.done_at).fold(0.0, f64::max);
    assert!(
        last_normal > last_vip,
        "VIPs sent at {vip_sent:.2}s finished at {last_vip:.2}s, after the last normal ({last_normal:.2}s)"
    );
    let (_, st) = s.get("/v1/overload/stats");
    assert_eq!(
        st["classes"][1]["refused_queue_full"],
        refused.len() as u64,
        "{st}"
    );
    assert_eq!(st["classes"][1]["queued"], 0, "{st}");
    assert_eq!(st["classes"][0]["queued"], 0, "{st}");
}

#[test]
fn rate_limits_answer_with_openai_headers() {
    let Some(s) = Server::start(&["--rate-limit-rpm", "2", "--rate-limit-tpm", "1000"]) else {
        return;
    };
    let t0 = Instant::now();
    let body = json!({"prompt": "Hello", "max_tokens": 2});
    let a = post(&s, "/v1/completions", &body, t0);
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.header("x-ratelimit-limit-requests"), Some("2"));
    assert_eq!(a.header("x-ratelimit-remaining-requests"), Some("1"));
    assert_eq!(a.header("x-ratelimit-limit-tokens"), Some("1000"));
    // "Hello" is ~2 tokens, plus max_tokens 2.
    assert_eq!(a.header("x-ratelimit-remaining-tokens"), Some("996"));
    assert!(a
        .header("x-ratelimit-reset-requests")
        .unwrap()
        .ends_with('s'));
    // Too large for a minute's token allowance.
    let big = post(
        &s,
        "/v1/completions",
        &json!({"prompt": "Hi", "max_tokens": 5000}),
        t0,
    );
    assert_eq!(big.status, 429);
    assert_eq!(big.json()["error"]["type"], "tokens");
    assert!(big.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Request too large"));
    let b = post(&s, "/v1/completions", &body, t0);
    assert_eq!(b.status, 200);
    assert_eq!(b.header("x-ratelimit-remaining-requests"), Some("0"));
    let c = post(&s, "/v1/completions", &body, t0);
    assert_eq!(c.status, 429, "{}", c.body);
    let e = c.json();
    assert_eq!(e["error"]["code"], "rate_limit_exceeded");
    assert_eq!(e["error"]["type"], "requests");
    assert!(e["error"]["message"]
        .as_str()
        .unwrap()
        .contains("requests per min"));
    let ra: u64 = c.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=30).contains(&ra), "{ra}");
}

#[test]
fn deterministic_requests_are_served_from_the_response_cache() {
    let Some(s) = Server::start(&["--response-cache-mem", "8MiB"]) else {
        return;
    };
    let t0 = Instant::now();
    let body = json!({"messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 12, "temperature": 0});
    let a = post(&s, "/v1/chat/completions", &body, t0);
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.header("x-r1serve-cache"), Some("miss"));
    let b = post(&s, "/v1/chat/completions", &body, t0);
    assert_eq!(b.header("x-r1serve-cache"), Some("hit"));
    let text = |a: &Answer| {
        a.json()["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(text(&a), text(&b));
    assert_eq!(
        a.json()["usage"]["completion_tokens"],
        b.json()["usage"]["completion_tokens"]
    );
    // A stream of the same request replays the cached run.
    let mut sb = body.clone();
    sb["stream"] = json!(true);
    let r = ureq::post(&s.url("/v1/chat/completions"))
        .set("Content-Type", "application/json")
        .send_string(&sb.to_string())
        .unwrap();
    assert_eq!(r.header("x-r1serve-cache"), Some("hit"));
    let sse = read_sse(r.into_reader(), |_| {});
    assert!(sse.done);
    assert_eq!(sse.text(0, "content"), text(&a));
    assert_eq!(
        sse.finish_reason(0).as_deref(),
        a.json()["choices"][0]["finish_reason"].as_str()
    );
    // A different parameter is a different entry; random sampling is never cached.
    let mut other = body.clone();
    other["max_tokens"] = json!(11);
    assert_eq!(
        post(&s, "/v1/chat/completions", &other, t0).header("x-r1serve-cache"),
        Some("miss")
    );
    let mut random = body.clone();
    random["temperature"] = json!(0.9);
    for _ in 0..2 {
        assert_eq!(
            post(&s, "/v1/chat/completions", &random, t0).header("x-r1serve-cache"),
            Some("miss")
        );
    }
    let (_, st) = s.get("/v1/overload/stats");
    let c = &st["response_cache"];
    assert_eq!(c["hits"], 2, "{st}");
    assert_eq!(c["entries"], 2, "{st}");
    assert!(c["hit_bytes"].as_u64().unwrap() > 0 && c["bytes"].as_u64().unwrap() > 0);
    // /metrics reports the same counters.
    let (_, m) = s.try_get("/metrics").unwrap();
    let value = |name: &str| -> f64 {
        m.lines()
            .find(|l| l.starts_with(&format!("{name}{{")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{m}"))
    };
    assert_eq!(value("r1serve_response_cache_hits_total"), 2.0);
    assert_eq!(
        value("r1serve_response_cache_bytes"),
        c["bytes"].as_f64().unwrap()
    );
}

#[test]
fn queue_waits_run_out_with_503_and_wait_mode_streams_keep_alives() {
    let Some(s) = Server::start(&[
        "--max-num-seqs",
        "1",
        "--max-queue",
        "normal=1",
        "--max-queue-wait",
        "normal=1.5",
        "--queue-wait-mode",
        "normal",
        "--keep-alive-interval",
        "0.2",
    ]) else {
        return;
    };
    let s = Arc::new(s);
    let t0 = Instant::now();
    // One long request holds the only sequence slot.
    let long = {
        let s = s.clone();
        std::thread::spawn(move || post(&s, "/v1/completions", &completion(1, "vip", 400), t0))
    };
    serve_support::wait_until(60, "the long request to run", || {
        s.stats()["running"].as_u64() == Some(1)
    });
    // This one queues, and gives up after 1.5 s with a 503.
    let queued = {
        let s = s.clone();
        std::thread::spawn(move || post(&s, "/v1/completions", &completion(2, "normal", 4), t0))
    };
    serve_support::wait_until(30, "a queued request", || {
        s.get("/v1/overload/stats").1["classes"][1]["queued"] == 1
    });
    // The queue is full: in wait mode a stream gets keep-alives, then the 503 in the stream.
    let mut body = completion(3, "normal", 4);
    body["stream"] = json!(true);
    let r = ureq::post(&s.url("/v1/completions"))
        .set("Content-Type", "application/json")
        .send_string(&body.to_string())
        .unwrap();
    assert_eq!(r.status(), 200);
    let sse = read_sse(r.into_reader(), |_| {});
    assert!(sse.keep_alives >= 2, "{}", sse.raw);
    assert!(sse.done);
    assert_eq!(
        sse.chunks.last().unwrap()["error"]["code"],
        "queue_timeout",
        "{}",
        sse.raw
    );
    let q = queued.join().unwrap();
    assert_eq!(q.status, 503, "{}", q.body);
    assert_eq!(q.json()["error"]["code"], "queue_timeout");
    assert!(q.header("retry-after").is_some());
    assert!(q.secs >= 1.4 && q.secs < 10.0, "{}", q.secs);
    let (_, st) = s.get("/v1/overload/stats");
    assert!(st["classes"][1]["timed_out"].as_u64().unwrap() >= 2, "{st}");
    assert_eq!(long.join().unwrap().status, 200);
    // Unknown classes are the client's mistake.
    let bad = post(&s, "/v1/completions", &completion(4, "gold", 2), t0);
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["error"]["param"], "priority");
}
