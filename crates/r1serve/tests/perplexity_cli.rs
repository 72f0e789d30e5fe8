//! `r1serve perplexity` end to end on qwen05 (skipped with a message when the model is
//! absent): the PPL of a small text is finite and equals the PPL the `--kl-divergence` mode
//! reports when the model is compared with its own saved log-probabilities, where the KL
//! divergence is ~0 and the top token always agrees. Bad input fails naming the flag or file.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn r1serve() -> Command {
    Command::new(env!("CARGO_BIN_EXE_r1serve"))
}

fn qwen05() -> Option<PathBuf> {
    let p = r1_model::testdata::model("qwen05.gguf");
    if p.is_none() {
        eprintln!("skipping: models/qwen05.gguf absent (scripts/fetch-models.sh)");
    }
    p
}

/// A few thousand characters of varied English and code: more than 2 × 64 tokens.
fn sample_text() -> String {
    let mut s = String::new();
    for i in 0..12 {
        s.push_str(&format!(
            "def f{i}(x):\n    \"\"\"Return {i} times x plus one, for the test.\"\"\"\n    \
             return {i} * x + 1\n\nThe quick brown fox jumps over the lazy dog {i} times.\n"
        ));
    }
    s
}

fn run(model: &Path, args: &[&str]) -> Output {
    let o = r1serve()
        .args([
            "perplexity",
            "--model",
            model.to_str().unwrap(),
            "--threads",
            "2",
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "r1serve perplexity {args:?} failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// The value after `key` on the line that starts with it, e.g. `Final estimate: PPL =`.
fn value_after(out: &str, key: &str) -> f64 {
    let line = out
        .lines()
        .find(|l| l.starts_with(key))
        .unwrap_or_else(|| panic!("no line `{key}` in:\n{out}"));
    line[key.len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .trim_end_matches('%')
        .parse()
        .unwrap_or_else(|e| panic!("{line}: {e}"))
}

#[test]
fn ppl_matches_kld_mode_against_itself() {
    let Some(model) = qwen05() else { return };
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("text.txt");
    std::fs::write(&text, sample_text()).unwrap();
    let base = dir.path().join("base.kld");
    let o = run(
        &model,
        &[
            "--file",
            text.to_str().unwrap(),
            "--ctx",
            "64",
            "--chunks",
            "3",
            "--kl-divergence-base",
            base.to_str().unwrap(),
        ],
    );
    let out = String::from_utf8_lossy(&o.stdout);
    let ppl = value_after(&out, "Final estimate: PPL =");
    assert!(ppl.is_finite() && ppl > 1.0, "{out}");
    // 3 chunks × (64 - 1 - 32) rows of ⌈151936/2⌉·2 + 4 u16s, after the header and tokens.
    let len = std::fs::metadata(&base).unwrap().len();
    assert_eq!(len, 20 + 3 * 64 * 4 + 3 * 31 * (151_936 + 4) * 2);
    assert!(!dir.path().join("base.kld.part").exists());

    let o = run(
        &model,
        &[
            "--kl-divergence",
            "--kl-divergence-base",
            base.to_str().unwrap(),
        ],
    );
    let out = String::from_utf8_lossy(&o.stdout);
    eprintln!("{out}");
    let ppl_q = value_after(&out, "Mean PPL(Q)                   :");
    let ppl_base = value_after(&out, "Mean PPL(base)                :");
    let kld = value_after(&out, "Mean    KLD:");
    let kld99 = value_after(&out, "99.0%   KLD:");
    let same_top = value_after(&out, "Same top p:");
    let ppl_again = value_after(&out, "Final estimate: PPL =");
    // The same tokens, chunks and forward: the same PPL (printed to 4 and 6 decimals).
    assert!((ppl_again - ppl).abs() < 1e-4, "{ppl_again} vs {ppl}");
    assert!((ppl_q - ppl).abs() < 1e-4, "{ppl_q} vs {ppl}");
    // The saved log-probabilities round to 16 bits over a 16-nat range: ~1e-4 per entry.
    assert!((ppl_base - ppl).abs() / ppl < 1e-3, "{ppl_base} vs {ppl}");
    assert!(kld.abs() < 1e-4 && kld99.abs() < 1e-3, "{out}");
    assert_eq!(same_top, 100.0, "{out}");

    // --chunks caps the chunks compared, and a mismatching --ctx is refused.
    let o = run(
        &model,
        &[
            "--kl-divergence",
            "--kl-divergence-base",
            base.to_str().unwrap(),
            "--chunks",
            "1",
        ],
    );
    let out1 = String::from_utf8_lossy(&o.stdout);
    let ppl1 = value_after(&out1, "Final estimate: PPL =");
    assert!(ppl1.is_finite());
    let o = r1serve()
        .args(["perplexity", "--model", model.to_str().unwrap()])
        .args([
            "--kl-divergence",
            "--kl-divergence-base",
            base.to_str().unwrap(),
        ])
        .args(["--ctx", "128"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--ctx 128"));
}

fn fails_with(args: &[&str], needles: &[&str]) {
    let o = r1serve().arg("perplexity").args(args).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
    for n in needles {
        assert!(err.contains(n), "{args:?}: `{n}` not in: {err}");
    }
}

#[test]
fn bad_input_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.txt");
    let m = missing.to_str().unwrap();
    // No model needed to see these.
    fails_with(
        &["--model", "nomodel.gguf", "--file", m],
        &["--file", "missing.txt"],
    );
    fails_with(
        &["--model", "nomodel.gguf", "--file", m, "--ctx", "2"],
        &["--ctx 2"],
    );
    fails_with(&["--model", "nomodel.gguf"], &["--file"]);
    let junk = dir.path().join("junk.kld");
    std::fs::write(&junk, b"not logits").unwrap();
    let Some(model) = qwen05() else { return };
    let model = model.to_str().unwrap();
    fails_with(
        &[
            "--model",
            model,
            "--kl-divergence",
            "--kl-divergence-base",
            junk.to_str().unwrap(),
        ],
        &["junk.kld", "_logits_"],
    );
    let short = dir.path().join("short.txt");
    std::fs::write(&short, "def f(x):\n    return x\n").unwrap();
    fails_with(
        &["--model", model, "--file", short.to_str().unwrap()],
        &["short.txt", "--ctx 512", "1024"],
    );
    let text = dir.path().join("text.txt");
    std::fs::write(&text, sample_text()).unwrap();
    fails_with(
        &[
            "--model",
            model,
            "--file",
            text.to_str().unwrap(),
            "--ctx",
            "1000000",
        ],
        &["--ctx 1000000", "context length"],
    );
}
