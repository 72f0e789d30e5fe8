//! The peer's ggml (`scripts/build-llamacpp.sh`), linked into a small harness that runs
//! `ggml_quantize_chunk`, and the inputs the quantizer tests feed it: real rows of
//! `models/qwen05.gguf` and random rows with outliers, zeros, constant blocks and ties.
//! Shared by `quantize_vs_ggml.rs` and the i-quant tests.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use r1_model::gguf::GgufFile;
use r1_model::quant::{self, GgmlType};

/// Answers jobs until its input ends, so ggml's one-time i-quant set-up (`ggml_quantize_init`,
/// ~20 s for IQ1's grid index) is paid once per test process, not once per call. A job: type,
/// rows, row length, has-imatrix, rows, imatrix; the answer: its byte count (u64), the bytes.
pub const HARNESS: &str = r#"
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include "ggml.h"
int main(void) {
    int32_t ty; int64_t nrows, npr; int32_t has_imat;
    while (fread(&ty,4,1,stdin)==1) {
        if (fread(&nrows,8,1,stdin)!=1||fread(&npr,8,1,stdin)!=1||fread(&has_imat,4,1,stdin)!=1)
            return 2;
        float *x = malloc(nrows*npr*4);
        if (fread(x,4,nrows*npr,stdin)!=(size_t)(nrows*npr)) return 3;
        float *im = NULL;
        if (has_imat) { im = malloc(npr*4); if (fread(im,4,npr,stdin)!=(size_t)npr) return 4; }
        void *out = malloc(ggml_row_size(ty, npr)*nrows);
        uint64_t n = ggml_quantize_chunk(ty, x, out, 0, nrows, npr, im);
        fwrite(&n,8,1,stdout);
        fwrite(out,1,n,stdout);
        fflush(stdout);
        free(x); free(im); free(out);
    }
    return 0;
}
"#;

pub fn peer_dir() -> PathBuf {
    let root = std::env::var_os("R1SERVE_PEER_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/r1serve")
        });
    root.join("llama.cpp-0c1e570")
}

/// The harness built against the peer's ggml, or why not. Built once per test process:
/// it goes to one path per process, and tests running side by side must not rebuild it
/// under each other (a half-written binary fails to run).
pub fn harness() -> Result<PathBuf, String> {
    static EXE: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    EXE.get_or_init(build_harness).clone()
}

fn build_harness() -> Result<PathBuf, String> {
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

pub fn ggml(exe: &Path, ty: GgmlType, x: &[f32], npr: usize, imat: Option<&[f32]>) -> Vec<u8> {
    let mut input = Vec::new();
    input.extend_from_slice(&(ty.id() as i32).to_le_bytes());
    input.extend_from_slice(&((x.len() / npr) as i64).to_le_bytes());
    input.extend_from_slice(&(npr as i64).to_le_bytes());
    input.extend_from_slice(&(imat.is_some() as i32).to_le_bytes());
    for v in x.iter().chain(imat.unwrap_or(&[])) {
        input.extend_from_slice(&v.to_le_bytes());
    }
    // one harness process per test process, shared by the tests' threads in turn
    static SERVER: std::sync::Mutex<Option<(PathBuf, std::process::Child)>> =
        std::sync::Mutex::new(None);
    let mut guard = SERVER.lock().unwrap_or_else(|e| e.into_inner());
    if guard.as_ref().is_none_or(|(p, _)| p != exe) {
        let child = Command::new(exe)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        *guard = Some((exe.to_path_buf(), child));
    }
    let child = &mut guard.as_mut().unwrap().1;
    // the harness reads a whole job before it answers, so writing first cannot deadlock
    let stdin = child.stdin.as_mut().unwrap();
    stdin.write_all(&input).unwrap();
    stdin.flush().unwrap();
    let stdout = child.stdout.as_mut().unwrap();
    let mut len = [0u8; 8];
    if let Err(e) = stdout.read_exact(&mut len) {
        let status = child.try_wait();
        *guard = None;
        panic!("harness failed for {ty:?}: {e} ({status:?})");
    }
    let mut out = vec![0u8; u64::from_le_bytes(len) as usize];
    stdout.read_exact(&mut out).unwrap();
    out
}

pub fn ours(ty: GgmlType, x: &[f32], npr: usize, imat: Option<&[f32]>) -> Vec<u8> {
    let rb = ty.row_bytes(npr).unwrap();
    let mut out = vec![0u8; rb * (x.len() / npr)];
    for (r, o) in x.chunks_exact(npr).zip(out.chunks_exact_mut(rb)) {
        quant::quantize_weights(ty, r, o, imat).unwrap();
    }
    out
}

pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32
    }
    pub fn normal(&mut self) -> f32 {
        let (a, b) = (self.next().max(1e-7), self.next());
        (-2.0 * a.ln()).sqrt() * (std::f32::consts::TAU * b).cos()
    }
}

