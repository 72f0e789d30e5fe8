//! `--metrics-compat vllm` (smollm2): `/metrics` carries vLLM's queue-depth, running and
//! KV-cache gauges, which the Gateway API Inference Extension's endpoint picker reads, and
//! they follow the load: up while requests run and wait, back to 0 when they are done.
//! Without the flag, no `vllm:` name appears.

mod serve_support;

use std::time::{Duration, Instant};

use serde_json::json;
use serve_support::Server;

const GAUGES: [&str; 4] = [
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:kv_cache_usage_perc",
    "vllm:gpu_cache_usage_perc",
];

/// The value of an (unlabelled but for `model_name`) series.
fn value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn metrics(s: &Server) -> String {
    let (code, text) = s.try_get("/metrics").expect("GET /metrics");
    assert_eq!(code, 200);
    text
}

#[test]
fn vllm_gauges_appear_and_move_under_load() {
    let Some(s) = Server::start(&["--metrics-compat", "vllm", "--max-num-seqs", "2"]) else {
        return;
    };
    let idle = metrics(&s);
    for g in GAUGES {
        assert!(
            idle.contains(&format!("# TYPE {g} gauge")),
            "{g} missing:\n{idle}"
        );
        assert_eq!(value(&idle, g), Some(0.0), "{g} at idle");
    }
    // Six long requests against two sequence slots: two run, four wait.
    let url = s.url("/v1/completions");
    let load: Vec<_> = (0..6)
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || {
                ureq::post(&url)
                    .timeout(Duration::from_secs(300))
                    .send_json(json!({
                        "prompt": format!("Story {i}: once upon a time"),
                        "max_tokens": 48,
                        "ignore_eos": true,
                    }))
                    .map(|r| r.status())
                    .unwrap_or_else(|e| panic!("{e}"))
            })
        })
        .collect();
    let (mut running, mut waiting, mut kv) = (0.0f64, 0.0f64, 0.0f64);
    let t0 = Instant::now();
    while !load.iter().all(|h| h.is_finished()) && t0.elapsed() < Duration::from_secs(300) {
        let m = metrics(&s);
        running = running.max(value(&m, GAUGES[0]).unwrap());
        waiting = waiting.max(value(&m, GAUGES[1]).unwrap());
        let usage = value(&m, GAUGES[2]).unwrap();
        assert_eq!(value(&m, GAUGES[3]), Some(usage));
        assert!((0.0..=1.0).contains(&usage), "{usage}");
        kv = kv.max(usage);
        std::thread::sleep(Duration::from_millis(20));
    }
    for h in load {
        assert_eq!(h.join().unwrap(), 200);
    }
    assert_eq!(running, 2.0, "running never reached the two slots");
    assert!(waiting >= 1.0, "nothing was ever seen waiting");
    assert!(kv > 0.0, "the KV cache never looked used");
    // Done: the gauges come back down (the snapshot is refreshed by the engine's last step).
    let t0 = Instant::now();
    loop {
        let m = metrics(&s);
        if value(&m, GAUGES[0]) == Some(0.0) && value(&m, GAUGES[1]) == Some(0.0) {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "gauges stuck:\n{m}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn no_vllm_names_without_the_flag() {
    let Some(s) = Server::start(&[]) else {
        return;
    };
    let m = metrics(&s);
    assert!(m.contains("r1serve_num_requests_running"));
    assert!(!m.contains("vllm:"), "{m}");
}
