//! The scaling advisor: every `interval` it samples the engine's counters, computes QPS and
//! capacity over a sliding window, and asks [`advisor::Advisor`] what to do. The latest advice
//! is served at `GET /v1/scaling` and exported as `r1serve_desired_replicas` (and the
//! `r1serve_scaling_*` gauges) for an autoscaler such as Kubernetes' HPA or KEDA.
//!
//! QPS counts requests that reached the engine plus those shed with 429 (demand that was not
//! served is still demand). Capacity is completions per second of engine compute over the
//! window (the last measurement is kept through idle spells), or `--replica-capacity-qps`
//! when given. The queue is the engine's waiting sequences (or the admission queues' places,
//! when more).

pub mod advisor;
pub mod window;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::error::ApiError;
use crate::model::ModelSlot;
use crate::overload::Overload;
use advisor::{Advice, Advisor, Observation, Thresholds};
use window::{RateWindow, Sample};

#[derive(Clone, Debug)]
pub struct ScalingConfig {
    pub thresholds: Thresholds,
    /// How often the advisor evaluates.
    pub interval: Duration,
    /// The span QPS and capacity are measured over.
    pub window: Duration,
    /// A known per-replica capacity (requests/s) instead of the measured one.
    pub capacity_qps: Option<f64>,
}

impl Default for ScalingConfig {
    fn default() -> Self {
        ScalingConfig {
            thresholds: Thresholds::default(),
            interval: Duration::from_secs(10),
            window: Duration::from_secs(60),
            capacity_qps: None,
        }
    }
}

/// The advisor's running state, shared by the sampling task and the routes.
pub struct ScalingMonitor {
    config: ScalingConfig,
    inner: Mutex<Inner>,
}

struct Inner {
    advisor: Advisor,
    window: RateWindow,
    measured_capacity: Option<f64>,
    latest: Option<Advice>,
}

impl ScalingMonitor {
    pub fn new(config: ScalingConfig) -> Self {
        ScalingMonitor {
            inner: Mutex::new(Inner {
                advisor: Advisor::new(config.thresholds.clone()),
                window: RateWindow::new(config.window.as_secs_f64()),
                measured_capacity: None,
                latest: None,
            }),
            config,
        }
    }

    pub fn config(&self) -> &ScalingConfig {
        &self.config
    }

    /// The latest advice (`None` before the first evaluation).
    pub fn latest(&self) -> Option<Advice> {
        self.lock().latest.clone()
    }

    /// Where the capacity figure comes from.
    pub fn capacity_source(&self) -> &'static str {
        if self.config.capacity_qps.is_some() {
            "configured"
        } else if self.lock().measured_capacity.is_some() {
            "measured"
        } else {
            "unknown"
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One evaluation from the engine's cumulative counters now.
    pub fn evaluate(&self, sample: Sample, queue_length: usize) -> Advice {
        let mut g = self.lock();
        g.window.push(sample);
        let rates = g.window.rates();
        if let Some(c) = rates.and_then(|r| r.capacity) {
            g.measured_capacity = Some(c);
        }
        let obs = Observation {
            qps: rates.map_or(0.0, |r| r.qps),
            capacity: self.config.capacity_qps.or(g.measured_capacity),
            queue_length,
            busy_fraction: rates.map_or(0.0, |r| r.busy_fraction),
        };
        let advice = g.advisor.observe(obs);
        g.latest = Some(advice.clone());
        advice
    }
}

/// Evaluate every `interval` until the task is aborted. `shed` counts the requests answered
/// 429 so far (the HTTP metrics).
pub async fn run(
    monitor: Arc<ScalingMonitor>,
    model: Arc<ModelSlot>,
    overload: Arc<Overload>,
    shed: impl Fn() -> u64,
) {
    let t0 = Instant::now();
    let mut tick = tokio::time::interval(monitor.config().interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(m) = model.get() else {
            continue;
        };
        let stats = m.engine.stats();
        let shed = shed();
        let sample = Sample {
            at: t0.elapsed().as_secs_f64(),
            arrived: stats.metrics.requests_arrived + stats.metrics.requests_rejected + shed,
            completed: stats.metrics.requests_completed,
            busy_seconds: stats.metrics.busy_seconds,
        };
        // Requests holding an admission-queue place are also engine waiters; take the larger.
        let admission: usize = overload.stats().classes.iter().map(|c| c.queued).sum();
        let advice = monitor.evaluate(sample, stats.waiting.max(admission));
        tracing::debug!(
            decision = advice.decision.as_str(),
            qps = advice.qps,
            utilisation = advice.utilisation,
            queue = advice.queue_length,
            desired = advice.desired_replicas,
            "scaling advice"
        );
    }
}

/// `GET /v1/scaling`: the latest advice.
pub async fn get_scaling(State(monitor): State<Arc<ScalingMonitor>>) -> Response {
    let Some(a) = monitor.latest() else {
        return ApiError::unavailable(
            "No scaling advice yet: the model is loading or the first evaluation is pending.",
        )
        .into_response();
    };
    let cfg = monitor.config();
    let t = &cfg.thresholds;
    Json(json!({
        "decision": a.decision,
        "reason": a.reason,
        "qps": a.qps,
        "capacity": a.capacity,
        "capacity_source": monitor.capacity_source(),
        "queue_length": a.queue_length,
        "utilisation": a.utilisation,
        "desired_replicas": a.desired_replicas,
        "window_seconds": cfg.window.as_secs_f64(),
        "interval_seconds": cfg.interval.as_secs_f64(),
        "thresholds": {
            "queue_high": t.queue_high,
            "queue_low": t.queue_low,
            "utilisation_high": t.util_high,
            "utilisation_low": t.util_low,
            "sustain_out": t.sustain_out,
            "sustain_in": t.sustain_in,
        },
    }))
    .into_response()
}
