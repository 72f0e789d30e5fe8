//! Activation quantizers against straightforward f32 formulas (ggml's reference), weight
//! quantizer round trips (incl. Q5_K, which has no fixture), and error handling.

use half::{bf16, f16};
use r1_model::quant::{self, GgmlType, Isa, QuantError};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use GgmlType::*;

fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut x: Vec<f32> = (0..n)
        .map(|i| {
            let s = if (i / 32) % 3 == 0 { 0.01 } else { 3.0 };
            rng.random_range(-1.0f32..1.0) * s
        })
        .collect();
    // special cases: an all-zero block, a block whose largest |x| is negative, exact halves
    if n >= 128 {
        x[32..64].fill(0.0);
        x[70] = -50.0;
        x[71] = 0.5;
        // a block with amax 127 (d = 1): exact halves must round to even (as ggml's x86 code)
        for (j, v) in x[96..128].iter_mut().enumerate() {
            *v = j as f32 - 15.5;
        }
        x[127] = 127.0;
    }
    x
}

fn quantize(ty: GgmlType, x: &[f32]) -> Vec<u8> {
    let mut out = vec![0u8; quant::row_bytes(ty, x.len()).unwrap()];
    quant::quantize_row(ty, x, &mut out).unwrap();
    out
}

fn f16_bytes(v: f32) -> [u8; 2] {
    f16::from_f32(v).to_bits().to_le_bytes()
}

#[test]
fn q8_0_matches_reference_formula() {
    let x = values(1, 32 * 40);
    let got = quantize(Q8_0, &x);
    for (b, xb) in x.chunks(32).enumerate() {
        let y = &got[34 * b..34 * b + 34];
        let amax = xb.iter().map(|v| v.abs()).fold(0.0f32, f32::max);
        let d = amax / 127.0;
        let id = if amax == 0.0 { 0.0 } else { 127.0 / amax };
        assert_eq!(y[0..2], f16_bytes(d), "block {b} d");
        for j in 0..32 {
            // ggml x86: inverse scale 127/amax, halves to even
            let q = (xb[j] * id).round_ties_even() as i8;
            assert_eq!(y[2 + j] as i8, q, "block {b} elem {j}");
        }
    }
}

#[test]
fn q8_1_matches_reference_formula() {
    let x = values(2, 32 * 40);
    let got = quantize(Q8_1, &x);
    for (b, xb) in x.chunks(32).enumerate() {
        let y = &got[36 * b..36 * b + 36];
        let amax = xb.iter().map(|v| v.abs()).fold(0.0f32, f32::max);
        let d = amax / 127.0;
        let id = if amax == 0.0 { 0.0 } else { 127.0 / amax };
        let q: Vec<i8> = xb
            .iter()
            .map(|v| (v * id).round_ties_even() as i8)
            .collect();
        let sum: i32 = q.iter().map(|&v| v as i32).sum();
        assert_eq!(y[0..2], f16_bytes(d), "block {b} d");
        assert_eq!(y[2..4], f16_bytes(sum as f32 * d), "block {b} s");
        for j in 0..32 {
            assert_eq!(y[4 + j] as i8, q[j], "block {b} elem {j}");
        }
    }
}

#[test]
fn q8_k_matches_reference_formula() {
    let mut x = values(3, 256 * 6);
    x[256..512].fill(0.0); // all-zero super-block
    x[600] = -9.0; // negative extreme keeps its sign
    let got = quantize(Q8_K, &x);
    for (b, xb) in x.chunks(256).enumerate() {
        let y = &got[292 * b..292 * b + 292];
        let mut max = 0f32;
        for &v in xb {
            if v.abs() > max.abs() {
                max = v;
            }
        }
        let d = f32::from_le_bytes(y[0..4].try_into().unwrap());
        if max == 0.0 {
            assert!(y.iter().all(|&v| v == 0), "zero block {b}");
            continue;
        }
        let iscale = -127.0 / max;
        assert_eq!(d.to_bits(), (1.0 / iscale).to_bits(), "block {b} d");
        let q: Vec<i8> = xb
            .iter()
            .map(|&v| ((iscale * v).round_ties_even() as i32).min(127) as i8)
            .collect();
        for j in 0..256 {
            assert_eq!(y[4 + j] as i8, q[j], "block {b} elem {j}");
            assert!(q[j] >= -127);
        }
        for g in 0..16 {
            let s: i32 = q[16 * g..16 * g + 16].iter().map(|&v| v as i32).sum();
            let o = 260 + 2 * g;
            assert_eq!(
                i16::from_le_bytes([y[o], y[o + 1]]) as i32,
                s,
                "block {b} bsum {g}"
            );
        }
    }
}

