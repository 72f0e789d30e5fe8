//! The dot / GEMM kernels on random data of awkward shapes: against an f64 dot of the
//! dequantized operands, SIMD against scalar (bit for bit), and batch invariance. (The exact
//! float order, ggml's, is checked in `quant_ggml_order.rs`.)

use r1_model::quant::{self, GgmlType, Isa};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use GgmlType::*;

const WEIGHT_TYPES: [GgmlType; 13] = [
    F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K,
];

fn f16_at(b: &[u8], off: usize) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([b[off], b[off + 1]])).to_f32()
}

fn put_f16(b: &mut [u8], off: usize, v: f32) {
    b[off..off + 2].copy_from_slice(&half::f16::from_f32(v).to_bits().to_le_bytes());
}

/// Values with a per-row scale and the odd outlier, like real weights/activations.
fn values(rng: &mut StdRng, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let v: f32 = rng.random_range(-1.0..1.0);
            let v = if rng.random_range(0..50) == 0 {
                v * 8.0
            } else {
                v
            };
            v * scale
        })
        .collect()
}

/// Weight rows for `ty`: either quantized from random values, or random block bytes with
/// sane f16 scale fields (exercises every bit pattern of the quants).
fn weights(rng: &mut StdRng, ty: GgmlType, k: usize, m: usize, raw: bool) -> Vec<u8> {
    let rb = quant::row_bytes(ty, k).unwrap();
    let mut w = vec![0u8; m * rb];
    if !raw || !ty.is_quantized() {
        for r in 0..m {
            let sc = rng.random_range(0.01..2.0);
            let x = values(rng, k, sc);
            quant::quantize_row(ty, &x, &mut w[r * rb..(r + 1) * rb]).unwrap();
        }
        return w;
    }
    rng.fill(&mut w[..]);
    // (offset, is a min) of the f16 scale fields in each block
    let fields: &[(usize, bool)] = match ty {
        Q4_0 | Q5_0 | Q8_0 => &[(0, false)],
        Q4_1 | Q5_1 => &[(0, false), (2, true)],
        Q4_K | Q5_K => &[(0, false), (2, true)],
        Q2_K => &[(80, false), (82, true)],
        Q3_K => &[(108, false)],
        Q6_K => &[(208, false)],
        _ => unreachable!(),
    };
    for blk in w.chunks_exact_mut(ty.type_size()) {
        for &(off, is_min) in fields {
            let mag = rng.random_range(1e-4..0.05f32);
            let v = if is_min || rng.random_range(0..2) == 0 {
                mag
            } else {
                -mag
            };
            put_f16(blk, off, v);
        }
    }
    w
}

fn activations(rng: &mut StdRng, ty: GgmlType, k: usize, n: usize) -> (Vec<u8>, Vec<f32>) {
    let a_ty = quant::vec_dot_type(ty);
    let ab = quant::row_bytes(a_ty, k).unwrap();
    let mut a = vec![0u8; n * ab];
    for t in 0..n {
        let sc = rng.random_range(0.1..10.0);
        let x = values(rng, k, sc);
        quant::quantize_row(a_ty, &x, &mut a[t * ab..(t + 1) * ab]).unwrap();
    }
    let mut adq = vec![0f32; n * k];
    quant::dequantize(a_ty, &a, &mut adq).unwrap();
    (a, adq)
}

/// f64 dot of the dequantized rows, and a tolerance: 1e-5 of the sum of |products| (f32
/// rounding of block scales and accumulation), plus, for Q8_1 activations, the f16 rounding
/// (2^-11) of the stored block sums `s = f16(d_f32 * sum q)`, which also differ from the
/// dequantized `f16(d) * sum q` by up to 2^-11: the kernels use `m * s`.
fn reference(ty: GgmlType, k: usize, w: &[u8], wdq: &[f32], a: &[u8], adq: &[f32]) -> (f64, f64) {
    let exact: f64 = wdq
        .iter()
        .zip(adq)
        .map(|(&x, &y)| x as f64 * y as f64)
        .sum();
    let mag: f64 = wdq
        .iter()
        .zip(adq)
        .map(|(&x, &y)| (x as f64 * y as f64).abs())
        .sum();
    let mut tol = 1e-5 * mag + 1e-30;
    if quant::vec_dot_type(ty) == Q8_1 {
        let wb = ty.type_size();
        for (x, y) in w.chunks_exact(wb).zip(a.chunks_exact(36)).take(k / 32) {
            tol += (f16_at(x, 2) * f16_at(y, 2)).abs() as f64 * 1.0e-3;
        }
    }
    (exact, tol)
}

fn shapes(ty: GgmlType) -> Vec<usize> {
    if ty.block_size() == 256 {
        vec![256, 512 + 256, 4864]
    } else {
        vec![32, 96, 256, 288, 576, 896, 4864]
    }
}

