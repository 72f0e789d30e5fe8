//! The IQ4_NL, IQ4_XS, IQ3_XXS and IQ3_S writers of `quant::quantize_weights` against ggml's
//! own `ggml_quantize_chunk` (what `llama-quantize` calls), linked from the peer build of
//! llama.cpp (`scripts/build-llamacpp.sh`): bytes must be identical, with and without an
//! importance matrix, on real qwen05 rows and random rows (`ggml_peer::inputs`).
//!
//! Skips with a message when the peer build or a C compiler is missing. A second test checks,
//! without the peer, that what the writers produce dequantizes back close to the input.
mod ggml_peer;

use ggml_peer::{harness, inputs, mismatches, peer_dir};
use r1_model::quant::{self, GgmlType};

fn check(types: &[GgmlType]) {
    if types.iter().any(|&t| !quant::quantize_weights_supported(t)) {
        eprintln!("skipping {types:?}: not written yet");
        return;
    }
    let exe = match harness() {
        Ok(e) => e,
        Err(why) => {
            eprintln!("skipping quantize_iq34_vs_ggml: {why}");
            return;
        }
    };
    let failures = mismatches(&exe, types, true, true);
    assert!(
        failures.is_empty(),
        "differs from ggml (R1SERVE_QUANT_FMA={:?}, peer {}):\n{}",
        std::env::var("R1SERVE_QUANT_FMA").ok(),
        peer_dir().display(),
        failures.join("\n")
    );
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
        if !quant::quantize_weights_supported(ty) {
            eprintln!("skipping {ty:?}: not written yet");
            continue;
        }
        for (name, npr, x) in inputs() {
            if npr % ty.block_size() != 0 {
                continue;
            }
            let rb = ty.row_bytes(npr).unwrap();
            let mut q = vec![0u8; rb];
            let mut back = vec![0f32; npr];
            for (r, row) in x.chunks_exact(npr).enumerate() {
                if ty == IQ3_S && row.chunks(32).any(|b| b.iter().all(|&v| v == 0.0)) {
                    // ggml's IQ3_S writer does not advance its qs/signs pointers past an
                    // all-zero 32-block, so what follows it lands 8 (4) bytes early and
                    // dequantizes wrongly; we write the same bytes (checked above)
                    continue;
                }
                let energy: f32 = row.iter().map(|v| v * v).sum();
                quant::quantize_weights(ty, row, &mut q, None).unwrap();
                quant::dequantize(ty, &q, &mut back).unwrap();
                if energy == 0.0 {
                    assert!(back.iter().all(|&v| v == 0.0), "{ty:?} {name} row {r}");
                    continue;
                }
                let err: f32 = row.iter().zip(&back).map(|(a, b)| (a - b) * (a - b)).sum();
                let rel = (err / energy).sqrt();
                assert!(
                    rel < bound,
                    "{ty:?} {name} row {r}: relative RMS error {rel}"
                );
            }
        }
    }
}
