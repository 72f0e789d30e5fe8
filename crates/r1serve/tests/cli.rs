//! The terminal commands end to end: `run` on an HF directory (the tiny DeepSeek-V3 fixture)
//! reproduces HF transformers' greedy text, `inspect` reports the MLA latent cache, and bad
//! files give a message naming them, not a panic.

use std::process::Command;

use r1_model::testdata;

fn r1serve(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_r1serve"))
        .args(args)
        .output()
        .expect("runs")
}

#[test]
fn run_on_an_hf_directory_matches_hf_greedy_text() {
    let Some(dir) = testdata::fixture("tiny-deepseek-v3") else {
        return;
    };
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    let p = &reference["prompts"][0];
    let out = r1serve(&[
        "run",
        "--model",
        dir.to_str().unwrap(),
        "--raw",
        "--temperature",
        "0",
        "-n",
        "16",
        p["text"].as_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        text.trim_end_matches('\n'),
        p["greedy"]["text"].as_str().unwrap()
    );
}

#[test]
fn inspect_reports_the_latent_kv_cache() {
    let Some(dir) = testdata::fixture("tiny-deepseek-v3") else {
        return;
    };
    let out = r1serve(&["inspect", dir.to_str().unwrap()]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    // 3 layers x (kv_lora_rank 16 + rope 8) f32 values.
    assert!(text.contains("KV cache:       288 bytes/token"), "{text}");
}

#[test]
fn bad_model_files_name_the_file() {
    let dir = std::env::temp_dir().join(format!("r1serve-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("broken.gguf");
    std::fs::write(&bad, b"GGUF\x03\0\0\0\xff\xff").unwrap();
    for cmd in [
        vec!["inspect", bad.to_str().unwrap()],
        vec!["run", "-m", bad.to_str().unwrap(), "hi"],
    ] {
        let out = r1serve(&cmd);
        assert_eq!(out.status.code(), Some(1), "{cmd:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("broken.gguf") && err.contains("truncated"),
            "{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    let out = r1serve(&[
        "run",
        "-m",
        dir.join("missing.gguf").to_str().unwrap(),
        "hi",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.gguf: no such model file"));
    std::fs::remove_dir_all(&dir).ok();
}
