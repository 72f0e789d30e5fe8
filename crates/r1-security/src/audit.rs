//! The audit log: one JSON line per request (rejected ones too), appended to a file that is
//! rotated by size, synced by a configurable policy. A failed write is never silent: it is
//! counted, logged as an error, and reported to the caller, who (with `--audit-required`)
//! fails the request instead of serving it unaudited.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

/// When the log file is fsynced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// After every record (slowest; no record is lost on power failure).
    Always,
    /// At a write when at least this long has passed since the last sync.
    Interval(Duration),
    /// Never (the OS decides).
    Never,
}

impl std::str::FromStr for FsyncPolicy {
    type Err = String;
    /// `always`, `never`, or a number of seconds (`1`, `0.5`).
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "always" => Ok(FsyncPolicy::Always),
            "never" => Ok(FsyncPolicy::Never),
            n => n
                .parse::<f64>()
                .ok()
                .and_then(|v| Duration::try_from_secs_f64(v).ok())
                .map(FsyncPolicy::Interval)
                .ok_or_else(|| format!("`{s}`: expected always, never or seconds (e.g. 1)")),
        }
    }
}

#[derive(Clone, Debug)]
pub struct AuditConfig {
    pub path: PathBuf,
    /// Rotate when the file would grow past this many bytes.
    pub max_bytes: u64,
    /// Rotated files kept (`audit.log.1` … `audit.log.N`).
    pub keep: usize,
    pub fsync: FsyncPolicy,
}

/// One request's record.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AuditRecord {
    /// RFC 3339 UTC, milliseconds.
    pub timestamp: String,
    pub request_id: String,
    pub user_id: Option<String>,
    pub role: Option<String>,
    pub client_ip: Option<String>,
    pub method: String,
    pub route: String,
    pub model: Option<String>,
    pub status: u16,
    pub latency_ms: f64,
    /// SHA-256 of the request body as received.
    pub input_sha256: String,
    pub input_bytes: usize,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    /// 0 (nothing found) to 1; see `detect::score`.
    pub sensitivity_score: f64,
    pub sensitivity_categories: Vec<String>,
    /// How many findings were replaced in the output (redact mode).
    pub redactions: usize,
    /// Why the request was rejected, for 4xx/5xx answers made by the security layer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Raw texts: only with `--audit-include-text`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_text: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("audit log {path}: {source}")]
pub struct AuditError {
    pub path: String,
    #[source]
    pub source: std::io::Error,
}

struct Writer {
    file: Option<File>,
    size: u64,
    last_sync: Instant,
}

pub struct AuditLog {
    cfg: AuditConfig,
    w: Mutex<Writer>,
    written: AtomicU64,
    failures: AtomicU64,
    /// False after a failed write until a later one succeeds.
    healthy: AtomicBool,
}

impl AuditLog {
    /// Open (append to) the log, creating it with mode 0600.
    pub fn open(cfg: AuditConfig) -> Result<Self, AuditError> {
        let (file, size) = open_append(&cfg.path)?;
        Ok(AuditLog {
            w: Mutex::new(Writer {
                file: Some(file),
                size,
                last_sync: Instant::now(),
            }),
            cfg,
            written: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
        })
    }

    pub fn path(&self) -> &Path {
        &self.cfg.path
    }

    /// Records written so far.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Failed writes so far (the metric).
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Whether the last write succeeded.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Append one record (blocking: call from a blocking-capable context).
    pub fn write(&self, rec: &AuditRecord) -> Result<(), AuditError> {
        let mut line = serde_json::to_string(rec).unwrap_or_else(|e| {
            format!(
                r#"{{"request_id":{:?},"error":"unserializable record: {e}"}}"#,
                rec.request_id
            )
        });
        line.push('\n');
        let mut w = self.w.lock().unwrap_or_else(|p| p.into_inner());
        match self.write_locked(&mut w, line.as_bytes()) {
            Ok(()) => {
                self.written.fetch_add(1, Ordering::Relaxed);
                self.healthy.store(true, Ordering::Relaxed);
                Ok(())
            }
            Err(source) => {
                // Reopen on the next write: the file may have been removed or the disk freed.
                w.file = None;
                self.failures.fetch_add(1, Ordering::Relaxed);
                self.healthy.store(false, Ordering::Relaxed);
                let e = AuditError {
                    path: self.cfg.path.display().to_string(),
                    source,
                };
                tracing::error!(
                    request_id = rec.request_id,
                    "writing the audit record failed: {e}"
                );
                Err(e)
            }
        }
    }

