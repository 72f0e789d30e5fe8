//! `r1serve quantize` end to end: bad input fails with a message naming the file and the
//! tensor and leaves no file behind; what it writes loads in r1serve and in llama.cpp
//! (`llama-bench` of the peer build, skipped with a message when absent).

use std::path::PathBuf;
use std::process::Command;

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

#[test]
fn bad_input_is_a_clear_error_and_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.gguf");
    std::fs::write(&junk, b"not a gguf file at all").unwrap();
    let out = dir.path().join("out.gguf");
    let o = r1serve()
        .args([
            "quantize",
            junk.to_str().unwrap(),
            out.to_str().unwrap(),
            "--type",
            "q8_0",
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("junk.gguf"), "{err}");
    let o = r1serve()
        .args(["quantize", "a.gguf", "b.gguf", "--type", "Q7_X"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("Q4_K_M"));
    if let Some(m) = qwen05() {
        // already quantized: needs --allow-requantize, said with the tensor's name
        let o = r1serve()
            .args([
                "quantize",
                m.to_str().unwrap(),
                out.to_str().unwrap(),
                "--type",
                "q4_0",
            ])
            .output()
            .unwrap();
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("--allow-requantize") && err.contains(".weight"),
            "{err}"
        );
    }
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("junk.gguf")]);
}

#[test]
fn requantized_model_loads_in_r1serve_and_llama_cpp() {
    let Some(m) = qwen05() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("q8.gguf");
    let o = r1serve()
        .args(["quantize", "--allow-requantize", m.to_str().unwrap()])
        .arg(&out)
        .args(["--type", "Q8_0", "--pure"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let f = r1_model::gguf::GgufFile::open(&out).unwrap();
    assert_eq!(f.get_u64("general.file_type").unwrap(), 7);
    assert!(f.tensors().iter().all(|t| matches!(
        t.ty,
        r1_model::quant::GgmlType::Q8_0 | r1_model::quant::GgmlType::F32
    )));
    // r1serve runs it: greedy continuation of a prompt, as from the original
    let run = |model: &std::path::Path| {
        let o = r1serve()
            .args(["run", "-m"])
            .arg(model)
            .args([
                "--raw",
                "-n",
                "8",
                "--temperature",
                "0",
                "The capital of France is",
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let text = run(&out);
    assert!(text.contains("Paris"), "{text}");
    // llama.cpp loads and runs it
    let peer = std::env::var_os("R1SERVE_PEER_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/r1serve")
        })
        .join("llama.cpp-0c1e570/bin/llama-bench");
    if !peer.is_file() {
        eprintln!(
            "skipping the llama.cpp half: no {} (scripts/build-llamacpp.sh)",
            peer.display()
        );
        return;
    }
    let o = Command::new(&peer)
        .arg("-m")
        .arg(&out)
        .args(["-p", "0", "-n", "1", "-r", "1", "-t", "2", "-o", "json"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && stdout.contains("\"n_gen\": 1"),
        "llama-bench could not run r1serve's file: {}\n{}",
        String::from_utf8_lossy(&o.stderr),
        stdout
    );
}
