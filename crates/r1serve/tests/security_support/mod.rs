//! Helpers of the `serve_security*` tests: keys made with the real `r1serve keys` command,
//! HTTP with headers, raw TCP, and the audit log.

#![allow(dead_code)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};

/// `r1serve keys add …`: returns the printed key.
pub fn add_key(file: &Path, user: &str, role: &str, extra: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_r1serve"))
        .args(["keys", "add", "--file"])
        .arg(file)
        .args(["--user", user, "--role", role])
        .args(extra)
        .output()
        .expect("run r1serve keys add");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(key.starts_with("r1k_"), "{key}");
    key
}

pub fn keys_cmd(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_r1serve"))
        .arg("keys")
        .args(args)
        .output()
        .expect("run r1serve keys")
}

/// One HTTP request on a fresh connection (`Connection: close`, so no pooled connection
/// holds a connection slot): (status, headers we care about, body).
pub struct Answer {
    pub status: u16,
    pub body: String,
    pub header: std::collections::HashMap<String, String>,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

pub fn call(
    base: &str,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: &str,
    rid: &str,
) -> Answer {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(120))
        .build();
    let mut r = agent
        .request(method, &format!("{base}{path}"))
        .set("Connection", "close")
        .set("x-request-id", rid);
    if let Some(k) = key {
        r = r.set("Authorization", &format!("Bearer {k}"));
    }
    let res = if method == "GET" {
        r.call()
    } else {
        r.set("Content-Type", "application/json").send_string(body)
    };
    let resp = match res {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {path}: {e}"),
    };
    let mut header = std::collections::HashMap::new();
    for n in resp.headers_names() {
        if let Some(v) = resp.header(&n) {
            header.insert(n.to_ascii_lowercase(), v.to_string());
        }
    }
    Answer {
        status: resp.status(),
        header,
        body: resp.into_string().unwrap_or_default(),
    }
}

pub fn sha256_hex(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// Every record of the audit log.
pub fn audit_records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("audit line {l:?}: {e}")))
        .collect()
}

/// Wait until the audit log holds a record for `rid` and return it.
pub fn audit_record(path: &Path, rid: &str) -> Value {
    for _ in 0..200 {
        if let Some(r) = audit_records(path)
            .into_iter()
            .find(|r| r["request_id"] == rid)
        {
            return r;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("no audit record for {rid}")
}