/// The SIMD quantizers write exactly the scalar reference's bytes.
#[test]
fn quantize_row_isas_agree() {
    for ty in [Q8_0, Q8_1, Q8_K, F16, BF16, Q4_0, Q4_1, Q5_0, Q6_K, Q4_K] {
        for seed in 0..4 {
            let mut x = values(10 + seed, 256 * 5);
            // halves at the Q8_K scale: max 127 -> iscale -1, and ties to even
            x[1024 + 5] = 127.0;
            x[1024 + 6] = 2.5;
            x[1024 + 7] = -3.5;
            let mut base = vec![0u8; quant::row_bytes(ty, x.len()).unwrap()];
            quant::quantize_row_isa(Isa::Scalar, ty, &x, &mut base).unwrap();
            for isa in Isa::available() {
                let mut out = vec![0u8; base.len()];
                quant::quantize_row_isa(isa, ty, &x, &mut out).unwrap();
                assert!(out == base, "{ty} {isa:?} seed {seed}");
            }
        }
    }
}

#[test]
fn float_activation_conversions() {
    let x = values(4, 100);
    let f = quantize(F32, &x);
    let h = quantize(F16, &x);
    let b = quantize(BF16, &x);
    for (i, &v) in x.iter().enumerate() {
        assert_eq!(f[4 * i..4 * i + 4], v.to_le_bytes());
        assert_eq!(
            h[2 * i..2 * i + 2],
            f16::from_f32(v).to_bits().to_le_bytes()
        );
        assert_eq!(
            b[2 * i..2 * i + 2],
            bf16::from_f32(v).to_bits().to_le_bytes()
        );
    }
    // round to nearest even, not truncation: 1 + 2^-8 + 2^-9 rounds up in bf16
    let v = [1.0 + 1.0 / 256.0 + 1.0 / 512.0];
    assert_eq!(
        quantize(BF16, &v),
        bf16::from_bits(0x3f81).to_bits().to_le_bytes()
    );
}

/// Quantize → dequantize of smooth-ish random weights: the RMS error relative to the RMS of
/// the data stays below what each bit width allows (and every value is finite).
#[test]
fn weight_quantizer_round_trips() {
    let cases = [
        (Q8_0, 0.006),
        (Q4_0, 0.09),
        (Q4_1, 0.08),
        (Q5_0, 0.04),
        (Q5_1, 0.04),
        (Q2_K, 0.3),
        (Q3_K, 0.16),
        (Q4_K, 0.07),
        (Q5_K, 0.04),
        (Q6_K, 0.02),
    ];
    let mut rng = StdRng::seed_from_u64(5);
    for (ty, bound) in cases {
        for k in [256, 768, 4864] {
            let x: Vec<f32> = (0..k)
                .map(|i| {
                    let s = 0.05 + (i / 256) as f32 * 0.3;
                    rng.random_range(-1.0f32..1.0) * s
                })
                .collect();
            let q = quantize(ty, &x);
            let mut y = vec![0f32; k];
            quant::dequantize(ty, &q, &mut y).unwrap();
            let err: f64 = x
                .iter()
                .zip(&y)
                .map(|(a, b)| ((a - b) as f64).powi(2))
                .sum();
            let rms: f64 = x.iter().map(|a| (*a as f64).powi(2)).sum();
            let rel = (err / rms).sqrt();
            assert!(y.iter().all(|v| v.is_finite()), "{ty}");
            assert!(
                rel < bound,
                "{ty} k={k}: relative RMS error {rel:.4} >= {bound}"
            );
            eprintln!("{ty} k={k}: relative RMS error {rel:.4}");
        }
    }
}

/// Q5_K specifically: each element is within one quantization step (of its super-block's
/// largest sub-block range / 31) of its input, which needs the 5th bits (qh) to be stored
/// and read in the same places (a misplaced bit costs 16 steps).
#[test]
fn q5_k_round_trip_is_within_one_step() {
    let x = values(6, 256 * 4);
    let q = quantize(Q5_K, &x);
    let mut y = vec![0f32; x.len()];
    quant::dequantize(Q5_K, &q, &mut y).unwrap();
    let mut max_err_steps = 0f32;
    for (b, (xb, yb)) in x.chunks(256).zip(y.chunks(256)).enumerate() {
        let range = |xs: &[f32]| {
            xs.iter().cloned().fold(0f32, f32::max) - xs.iter().cloned().fold(0f32, f32::min)
        };
        let step = xb.chunks(32).map(range).fold(0f32, f32::max) / 31.0;
        for (j, (a, b2)) in xb.iter().zip(yb).enumerate() {
            let e = (a - b2).abs() / step;
            max_err_steps = max_err_steps.max(e);
            assert!(e <= 1.0, "block {b} elem {j}: {a} -> {b2} (step {step})");
        }
    }
    eprintln!("Q5_K: max error {max_err_steps:.3} steps");
}

