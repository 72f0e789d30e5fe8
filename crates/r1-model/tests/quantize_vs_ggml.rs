//! `quant::quantize_weights` against ggml's own `ggml_quantize_chunk`, the function
//! `llama-quantize` calls, linked from the peer build of llama.cpp (`scripts/build-llamacpp.sh`).
//! Bytes must be identical, with and without an importance matrix, on real weights (rows of
//! `models/qwen05.gguf`, whose values lie on quantization grids and so hit rounding ties) and
//! on random rows with outliers, zeros and constant blocks.
//!
//! Skips with a message when the peer build (its `libggml-base.a` and headers) or a C
//! compiler is missing.
//!
//! Where GCC fuses multiply-adds depends on the CPU it tuned ggml for (`-mtune=native`; see
//! `quant/quantize_ggml.rs`), and our quantizers follow this machine's CPU. To check the other
//! profile, build a libggml-base tuned for it and point the test there, e.g. for Zen on an Intel
//! machine: `cmake -S <peer>/src -B /tmp/ggml-znver/llama.cpp-0c1e570/build -DGGML_NATIVE=OFF
//! -DCMAKE_C_FLAGS="-march=native -mtune=znver3"` (plus the peer's other options,
//! scripts/build-llamacpp.sh), `cmake --build ... --target ggml-base`, link
//! `/tmp/ggml-znver/llama.cpp-0c1e570/src` to the peer's source, then run with
//! `R1SERVE_PEER_CACHE=/tmp/ggml-znver R1SERVE_QUANT_FMA=nochains`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use r1_model::gguf::GgufFile;
use r1_model::quant::{self, GgmlType};

const HARNESS: &str = r#"
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include "ggml.h"
int main(void) {
    int32_t ty; int64_t nrows, npr; int32_t has_imat;
    if (fread(&ty,4,1,stdin)!=1||fread(&nrows,8,1,stdin)!=1||fread(&npr,8,1,stdin)!=1||
        fread(&has_imat,4,1,stdin)!=1) return 2;
    float *x = malloc(nrows*npr*4);
    if (fread(x,4,nrows*npr,stdin)!=(size_t)(nrows*npr)) return 3;
    float *im = NULL;
    if (has_imat) { im = malloc(npr*4); if (fread(im,4,npr,stdin)!=(size_t)npr) return 4; }
    void *out = malloc(ggml_row_size(ty, npr)*nrows);
    size_t n = ggml_quantize_chunk(ty, x, out, 0, nrows, npr, im);
    fwrite(out,1,n,stdout);
    return 0;
}
"#;

fn peer_dir() -> PathBuf {
    let root = std::env::var_os("R1SERVE_PEER_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/r1serve")
        });
    root.join("llama.cpp-0c1e570")
}

/// Build the harness against the peer's ggml, or say why not.
fn harness() -> Result<PathBuf, String> {
    let peer = peer_dir();
    let lib = peer.join("build/ggml/src/libggml-base.a");
    let inc = peer.join("src/ggml/include");
    if !lib.is_file() || !inc.is_dir() {
        return Err(format!(
            "no peer build at {} (run scripts/build-llamacpp.sh)",
            peer.display()
        ));
    }
    let dir = std::env::temp_dir().join(format!("r1serve-qharness-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let src = dir.join("h.c");
    std::fs::write(&src, HARNESS).map_err(|e| e.to_string())?;
    let exe = dir.join("h");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let st = Command::new(&cc)
        .arg("-O2")
        .arg(&src)
        .arg(format!("-I{}", inc.display()))
        .arg(&lib)
        .args(["-lm", "-lpthread", "-lstdc++", "-fopenmp", "-o"])
        .arg(&exe)
        .status()
        .map_err(|e| format!("{cc}: {e}"))?;
    if !st.success() {
        return Err(format!(
            "{cc} could not build the harness against {}",
            lib.display()
        ));
    }
    Ok(exe)
}

fn ggml(exe: &Path, ty: GgmlType, x: &[f32], npr: usize, imat: Option<&[f32]>) -> Vec<u8> {
    let mut input = Vec::new();
    input.extend_from_slice(&(ty.id() as i32).to_le_bytes());
    input.extend_from_slice(&((x.len() / npr) as i64).to_le_bytes());
    input.extend_from_slice(&(npr as i64).to_le_bytes());
    input.extend_from_slice(&(imat.is_some() as i32).to_le_bytes());
    for v in x.iter().chain(imat.unwrap_or(&[])) {
        input.extend_from_slice(&v.to_le_bytes());
    }
    let mut child = Command::new(exe)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&input).unwrap());
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success(), "harness failed for {ty:?}");
    out.stdout
}

