//! Monitoring: `GET /metrics` in Prometheus text format. The engine keeps its own timings
//! and counters (`r1_engine::engine_metrics`); this module adds what only the HTTP side
//! sees (responses by route and status, admission and response-cache counters from
//! `crate::overload`, model load time, the
//! process's memory and CPU) and renders everything with `r1serve_` names.

pub mod exposition;
pub mod http;
pub mod process;
pub mod text_format;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Counters kept by the HTTP side, and how `/metrics` labels and names the series. Cheap to
/// update from any task.
#[derive(Debug, Default)]
pub struct ServerMetrics {
    /// The `model_name` label of every series (the served model's name).
    pub model_name: String,
    /// Extra metric names (`--metrics-compat`).
    pub compat: MetricsCompat,
    /// Responses by (route template, status code).
    responses: Mutex<BTreeMap<(String, u16), u64>>,
    /// Model load time in microseconds (0 = not loaded yet).
    model_load_micros: AtomicU64,
}

impl ServerMetrics {
    pub fn new(model_name: &str, compat: MetricsCompat) -> Self {
        ServerMetrics {
            model_name: model_name.to_string(),
            compat,
            ..ServerMetrics::default()
        }
    }

    pub fn record_response(&self, route: &str, status: u16) {
        let mut m = self.responses.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry((route.to_string(), status)).or_default() += 1;
    }

    /// Responses so far, by (route, status).
    pub fn responses(&self) -> BTreeMap<(String, u16), u64> {
        self.responses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Responses with `status` on any route.
    pub fn responses_with_status(&self, status: u16) -> u64 {
        self.responses()
            .iter()
            .filter(|((_, s), _)| *s == status)
            .map(|(_, n)| n)
            .sum()
    }

    pub fn set_model_load_time(&self, d: Duration) {
        self.model_load_micros
            .store((d.as_micros() as u64).max(1), Ordering::Relaxed);
    }

    /// Seconds the model took to load, once it has.
    pub fn model_load_seconds(&self) -> Option<f64> {
        match self.model_load_micros.load(Ordering::Relaxed) {
            0 => None,
            us => Some(us as f64 / 1e6),
        }
    }
}

/// Extra metric names exported for tools built around another server (`--metrics-compat`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MetricsCompat {
    /// Only r1serve's own `r1serve_*` names.
    #[default]
    None,
    /// Also vLLM's `vllm:num_requests_waiting`, `vllm:num_requests_running`,
    /// `vllm:kv_cache_usage_perc` (and its older name `vllm:gpu_cache_usage_perc`), which the
    /// Gateway API Inference Extension's endpoint picker (and llm-d) read to route requests.
    Vllm,
}

impl std::str::FromStr for MetricsCompat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(MetricsCompat::None),
            "vllm" => Ok(MetricsCompat::Vllm),
            other => Err(format!("`{other}`: expected `none` or `vllm`")),
        }
    }
}

/// The `class` label of a scheduler priority: the name of the priority class with that value
/// (`vip`, `normal`, `batch` by default; see `--priority-classes`), else `priority_N` for a
/// number no class uses.
pub fn class_label(classes: &[crate::overload::classes::ClassConfig], priority: i32) -> String {
    match classes.iter().find(|c| c.priority == priority) {
        Some(c) => c.name.clone(),
        None => format!("priority_{priority}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::overload::classes::default_classes;

    #[test]
    fn metrics_compat_parses() {
        assert_eq!("vllm".parse(), Ok(MetricsCompat::Vllm));
        assert_eq!("none".parse(), Ok(MetricsCompat::None));
        assert!("tgi".parse::<MetricsCompat>().is_err());
    }

    #[test]
    fn class_labels_use_the_class_names() {
        let c = default_classes();
        assert_eq!(class_label(&c, 100), "vip");
        assert_eq!(class_label(&c, 0), "normal");
        assert_eq!(class_label(&c, -100), "batch");
        assert_eq!(class_label(&c, 7), "priority_7");
    }
}
