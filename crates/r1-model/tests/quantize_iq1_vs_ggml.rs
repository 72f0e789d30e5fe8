//! The IQ1_S and IQ1_M writers of `quant::quantize_weights` against ggml's own
//! `ggml_quantize_chunk` (what `llama-quantize` calls), linked from the peer build of
//! llama.cpp (`scripts/build-llamacpp.sh`): bytes must be identical on real qwen05 rows and
//! random rows (`ggml_peer::inputs`), IQ1_S with an importance matrix (ggml has no IQ1_S
//! without one), IQ1_M with and without.
//!
//! Skips with a message when the peer build or a C compiler is missing. Two more tests run
//! without the peer: IQ1_S without an importance matrix is an error, and what the writers
//! produce dequantizes back close to the input.
mod ggml_peer;

use ggml_peer::{
    assert_matches_ggml, assert_round_trip, first_diff, ggml, harness, inputs, ours, peer_dir,
    random_rows, Rng,
};
use r1_model::quant::{self, GgmlType, QuantError};

fn check(types: &[GgmlType], plain: bool) {
    assert_matches_ggml("quantize_iq1_vs_ggml", types, plain, true);
}

#[test]
fn iq1_s_matches_ggml_quantize_chunk() {
    check(&[GgmlType::IQ1_S], false);
}

#[test]
fn iq1_m_matches_ggml_quantize_chunk() {
    check(&[GgmlType::IQ1_M], true);
}

/// Many random rows: enough blocks that the sites only Intel tuning fuses ([`FmaProfile`] in
/// the writer) change a few bytes, so this tells the wrong profile from the right one, which
/// the shared inputs above do not.
#[test]
fn iq1_s_many_random_rows_match_ggml() {
    let exe = match harness() {
        Ok(e) => e,
        Err(why) => {
            eprintln!("skipping quantize_iq1_vs_ggml: {why}");
            return;
        }
    };
    let npr = 256;
    let x = random_rows(npr, 3000, 23);
    let mut rng = Rng(29);
    let imat: Vec<f32> = (0..npr).map(|_| rng.next() * rng.next() * 4.0).collect();
    let want = ggml(&exe, GgmlType::IQ1_S, &x, npr, Some(&imat));
    let got = ours(GgmlType::IQ1_S, &x, npr, Some(&imat));
    let ts = GgmlType::IQ1_S.type_size();
    assert_eq!(
        first_diff(&want, &got, ts),
        None,
        "IQ1_S differs from ggml in block (R1SERVE_QUANT_FMA={:?}, peer {}); {} of {} blocks differ",
        std::env::var("R1SERVE_QUANT_FMA").ok(),
        peer_dir().display(),
        want.chunks(ts).zip(got.chunks(ts)).filter(|(a, b)| a != b).count(),
        want.len() / ts
    );
}

#[test]
fn iq1_s_without_imatrix_is_an_error() {
    let x: Vec<f32> = (0..256).map(|i| (i as f32 * 0.37).sin()).collect();
    let mut out = vec![0u8; GgmlType::IQ1_S.row_bytes(256).unwrap()];
    let r = quant::quantize_weights(GgmlType::IQ1_S, &x, &mut out, None);
    assert!(
        matches!(
            r,
            Err(QuantError::NeedsImatrix {
                ty: GgmlType::IQ1_S
            })
        ),
        "{r:?}"
    );
}

/// Quantize, dequantize: the relative RMS error of each non-zero row stays within what the
/// format's bits allow (loose bounds; the byte comparison above is the exact test).
#[test]
fn iq1_rows_dequantize_close_to_input() {
    use GgmlType::*;
    for (ty, weighted, bound) in [(IQ1_S, true, 0.75), (IQ1_M, false, 0.7), (IQ1_M, true, 0.7)] {
        for (name, npr, x) in inputs() {
            if npr % ty.block_size() != 0 {
                continue;
            }
            let mut rng = Rng(5);
            let imat: Vec<f32> = (0..npr).map(|_| 0.5 + rng.next()).collect();
            let im = weighted.then_some(imat.as_slice());
            for (r, row) in x.chunks_exact(npr).enumerate() {
                assert_round_trip(ty, row, im, bound, &format!("{name} row {r}"));
            }
        }
    }
}
