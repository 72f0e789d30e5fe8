//! Shared helpers of the `serve_*` tests: start the built `r1serve serve` on 127.0.0.1 with a
//! free port and the real smollm2 model, and talk to it over HTTP.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub struct Server {
    pub child: Child,
    pub base: String,
    pub addr: String,
    /// Everything the server wrote to stderr so far.
    pub log: Arc<Mutex<String>>,
}

/// The path of the model, or None (the test then skips, with a message).
pub fn model() -> Option<std::path::PathBuf> {
    r1_model::testdata::model("smollm2.gguf")
}

impl Server {
    /// Start the server with `extra` flags, and wait until `/ready` says 200.
    pub fn start(extra: &[&str]) -> Option<Server> {
        Self::start_model("smollm2.gguf", extra)
    }

    /// [`Server::start`] with another test model (`qwen05.gguf`); None (the test skips, with a
    /// message) when it is absent.
    pub fn start_model(file: &str, extra: &[&str]) -> Option<Server> {
        let model = r1_model::testdata::model(file)?;
        Some(Self::start_path(
            &model,
            extra,
            Duration::from_secs(60),
            Duration::from_secs(120),
        ))
    }

    /// Start the server on the model at `path` (a GGUF file or an HF directory) with `extra`
    /// flags; it must listen within `listen` and answer `/ready` within `ready`.
    pub fn start_path(
        model: &std::path::Path,
        extra: &[&str],
        listen: Duration,
        ready: Duration,
    ) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_r1serve"))
            .args(["serve", "--model"])
            .arg(model)
            .args(["--host", "127.0.0.1", "--port", "0", "--threads", "1"])
            .args(["--kv-cache-mem", "64MiB"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start r1serve serve");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let log2 = log.clone();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stderr);
            let mut line = String::new();
            while r.read_line(&mut line).unwrap_or(0) > 0 {
                if let Some(a) = line.trim().strip_prefix("r1serve: listening on http://") {
                    let _ = tx.send(a.to_string());
                }
                log2.lock().unwrap().push_str(&line);
                line.clear();
            }
        });
        let addr = match rx.recv_timeout(listen) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!("the server did not start: {}", log.lock().unwrap());
            }
        };
        let s = Server {
            child,
            base: format!("http://{addr}"),
            addr,
            log,
        };
        let t0 = Instant::now();
        loop {
            if let Ok((200, _)) = s.try_get("/ready") {
                break;
            }
            assert!(t0.elapsed() < ready, "not ready: {}", s.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// GET, any status: (status, body).
    pub fn try_get(&self, path: &str) -> Result<(u16, String), Box<ureq::Error>> {
        match ureq::get(&self.url(path))
            .timeout(Duration::from_secs(30))
            .call()
        {
            Ok(r) => Ok((r.status(), r.into_string().unwrap())),
            Err(ureq::Error::Status(c, r)) => Ok((c, r.into_string().unwrap())),
            Err(e) => Err(Box::new(e)),
        }
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        let (c, b) = self.try_get(path).expect("GET");
        (c, serde_json::from_str(&b).unwrap_or(Value::String(b)))
    }

    /// POST a raw body: (status, content type, body).
    pub fn post_raw(&self, path: &str, body: &str) -> (u16, String, String) {
        let r = ureq::post(&self.url(path))
            .timeout(Duration::from_secs(120))
            .set("Content-Type", "application/json")
            .send_string(body);
        let r = match r {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("POST {path}: {e}"),
        };
        let ct = r.content_type().to_string();
        (r.status(), ct, r.into_string().unwrap())
    }

    /// POST JSON, expecting a JSON answer: (status, body).
    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let (c, ct, b) = self.post_raw(path, &body.to_string());
        assert!(ct.starts_with("application/json"), "{ct}: {b}");
        (
            c,
            serde_json::from_str(&b).unwrap_or_else(|e| panic!("{e}: {b}")),
        )
    }

    /// POST a streaming request and read the whole SSE answer.
    pub fn stream(&self, path: &str, body: &Value) -> Sse {
        let r = ureq::post(&self.url(path))
            .timeout(Duration::from_secs(120))
            .set("Content-Type", "application/json")
            .send_string(&body.to_string())
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        assert_eq!(r.status(), 200);
        assert!(
            r.content_type().starts_with("text/event-stream"),
            "{}",
            r.content_type()
        );
        read_sse(r.into_reader(), |_| {})
    }

    pub fn stats(&self) -> Value {
        let (c, v) = self.get("/v1/engine/stats");
        assert_eq!(c, 200, "{v}");
        v
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // R1SERVE_TEST_VERBOSE=1 (with R1SERVE_LOG=info for the access log) shows the server's
        // stderr after each test.
        if std::env::var_os("R1SERVE_TEST_VERBOSE").is_some() {
            eprintln!("---- server {} ----\n{}", self.addr, self.log());
        }
    }
}

/// A whole SSE answer: every event in order.
#[derive(Debug, Default)]
pub struct Sse {
    /// `data:` payloads parsed as JSON (everything but `[DONE]`).
    pub chunks: Vec<Value>,
    pub keep_alives: usize,
    /// Keep-alive comments seen before the first `data:` event.
    pub keep_alives_before_data: usize,
    pub done: bool,
    /// Events after `[DONE]` (must be none).
    pub after_done: usize,
    pub raw: String,
}

impl Sse {
    /// The text of choice `i`: `field` (`content`, `reasoning_content` or `text`) concatenated.
    pub fn text(&self, i: u64, field: &str) -> String {
        let mut s = String::new();
        for c in &self.chunks {
            for ch in c["choices"].as_array().into_iter().flatten() {
                if ch["index"] == i {
                    let v = if field == "text" {
                        &ch["text"]
                    } else {
                        &ch["delta"][field]
                    };
                    if let Some(t) = v.as_str() {
                        s.push_str(t);
                    }
                }
            }
        }
        s
    }

    pub fn finish_reason(&self, i: u64) -> Option<String> {
        self.chunks
            .iter()
            .flat_map(|c| c["choices"].as_array().cloned().unwrap_or_default())
            .filter(|ch| ch["index"] == i)
            .find_map(|ch| ch["finish_reason"].as_str().map(str::to_string))
    }
}

/// Read SSE events until EOF, calling `on_event` with each `data:` payload as it arrives.
pub fn read_sse(r: impl Read, mut on_event: impl FnMut(&str)) -> Sse {
    let mut sse = Sse::default();
    let mut r = BufReader::new(r);
    let mut line = String::new();
    loop {
        line.clear();
        match r.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        sse.raw.push_str(&line);
        let l = line.trim_end_matches(['\r', '\n']);
        if l.is_empty() {
            continue;
        }
        if sse.done {
            sse.after_done += 1;
        }
        if l.starts_with(':') {
            sse.keep_alives += 1;
            if sse.chunks.is_empty() {
                sse.keep_alives_before_data += 1;
            }
        } else if let Some(d) = l.strip_prefix("data: ") {
            on_event(d);
            if d == "[DONE]" {
                sse.done = true;
            } else {
                sse.chunks
                    .push(serde_json::from_str(d).unwrap_or_else(|e| panic!("{e}: {d}")));
            }
        } else {
            panic!("not an SSE line: {l:?}");
        }
    }
    sse
}

/// Poll `f` until it returns true (or panic after `secs`).
pub fn wait_until(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
