//! Helpers of `quantize_hf.rs`: running the built binary, a server on an HF directory, and
//! a small safetensors reader/writer that makes an FP8 copy of a BF16 checkpoint in
//! DeepSeek-V3/R1's official layout (no torch needed).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

pub fn r1serve() -> Command {
    Command::new(env!("CARGO_BIN_EXE_r1serve"))
}

/// Greedy raw completion of `prompt` (16 tokens unless `extra` says `-n`).
pub fn run_text(model: &Path, extra: &[&str], prompt: &str) -> String {
    let mut c = r1serve();
    c.args(["run", "-m"]).arg(model).args(["--threads", "1"]);
    if !extra.contains(&"-n") {
        c.args(["-n", "16"]);
    }
    let o = c
        .args(extra)
        .args(["--raw", "--temperature", "0", prompt])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{:?}: {}",
        model,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout)
        .trim_end_matches('\n')
        .to_string()
}

/// Whether llama.cpp (the peer build's `llama-bench`) loads `model` and generates a token;
/// `None` (with a message) when the peer build is absent.
pub fn llama_cpp_runs(model: &Path) -> Option<bool> {
    let peer = std::env::var_os("R1SERVE_PEER_CACHE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/r1serve")
        })
        .join("llama.cpp-0c1e570/bin/llama-bench");
    if !peer.is_file() {
        eprintln!(
            "SKIP (llama.cpp half): no {} (scripts/build-llamacpp.sh)",
            peer.display()
        );
        return None;
    }
    let o = Command::new(&peer)
        .arg("-m")
        .arg(model)
        .args(["-p", "0", "-n", "1", "-r", "1", "-t", "1", "-o", "json"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    let ok = o.status.success() && stdout.contains("\"n_gen\": 1");
    if !ok {
        eprintln!(
            "llama-bench: {}\n{stdout}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    Some(ok)
}

/// One tensor of a safetensors file: dtype name, shape, bytes.
pub struct Tensor {
    pub dtype: String,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

/// Every tensor of a safetensors file, by name.
pub fn read_safetensors(path: &Path) -> BTreeMap<String, Tensor> {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let data = &bytes[8 + n..];
    let mut out = BTreeMap::new();
    for (name, v) in header.as_object().unwrap() {
        if name == "__metadata__" {
            continue;
        }
        let off = v["data_offsets"].as_array().unwrap();
        let (a, b) = (
            off[0].as_u64().unwrap() as usize,
            off[1].as_u64().unwrap() as usize,
        );
        out.insert(
            name.clone(),
            Tensor {
                dtype: v["dtype"].as_str().unwrap().to_string(),
                shape: v["shape"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_u64().unwrap() as usize)
                    .collect(),
                data: data[a..b].to_vec(),
            },
        );
    }
    out
}

pub fn write_safetensors(path: &Path, tensors: &BTreeMap<String, Tensor>) {
    let mut header = serde_json::Map::new();
    let mut off = 0usize;
    for (name, t) in tensors {
        header.insert(
            name.clone(),
            serde_json::json!({
                "dtype": t.dtype, "shape": t.shape, "data_offsets": [off, off + t.data.len()]
            }),
        );
        off += t.data.len();
    }
    let mut h = Value::Object(header).to_string().into_bytes();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + h.len() + off);
    out.extend_from_slice(&(h.len() as u64).to_le_bytes());
    out.extend_from_slice(&h);
    for t in tensors.values() {
        out.extend_from_slice(&t.data);
    }
    std::fs::write(path, out).unwrap();
}

fn to_f32(t: &Tensor) -> Vec<f32> {
    match t.dtype.as_str() {
        "BF16" => t
            .data
            .chunks_exact(2)
            .map(|b| f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16))
            .collect(),
        "F32" => t
            .data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect(),
        other => panic!("dtype {other}"),
    }
}

/// FP8 e4m3 with one f32 scale per 128×128 block (`amax / 448`), as DeepSeek's checkpoints
/// are stored: returns (weight, weight_scale_inv).
fn to_fp8(x: &[f32], rows: usize, cols: usize) -> (Tensor, Tensor) {
    const B: usize = 128;
    let (br, bc) = (rows.div_ceil(B), cols.div_ceil(B));
    let mut scale = vec![0f32; br * bc];
    for r in 0..rows {
        for c in 0..cols {
            let s = &mut scale[(r / B) * bc + c / B];
            *s = s.max(x[r * cols + c].abs());
        }
    }
    for s in &mut scale {
        *s = if *s > 0.0 { *s / 448.0 } else { 1.0 };
    }
    let q: Vec<u8> = (0..rows * cols)
        .map(|i| {
            let s = scale[(i / cols / B) * bc + (i % cols) / B];
            r1_model::hf::f32_to_fp8_e4m3(x[i] / s)
        })
        .collect();
    (
        Tensor {
            dtype: "F8_E4M3".into(),
            shape: vec![rows, cols],
            data: q,
        },
        Tensor {
            dtype: "F32".into(),
            shape: vec![br, bc],
            data: scale.iter().flat_map(|v| v.to_le_bytes()).collect(),
        },
    )
}

/// Copy the BF16 checkpoint `src` to `dst` with every linear layer weight in FP8 (as
/// DeepSeek-V3/R1 ship them; embeddings, norms, router and head stay as they are) and
/// config.json's `quantization_config`. Returns how many tensors became FP8.
pub fn make_fp8_copy(src: &Path, dst: &Path) -> usize {
    std::fs::create_dir_all(dst).unwrap();
    let mut tensors = read_safetensors(&src.join("model.safetensors"));
    let names: Vec<String> = tensors
        .keys()
        .filter(|n| n.starts_with("model.layers.") && n.ends_with("_proj.weight"))
        .cloned()
        .collect();
    for n in &names {
        let t = &tensors[n];
        let (rows, cols) = (t.shape[0], t.shape[1]);
        let (w, s) = to_fp8(&to_f32(t), rows, cols);
        tensors.insert(n.clone(), w);
        tensors.insert(format!("{n}_scale_inv"), s);
    }
    write_safetensors(&dst.join("model.safetensors"), &tensors);
    let mut cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    cfg["quantization_config"] = serde_json::json!({
        "activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
        "weight_block_size": [128, 128]
    });
    std::fs::write(dst.join("config.json"), cfg.to_string()).unwrap();
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
        "generation_config.json",
    ] {
        if src.join(f).is_file() {
            std::fs::copy(src.join(f), dst.join(f)).unwrap();
        }
    }
    names.len()
}

/// Rewrite a safetensors file without tensor `name`.
pub fn drop_tensor(path: &Path, name: &str) {
    let mut t = read_safetensors(path);
    assert!(t.remove(name).is_some(), "{name} not in {path:?}");
    write_safetensors(path, &t);
}
