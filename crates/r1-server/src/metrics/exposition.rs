//! `GET /metrics`: every `r1serve_*` series, rendered from the engine's stats snapshot, the
//! HTTP counters, the scaling advisor and `/proc/self`. The README's metrics table lists the
//! same names with their vLLM equivalents; keep the two in step.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::text_format::{Kind, TextEncoder, CONTENT_TYPE};
use super::{class_label, process, MetricsCompat, ServerMetrics};
use crate::model::ModelSlot;
use crate::overload::Overload;
use crate::scaling::advisor::Decision;
use crate::scaling::ScalingMonitor;
use crate::security::Security;

/// What `/metrics` reads: the sub-states it takes from the router's state.
pub struct Sources<'a> {
    pub model: &'a ModelSlot,
    pub metrics: &'a ServerMetrics,
    pub overload: &'a Overload,
    pub scaling: &'a ScalingMonitor,
    pub security: &'a Security,
}

/// `GET /metrics`
pub async fn metrics(
    State(model): State<Arc<ModelSlot>>,
    State(metrics): State<Arc<ServerMetrics>>,
    State(overload): State<Arc<Overload>>,
    State(scaling): State<Arc<ScalingMonitor>>,
    State(security): State<Arc<Security>>,
) -> Response {
    let text = render(&Sources {
        model: &model,
        metrics: &metrics,
        overload: &overload,
        scaling: &scaling,
        security: &security,
    });
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response()
}

pub fn render(st: &Sources) -> String {
    let mut e = TextEncoder::new(&[("model_name", &st.metrics.model_name)]);
    engine_series(st, &mut e);
    http_series(st, &mut e);
    scaling_series(st, &mut e);
    audit_series(st, &mut e);
    process_series(st, &mut e);
    e.finish()
}

fn engine_series(st: &Sources, e: &mut TextEncoder) {
    let Some(m) = st.model.get() else {
        return;
    };
    let s = m.engine.stats();
    let em = &s.metrics;

    // Per-class load; every configured class is always present so sums never see "no data".
    let configured = st.overload.classes.all();
    let mut classes: Vec<(String, usize, usize)> =
        configured.iter().map(|c| (c.name.clone(), 0, 0)).collect();
    for l in &em.by_priority {
        let name = class_label(configured, l.priority);
        match classes.iter_mut().find(|c| c.0 == name) {
            Some(c) => {
                c.1 += l.running;
                c.2 += l.waiting;
            }
            None => classes.push((name, l.running, l.waiting)),
        }
    }
    per_class(
        e,
        ("r1serve_num_requests_running", Kind::Gauge),
        "Sequences admitted to the engine and holding KV cache, by priority class.",
        classes.iter().map(|(c, r, _)| (c.as_str(), *r as f64)),
    );
    per_class(
        e,
        ("r1serve_num_requests_waiting", Kind::Gauge),
        "Sequences queued in the engine waiting for a slot, by priority class.",
        classes.iter().map(|(c, _, w)| (c.as_str(), *w as f64)),
    );
    if st.metrics.compat == MetricsCompat::Vllm {
        vllm_series(e, &s);
    }
    e.single(
        "r1serve_kv_cache_usage_ratio",
        Kind::Gauge,
        "Fraction of KV-cache blocks in use (0 to 1).",
        s.kv_usage,
    );
    e.single(
        "r1serve_kv_cache_blocks",
        Kind::Gauge,
        "KV-cache blocks allocated at start.",
        s.kv_blocks_total as f64,
    );
    e.single(
        "r1serve_prefix_cache_queries_total",
        Kind::Counter,
        "Prompt tokens looked up in the prefix cache.",
        s.prefix_query_tokens as f64,
    );
    e.single(
        "r1serve_prefix_cache_hits_total",
        Kind::Counter,
        "Prompt tokens served from the prefix cache.",
        s.prefix_hit_tokens as f64,
    );
    e.single(
        "r1serve_prompt_tokens_total",
        Kind::Counter,
        "Prompt tokens of requests the engine accepted.",
        s.prompt_tokens as f64,
    );
    e.single(
        "r1serve_generation_tokens_total",
        Kind::Counter,
        "Tokens generated.",
        s.generation_tokens as f64,
    );
    e.single(
        "r1serve_num_preemptions_total",
        Kind::Counter,
        "Sequences preempted (their KV freed, recomputed later) because blocks ran out.",
        s.preemptions as f64,
    );
    e.single(
        "r1serve_engine_steps_total",
        Kind::Counter,
        "Engine steps (batched forward passes) run.",
        s.steps as f64,
    );
    e.single(
        "r1serve_engine_busy_seconds_total",
        Kind::Counter,
        "Seconds the engine spent in forward passes; its rate is the busy fraction.",
        em.busy_seconds,
    );
    e.single(
        "r1serve_requests_total",
        Kind::Counter,
        "Requests the engine accepted into its queue (one per prompt).",
        em.requests_arrived as f64,
    );
    e.single(
        "r1serve_requests_rejected_total",
        Kind::Counter,
        "Requests the engine refused (prompt too long for the KV cache, bad token ids, ...).",
        em.requests_rejected as f64,
    );
    e.family(
        "r1serve_request_success_total",
        Kind::Counter,
        "Sequences (choices) that ended, by finish reason: stop, length or abort.",
    );
    for (reason, n) in [
        ("stop", em.finished.stop),
        ("length", em.finished.length),
        ("abort", em.finished.abort),
    ] {
        e.sample(
            "r1serve_request_success_total",
            &[("finished_reason", reason)],
            n as f64,
        );
    }
    let histograms = [
        (
            "r1serve_time_to_first_token_seconds",
            "Seconds from a request's arrival to its first generated token.",
            &em.time_to_first_token,
        ),
        (
            "r1serve_inter_token_latency_seconds",
            "Seconds between two consecutive tokens of one sequence.",
            &em.inter_token_latency,
        ),
        (
            "r1serve_e2e_request_latency_seconds",
            "Seconds from a request's arrival until its last sequence finished.",
            &em.e2e_latency,
        ),
        (
            "r1serve_request_queue_time_seconds",
            "Seconds a request waited before its first engine step.",
            &em.queue_time,
        ),
        (
            "r1serve_request_prefill_time_seconds",
            "Seconds from a request's first engine step to its first token.",
            &em.prefill_time,
        ),
        (
            "r1serve_request_decode_time_seconds",
            "Seconds from a request's first token to its last.",
            &em.decode_time,
        ),
        (
            "r1serve_batch_size",
            "Sequences batched in one engine step.",
            &em.batch_size,
        ),
        (
            "r1serve_iteration_tokens",
            "Tokens (prompt chunks plus decodes) in one engine step.",
            &em.step_tokens,
        ),
    ];
    for (name, help, h) in histograms {
        e.histogram(name, help, h);
    }
}

