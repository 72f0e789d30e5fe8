//! llama.cpp's i-quants (IQ1_S .. IQ4_XS): type sizes, dequantization bit for bit against
//! gguf-py on random blocks (`tests/data/iq-dequant.*`, written by
//! `scripts/gen-iq-fixtures.py`) and on blocks of real tensors that llama-quantize made with an
//! importance matrix (`tests/data/iq-dequant-real.*`, `scripts/make-iq-real-fixtures.sh`), and
//! the dot kernels against an f64 dot of the dequantized operands, per-row `vec_dot`, and every
//! ISA.

use std::path::PathBuf;

use r1_model::quant::{self, GgmlType, Isa};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use safetensors::SafeTensors;

use GgmlType::*;

mod iq_support;
use iq_support::assert_near_exact_dot;

const IQ_TYPES: [GgmlType; 9] = [
    IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S, IQ1_S, IQ1_M, IQ4_NL, IQ4_XS,
];

#[test]
fn ids_and_sizes_follow_ggml_common_h() {
    // (type, GGUF id, block elements, block bytes)
    let expect = [
        (IQ2_XXS, 16, 256, 66),
        (IQ2_XS, 17, 256, 74),
        (IQ3_XXS, 18, 256, 98),
        (IQ1_S, 19, 256, 50),
        (IQ4_NL, 20, 32, 18),
        (IQ3_S, 21, 256, 110),
        (IQ2_S, 22, 256, 82),
        (IQ4_XS, 23, 256, 136),
        (IQ1_M, 29, 256, 56),
    ];
    for (ty, id, bs, ts) in expect {
        assert_eq!(ty.id(), id, "{ty}");
        assert_eq!(GgmlType::from_id(id), Some(ty));
        assert_eq!((ty.block_size(), ty.type_size()), (bs, ts), "{ty}");
        assert_eq!(ty.name(), format!("{ty}"));
        assert!(ty.is_quantized());
    }
}

fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// Each type's fixture blocks and gguf-py's dequantization of them.
fn gguf_py_fixture(name: &str) -> Vec<(GgmlType, Vec<u8>, Vec<f32>)> {
    let path = fixture_path(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = SafeTensors::deserialize(&bytes).unwrap();
    IQ_TYPES
        .iter()
        .map(|&ty| {
            let blocks = st.tensor(&format!("{ty}.blocks")).unwrap();
            assert_eq!(blocks.shape()[1], ty.type_size(), "{ty}");
            let want = st.tensor(&format!("{ty}.dequant")).unwrap();
            let want: Vec<f32> = want
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            (ty, blocks.data().to_vec(), want)
        })
        .collect()
}

fn assert_dequantizes_like_gguf_py(name: &str) {
    for (ty, blocks, want) in gguf_py_fixture(name) {
        let mut got = vec![0f32; want.len()];
        quant::dequantize(ty, &blocks, &mut got).unwrap();
        let bad = got
            .iter()
            .zip(&want)
            .position(|(g, w)| g.to_bits() != w.to_bits());
        if let Some(i) = bad {
            panic!(
                "{name} {ty}: element {i} (block {}): got {} want {}",
                i / ty.block_size(),
                got[i],
                want[i]
            );
        }
    }
}

#[test]
fn dequantize_matches_gguf_py_bit_for_bit() {
    assert_dequantizes_like_gguf_py("iq-dequant.safetensors");
}

#[test]
fn dequantize_matches_gguf_py_on_llama_quantize_tensors() {
    assert_dequantizes_like_gguf_py("iq-dequant-real.safetensors");
}

/// The real blocks as a 256-wide weight matrix: every ISA's kernel equals the scalar one bit
/// for bit, and both equal an f64 dot of the dequantized operands within f32 rounding.
#[test]
fn kernels_on_llama_quantize_tensors_match_the_dequantized_dot() {
    let mut rng = StdRng::seed_from_u64(11);
    let k = 256;
    for (ty, w, wdq) in gguf_py_fixture("iq-dequant-real.safetensors") {
        let m = wdq.len() / k;
        let n = 5;
        let (a, adq) = activations(&mut rng, ty, k, n);
        let mut scalar = vec![0f32; m * n];
        quant::try_gemm_isa(Isa::Scalar, ty, k, &w, &a, n, &mut scalar).unwrap();
        assert_near_exact_dot(&format!("{ty} (real blocks)"), k, &wdq, &adq, &scalar);
        for isa in Isa::available() {
            let mut out = vec![0f32; m * n];
            quant::try_gemm_isa(isa, ty, k, &w, &a, n, &mut out).unwrap();
            let same = out
                .iter()
                .zip(&scalar)
                .all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(same, "{ty} {isa:?} differs from scalar on real blocks");
        }
    }
}

#[test]
fn quantizing_to_an_i_quant_is_reported_unsupported() {
    for ty in IQ_TYPES {
        let x = vec![0.5f32; ty.block_size()];
        let mut out = vec![0u8; ty.type_size()];
        assert!(quant::quantize_row(ty, &x, &mut out).is_err(), "{ty}");
    }
}

// ---- dot kernels -----------------------------------------------------------------------------

fn put_f16(b: &mut [u8], off: usize, v: f32) {
    b[off..off + 2].copy_from_slice(&half::f16::from_f32(v).to_bits().to_le_bytes());
}

/// `m` rows of random blocks of `ty` whose f16 block scales are finite and of sane size
/// (every other bit pattern random: all grid indices, signs and sub-block scales).
fn weights(rng: &mut StdRng, ty: GgmlType, k: usize, m: usize) -> Vec<u8> {
    let mut w = vec![0u8; m * quant::row_bytes(ty, k).unwrap()];
    rng.fill(&mut w[..]);
    for blk in w.chunks_exact_mut(ty.type_size()) {
        let mag = rng.random_range(1e-4..0.05f32);
        let d = if rng.random_range(0..2) == 0 {
            mag
        } else {
            -mag
        };
        if ty == IQ1_M {
            // the f16 scale is spread over the top nibbles of the 4 u16 scale words @48
            let bits = half::f16::from_f32(d).to_bits();
            for i in 0..4 {
                let off = 48 + 2 * i;
                let word = u16::from_le_bytes([blk[off], blk[off + 1]]);
                let word = (word & 0x0FFF) | (((bits >> (4 * i)) & 0xF) << 12);
                blk[off..off + 2].copy_from_slice(&word.to_le_bytes());
            }
        } else {
            put_f16(blk, 0, d);
        }
    }
    w
}

/// Activation rows quantized to the weight type's `vec_dot_type`, and their dequantization.
fn activations(rng: &mut StdRng, ty: GgmlType, k: usize, n: usize) -> (Vec<u8>, Vec<f32>) {
    let a_ty = quant::vec_dot_type(ty);
    let ab = quant::row_bytes(a_ty, k).unwrap();
    let mut a = vec![0u8; n * ab];
    for t in 0..n {
        let sc = rng.random_range(0.1..10.0f32);
        let x: Vec<f32> = (0..k)
            .map(|_| {
                let v: f32 = rng.random_range(-1.0..1.0);
                if rng.random_range(0..50) == 0 {
                    v * 8.0 * sc
                } else {
                    v * sc
                }
            })
            .collect();
        quant::quantize_row(a_ty, &x, &mut a[t * ab..(t + 1) * ab]).unwrap();
    }
    let mut adq = vec![0f32; n * k];
    quant::dequantize(a_ty, &a, &mut adq).unwrap();
    (a, adq)
}

fn shapes(ty: GgmlType) -> &'static [usize] {
    if ty == IQ4_NL {
        &[32, 96, 256, 2816]
    } else {
        &[256, 512, 2816]
    }
}