fn ours(ty: GgmlType, x: &[f32], npr: usize, imat: Option<&[f32]>) -> Vec<u8> {
    let rb = ty.row_bytes(npr).unwrap();
    let mut out = vec![0u8; rb * (x.len() / npr)];
    for (r, o) in x.chunks_exact(npr).zip(out.chunks_exact_mut(rb)) {
        quant::quantize_weights(ty, r, o, imat).unwrap();
    }
    out
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32
    }
    fn normal(&mut self) -> f32 {
        let (a, b) = (self.next().max(1e-7), self.next());
        (-2.0 * a.ln()).sqrt() * (std::f32::consts::TAU * b).cos()
    }
}

/// Random rows: normal values, outliers, exact zeros, constant blocks, values on a
/// coarse grid (ties), and an all-zero row.
fn random_rows(npr: usize, rows: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng(seed);
    let mut x = vec![0f32; npr * rows];
    for (r, row) in x.chunks_exact_mut(npr).enumerate() {
        match r % 5 {
            0 => row.iter_mut().for_each(|v| *v = 0.02 * rng.normal()),
            1 => row.iter_mut().for_each(|v| {
                *v = if rng.next() < 0.02 {
                    8.0 * rng.normal()
                } else {
                    rng.normal()
                }
            }),
            2 => row
                .iter_mut()
                .for_each(|v| *v = (rng.normal() * 8.0).round() / 16.0),
            3 => {
                for (i, v) in row.iter_mut().enumerate() {
                    *v = match (i / 32) % 4 {
                        0 => 0.0,
                        1 => 0.25,
                        2 => -rng.next(),
                        _ => rng.normal() * 1e-3,
                    }
                }
            }
            _ => {}
        }
    }
    x
}

/// Dequantized rows of a few qwen05 tensors (row length 896 or 4864).
fn real_rows() -> Vec<(String, usize, Vec<f32>)> {
    let Some(path) = r1_model::testdata::model("qwen05.gguf") else {
        eprintln!("quantize_vs_ggml: models/qwen05.gguf absent (scripts/fetch-models.sh): random rows only");
        return Vec::new();
    };
    let f = GgufFile::open(&path).unwrap();
    let mut out = Vec::new();
    for name in [
        "blk.0.attn_q.weight",
        "blk.3.ffn_down.weight",
        "blk.5.attn_v.weight",
    ] {
        let t = f.tensor(name).unwrap();
        let npr = t.row_len();
        let rows = t.n_rows().min(24);
        let rb = t.ty.row_bytes(npr).unwrap();
        let data = f.tensor_data(t);
        let mut x = vec![0f32; npr * rows];
        for r in 0..rows {
            quant::dequantize(
                t.ty,
                &data[r * rb..(r + 1) * rb],
                &mut x[r * npr..(r + 1) * npr],
            )
            .unwrap();
        }
        out.push((name.to_string(), npr, x));
    }
    out
}

fn first_diff(a: &[u8], b: &[u8], block: usize) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x != y).map(|i| i / block)
}

#[test]
fn quantize_weights_matches_ggml_quantize_chunk() {
    let exe = match harness() {
        Ok(e) => e,
        Err(why) => {
            eprintln!("skipping quantize_vs_ggml: {why}");
            return;
        }
    };
    use GgmlType::*;
    let types = [
        F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K,
    ];
    let mut inputs = real_rows();
    inputs.push(("random-512".into(), 512, random_rows(512, 40, 7)));
    inputs.push(("random-1024".into(), 1024, random_rows(1024, 20, 11)));
    let mut failures = Vec::new();
    for (name, npr, x) in &inputs {
        let mut rng = Rng(*npr as u64 + 3);
        let imat: Vec<f32> = (0..*npr).map(|_| rng.next() * rng.next() * 4.0).collect();
        for ty in types {
            if npr % ty.block_size() != 0 {
                continue;
            }
            for im in [None, Some(imat.as_slice())] {
                let want = ggml(&exe, ty, x, *npr, im);
                let got = ours(ty, x, *npr, im);
                assert_eq!(want.len(), got.len());
                if let Some(b) = first_diff(&want, &got, ty.type_size()) {
                    let n = want
                        .chunks(ty.type_size())
                        .zip(got.chunks(ty.type_size()))
                        .filter(|(a, b)| a != b)
                        .count();
                    failures.push(format!(
                        "{ty:?} imatrix={} {name}: {n} of {} blocks differ, first block {b}",
                        im.is_some(),
                        want.len() / ty.type_size()
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "differs from ggml (R1SERVE_QUANT_FMA={:?}, peer {}):\n{}",
        std::env::var("R1SERVE_QUANT_FMA").ok(),
        peer_dir().display(),
        failures.join("\n")
    );
}