/// vLLM's names for queue depth, running requests and KV-cache use (`--metrics-compat vllm`),
/// with vLLM's meaning: engine sequences, and a 0-to-1 fraction despite `perc`.
fn vllm_series(e: &mut TextEncoder, s: &r1_engine::engine::EngineStats) {
    e.single(
        "vllm:num_requests_running",
        Kind::Gauge,
        "Number of requests in model execution batches (r1serve_num_requests_running summed).",
        s.running as f64,
    );
    e.single(
        "vllm:num_requests_waiting",
        Kind::Gauge,
        "Number of requests waiting to be processed (r1serve_num_requests_waiting summed).",
        s.waiting as f64,
    );
    for name in ["vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"] {
        e.single(
            name,
            Kind::Gauge,
            "KV-cache usage, 1 means 100 percent (r1serve_kv_cache_usage_ratio).",
            s.kv_usage,
        );
    }
}

fn http_series(st: &Sources, e: &mut TextEncoder) {
    e.family(
        "r1serve_http_requests_total",
        Kind::Counter,
        "HTTP responses by route template and status code (401, 403, 429 and 503 included).",
    );
    for ((route, code), n) in st.metrics.responses() {
        e.sample(
            "r1serve_http_requests_total",
            &[("route", &route), ("code", &code.to_string())],
            n as f64,
        );
    }
    // Admission control and the response cache (`crate::overload`).
    let ov = st.overload.stats();
    let by_class = |f: fn(&crate::overload::ClassStats) -> f64| {
        ov.classes.iter().map(move |c| (c.name.as_str(), f(c)))
    };
    per_class(
        e,
        ("r1serve_admission_queue_length", Kind::Gauge),
        "Requests of a priority class holding a place in its bounded waiting queue.",
        by_class(|c| c.queued as f64),
    );
    per_class(
        e,
        ("r1serve_admission_refused_total", Kind::Counter),
        "Requests refused with 429 because their class queue was full.",
        by_class(|c| c.refused_queue_full as f64),
    );
    per_class(
        e,
        ("r1serve_admission_timed_out_total", Kind::Counter),
        "Requests answered 503 because they waited longer than their class's max queue wait.",
        by_class(|c| c.timed_out as f64),
    );
    e.single(
        "r1serve_rate_limited_total",
        Kind::Counter,
        "Requests refused with 429 by the per-key (or per-IP) rate limits.",
        ov.rate_limited as f64,
    );
    let rc = &ov.response_cache;
    e.single(
        "r1serve_response_cache_lookups_total",
        Kind::Counter,
        "Deterministic requests looked up in the response cache.",
        (rc.hits + rc.misses) as f64,
    );
    e.single(
        "r1serve_response_cache_hits_total",
        Kind::Counter,
        "Requests answered from the response cache.",
        rc.hits as f64,
    );
    e.single(
        "r1serve_response_cache_hit_bytes_total",
        Kind::Counter,
        "Bytes of cached responses replayed.",
        rc.hit_bytes as f64,
    );
    e.single(
        "r1serve_response_cache_bytes",
        Kind::Gauge,
        "Bytes the response cache holds now.",
        rc.bytes as f64,
    );
    if let Some(secs) = st.metrics.model_load_seconds() {
        e.single(
            "r1serve_model_load_seconds",
            Kind::Gauge,
            "Seconds the model took to load (weights, tokenizer, KV cache).",
            secs,
        );
    }
}

