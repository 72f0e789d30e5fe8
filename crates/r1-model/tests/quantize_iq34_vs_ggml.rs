//! The IQ4_NL, IQ4_XS, IQ3_XXS and IQ3_S writers of `quant::quantize_weights` against ggml's
//! own `ggml_quantize_chunk` (what `llama-quantize` calls), linked from the peer build of
//! llama.cpp (`scripts/build-llamacpp.sh`): bytes must be identical, with and without an
//! importance matrix, on real qwen05 rows and random rows (`ggml_peer::inputs`).
//!
//! Skips with a message when the peer build or a C compiler is missing. A second test checks,
//! without the peer, that what the writers produce dequantizes back close to the input.
mod ggml_peer;

use ggml_peer::{assert_matches_ggml, assert_round_trip, harness, inputs};
use r1_model::quant::{self, GgmlType};

fn check(types: &[GgmlType]) {
    assert_matches_ggml("quantize_iq34_vs_ggml", types, true, true);
}

#[test]
fn iq4_matches_ggml_quantize_chunk() {
    check(&[GgmlType::IQ4_NL, GgmlType::IQ4_XS]);
}

#[test]
fn iq3_xxs_matches_ggml_quantize_chunk() {
    check(&[GgmlType::IQ3_XXS]);
}

#[test]
fn iq3_s_matches_ggml_quantize_chunk() {
    check(&[GgmlType::IQ3_S]);
}

/// Quantize, dequantize: the relative RMS error of each non-zero row stays within what the
/// format's bits allow (loose bounds; the byte comparison above is the exact test).
#[test]
fn iq34_rows_dequantize_close_to_input() {
    use GgmlType::*;
    for (ty, bound) in [
        (IQ4_NL, 0.15),
        (IQ4_XS, 0.15),
        (IQ3_XXS, 0.35),
        (IQ3_S, 0.3),
    ] {
        for (name, npr, x) in inputs() {
            if npr % ty.block_size() != 0 {
                continue;
            }
            for (r, row) in x.chunks_exact(npr).enumerate() {
                if ty == IQ3_S && row.chunks(32).any(|b| b.iter().all(|&v| v == 0.0)) {
                    // ggml's IQ3_S writer does not advance its qs/signs pointers past an
                    // all-zero 32-block, so what follows it lands 8 (4) bytes early and
                    // dequantizes wrongly; we write the same bytes (checked above)
                    continue;
                }
                assert_round_trip(ty, row, None, bound, &format!("{name} row {r}"));
            }
        }
    }
}

/// More real weights than `ggml_peer::inputs`, where some fused roundings change a block or
/// two only: 48 rows of `ffn_down` from three layers (4864 columns, every type) and of
/// `ffn_gate` (896 columns, IQ4_NL), with no importance matrix and with one shaped like
/// llama-imatrix's (mean x² of each column).
#[test]
fn iq34_match_ggml_on_more_qwen_rows() {
    use r1_model::gguf::GgufFile;
    use GgmlType::*;
    let types = [IQ4_NL, IQ4_XS, IQ3_XXS, IQ3_S];
    let exe = match harness() {
        Ok(e) => e,
        Err(why) => {
            eprintln!("skipping quantize_iq34_vs_ggml: {why}");
            return;
        }
    };
    let Some(path) = r1_model::testdata::model("qwen05.gguf") else {
        eprintln!("skipping: models/qwen05.gguf absent (scripts/fetch-models.sh)");
        return;
    };
    let f = GgufFile::open(&path).unwrap();
    let mut failures = Vec::new();
    for layer in [1, 12, 23] {
        for (kind, tys) in [("ffn_down", &types[..]), ("ffn_gate", &types[..1])] {
            let name = format!("blk.{layer}.{kind}.weight");
            let t = f.tensor(&name).unwrap();
            let (npr, rows) = (t.row_len(), t.n_rows().min(48));
            let rb = t.ty.row_bytes(npr).unwrap();
            let data = f.tensor_data(t);
            let mut x = vec![0f32; npr * rows];
            for (r, out) in x.chunks_exact_mut(npr).enumerate() {
                quant::dequantize(t.ty, &data[r * rb..(r + 1) * rb], out).unwrap();
            }
            let mut imat = vec![0f32; npr];
            for row in x.chunks_exact(npr) {
                for (m, v) in imat.iter_mut().zip(row) {
                    *m += v * v / rows as f32;
                }
            }
            for &ty in tys {
                for im in [None, Some(imat.as_slice())] {
                    let want = ggml_peer::ggml(&exe, ty, &x, npr, im);
                    let got = ggml_peer::ours(ty, &x, npr, im);
                    let ts = ty.type_size();
                    let n = want
                        .chunks(ts)
                        .zip(got.chunks(ts))
                        .filter(|(a, b)| a != b)
                        .count();
                    if n > 0 {
                        failures.push(format!(
                            "{ty:?} imatrix={} {name}: {n} of {} blocks differ",
                            im.is_some(),
                            want.len() / ts
                        ));
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "differs from ggml:\n{}",
        failures.join("\n")
    );
}