#[test]
fn bad_lengths_are_errors_not_panics() {
    let x = vec![0.5f32; 64];
    // output buffer size
    let mut small = vec![0u8; 10];
    assert!(matches!(
        quant::quantize_row(Q8_0, &x, &mut small),
        Err(QuantError::BadLength { .. })
    ));
    // not a whole number of blocks
    let mut out = vec![0u8; 100];
    assert!(matches!(
        quant::quantize_row(Q8_K, &x, &mut out),
        Err(QuantError::NotWholeBlocks { .. })
    ));
    let mut y = vec![0f32; 48];
    assert!(matches!(
        quant::dequantize(Q4_0, &[0u8; 27], &mut y),
        Err(QuantError::NotWholeBlocks { .. })
    ));
    let mut y = vec![0f32; 64];
    assert!(matches!(
        quant::dequantize(Q4_0, &[0u8; 35], &mut y),
        Err(QuantError::BadLength { .. })
    ));
    // unsupported types
    assert!(matches!(
        quant::dequantize(I32, &[0u8; 8], &mut [0f32; 2]),
        Err(QuantError::Unsupported { .. })
    ));
    assert!(matches!(
        quant::try_vec_dot(I8, 4, &[0u8; 4], &[0u8; 16]),
        Err(QuantError::Unsupported { .. })
    ));

    let k = 64;
    let w = quantize(Q4_1, &x);
    let a = quantize(Q8_1, &x);
    assert!(quant::try_vec_dot(Q4_1, k, &w, &a).is_ok());
    assert!(quant::try_vec_dot(Q4_1, k, &w[..39], &a).is_err());
    assert!(quant::try_vec_dot(Q4_1, k, &w, &a[..71]).is_err());
    assert!(quant::try_vec_dot(Q4_1, 48, &w, &a).is_err()); // k not whole blocks
    assert!(quant::try_vec_dot(Q4_1, 0, &[], &[]).is_err());
    // activation bytes for the wrong type (Q8_0 is 2 bytes shorter per block)
    let a0 = quantize(Q8_0, &x);
    assert!(quant::try_vec_dot(Q4_1, k, &w, &a0).is_err());
    // gemm: output and activation sizes
    let mut out = vec![0f32; 2];
    assert!(quant::try_gemm(Q4_1, k, &w, &a, 1, &mut out).is_err());
    let mut out = vec![0f32; 1];
    assert!(quant::try_gemm(Q4_1, k, &w, &a, 2, &mut out).is_err());
    assert!(quant::try_gemm(Q4_1, k, &w, &a, 1, &mut out).is_ok());
    // a weight buffer that is not a whole number of rows
    let mut w3 = w.clone();
    w3.extend_from_slice(&w[..20]);
    assert!(quant::try_gemm(Q4_1, k, &w3, &a, 1, &mut out).is_err());
}

#[test]
#[should_panic(expected = "vec_dot")]
fn vec_dot_panics_with_a_message_on_bad_lengths() {
    quant::vec_dot(Q8_0, 32, &[0u8; 33], &[0u8; 34]);
}

#[test]
fn vec_dot_types() {
    assert_eq!(quant::vec_dot_type(Q4_0), Q8_0);
    assert_eq!(quant::vec_dot_type(Q5_0), Q8_0);
    assert_eq!(quant::vec_dot_type(Q8_0), Q8_0);
    assert_eq!(quant::vec_dot_type(Q4_1), Q8_1);
    assert_eq!(quant::vec_dot_type(Q5_1), Q8_1);
    for t in [Q2_K, Q3_K, Q4_K, Q5_K, Q6_K] {
        assert_eq!(quant::vec_dot_type(t), Q8_K);
    }
    assert_eq!(quant::vec_dot_type(F32), F32);
    assert_eq!(quant::vec_dot_type(F16), F16);
    assert_eq!(quant::vec_dot_type(BF16), BF16);
}
