//! The settings ([`ServerConfig`]) and the router's state ([`AppState`]): the top of the
//! crate's module graph, used by `routes/mod.rs` and `lib.rs` only.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRef;

use crate::extract::BodyLimit;
use crate::metrics::ServerMetrics;
use crate::model::ModelSlot;
use crate::overload::Overload;
use crate::reasoning::ReasoningMode;
use crate::scaling::{ScalingConfig, ScalingMonitor};
use crate::security::{Security, SecurityConfig};
use crate::sse::StreamSettings;

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
    /// `--tool-call-parser`; `None`: picked from the chat template.
    pub tool_call_parser: Option<crate::tools::ToolParserKind>,
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
    /// Serve the web UI at `/` and `/dashboard` (`--no-webui` turns it off).
    pub webui: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            host: "127.0.0.1".into(),
            port: 8080,
            served_model_name: "model".into(),
            reasoning: ReasoningMode::Auto,
            tool_call_parser: None,
            drain_timeout: Duration::from_secs(30),
            keep_alive_interval: Duration::from_secs(5),
            chat_template: None,
            scaling: ScalingConfig::default(),
            overload: Default::default(),
            security: SecurityConfig::default(),
            metrics_compat: Default::default(),
            webui: true,
        }
    }
}

/// The state every route shares, split into sub-states: each handler and layer takes only
/// the parts it needs with `State<T>` (axum's `FromRef`), so no module below the router knows
/// this struct. Cloning it clones a few `Arc`s.
#[derive(Clone, FromRef)]
pub struct AppState {
    pub config: Arc<ServerConfig>,
    /// The model (once loaded), its served name, the drain flag.
    pub model: Arc<ModelSlot>,
    /// HTTP-side counters and what `/metrics` adds to them.
    pub metrics: Arc<ServerMetrics>,
    pub scaling: Arc<ScalingMonitor>,
    /// Admission control, rate limits and the response cache (see [`crate::overload`]).
    pub overload: Arc<Overload>,
    pub security: Arc<Security>,
    pub body_limit: BodyLimit,
    pub stream: StreamSettings,
}

impl AppState {
    pub fn new(config: ServerConfig) -> Self {
        AppState {
            model: Arc::new(ModelSlot::new(&config.served_model_name)),
            metrics: Arc::new(ServerMetrics::new(
                &config.served_model_name,
                config.metrics_compat,
            )),
            scaling: Arc::new(ScalingMonitor::new(config.scaling.clone())),
            overload: Arc::new(Overload::new(&config.overload)),
            security: Arc::new(Security::disabled()),
            body_limit: BodyLimit(config.security.max_body_bytes),
            stream: StreamSettings {
                keep_alive: config.keep_alive_interval,
            },
            config: Arc::new(config),
        }
    }

    /// The same state with the security layers' state (keys, audit log) in place.
    pub fn with_security(mut self, security: Arc<Security>) -> Self {
        self.body_limit = BodyLimit(security.config.max_body_bytes);
        self.security = security;
        self
    }
}
