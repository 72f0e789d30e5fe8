//! Where tests find the large reference files that are not in the repository: the shared
//! fixtures (`$R1SERVE_FIXTURES`, default `../shared/fixtures` next to the checkout) and the
//! test models (`$R1SERVE_MODELS`, default `models/` in the checkout, filled by
//! `scripts/fetch-models.sh`). Tests that need them skip with a message saying how to get them.

use std::path::PathBuf;

/// The workspace root (this crate lives in `crates/r1-model`).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.."))
}

/// The shared fixtures directory, or `None` (with a message on stderr) if it is absent.
pub fn fixtures_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("R1SERVE_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared/fixtures"));
    if dir.join("README.md").is_file() {
        Some(dir)
    } else {
        eprintln!(
            "SKIP: reference fixtures not found at {} (set R1SERVE_FIXTURES to the shared fixtures folder)",
            dir.display()
        );
        None
    }
}

/// A fixture file, or `None` (with a message) if absent.
pub fn fixture(rel: &str) -> Option<PathBuf> {
    let p = fixtures_dir()?.join(rel);
    if p.exists() {
        Some(p)
    } else {
        eprintln!("SKIP: fixture {} not found", p.display());
        None
    }
}

/// A test model (`smollm2.gguf`, `qwen05.gguf`), or `None` (with a message) if absent.
pub fn model(name: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("R1SERVE_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("models"));
    let p = dir.join(name);
    if p.is_file() {
        Some(p)
    } else {
        eprintln!(
            "SKIP: model {} not found; run scripts/fetch-models.sh (or set R1SERVE_MODELS)",
            p.display()
        );
        None
    }
}
