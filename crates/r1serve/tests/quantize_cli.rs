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
    llama_bench_runs(&out);
}

/// A legacy `.dat` importance matrix (llama-imatrix --output-format dat) with an entry for
/// every 2-D weight of `model`: synthetic positive importances, enough for the writers that
/// need one; quality is not what this file tests.
fn synthetic_imatrix(model: &std::path::Path, out: &std::path::Path) {
    let f = r1_model::gguf::GgufFile::open(model).unwrap();
    let weights: Vec<_> = f
        .tensors()
        .iter()
        .filter(|t| t.dims.len() >= 2 && t.name.ends_with(".weight") && t.name.starts_with("blk."))
        .collect();
    let mut b = Vec::new();
    b.extend_from_slice(&(weights.len() as i32).to_le_bytes());
    for t in weights {
        b.extend_from_slice(&(t.name.len() as i32).to_le_bytes());
        b.extend_from_slice(t.name.as_bytes());
        // one row of importances per expert for the 3-D expert tensors
        let n = t.dims[0] as usize * t.dims.get(2).copied().unwrap_or(1) as usize;
        b.extend_from_slice(&1i32.to_le_bytes()); // ncall
        b.extend_from_slice(&(n as i32).to_le_bytes());
        for i in 0..n {
            b.extend_from_slice(&(1.0 + (i % 7) as f32 * 0.25).to_le_bytes());
        }
    }
    b.extend_from_slice(&1i32.to_le_bytes()); // chunks
    b.extend_from_slice(&9i32.to_le_bytes());
    b.extend_from_slice(b"synthetic");
    std::fs::write(out, b).unwrap();
}

fn llama_bench_runs(model: &std::path::Path) {
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
        .arg(model)
        .args(["-p", "0", "-n", "1", "-r", "1", "-t", "2", "-o", "json"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && stdout.contains("\"n_gen\": 1"),
        "llama-bench could not run r1serve's file {}: {}\n{}",
        model.display(),
        String::from_utf8_lossy(&o.stderr),
        stdout
    );
}

/// The i-quant mixes, on the DeepSeek-shaped fixture (deepseek2, every row a whole number
/// of 256-blocks, so each mix's own types land on real tensors): refused without an
/// importance matrix where llama-quantize refuses, `--dry-run` writes nothing, and what they
/// write runs in r1serve and in llama.cpp.
#[test]
fn iq_mixes_need_an_imatrix_and_their_files_run_in_r1serve_and_llama_cpp() {
    use r1_model::quant::GgmlType;
    let Some(m) = r1_model::testdata::fixture("deepseek2-gguf/small1-f16.gguf") else {
        eprintln!(
            "skipping: deepseek2-gguf/small1-f16.gguf absent (set R1SERVE_FIXTURES to the \
             shared fixtures, see its README)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let quantize = |out: &std::path::Path, args: &[&str]| {
        r1serve()
            .args(["quantize", m.to_str().unwrap()])
            .arg(out)
            .args(args)
            .output()
            .unwrap()
    };
    let out = dir.path().join("iq2.gguf");
    let o = quantize(&out, &["--type", "IQ2_XXS"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("importance matrix") && err.contains(".weight") && err.contains("IQ2_XXS"),
        "{err}"
    );
    let im = dir.path().join("imatrix.dat");
    synthetic_imatrix(&m, &im);
    let imatrix = ["--imatrix", im.to_str().unwrap()];
    let o = quantize(
        &out,
        &[&["--type", "IQ2_XXS", "--dry-run"][..], &imatrix].concat(),
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        stdout.contains("ffn_up_exps.weight")
            && stdout.contains("IQ2_XXS")
            && stdout.contains("nothing written"),
        "{stdout}"
    );
    assert!(!out.exists() && !dir.path().join("iq2.gguf.part").exists());
    // IQ4_XS without an importance matrix (ggml's writers weigh by x² then), IQ2_XXS and
    // IQ1_S with one (their mixes add Q2_K, Q4_K, Q5_K and IQ2_XXS tensors)
    for (ty, im, own) in [
        ("IQ4_XS", false, GgmlType::IQ4_XS),
        ("IQ2_XXS", true, GgmlType::IQ2_XXS),
        ("IQ1_S", true, GgmlType::IQ1_S),
    ] {
        let out = dir.path().join(format!("{ty}.gguf"));
        let mut a = vec!["--type", ty];
        if im {
            a.extend(imatrix);
        }
        let o = quantize(&out, &a);
        assert!(
            o.status.success(),
            "{ty}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let f = r1_model::gguf::GgufFile::open(&out).unwrap();
        let n_own = f.tensors().iter().filter(|t| t.ty == own).count();
        assert!(n_own > 20, "{ty}: {n_own} {own:?} tensors");
        let o = r1serve()
            .args(["run", "-m"])
            .arg(&out)
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
        assert!(
            o.status.success(),
            "{ty}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        llama_bench_runs(&out);
    }
}
