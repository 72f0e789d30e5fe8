//! The command line's observability options: the scaling advisor's `serve` flags and the
//! log format (`--log-format text|json`, for every command).

use std::time::Duration;

use r1_server::scaling::advisor::Thresholds;
use r1_server::scaling::ScalingConfig;

/// `serve` flags of the scaling advisor (`GET /v1/scaling`, `r1serve_desired_replicas`).
#[derive(clap::Args, Debug, Clone)]
pub struct ScalingArgs {
    /// Scale out when more requests than this wait in the queue.
    #[arg(long, default_value_t = 50)]
    pub scaling_queue_high: usize,
    /// Scale in only when fewer requests than this wait.
    #[arg(long, default_value_t = 10)]
    pub scaling_queue_low: usize,
    /// Scale out above this utilisation (QPS / capacity, 0 to 1).
    #[arg(long, default_value_t = 0.9)]
    pub scaling_util_high: f64,
    /// Scale in only below this utilisation.
    #[arg(long, default_value_t = 0.4)]
    pub scaling_util_low: f64,
    /// Consecutive evaluations needed before scaling out (or returning to maintain).
    #[arg(long, default_value_t = 2)]
    pub scaling_sustain_out: u32,
    /// Consecutive evaluations needed before scaling in.
    #[arg(long, default_value_t = 6)]
    pub scaling_sustain_in: u32,
    /// Seconds between two evaluations of the advisor.
    #[arg(long, default_value_t = 10.0)]
    pub scaling_interval: f64,
    /// Seconds of history QPS and capacity are measured over.
    #[arg(long, default_value_t = 60.0)]
    pub scaling_window: f64,
    /// Requests per second one replica sustains, if known (e.g. from a load test); by default
    /// it is measured as completions per second of engine compute.
    #[arg(long)]
    pub replica_capacity_qps: Option<f64>,
}

impl ScalingArgs {
    pub fn config(&self) -> anyhow::Result<ScalingConfig> {
        let thresholds = Thresholds {
            queue_high: self.scaling_queue_high,
            queue_low: self.scaling_queue_low,
            util_high: self.scaling_util_high,
            util_low: self.scaling_util_low,
            sustain_out: self.scaling_sustain_out,
            sustain_in: self.scaling_sustain_in,
        };
        thresholds
            .validate()
            .map_err(|e| anyhow::anyhow!("--scaling-* flags: {e}"))?;
        let secs = |name: &str, v: f64| {
            Duration::try_from_secs_f64(v)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| anyhow::anyhow!("--{name} {v}: not a positive number of seconds"))
        };
        let interval = secs("scaling-interval", self.scaling_interval)?;
        let window = secs("scaling-window", self.scaling_window)?;
        if window < interval {
            anyhow::bail!(
                "--scaling-window {} is shorter than --scaling-interval {}",
                self.scaling_window,
                self.scaling_interval
            );
        }
        if let Some(c) = self.replica_capacity_qps {
            if !(c.is_finite() && c > 0.0) {
                anyhow::bail!("--replica-capacity-qps {c}: must be a positive number");
            }
        }
        Ok(ScalingConfig {
            thresholds,
            interval,
            window,
            capacity_qps: self.replica_capacity_qps,
        })
    }
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (fields, the request span with its request id, timestamp).
    Json,
}

/// Install the global log subscriber: `R1SERVE_LOG` filters (default `warn`), stderr.
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("R1SERVE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}