/// Random rows: normal values, outliers, exact zeros, constant blocks, values on a
/// coarse grid (ties), and an all-zero row.
pub fn random_rows(npr: usize, rows: usize, seed: u64) -> Vec<f32> {
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
pub fn real_rows() -> Vec<(String, usize, Vec<f32>)> {
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

pub fn first_diff(a: &[u8], b: &[u8], block: usize) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x != y).map(|i| i / block)
}

/// The test inputs: real qwen05 rows where the model is present, plus random rows of 512 and
/// 1024 columns.
pub fn inputs() -> Vec<(String, usize, Vec<f32>)> {
    let mut inputs = real_rows();
    inputs.push(("random-512".into(), 512, random_rows(512, 40, 7)));
    inputs.push(("random-1024".into(), 1024, random_rows(1024, 20, 11)));
    inputs
}

/// Quantize every input as `ty` with ggml and with `quant::quantize_weights`, without an
/// importance matrix (where `plain`) and with a random one (where `weighted`), and describe
/// each (type, input) whose bytes differ.
pub fn mismatches(exe: &Path, types: &[GgmlType], plain: bool, weighted: bool) -> Vec<String> {
    let mut failures = Vec::new();
    for (name, npr, x) in &inputs() {
        let mut rng = Rng(*npr as u64 + 3);
        let imat: Vec<f32> = (0..*npr).map(|_| rng.next() * rng.next() * 4.0).collect();
        let modes = [(plain, None), (weighted, Some(imat.as_slice()))];
        for &ty in types {
            if npr % ty.block_size() != 0 {
                continue;
            }
            for (on, im) in modes {
                if !on {
                    continue;
                }
                let want = ggml(exe, ty, x, *npr, im);
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
    failures
}

/// The byte test every quantizer file runs: quantize [`inputs`] as each of `types` with ggml
/// and with r1serve, without an importance matrix (where `plain`) and with one (where
/// `weighted`), and fail listing what differs. Skips with a message without the peer build.
pub fn assert_matches_ggml(test: &str, types: &[GgmlType], plain: bool, weighted: bool) {
    let exe = match harness() {
        Ok(e) => e,
        Err(why) => {
            eprintln!("skipping {test}: {why}");
            return;
        }
    };
    let failures = mismatches(&exe, types, plain, weighted);
    assert!(
        failures.is_empty(),
        "differs from ggml (R1SERVE_QUANT_FMA={:?}, peer {}):\n{}",
        std::env::var("R1SERVE_QUANT_FMA").ok(),
        peer_dir().display(),
        failures.join("\n")
    );
}

/// Quantize `row` as `ty` and dequantize it back: an all-zero row must come back all zero,
/// any other within relative RMS error `bound` (a sanity bound; the bytes are tested exactly
/// against ggml). `what` names the row in the failure.
pub fn assert_round_trip(ty: GgmlType, row: &[f32], imat: Option<&[f32]>, bound: f32, what: &str) {
    let mut q = vec![0u8; ty.row_bytes(row.len()).unwrap()];
    let mut back = vec![0f32; row.len()];
    quant::quantize_weights(ty, row, &mut q, imat).unwrap();
    quant::dequantize(ty, &q, &mut back).unwrap();
    let energy: f32 = row.iter().map(|v| v * v).sum();
    if energy == 0.0 {
        assert!(back.iter().all(|&v| v == 0.0), "{ty:?} {what}");
        return;
    }
    let err: f32 = row.iter().zip(&back).map(|(a, b)| (a - b) * (a - b)).sum();
    let rel = (err / energy).sqrt();
    assert!(rel < bound, "{ty:?} {what}: relative RMS error {rel}");
}