fn scaling_series(st: &Sources, e: &mut TextEncoder) {
    let Some(a) = st.scaling.latest() else {
        return;
    };
    e.single(
        "r1serve_desired_replicas",
        Kind::Gauge,
        "Replicas this replica's traffic needs: ceil(QPS / capacity), with hysteresis.",
        a.desired_replicas as f64,
    );
    e.single(
        "r1serve_scaling_qps",
        Kind::Gauge,
        "Requests per second arriving, over the advisor's window.",
        a.qps,
    );
    if let Some(c) = a.capacity {
        e.single(
            "r1serve_scaling_capacity_qps",
            Kind::Gauge,
            "Requests per second one replica completes (measured or configured).",
            c,
        );
    }
    e.single(
        "r1serve_scaling_utilisation",
        Kind::Gauge,
        "QPS over capacity (the engine's busy fraction while capacity is unknown).",
        a.utilisation,
    );
    e.family(
        "r1serve_scaling_decision",
        Kind::Gauge,
        "The advisor's current decision: 1 for the one in force, 0 for the others.",
    );
    for d in [Decision::ScaleOut, Decision::ScaleIn, Decision::Maintain] {
        e.sample(
            "r1serve_scaling_decision",
            &[("decision", d.as_str())],
            f64::from(u8::from(d == a.decision)),
        );
    }
}

fn audit_series(st: &Sources, e: &mut TextEncoder) {
    // Always present (0 without `--audit-log`), so alerts on failures never see "no data".
    let (written, failed) = st
        .security
        .audit
        .as_ref()
        .map_or((0, 0), |a| (a.written(), a.failures()));
    e.single(
        "r1serve_audit_records_total",
        Kind::Counter,
        "Audit-log records written.",
        written as f64,
    );
    e.single(
        "r1serve_audit_write_failures_total",
        Kind::Counter,
        "Audit-log writes that failed (each also logged as an error).",
        failed as f64,
    );
}

fn process_series(_st: &Sources, e: &mut TextEncoder) {
    let p = process::read();
    // The build, as Prometheus' `*_build_info` convention has it (the web dashboard shows it).
    e.family(
        "r1serve_build_info",
        Kind::Gauge,
        "The server's build: version label, value 1.",
    );
    e.sample(
        "r1serve_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1.0,
    );
    if let Some(t) = p.start_time_seconds {
        e.single(
            "r1serve_process_start_time_seconds",
            Kind::Gauge,
            "When the server process started, in seconds since the Unix epoch.",
            t,
        );
    }
    if let Some(b) = p.resident_bytes {
        e.single(
            "r1serve_process_resident_memory_bytes",
            Kind::Gauge,
            "Resident memory of the server process in bytes.",
            b as f64,
        );
    }
    if let Some(c) = p.cpu_seconds {
        e.single(
            "r1serve_process_cpu_seconds_total",
            Kind::Counter,
            "User and system CPU seconds used by the server process.",
            c,
        );
    }
}

/// One metric family with a sample per priority class.
fn per_class<'a>(
    e: &mut TextEncoder,
    (name, kind): (&str, Kind),
    help: &str,
    samples: impl Iterator<Item = (&'a str, f64)>,
) {
    e.family(name, kind, help);
    for (class, v) in samples {
        e.sample(name, &[("class", class)], v);
    }
}
