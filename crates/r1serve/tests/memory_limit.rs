//! A model larger than the memory it may use still runs: under a cgroup memory limit of 60%
//! of the file, `r1serve run` must not copy the weights into anonymous memory (which the
//! kernel cannot page out: an OOM kill), but serve them from the file mapping, whose pages
//! the kernel drops and re-reads as needed. The text must equal an unconstrained run from
//! the mapping (`R1SERVE_MMAP=1`, the same kernels and order).
//!
//! Needs root and a writable cgroup (v2 `memory.max` or v1 `memory.limit_in_bytes`); skips
//! with a message otherwise.

use std::path::PathBuf;
use std::process::Command;

use r1_model::testdata;

/// A fresh memory cgroup with `limit` bytes, removed on drop.
struct Cgroup {
    dir: PathBuf,
}

impl Cgroup {
    fn new(limit: u64) -> Option<Cgroup> {
        let name = format!("r1serve-test-{}", std::process::id());
        let v2 = PathBuf::from("/sys/fs/cgroup");
        let v2_ok = std::fs::read_to_string(v2.join("cgroup.subtree_control"))
            .is_ok_and(|c| c.split_whitespace().any(|x| x == "memory"));
        let (dir, file) = if v2_ok {
            (v2.join(&name), "memory.max")
        } else {
            (
                PathBuf::from("/sys/fs/cgroup/memory").join(&name),
                "memory.limit_in_bytes",
            )
        };
        if let Err(e) = std::fs::create_dir(&dir) {
            eprintln!(
                "SKIP: cannot create the cgroup {} ({e}); run as root with cgroups mounted",
                dir.display()
            );
            return None;
        }
        let cg = Cgroup { dir };
        if let Err(e) = std::fs::write(cg.dir.join(file), limit.to_string()) {
            eprintln!("SKIP: cannot set {} in {} ({e})", file, cg.dir.display());
            return None;
        }
        Some(cg)
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

fn run_args(model: &str) -> Vec<String> {
    [
        "run",
        "--model",
        model,
        "--threads",
        "2",
        "--raw",
        "--temperature",
        "0",
        "-n",
        "12",
        "def fibonacci(n):",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn runs_under_a_memory_limit_smaller_than_the_file() {
    let Some(model) = testdata::model("qwen05.gguf") else {
        return;
    };
    let size = std::fs::metadata(&model).unwrap().len();
    let limit = size * 6 / 10;
    let Some(cg) = Cgroup::new(limit) else {
        return;
    };
    let bin = env!("CARGO_BIN_EXE_r1serve");
    let m = model.to_str().unwrap();
    let free = Command::new(bin)
        .args(run_args(m))
        .env("R1SERVE_MMAP", "1")
        .output()
        .unwrap();
    assert!(
        free.status.success(),
        "{}",
        String::from_utf8_lossy(&free.stderr)
    );
    // The shell joins the cgroup, then becomes r1serve.
    let script = format!(
        "echo $$ > '{}/cgroup.procs' && exec \"$0\" \"$@\"",
        cg.dir.display()
    );
    let limited = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(bin)
        .args(run_args(m))
        .output()
        .unwrap();
    assert!(
        limited.status.success(),
        "under {} MB (file {} MB): {:?}\n{}",
        limit >> 20,
        size >> 20,
        limited.status,
        String::from_utf8_lossy(&limited.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&limited.stdout),
        String::from_utf8_lossy(&free.stdout)
    );
    let peak = ["memory.peak", "memory.max_usage_in_bytes"]
        .iter()
        .find_map(|f| std::fs::read_to_string(cg.dir.join(f)).ok())
        .unwrap_or_default();
    eprintln!(
        "qwen05 ({} MB) ran under a {} MB cgroup limit; cgroup peak {} bytes; text {:?}",
        size >> 20,
        limit >> 20,
        peak.trim(),
        String::from_utf8_lossy(&limited.stdout)
    );
}
