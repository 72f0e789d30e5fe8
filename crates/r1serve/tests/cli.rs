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

#[test]
fn inspect_and_run_a_split_model() {
    let Some(model) = testdata::model("smollm2.gguf") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let whole = r1_model::gguf::GgufFile::open(&model).unwrap();
    let n = whole.tensors().len();
    let parts =
        r1_model::gguf::split::write_split(&whole, dir.path(), "smol", n.div_ceil(3), false)
            .unwrap();
    assert_eq!(parts.len(), 3);
    let first = parts[0].to_str().unwrap();

    let out = r1serve(&["inspect", first]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!("{n} tensors")) && text.contains("in 3 parts"),
        "{text}"
    );
    for (i, p) in parts.iter().enumerate() {
        let line = format!("part {}/3:", i + 1);
        assert!(
            text.contains(&line) && text.contains(p.to_str().unwrap()),
            "{text}"
        );
    }
    assert!(text.contains("total:"), "{text}");

    // A later part is refused with the name of the first.
    let out = r1serve(&["inspect", parts[1].to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(first) && err.contains("part 2 of 3"), "{err}");

    // The split model generates what the whole file does.
    let gen = |m: &str| {
        let out = r1serve(&[
            "run",
            "--model",
            m,
            "--raw",
            "--temperature",
            "0",
            "-n",
            "8",
            "The capital of France is",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(gen(first), gen(model.to_str().unwrap()));
}

/// `--kv-dtype f16` halves DeepSeek's latent cache (inspect says so, and run still follows
/// HF's greedy text on the tiny fixture); an architecture with one cache type refuses the
/// other by name, and an unknown type is a usage error.
#[test]
fn kv_dtype_option_halves_the_latent_cache_or_is_refused_clearly() {
    let Some(dir) = testdata::fixture("tiny-deepseek-v3") else {
        return;
    };
    let d = dir.to_str().unwrap();
    let out = r1serve(&["inspect", "--kv-dtype", "f16", d]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("KV cache:       144 bytes/token"), "{text}");
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    let p = &reference["prompts"][0];
    let out = r1serve(&[
        "run",
        "--model",
        d,
        "--kv-dtype",
        "f16",
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
    assert_eq!(
        String::from_utf8(out.stdout)
            .unwrap()
            .trim_end_matches('\n'),
        p["greedy"]["text"].as_str().unwrap()
    );

    let out = r1serve(&["run", "-m", d, "--kv-dtype", "q4", "hi"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown KV-cache type `q4`"), "{err}");

    let Some(smollm2) = testdata::model("smollm2") else {
        return;
    };
    let out = r1serve(&[
        "run",
        "-m",
        smollm2.to_str().unwrap(),
        "--kv-dtype",
        "f32",
        "hi",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--kv-dtype f32") && err.contains("keeps its KV cache in f16"),
        "{err}"
    );
}
