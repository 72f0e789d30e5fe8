//! The `serve` flags of the security features (API keys, audit log, sensitive-data
//! detection, TLS, connection limits) and their translation into `SecurityConfig`.

use std::path::PathBuf;
use std::time::Duration;

use r1_security::{AuditConfig, FsyncPolicy, RedactMode};
use r1_server::security::SecurityConfig;

#[derive(clap::Args, Debug, Clone)]
pub struct SecurityArgs {
    /// API keys file (`r1serve keys add`); without it the server is open (loopback only,
    /// unless --allow-unauthenticated).
    #[arg(long)]
    pub keys: Option<PathBuf>,
    /// Serve without API keys on a non-loopback address.
    #[arg(long)]
    pub allow_unauthenticated: bool,
    /// Append one JSON line per request to this file.
    #[arg(long)]
    pub audit_log: Option<PathBuf>,
    /// Rotate the audit log when it would pass this many bytes.
    #[arg(long, default_value_t = 100 << 20)]
    pub audit_max_bytes: u64,
    /// Rotated audit files kept (PATH.1 … PATH.N).
    #[arg(long, default_value_t = 5)]
    pub audit_keep: usize,
    /// When to fsync the audit log: always, never, or at most every N seconds.
    #[arg(long, default_value = "1", value_parser = parse_fsync)]
    pub audit_fsync: FsyncPolicy,
    /// Put request and response text in audit records (default: hashes and scores only).
    #[arg(long)]
    pub audit_include_text: bool,
    /// Fail requests (503) instead of serving them when the audit log cannot be written.
    #[arg(long)]
    pub audit_required: bool,
    /// Sensitive data in outputs: off, flag (detect and report) or redact (also replace).
    #[arg(long, default_value = "off", value_parser = parse_redact)]
    pub redact: RedactMode,
    /// Send x-sensitivity-score / x-sensitivity-categories headers (non-streaming answers).
    #[arg(long)]
    pub sensitivity_header: bool,
    /// TLS certificate chain (PEM); with --tls-key the server speaks HTTPS only.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Connections served at once; one more gets a 429 answer and is closed.
    #[arg(long, default_value_t = 1024)]
    pub max_connections: usize,
    /// Seconds a client may take to send a request's headers (or finish TLS).
    #[arg(long, default_value_t = 10.0)]
    pub header_read_timeout: f64,
    /// Largest request head (request line and headers) in bytes; larger gets 431.
    #[arg(long, default_value_t = 64 << 10)]
    pub max_header_bytes: usize,
    /// Largest request body in bytes; larger gets 413.
    #[arg(long, default_value_t = r1_server::routes::MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
}

fn parse_fsync(s: &str) -> Result<FsyncPolicy, String> {
    s.parse()
}

fn parse_redact(s: &str) -> Result<RedactMode, String> {
    s.parse()
}

impl SecurityArgs {
    pub fn config(&self) -> anyhow::Result<SecurityConfig> {
        if self.max_connections == 0 {
            anyhow::bail!("--max-connections must be at least 1");
        }
        let header_read_timeout = Duration::try_from_secs_f64(self.header_read_timeout)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "--header-read-timeout {}: not a positive number of seconds",
                    self.header_read_timeout
                )
            })?;
        if (self.audit_include_text || self.audit_required) && self.audit_log.is_none() {
            anyhow::bail!("--audit-include-text and --audit-required need --audit-log PATH");
        }
        Ok(SecurityConfig {
            keys_file: self.keys.clone(),
            audit: self.audit_log.as_ref().map(|p| AuditConfig {
                path: p.clone(),
                max_bytes: self.audit_max_bytes.max(1),
                keep: self.audit_keep,
                fsync: self.audit_fsync,
            }),
            audit_include_text: self.audit_include_text,
            audit_required: self.audit_required,
            redact: self.redact,
            sensitivity_header: self.sensitivity_header,
            tls: self.tls_cert.clone().zip(self.tls_key.clone()),
            max_connections: self.max_connections,
            header_read_timeout,
            max_header_bytes: self.max_header_bytes,
            max_body_bytes: self.max_body_bytes,
            allow_unauthenticated: self.allow_unauthenticated,
        })
    }
}
