//! `r1serve serve` lifecycle over real HTTP with the real smollm2 model: a client that hangs
//! up cancels its request (the KV blocks go back to the pool), a queued stream gets keep-alive
//! comments, and SIGTERM drains (the in-flight stream completes, new requests are refused, the
//! process exits 0).

mod serve_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use serve_support::{read_sse, wait_until, Server};

fn long_stream(max_tokens: u32) -> Value {
    json!({
        "messages": [{"role": "user", "content": "Write a very long essay about the sea."}],
        "max_tokens": max_tokens,
        "ignore_eos": true,
        "temperature": 0,
        "stream": true,
    })
}

/// Send a request on a raw socket and return it once the first `data:` event has arrived.
fn open_stream(addr: &str, body: &Value) -> TcpStream {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let body = body.to_string();
    write!(
        c,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&seen);
        if text.len() >= 12 {
            assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        }
        if text.contains("data: {") {
            break;
        }
        let n = c.read(&mut buf).unwrap();
        assert!(n > 0, "closed early: {text}");
        seen.extend_from_slice(&buf[..n]);
    }
    c
}

#[test]
fn disconnect_cancels_and_frees_blocks() {
    let Some(s) = Server::start(&["--no-prefix-cache"]) else {
        return;
    };
    let before = s.stats()["generation_tokens"].as_u64().unwrap();
    let c = open_stream(&s.addr, &long_stream(2000));
    // (The stats are published after each engine step.)
    wait_until(10, "blocks in use", || {
        s.stats()["kv_blocks_used"].as_u64() > Some(0)
    });
    c.shutdown(std::net::Shutdown::Both).unwrap();
    drop(c);
    wait_until(10, "the request to be cancelled", || {
        let st = s.stats();
        st["running"] == 0 && st["waiting"] == 0 && st["kv_blocks_used"] == 0
    });
    // It stopped early: far fewer than 2000 tokens were generated.
    let generated = s.stats()["generation_tokens"].as_u64().unwrap() - before;
    assert!(
        generated < 1000,
        "generated {generated} tokens after the disconnect"
    );
    // Two streams at once, one dropped: the other finishes normally.
    let keep = std::thread::spawn({
        let url = s.url("/v1/chat/completions");
        move || {
            let r = ureq::post(&url)
                .send_string(&long_stream(60).to_string())
                .unwrap();
            read_sse(r.into_reader(), |_| {})
        }
    });
    let c = open_stream(&s.addr, &long_stream(2000));
    drop(c);
    let sse = keep.join().unwrap();
    assert!(sse.done, "{}", sse.raw);
    assert_eq!(sse.finish_reason(0).as_deref(), Some("length"));
    wait_until(10, "all blocks free", || s.stats()["kv_blocks_used"] == 0);
}

#[test]
fn queued_stream_gets_keep_alives() {
    let Some(s) = Server::start(&["--max-num-seqs", "1", "--keep-alive-interval", "0.05"]) else {
        return;
    };
    // One long request takes the only slot; the second waits in the queue.
    let busy = open_stream(&s.addr, &long_stream(100));
    let mut q = long_stream(4);
    q["stream_options"] = json!({"include_usage": true});
    let sse = s.stream("/v1/chat/completions", &q);
    assert!(
        sse.keep_alives_before_data > 0,
        "no keep-alive while queued: {}",
        sse.raw
    );
    assert!(sse.raw.contains(": keep-alive\n\n"));
    assert!(sse.done);
    assert_eq!(sse.chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let u = &sse.chunks.last().unwrap()["usage"];
    assert_eq!(u["completion_tokens"], 4);
    drop(busy);
}

#[test]
fn sigterm_drains_then_exits_zero() {
    let Some(mut s) = Server::start(&["--drain-timeout", "60"]) else {
        return;
    };
    let url = s.url("/v1/chat/completions");
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let r = ureq::post(&url)
            .send_string(&long_stream(80).to_string())
            .unwrap();
        read_sse(r.into_reader(), move |_| {
            let _ = tx.send(());
        })
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("the stream started");
    let status = std::process::Command::new("kill")
        .args(["-TERM", &s.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // New requests are refused (connection refused, or 503 while the listener closes).
    wait_until(10, "new connections to be refused", || {
        match s.try_get("/ready") {
            Err(_) => true,
            Ok((503, _)) => true,
            Ok(_) => false,
        }
    });
    // ... while the stream that was in flight is still running; then it completes.
    assert!(
        !reader.is_finished(),
        "the stream ended before the refusal was seen"
    );
    let sse = reader.join().unwrap();
    assert!(sse.done, "{}", sse.raw);
    assert_eq!(sse.finish_reason(0).as_deref(), Some("length"));
    let n: usize = sse.text(0, "content").len();
    assert!(n > 0);
    // And the process exits 0.
    let t0 = Instant::now();
    let code = loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "still running: {}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(code.success(), "exit status {code}: {}", s.log());
    assert!(s.log().contains("SIGTERM"), "{}", s.log());
}

#[test]
fn drain_timeout_cuts_long_requests() {
    let Some(mut s) = Server::start(&["--drain-timeout", "0.5"]) else {
        return;
    };
    let url = s.url("/v1/chat/completions");
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let r = ureq::post(&url)
            .send_string(&long_stream(2000).to_string())
            .unwrap();
        read_sse(r.into_reader(), move |_| {
            let _ = tx.send(());
        })
    });
    rx.recv_timeout(Duration::from_secs(60)).unwrap();
    std::process::Command::new("kill")
        .args(["-TERM", &s.pid().to_string()])
        .status()
        .unwrap();
    let t0 = Instant::now();
    let code = loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            break st;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "{}", s.log());
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(code.success(), "exit status {code}: {}", s.log());
    let sse = reader.join().unwrap();
    assert_ne!(sse.finish_reason(0).as_deref(), Some("length"));
}
