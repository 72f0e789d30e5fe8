//! The IQ2_XXS, IQ2_XS and IQ2_S writers of `quant::quantize_weights` against ggml's own
//! `ggml_quantize_chunk` (what `llama-quantize` calls), linked from the peer build of
//! llama.cpp (`scripts/build-llamacpp.sh`): bytes must be identical on real qwen05 rows and
//! random rows (`ggml_peer::inputs`), with an importance matrix, and for IQ2_S also without
//! one (ggml has no IQ2_XXS/IQ2_XS quantizer without one).
//!
//! Skips with a message when the peer build or a C compiler is missing. The other tests
//! check, without the peer, that IQ2_XXS/IQ2_XS refuse to run without an importance matrix
//! and that what the writers produce dequantizes back close to the input.
mod ggml_peer;

use ggml_peer::{assert_matches_ggml, assert_round_trip, harness, inputs, Rng};
use r1_model::quant::{self, GgmlType, QuantError};

fn check(types: &[GgmlType], plain: bool) {
    assert_matches_ggml("quantize_iq2_vs_ggml", types, plain, true);
}

#[test]
fn iq2_xxs_matches_ggml_quantize_chunk() {
    check(&[GgmlType::IQ2_XXS], false);
}

#[test]
fn iq2_xs_matches_ggml_quantize_chunk() {
    check(&[GgmlType::IQ2_XS], false);
}

#[test]
fn iq2_s_matches_ggml_quantize_chunk() {
    check(&[GgmlType::IQ2_S], true);
}

/// Rows that reach the rarer paths, one 256-value super-block each: magnitudes near and
/// below the all-zero thresholds (1e-15, IQ2_S's 1e-8), huge ones, subnormals, sparse and
/// single-sign groups, ties, outliers; and an importance matrix with zeros (whole 32-blocks and
/// scattered columns), as real ones have for unused channels.
fn edge_rows() -> (Vec<f32>, Vec<f32>) {
    let mut rng = Rng(99);
    let mut x = Vec::new();
    let mut push = |f: &mut dyn FnMut(usize, f32) -> f32| {
        for i in 0..256 {
            let n = rng.normal();
            x.push(f(i, n));
        }
    };
    push(&mut |_, n| n * 1e-9);
    push(&mut |i, n| n * [1e-13, 1e-16, 1e-7, 1e-8][(i / 16) % 4]);
    push(&mut |_, n| n * 1e6);
    push(&mut |i, n| if i % 8 == 3 { n } else { 0.0 });
    push(&mut |_, n| -n.abs());
    push(&mut |i, _| if i % 2 == 0 { 1.0 } else { -1.0 });
    push(&mut |i, _| if i % 8 < 3 { -0.5 } else { 0.5 });
    push(&mut |i, n| if i == 77 { 1e4 } else { n });
    push(&mut |i, n| n * 1e-40 + if i % 5 == 0 { 1e-3 } else { 0.0 });
    push(&mut |i, n| if i % 16 == 0 { 3.0 } else { n * 1e-3 });
    push(&mut |i, n| (i % 7) as f32 * 0.25 * n.signum());
    let mut rng = Rng(7);
    let imat = (0..256)
        .map(|i| {
            let w = rng.next() * 2.0;
            if i < 32 || i % 7 == 0 {
                0.0
            } else {
                w
            }
        })
        .collect();
    (x, imat)
}

#[test]
fn iq2_edge_rows_match_ggml_quantize_chunk() {
    use GgmlType::*;
    let exe = match harness() {
        Ok(e) => e,
        Err(why) => {
            eprintln!("skipping quantize_iq2_vs_ggml: {why}");
            return;
        }
    };
    let (x, imat) = edge_rows();
    let mut failures = Vec::new();
    for (ty, plain) in [(IQ2_XXS, false), (IQ2_XS, false), (IQ2_S, true)] {
        let modes: &[Option<&[f32]>] = if plain {
            &[None, Some(&imat)]
        } else {
            &[Some(&imat)]
        };
        for &im in modes {
            let want = ggml_peer::ggml(&exe, ty, &x, 256, im);
            let got = ggml_peer::ours(ty, &x, 256, im);
            for (r, (a, b)) in want
                .chunks(ty.type_size())
                .zip(got.chunks(ty.type_size()))
                .enumerate()
            {
                if a != b {
                    failures.push(format!("{ty:?} imatrix={} edge row {r}", im.is_some()));
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

/// ggml asserts "missing quantization weights" for these; we return an error instead.
#[test]
fn iq2_xxs_and_xs_without_imatrix_are_an_error() {
    let x = ggml_peer::random_rows(256, 1, 5);
    for ty in [GgmlType::IQ2_XXS, GgmlType::IQ2_XS] {
        let mut out = vec![0u8; ty.row_bytes(256).unwrap()];
        match quant::quantize_weights(ty, &x, &mut out, None) {
            Err(QuantError::NeedsImatrix { ty: t }) => assert_eq!(t, ty),
            other => panic!("{ty:?} without an imatrix: {other:?}"),
        }
    }
}

/// Non-finite input (where ggml would abort on its asserts) writes something, without a panic.
#[test]
fn iq2_non_finite_rows_do_not_panic() {
    let mut x = ggml_peer::random_rows(256, 1, 5);
    x[3] = f32::NAN;
    x[100] = f32::INFINITY;
    x[200] = f32::NEG_INFINITY;
    let imat = vec![1.0f32; 256];
    for ty in [GgmlType::IQ2_XXS, GgmlType::IQ2_XS, GgmlType::IQ2_S] {
        let mut out = vec![0u8; ty.row_bytes(256).unwrap()];
        quant::quantize_weights(ty, &x, &mut out, Some(&imat)).unwrap();
    }
}

/// Quantize, dequantize: the relative RMS error of each non-zero row stays within what 2 bits
/// allow (loose bounds; the byte comparison above is the exact test).
#[test]
fn iq2_rows_dequantize_close_to_input() {
    use GgmlType::*;
    for (ty, bound) in [(IQ2_XXS, 0.75), (IQ2_XS, 0.6), (IQ2_S, 0.55)] {
        for (name, npr, x) in inputs() {
            if npr % ty.block_size() != 0 {
                continue;
            }
            let mut rng = Rng(npr as u64 + 3);
            let imat: Vec<f32> = (0..npr).map(|_| rng.next() * rng.next() * 4.0).collect();
            for (r, row) in x.chunks_exact(npr).enumerate() {
                assert_round_trip(ty, row, Some(&imat), bound, &format!("{name} row {r}"));
            }
        }
    }
}
