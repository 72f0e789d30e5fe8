//! The security features at the edges, over real connections: output redaction (plain and
//! streamed, including an e-mail the model writes token by token), the audit log's 429/413
//! records and its --audit-required mode, connection/header/slowloris limits, and TLS with a
//! certificate made in the test.

mod security_support;
mod serve_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use security_support::{audit_record, call, sha256_hex};
use serde_json::json;
use serve_support::Server;

fn skip() -> bool {
    if serve_support::model().is_none() {
        eprintln!("SKIP: smollm2.gguf missing (scripts/fetch-models.sh)");
        return true;
    }
    false
}

/// smollm2 at temperature 0 repeats an address it has just seen, one token at a time.
const COPY_EMAIL: &str = "My email is john.smith@example.com. Again, my email is";
const EMAIL: &str = "john.smith@example.com";

fn completion(prompt: &str, stream: bool) -> String {
    json!({"prompt": prompt, "max_tokens": 12, "temperature": 0, "stream": stream}).to_string()
}

/// The streamed text and how many chunks carried a piece of `needle`'s span.
fn stream_text(s: &Server, body: &str) -> (String, Vec<String>) {
    let r = ureq::post(&s.url("/v1/completions"))
        .set("Content-Type", "application/json")
        .send_string(body)
        .unwrap();
    let sse = serve_support::read_sse(r.into_reader(), |_| {});
    assert!(sse.done);
    let pieces: Vec<String> = sse
        .chunks
        .iter()
        .filter_map(|c| c["choices"][0]["text"].as_str().map(str::to_string))
        .collect();
    (pieces.concat(), pieces)
}

#[test]
fn flag_mode_reports_and_redact_mode_replaces_split_patterns() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Flag mode: the text is untouched, the finding reported. This also shows that the model
    // does write the address, over several stream chunks.
    let audit = dir.path().join("flag.log");
    let s = Server::start(&[
        "--redact",
        "flag",
        "--sensitivity-header",
        "--audit-log",
        audit.to_str().unwrap(),
    ])
    .unwrap();
    let body = completion(COPY_EMAIL, false);
    let a = call(&s.base, "POST", "/v1/completions", None, &body, "flag-1");
    assert_eq!(a.status, 200, "{}", a.body);
    let text = a.json()["choices"][0]["text"].as_str().unwrap().to_string();
    assert!(
        text.contains(EMAIL),
        "the model did not copy the address: {text:?}"
    );
    assert_eq!(a.header["x-sensitivity-categories"], "email");
    assert_eq!(a.header["x-sensitivity-score"], "0.4");
    let r = audit_record(&audit, "flag-1");
    assert_eq!(
        (r["sensitivity_score"].as_f64(), r["redactions"].as_u64()),
        (Some(0.4), Some(0))
    );
    assert_eq!(r["sensitivity_categories"], json!(["email"]));
    let (streamed, pieces) = stream_text(&s, &completion(COPY_EMAIL, true));
    assert_eq!(streamed, text);
    let at = streamed.find(EMAIL).unwrap();
    let mut pos = 0;
    let spanning = pieces
        .iter()
        .filter(|p| {
            let (a, b) = (pos, pos + p.len());
            pos = b;
            a < at + EMAIL.len() && b > at
        })
        .count();
    assert!(spanning >= 2, "the address came in one chunk: {pieces:?}");
    drop(s);

    // Redact mode: the same generation, the address replaced, streamed or not.
    let audit = dir.path().join("redact.log");
    let s = Server::start(&[
        "--redact",
        "redact",
        "--sensitivity-header",
        "--audit-log",
        audit.to_str().unwrap(),
        "--audit-include-text",
    ])
    .unwrap();
    let a = call(&s.base, "POST", "/v1/completions", None, &body, "red-1");
    let red = a.json()["choices"][0]["text"].as_str().unwrap().to_string();
    assert_eq!(red, text.replace(EMAIL, "[REDACTED:EMAIL]"));
    let (streamed, _) = stream_text(&s, &completion(COPY_EMAIL, true));
    assert_eq!(streamed, red);
    let r = audit_record(&audit, "red-1");
    assert_eq!(r["redactions"], 1);
    // With --audit-include-text the record holds the input and the output as sent.
    assert_eq!(r["input_text"], body);
    assert_eq!(r["output_text"], red);
    assert_eq!(r["input_sha256"], sha256_hex(body.as_bytes()));

    // Echoed prompts are output too; numbers that fail their checksums are left alone.
    let body = json!({
        "prompt": "Card 4111 1111 1111 1111, not 4111 1111 1111 1112; IBAN DE89 3704 0044 0532 0130 00 \
                   not DE89 3704 0044 0532 0130 01; id 11010519491231002X not 110105194912310021; \
                   ssn 123-45-6789 not 000-12-3456; time 12:30:45, v1.2.3.4.5",
        "max_tokens": 1, "temperature": 0, "echo": true
    })
    .to_string();
    let a = call(&s.base, "POST", "/v1/completions", None, &body, "red-2");
    let out = a.json()["choices"][0]["text"].as_str().unwrap().to_string();
    for kept in [
        "4111 1111 1111 1112",
        "DE89 3704 0044 0532 0130 01",
        "110105194912310021",
        "000-12-3456",
        "12:30:45",
        "v1.2.3.4.5",
    ] {
        assert!(out.contains(kept), "{kept} was changed: {out}");
    }
    for gone in [
        "4111 1111 1111 1111",
        "DE89 3704 0044 0532 0130 00",
        "11010519491231002X",
        "123-45-6789",
    ] {
        assert!(!out.contains(gone), "{gone} leaked: {out}");
    }
    let cats = a.header["x-sensitivity-categories"].clone();
    assert_eq!(cats, "iban,payment_card,prc_resident_id,us_ssn");
}