#[test]
fn gemm_matches_dequantized_reference() {
    let mut rng = StdRng::seed_from_u64(1);
    for ty in WEIGHT_TYPES {
        for k in shapes(ty) {
            for raw in [false, true] {
                let (m, n) = (3, 5);
                let w = weights(&mut rng, ty, k, m, raw);
                let mut wdq = vec![0f32; m * k];
                quant::dequantize(ty, &w, &mut wdq).unwrap();
                let (a, adq) = activations(&mut rng, ty, k, n);
                let rb = quant::row_bytes(ty, k).unwrap();
                let ab = a.len() / n;
                for isa in Isa::available() {
                    let mut out = vec![0f32; m * n];
                    quant::try_gemm_isa(isa, ty, k, &w, &a, n, &mut out).unwrap();
                    for r in 0..m {
                        for t in 0..n {
                            let (exact, tol) = reference(
                                ty,
                                k,
                                &w[r * rb..(r + 1) * rb],
                                &wdq[r * k..(r + 1) * k],
                                &a[t * ab..(t + 1) * ab],
                                &adq[t * k..(t + 1) * k],
                            );
                            let got = out[r * n + t] as f64;
                            assert!(
                                (got - exact).abs() <= tol,
                                "{ty} k={k} raw={raw} {isa:?} row {r} token {t}: {got} vs {exact} (tol {tol})"
                            );
                        }
                    }
                }
            }
        }
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Every ISA gives the scalar kernel's result bit for bit.
#[test]
fn simd_kernels_are_bit_identical_to_scalar() {
    let mut rng = StdRng::seed_from_u64(2);
    let isas = Isa::available();
    eprintln!("ISAs on this CPU: {isas:?}");
    for ty in WEIGHT_TYPES {
        for k in shapes(ty) {
            for raw in [false, true] {
                // token counts that select every tile shape (GEMV, few, many tokens)
                for n in [1, 3, 6, 9] {
                    let m = 17;
                    let w = weights(&mut rng, ty, k, m, raw);
                    let (a, _) = activations(&mut rng, ty, k, n);
                    let mut base = vec![0f32; m * n];
                    quant::try_gemm_isa(Isa::Scalar, ty, k, &w, &a, n, &mut base).unwrap();
                    for &isa in &isas[1..] {
                        let mut out = vec![0f32; m * n];
                        quant::try_gemm_isa(isa, ty, k, &w, &a, n, &mut out).unwrap();
                        assert_eq!(
                            bits(&out),
                            bits(&base),
                            "{ty} k={k} raw={raw} {isa:?} n={n}"
                        );
                    }
                }
            }
        }
    }
}

/// out[r*n+t] does not depend on n, on which rows/tokens share the call, or on gemm vs
/// vec_dot.
#[test]
fn batch_invariance_bit_exact() {
    let mut rng = StdRng::seed_from_u64(3);
    for ty in WEIGHT_TYPES {
        let k = if ty.block_size() == 256 { 768 } else { 864 };
        let (m, n) = (5, 11); // tiles of 8 + 2 + 1 (AVX-512) or 4 + 4 + 2 + 1
        let w = weights(&mut rng, ty, k, m, false);
        let (a, _) = activations(&mut rng, ty, k, n);
        let rb = w.len() / m;
        let ab = a.len() / n;
        for isa in Isa::available() {
            let mut full = vec![0f32; m * n];
            quant::try_gemm_isa(isa, ty, k, &w, &a, n, &mut full).unwrap();
            // n = 1, one row at a time, and the default vec_dot
            for r in 0..m {
                for t in 0..n {
                    let (wr, ar) = (&w[r * rb..(r + 1) * rb], &a[t * ab..(t + 1) * ab]);
                    let mut one = [0f32];
                    quant::try_gemm_isa(isa, ty, k, wr, ar, 1, &mut one).unwrap();
                    assert_eq!(
                        one[0].to_bits(),
                        full[r * n + t].to_bits(),
                        "{ty} {isa:?} n=1"
                    );
                    if isa == Isa::best() {
                        let v = quant::vec_dot(ty, k, wr, ar);
                        assert_eq!(v.to_bits(), full[r * n + t].to_bits(), "{ty} vec_dot");
                    }
                }
            }
            // tokens 2..6 with rows 1..4: other tile splits (4 + 1)
            let (r0, r1, t0, t1) = (1, 4, 2, 7);
            let mut part = vec![0f32; (r1 - r0) * (t1 - t0)];
            let (ws, as_) = (&w[r0 * rb..r1 * rb], &a[t0 * ab..t1 * ab]);
            quant::try_gemm_isa(isa, ty, k, ws, as_, t1 - t0, &mut part).unwrap();
            for r in r0..r1 {
                for t in t0..t1 {
                    let got = part[(r - r0) * (t1 - t0) + (t - t0)];
                    assert_eq!(
                        got.to_bits(),
                        full[r * n + t].to_bits(),
                        "{ty} {isa:?} sub-tile"
                    );
                }
            }
        }
    }
}

#[test]
fn default_entry_points_agree_with_best_isa() {
    let mut rng = StdRng::seed_from_u64(4);
    let (ty, k, m, n) = (Q4_1, 1536, 4, 3);
    let w = weights(&mut rng, ty, k, m, false);
    let (a, _) = activations(&mut rng, ty, k, n);
    let mut x = vec![0f32; m * n];
    let mut y = vec![0f32; m * n];
    quant::gemm(ty, k, &w, &a, n, &mut x);
    quant::try_gemm_isa(Isa::best(), ty, k, &w, &a, n, &mut y).unwrap();
    assert_eq!(bits(&x), bits(&y));
    eprintln!("best ISA: {:?}", Isa::best());
}