    fn write_locked(&self, w: &mut Writer, line: &[u8]) -> std::io::Result<()> {
        if w.file.is_some() && w.size > 0 && w.size + line.len() as u64 > self.cfg.max_bytes {
            w.file = None;
            self.rotate()?;
            w.size = 0;
        }
        if w.file.is_none() {
            let (f, size) = open_append(&self.cfg.path).map_err(|e| e.source)?;
            w.file = Some(f);
            w.size = size;
        }
        let f = w.file.as_mut().expect("opened above");
        f.write_all(line)?;
        w.size += line.len() as u64;
        let sync = match self.cfg.fsync {
            FsyncPolicy::Always => true,
            FsyncPolicy::Never => false,
            FsyncPolicy::Interval(d) => w.last_sync.elapsed() >= d,
        };
        if sync {
            f.sync_data()?;
            w.last_sync = Instant::now();
        }
        Ok(())
    }

    /// `log` → `log.1` → … → `log.keep` (the oldest is dropped).
    fn rotate(&self) -> std::io::Result<()> {
        let p = &self.cfg.path;
        let numbered = |i: usize| PathBuf::from(format!("{}.{i}", p.display()));
        if self.cfg.keep == 0 {
            return std::fs::remove_file(p);
        }
        for i in (1..self.cfg.keep).rev() {
            if numbered(i).exists() {
                std::fs::rename(numbered(i), numbered(i + 1))?;
            }
        }
        std::fs::rename(p, numbered(1))
    }

    /// Sync whatever the interval policy left unsynced (at shutdown).
    pub fn flush(&self) {
        let mut w = self.w.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = w.file.as_mut() {
            let _ = f.sync_data();
        }
    }
}

fn open_append(path: &Path) -> Result<(File, u64), AuditError> {
    let err = |source| AuditError {
        path: path.display().to_string(),
        source,
    };
    let mut opts = OpenOptions::new();
    opts.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let f = opts.open(path).map_err(err)?;
    let size = f.metadata().map_err(err)?.len();
    Ok((f, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str) -> AuditRecord {
        AuditRecord {
            request_id: id.into(),
            status: 200,
            ..AuditRecord::default()
        }
    }

    #[test]
    fn appends_json_lines_and_rotates_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(AuditConfig {
            path: path.clone(),
            max_bytes: 1000,
            keep: 2,
            fsync: FsyncPolicy::Always,
        })
        .unwrap();
        for i in 0..20 {
            log.write(&rec(&format!("r{i}"))).unwrap();
        }
        assert_eq!(log.written(), 20);
        let mut ids = Vec::new();
        for p in [
            path.with_extension("log.2"),
            path.with_extension("log.1"),
            path.clone(),
        ] {
            let text = std::fs::read_to_string(&p).unwrap();
            assert!(
                text.len() <= 1000,
                "{} is {} bytes",
                p.display(),
                text.len()
            );
            for l in text.lines() {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                ids.push(v["request_id"].as_str().unwrap().to_string());
            }
        }
        assert!(!path.with_extension("log.3").exists());
        // The newest records survive, in order, none twice.
        let n = ids.len();
        let want: Vec<String> = (20 - n..20).map(|i| format!("r{i}")).collect();
        assert_eq!(ids, want);
        assert!(n < 20, "rotation dropped nothing?");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn failed_writes_are_counted_and_reported() {
        let log = AuditLog::open(AuditConfig {
            path: "/dev/full".into(),
            max_bytes: u64::MAX,
            keep: 1,
            fsync: FsyncPolicy::Never,
        })
        .unwrap();
        assert!(log.is_healthy());
        let e = log.write(&rec("x")).unwrap_err();
        assert!(e.to_string().contains("/dev/full"), "{e}");
        assert_eq!((log.failures(), log.written()), (1, 0));
        assert!(!log.is_healthy());
    }

    #[test]
    fn fsync_policy_parses() {
        assert_eq!(
            "always".parse::<FsyncPolicy>().unwrap(),
            FsyncPolicy::Always
        );
        assert_eq!(
            "0.5".parse::<FsyncPolicy>().unwrap(),
            FsyncPolicy::Interval(Duration::from_millis(500))
        );
        assert!("sometimes".parse::<FsyncPolicy>().is_err());
    }
}
