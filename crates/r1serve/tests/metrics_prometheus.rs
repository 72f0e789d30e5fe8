//! Monitoring end to end: a real Prometheus server (the Debian `prometheus` package's binary)
//! on 127.0.0.1 scrapes a real `r1serve serve` (smollm2) every second; after a known amount
//! of traffic, Prometheus' HTTP API must report exactly that traffic in the `r1serve_*`
//! series. Also: `/metrics` passes `promtool check metrics`, every `r1serve_*` name that
//! deploy/ (dashboard, alerts, adapter, chart) or the README uses exists, and `/v1/scaling`
//! answers in the documented shape.

mod serve_support;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use serve_support::Server;

/// Requests the test sends, and tokens each generates (ignore_eos: exactly max_tokens).
const REQUESTS: usize = 5;
const TOKENS: usize = 4;

fn on_path(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(tool))
            .find(|f| f.is_file())
    })
}

/// The tool, or a SKIP message (outside CI only: CI installs it, so there it must be found).
fn tool(name: &str) -> Option<PathBuf> {
    let found = on_path(name);
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{name} is missing in CI: .ci/run installs the Debian package `prometheus`"
        );
        eprintln!("SKIP: {name} not found (apt-get install prometheus)");
    }
    found
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Prometheus {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    fn start(bin: &Path, target: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("prometheus.yml");
        std::fs::write(
            &cfg,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: r1serve\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(bin)
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        Prometheus {
            child,
            base: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// An instant query's single value, if the result has exactly one series.
    fn query(&self, q: &str) -> Option<f64> {
        let url = format!("{}/api/v1/query?query={}", self.base, encode(q));
        let body: Value = ureq::get(&url)
            .timeout(Duration::from_secs(5))
            .call()
            .ok()?
            .into_json()
            .ok()?;
        let result = body["data"]["result"].as_array()?;
        if result.len() != 1 {
            return None;
        }
        result[0]["value"][1].as_str()?.parse().ok()
    }
}

fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn prometheus_scrapes_the_traffic_that_was_sent() {
    let Some(prom_bin) = tool("prometheus") else {
        return;
    };
    let Some(server) = Server::start(&["--scaling-interval", "1", "--scaling-window", "5"]) else {
        return;
    };
    let prom = Prometheus::start(&prom_bin, &server.addr);

    // Known traffic: REQUESTS completions of exactly TOKENS tokens, 2 unknown routes, 1 bad body.
    for i in 0..REQUESTS {
        let (code, body) = server.post(
            "/v1/completions",
            &json!({"prompt": format!("Count to {i}:"), "max_tokens": TOKENS,
                    "ignore_eos": true, "temperature": 0}),
        );
        assert_eq!(code, 200, "{body}");
    }
    for _ in 0..2 {
        assert_eq!(server.get("/no/such/route").0, 404);
    }
    assert_eq!(server.post_raw("/v1/completions", "{not json").0, 400);

    let expect = [
        ("sum(r1serve_request_success_total)", REQUESTS as f64),
        (
            "r1serve_request_success_total{finished_reason=\"length\"}",
            REQUESTS as f64,
        ),
        ("r1serve_requests_total", REQUESTS as f64),
        (
            "r1serve_generation_tokens_total",
            (REQUESTS * TOKENS) as f64,
        ),
        ("r1serve_time_to_first_token_seconds_count", REQUESTS as f64),
        ("r1serve_e2e_request_latency_seconds_count", REQUESTS as f64),
        (
            "r1serve_inter_token_latency_seconds_count",
            (REQUESTS * (TOKENS - 1)) as f64,
        ),
        (
            "r1serve_http_requests_total{route=\"/v1/completions\",code=\"200\"}",
            REQUESTS as f64,
        ),
        (
            "r1serve_http_requests_total{route=\"/v1/completions\",code=\"400\"}",
            1.0,
        ),
        (
            "r1serve_http_requests_total{route=\"unmatched\",code=\"404\"}",
            2.0,
        ),
        ("sum(r1serve_num_requests_running)", 0.0),
        ("up{job=\"r1serve\"}", 1.0),
    ];
    let t0 = Instant::now();
    loop {
        let last = expect
            .iter()
            .map(|(q, want)| (q, *want, prom.query(q)))
            .filter(|(_, want, got)| *got != Some(*want))
            .map(|(q, want, got)| format!("{q}: want {want}, got {got:?}"))
            .collect::<Vec<_>>();
        if last.is_empty() {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "Prometheus never showed the traffic:\n{}\n---- prometheus log ----\n{}",
            last.join("\n"),
            prom.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // Latency histograms hold real durations, and the process series are there.
    let ttft_sum = prom
        .query("r1serve_time_to_first_token_seconds_sum")
        .unwrap();
    assert!(ttft_sum > 0.0 && ttft_sum < 60.0, "{ttft_sum}");
    assert!(prom.query("r1serve_process_resident_memory_bytes").unwrap() > 1e6);
    assert!(prom.query("r1serve_model_load_seconds").unwrap() > 0.0);

    // The advisor has run (interval 1 s) and speaks the documented shape.
    let (code, adv) = server.get("/v1/scaling");
    assert_eq!(code, 200, "{adv}");
    for key in [
        "decision",
        "reason",
        "qps",
        "capacity",
        "queue_length",
        "utilisation",
    ] {
        assert!(adv.get(key).is_some(), "{key} missing: {adv}");
    }
    assert!(
        ["scale_out", "scale_in", "maintain"].contains(&adv["decision"].as_str().unwrap()),
        "{adv}"
    );
    assert!(prom.query("r1serve_desired_replicas").unwrap() >= 1.0);
}

/// The families `/metrics` exposes (`# TYPE` lines).
fn families(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// Every `r1serve_*` word in a file, with histogram suffixes taken off.
fn names_used(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(p) = text[i..].find("r1serve_") {
        let start = i + p;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        let preceded = start > 0 && (bytes[start - 1].is_ascii_alphanumeric());
        if !preceded {
            let mut name = &text[start..end];
            for suffix in ["_bucket", "_sum", "_count"] {
                name = name.strip_suffix(suffix).unwrap_or(name);
            }
            out.insert(name.to_string());
        }
        i = end;
    }
    out
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[test]
fn metrics_text_is_valid_and_every_documented_name_exists() {
    let Some(server) = Server::start(&["--scaling-interval", "1"]) else {
        return;
    };
    // One request so every family has data, then wait for the first scaling evaluation.
    let (code, body) = server.post(
        "/v1/completions",
        &json!({"prompt": "Hi", "max_tokens": 2, "ignore_eos": true}),
    );
    assert_eq!(code, 200, "{body}");
    let t0 = Instant::now();
    while server.get("/v1/scaling").0 != 200 {
        assert!(t0.elapsed() < Duration::from_secs(20), "no scaling advice");
        std::thread::sleep(Duration::from_millis(200));
    }
    let resp = ureq::get(&server.url("/metrics")).call().unwrap();
    assert!(resp.content_type().starts_with("text/plain"));
    let text = resp.into_string().unwrap();
    let exposed = families(&text);
    assert!(exposed.len() > 30, "{exposed:?}");
    for f in &exposed {
        assert!(f.starts_with("r1serve_"), "{f}");
        assert!(
            text.contains(&format!("# HELP {f} ")),
            "{f} has no HELP line"
        );
    }

    // Every name the deploy files and the README use must exist (catches renames).
    let mut files = Vec::new();
    files_under(&repo_root().join("deploy"), &mut files);
    files.push(repo_root().join("README.md"));
    let mut missing = Vec::new();
    for f in files {
        let Ok(t) = std::fs::read_to_string(&f) else {
            continue;
        };
        for name in names_used(&t) {
            // The bare prefix is prose; the capacity gauge only exists once capacity is known.
            if !exposed.contains(&name)
                && name != "r1serve_"
                && name != "r1serve_scaling_capacity_qps"
            {
                missing.push(format!("{}: {name}", f.display()));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "names not in /metrics:\n{}",
        missing.join("\n")
    );

    // promtool's linter accepts the exposition.
    if let Some(promtool) = tool("promtool") {
        let mut child = Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool check metrics:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn json_logs_carry_the_request_id() {
    let Some(model) = serve_support::model() else {
        return;
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_r1serve"))
        .args(["--log-format", "json", "serve", "--model"])
        .arg(&model)
        .args(["--host", "127.0.0.1", "--port", "0", "--threads", "1"])
        .args(["--kv-cache-mem", "64MiB"])
        .env("R1SERVE_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let addr = loop {
        let l = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("server start");
        if let Some(a) = l.strip_prefix("r1serve: listening on http://") {
            break a.to_string();
        }
    };
    let t0 = Instant::now();
    while ureq::get(&format!("http://{addr}/ready")).call().is_err() {
        assert!(t0.elapsed() < Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(50));
    }
    let resp = ureq::get(&format!("http://{addr}/v1/models"))
        .set("x-request-id", "trace-me-42")
        .call()
        .unwrap();
    assert_eq!(resp.header("x-request-id"), Some("trace-me-42"));
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut found = None;
    while found.is_none() && Instant::now() < deadline {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
            if l.contains("trace-me-42") {
                found = Some(l);
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let line = found.expect("no log line with the request id");
    let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(v["fields"]["request_id"], "trace-me-42", "{line}");
    assert_eq!(v["span"]["request_id"], "trace-me-42", "{line}");
    assert_eq!(v["fields"]["status"], 200, "{line}");
}
