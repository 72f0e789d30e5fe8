//! What the handlers share: the settings, the loaded model (set once loading finishes), and
//! whether the server is draining.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use r1_engine::chat_template::ChatTemplate;
use r1_engine::tokenizer::Tokenizer;

use crate::error::ApiError;
use crate::metrics::ServerMetrics;
use crate::reasoning::ReasoningMode;
use crate::scaling::{ScalingConfig, ScalingMonitor};
use crate::security::{Security, SecurityConfig};

/// Server settings (the `serve` flags that are not the engine's).
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Host name or address to listen on.
    pub host: String,
    /// 0 = any free port (the address is printed).
    pub port: u16,
    /// The name clients pass as `model`.
    pub served_model_name: String,
    pub reasoning: ReasoningMode,
    /// How long in-flight requests may run after SIGTERM/SIGINT.
    pub drain_timeout: Duration,
    /// A `: keep-alive` comment is sent when a stream has been silent this long.
    pub keep_alive_interval: Duration,
    /// Replaces the model's own chat template.
    pub chat_template: Option<String>,
    /// The scaling advisor's thresholds and cadence.
    pub scaling: ScalingConfig,
    /// Priority classes, queues, rate limits, response cache.
    pub overload: crate::overload::OverloadConfig,
    /// API keys, audit log, sensitive-data detection, TLS, connection limits.
    pub security: SecurityConfig,
    /// Extra metric names on `/metrics` (`--metrics-compat vllm`).
    pub metrics_compat: crate::metrics::MetricsCompat,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            host: "127.0.0.1".into(),
            port: 8080,
            served_model_name: "model".into(),
            reasoning: ReasoningMode::Auto,
            drain_timeout: Duration::from_secs(30),
            keep_alive_interval: Duration::from_secs(5),
            chat_template: None,
            scaling: ScalingConfig::default(),
            overload: Default::default(),
            security: SecurityConfig::default(),
            metrics_compat: Default::default(),
        }
    }
}

/// What the loader hands over once the model is up.
pub struct LoadedModel {
    pub engine: r1_engine::engine::EngineHandle,
    /// Joined at shutdown.
    pub engine_thread: Option<std::thread::JoinHandle<()>>,
    pub tokenizer: Arc<Tokenizer>,
    /// KV cache block size, to know how many tokens the cache holds.
    pub block_size: usize,
}

/// The model side of the state.
pub struct ModelState {
    pub engine: Arc<dyn crate::backend::Backend>,
    pub tokenizer: Arc<Tokenizer>,
    pub template: Option<ChatTemplate>,
    /// The template's source (for reasoning auto-detection and errors).
    pub template_source: Option<String>,
    pub reasoning: bool,
    pub block_size: usize,
    pub loaded_at: u64,
}

impl ModelState {
    /// Tokens the whole KV cache holds.
    pub fn kv_capacity_tokens(&self) -> usize {
        self.engine.stats().kv_blocks_total * self.block_size
    }
}

pub struct AppState {
    pub config: ServerConfig,
    model: OnceLock<ModelState>,
    draining: AtomicBool,
    next_id: AtomicU64,
    pub started_at: u64,
    /// Counters for `GET /metrics` kept by the HTTP side.
    pub metrics: ServerMetrics,
    pub scaling: ScalingMonitor,
    /// Admission control, rate limits and the response cache (see [`crate::overload`]).
    pub overload: Arc<crate::overload::Overload>,
    pub security: Arc<Security>,
}

impl AppState {
    pub fn new(config: ServerConfig) -> Self {
        AppState {
            metrics: ServerMetrics::default(),
            scaling: ScalingMonitor::new(config.scaling.clone()),
            overload: Arc::new(crate::overload::Overload::new(&config.overload)),
            config,
            model: OnceLock::new(),
            draining: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            started_at: unix_now(),
            security: Arc::new(Security::disabled()),
        }
    }

    /// The same state with the security layers' state (keys, audit log) in place.
    pub fn with_security(mut self, security: Arc<Security>) -> Self {
        self.security = security;
        self
    }

    /// Install the loaded model (once).
    pub fn set_model(&self, m: ModelState) {
        let _ = self.model.set(m);
    }

    pub fn model_state(&self) -> Option<&ModelState> {
        self.model.get()
    }

    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// The model, or 503 while it loads / the server drains.
    pub fn model(&self) -> Result<&ModelState, ApiError> {
        if self.is_draining() {
            return Err(ApiError::unavailable("The server is shutting down."));
        }
        self.model
            .get()
            .ok_or_else(|| ApiError::unavailable("The model is still loading; retry shortly."))
    }

    /// Check the request's `model` against the served name (absent = the served model).
    pub fn check_model(&self, requested: Option<&str>) -> Result<(), ApiError> {
        match requested {
            None | Some("") => Ok(()),
            Some(m) if m == self.config.served_model_name => Ok(()),
            Some(m) => Err(ApiError::model_not_found(m, &self.config.served_model_name)),
        }
    }

    /// A fresh response id (`chatcmpl-…`, `cmpl-…`).
    pub fn new_id(&self, prefix: &str) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        format!(
            "{prefix}-{:016x}{n:08x}",
            nanos ^ (n.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        )
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub fn system_fingerprint() -> String {
    format!("r1serve-{}", env!("CARGO_PKG_VERSION"))
}