#[test]
fn activation_types_follow_ggml_cpu_type_traits() {
    for ty in IQ_TYPES {
        let want = if ty == IQ4_NL { Q8_0 } else { Q8_K };
        assert_eq!(quant::vec_dot_type(ty), want, "{ty}");
        assert!(quant::has_dot_kernel(ty), "{ty}");
    }
}

/// The block sums are exact integers and only the float scaling differs from an f64 dot of
/// the dequantized operands (f32 rounding of a few products and sums per block): the error
/// stays within a few f32 ulps of the sum of |products|.
#[test]
fn gemm_matches_f64_dot_of_dequantized_operands() {
    let mut rng = StdRng::seed_from_u64(7);
    for ty in IQ_TYPES {
        for &k in shapes(ty) {
            let (m, n) = (3, 19);
            let w = weights(&mut rng, ty, k, m);
            let mut wdq = vec![0f32; m * k];
            quant::dequantize(ty, &w, &mut wdq).unwrap();
            let (a, adq) = activations(&mut rng, ty, k, n);
            let mut out = vec![0f32; m * n];
            quant::try_gemm_isa(Isa::Scalar, ty, k, &w, &a, n, &mut out).unwrap();
            assert_near_exact_dot(&format!("{ty} k={k}"), k, &wdq, &adq, &out);
        }
    }
}

/// Every ISA's GEMM equals the scalar kernel's, and each output equals `vec_dot` of its row
/// and token alone, bit for bit (whatever the number of tokens per call).
#[test]
fn gemm_is_batch_invariant_and_equal_on_every_isa() {
    let mut rng = StdRng::seed_from_u64(8);
    for ty in IQ_TYPES {
        for &k in shapes(ty) {
            let (m, n) = (4, 21);
            let w = weights(&mut rng, ty, k, m);
            let (a, _) = activations(&mut rng, ty, k, n);
            let rb = quant::row_bytes(ty, k).unwrap();
            let ab = a.len() / n;
            let mut scalar = vec![0f32; m * n];
            quant::try_gemm_isa(Isa::Scalar, ty, k, &w, &a, n, &mut scalar).unwrap();
            for r in 0..m {
                for t in 0..n {
                    let (wr, at) = (&w[r * rb..(r + 1) * rb], &a[t * ab..(t + 1) * ab]);
                    let one = quant::vec_dot(ty, k, wr, at);
                    assert_eq!(one.to_bits(), scalar[r * n + t].to_bits(), "{ty} k={k}");
                }
            }
            for isa in Isa::available() {
                let mut out = vec![0f32; m * n];
                quant::try_gemm_isa(isa, ty, k, &w, &a, n, &mut out).unwrap();
                let same = out
                    .iter()
                    .zip(&scalar)
                    .all(|(x, y)| x.to_bits() == y.to_bits());
                assert!(same, "{ty} k={k} {isa:?} differs from scalar");
            }
        }
    }
}