#[test]
fn limits_answer_429_413_431_and_close_slow_clients_with_audit_records() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.log");
    let s = Server::start(&[
        "--audit-log",
        audit.to_str().unwrap(),
        "--max-connections",
        "1",
        "--header-read-timeout",
        "3",
        "--max-header-bytes",
        "8192",
        "--max-body-bytes",
        "2000",
    ])
    .unwrap();
    // Body too large: 413, audited with the hash of nothing read past the limit.
    let big = json!({"prompt": "x".repeat(5000), "max_tokens": 1}).to_string();
    let a = call(&s.base, "POST", "/v1/completions", None, &big, "too-big");
    assert_eq!(a.status, 413, "{}", a.body);
    assert_eq!(audit_record(&audit, "too-big")["status"], 413);

    // Header too large: 431.
    let mut c = TcpStream::connect(&s.addr).unwrap();
    let req = format!(
        "GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let _ = c.write_all(req.as_bytes());
    let mut resp = String::new();
    let _ = c.read_to_string(&mut resp);
    assert!(resp.starts_with("HTTP/1.1 431"), "{resp:?}");
    drop(c);

    // One connection at a time: while one is held, another gets 429 (audited, with its hash).
    let held = TcpStream::connect(&s.addr).unwrap();
    let body = r#"{"prompt":"hi","max_tokens":1}"#;
    // (Until the server has accepted the held connection, a request may still get in.)
    let mut a = call(&s.base, "POST", "/v1/completions", None, body, "over-limit");
    for _ in 0..50 {
        if a.status == 429 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        a = call(&s.base, "POST", "/v1/completions", None, body, "over-limit");
    }
    assert_eq!(a.status, 429, "{}", a.body);
    assert_eq!(a.json()["error"]["code"], "too_many_connections");
    assert_eq!(a.header["retry-after"], "1");
    audit_record(&audit, "over-limit");
    let r = security_support::audit_records(&audit)
        .into_iter()
        .find(|r| r["request_id"] == "over-limit" && r["status"] == 429)
        .expect("an audit record of the 429");
    assert_eq!(r["input_sha256"], sha256_hex(body.as_bytes()));

    // The held connection never sends its headers: it is closed after the read timeout
    // (slowloris), which frees the slot.
    let t0 = Instant::now();
    let mut held = held;
    held.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 256];
    let _ = held.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n");
    let n = held.read(&mut buf).unwrap_or(0);
    let waited = t0.elapsed();
    let text = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(n == 0 || text.starts_with("HTTP/1.1 408"), "{text:?}");
    assert!(
        waited < Duration::from_secs(8),
        "a slow client held the connection {waited:?}"
    );
    let t0 = Instant::now();
    loop {
        let a = call(&s.base, "GET", "/health", None, "", "after");
        if a.status == 200 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "slot not freed: {}",
            a.status
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn audit_failures_are_counted_or_fail_requests_when_required() {
    if skip() {
        return;
    }
    // Writes to /dev/full fail with ENOSPC.
    let s = Server::start(&["--audit-log", "/dev/full"]).unwrap();
    assert_eq!(
        call(&s.base, "GET", "/v1/models", None, "", "a").status,
        200
    );
    let cfg = call(&s.base, "GET", "/admin/config", None, "", "b").json();
    assert!(
        cfg["audit"]["write_failures"].as_u64().unwrap() >= 1,
        "{cfg}"
    );
    // ... and exported to Prometheus.
    let m = call(&s.base, "GET", "/metrics", None, "", "c").body;
    let failures: f64 = m
        .lines()
        .find(|l| l.starts_with("r1serve_audit_write_failures_total{"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no audit failure metric in:\n{m}"));
    assert!(failures >= 2.0, "{failures}");
    serve_support::wait_until(10, "the audit error in the log", || {
        s.log().contains("writing the audit record failed")
    });
    drop(s);
    // Required: requests fail, and /ready says so (a balancer stops sending work); /health
    // stays the liveness probe.
    let (_child, base) = spawn_server(&["--audit-log", "/dev/full", "--audit-required"], "http");
    let t0 = Instant::now();
    while call(&base, "GET", "/health", None, "", "h").json()["status"] != "ok" {
        assert!(t0.elapsed() < Duration::from_secs(60), "not loaded");
        std::thread::sleep(Duration::from_millis(50));
    }
    let a = call(
        &base,
        "POST",
        "/v1/completions",
        None,
        r#"{"prompt":"hi","max_tokens":1}"#,
        "c",
    );
    assert_eq!(a.status, 503, "{}", a.body);
    assert_eq!(a.json()["error"]["code"], "audit_unavailable");
    assert_eq!(call(&base, "GET", "/ready", None, "", "r").status, 503);
}

#[test]
fn tls_with_a_self_signed_certificate() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
    let args = [
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ];
    let (_child, base) = spawn_server(&args, "https");
    let port: u16 = base.rsplit(':').next().unwrap().parse().unwrap();

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ck.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(cfg), name).unwrap();
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
    tls.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut resp = String::new();
    let _ = tls.read_to_string(&mut resp);
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp:?}");
    assert!(resp.contains("\"status\""), "{resp:?}");

    // Plain HTTP to the TLS port gets no HTTP answer.
    let mut plain = TcpStream::connect(("127.0.0.1", port)).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = plain.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut buf = [0u8; 64];
    let n = plain.read(&mut buf).unwrap_or(0);
    assert!(!String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));

    // A key that does not match the certificate is refused at start, naming the problem.
    let other = rcgen::KeyPair::generate().unwrap();
    std::fs::write(&key, other.serialize_pem()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_r1serve"))
        .args(["serve", "--model"])
        .arg(serve_support::model().unwrap())
        .args(["--port", "0", "--tls-cert"])
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("TLS"), "{err}");
}

/// Start a server without waiting for `/ready`; returns the child (killed on drop) and its
/// base URL (`scheme://addr`).
fn spawn_server(args: &[&str], scheme: &str) -> (ChildGuard, String) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_r1serve"))
        .args(["serve", "--model"])
        .arg(serve_support::model().unwrap())
        .args(["--port", "0", "--threads", "1", "--kv-cache-mem", "64MiB"])
        .args(args)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut r = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let prefix = format!("r1serve: listening on {scheme}://");
    let base = loop {
        line.clear();
        assert!(r.read_line(&mut line).unwrap() > 0, "server exited");
        if let Some(a) = line.trim().strip_prefix(prefix.as_str()) {
            break format!("{scheme}://{a}");
        }
    };
    std::thread::spawn(move || {
        let mut sink = String::new();
        while r.read_line(&mut sink).unwrap_or(0) > 0 {
            sink.clear();
        }
    });
    (ChildGuard(child), base)
}

struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
