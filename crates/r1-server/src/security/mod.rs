//! The server side of r1serve's security features (the pure parts live in `r1-security`):
//!
//! - [`auth`]: API keys → [`crate::caller::Caller`], route permissions, 401/403.
//! - [`audit_layer`]: one audit record per request, rejected ones included.
//! - [`output_filter`]: sensitive-data detection/redaction of generated text (streaming too).
//! - [`admin`]: the `/admin/*` and model load/unload routes.
//! - [`reload`]: keys reload on SIGHUP or when the keys file changes.
//! - [`listener`]: our accept loop: TLS, connection limit, header size and read timeout.

pub mod admin;
pub mod audit_layer;
pub mod audit_slot;
pub mod auth;
pub mod listener;
pub mod output_filter;
pub mod reload;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use r1_security::{AuditConfig, AuditLog, KeyStore, KeysFile, RedactMode};
use tokio::sync::Notify;

/// The default of `--max-body-bytes` (long prompts are large).
pub const MAX_BODY_BYTES: usize = 64 << 20;

/// The security settings (`serve` flags).
#[derive(Clone, Debug)]
pub struct SecurityConfig {
    /// The API keys file; `None` = the server is open (anonymous callers, every route).
    pub keys_file: Option<PathBuf>,
    pub audit: Option<AuditConfig>,
    /// Put request and response text in audit records (otherwise only hashes and scores).
    pub audit_include_text: bool,
    /// Fail requests (503) rather than serve them unaudited when the audit log cannot be
    /// written.
    pub audit_required: bool,
    pub redact: RedactMode,
    /// Send `x-sensitivity-score` / `x-sensitivity-categories` on non-streaming answers.
    pub sensitivity_header: bool,
    /// PEM certificate chain and private key: serve HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Connections served at once; more get one 429 answer and are closed.
    pub max_connections: usize,
    /// A client must send a request's headers within this time (slowloris), and finish a TLS
    /// handshake within it.
    pub header_read_timeout: Duration,
    /// Largest request head (request line plus headers); larger gets 431.
    pub max_header_bytes: usize,
    /// Largest request body; larger gets 413.
    pub max_body_bytes: usize,
    /// Allow an open server (no keys) on a non-loopback address.
    pub allow_unauthenticated: bool,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            keys_file: None,
            audit: None,
            audit_include_text: false,
            audit_required: false,
            redact: RedactMode::Off,
            sensitivity_header: false,
            tls: None,
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 64 << 10,
            max_body_bytes: MAX_BODY_BYTES,
            allow_unauthenticated: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error(transparent)]
    Keys(#[from] r1_security::KeysError),
    #[error(transparent)]
    Audit(#[from] r1_security::audit::AuditError),
    #[error("TLS: {0}")]
    Tls(String),
    #[error(
        "refusing to serve without API keys on {0}, which is not a loopback address: anyone \
         who can reach it could use the model. Pass --keys FILE (create one with `r1serve keys \
         add`), listen on 127.0.0.1, or pass --allow-unauthenticated"
    )]
    OpenNonLoopback(String),
}

/// The security state the layers share.
pub struct Security {
    pub config: SecurityConfig,
    /// `None` = open server. Swapped whole on reload; requests keep the identity they got.
    keys: RwLock<Option<Arc<KeyStore>>>,
    pub audit: Option<AuditLog>,
    /// `/admin/drain` asks the serve loop to drain, as SIGTERM does.
    pub drain_requested: Notify,
    /// Successful key reloads (for tests and `/admin/config`).
    reloads: std::sync::atomic::AtomicU64,
}

impl Security {
    /// An open server without audit or detection (the default).
    pub fn disabled() -> Self {
        Security {
            config: SecurityConfig::default(),
            keys: RwLock::new(None),
            audit: None,
            drain_requested: Notify::new(),
            reloads: Default::default(),
        }
    }

    pub fn open(config: SecurityConfig) -> Result<Self, SecurityError> {
        let keys = match &config.keys_file {
            None => None,
            Some(p) => Some(Arc::new(KeyStore::new(&KeysFile::load(p)?)?)),
        };
        let audit = match &config.audit {
            None => None,
            Some(a) => Some(AuditLog::open(a.clone())?),
        };
        Ok(Security {
            config,
            keys: RwLock::new(keys),
            audit,
            drain_requested: Notify::new(),
            reloads: Default::default(),
        })
    }

    /// The keys in force (`None`: open server).
    pub fn keys(&self) -> Option<Arc<KeyStore>> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn is_open(&self) -> bool {
        self.config.keys_file.is_none()
    }

    /// Re-read the keys file. On error the old keys stay in force.
    pub fn reload_keys(&self) -> Result<usize, SecurityError> {
        let Some(p) = &self.config.keys_file else {
            return Ok(0);
        };
        let store = KeyStore::new(&KeysFile::load(p)?)?;
        let n = store.len();
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(store));
        self.reloads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }

    pub fn reloads(&self) -> u64 {
        self.reloads.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Say loudly how the server is protected, and refuse an open server on a public address
    /// unless allowed.
    pub fn check_startup(&self, host: &str) -> Result<(), SecurityError> {
        if let Some(k) = self.keys() {
            eprintln!(
                "r1serve: API keys required ({} key(s) from {}; reloaded on SIGHUP or change)",
                k.len(),
                self.config
                    .keys_file
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            );
            if k.is_empty() {
                eprintln!("r1serve: WARNING: the keys file holds no keys: every request but /health and /ready gets 401");
            }
            return Ok(());
        }
        if !is_loopback(host) && !self.config.allow_unauthenticated {
            return Err(SecurityError::OpenNonLoopback(host.to_string()));
        }
        eprintln!(
            "r1serve: WARNING: NO API KEYS: the server is open; anyone who can reach {host} may \
             use every route, /admin included. Pass --keys FILE to require keys."
        );
        Ok(())
    }
}

/// Whether a host name/address only reaches this machine.
pub fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost") || h.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"] {
            assert!(is_loopback(h), "{h}");
        }
        for h in ["0.0.0.0", "::", "10.0.0.1", "example.com"] {
            assert!(!is_loopback(h), "{h}");
        }
    }

    #[test]
    fn open_server_refuses_public_address() {
        let s = Security::open(SecurityConfig::default()).unwrap();
        assert!(s.check_startup("127.0.0.1").is_ok());
        let e = s.check_startup("0.0.0.0").unwrap_err().to_string();
        assert!(e.contains("--allow-unauthenticated"), "{e}");
        let s = Security::open(SecurityConfig {
            allow_unauthenticated: true,
            ..SecurityConfig::default()
        })
        .unwrap();
        assert!(s.check_startup("0.0.0.0").is_ok());
    }
}
