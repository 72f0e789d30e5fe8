//! The x16 kernels (weights interleaved 16 rows at a time, `quant::x16`) on random data:
//! the layout round-trips, every ISA equals the portable kernel bit for bit, each token's
//! result does not depend on the batch (or on which groups share the call), and the
//! results agree with ggml-order kernels on the native layout and with an f64 reference.

use r1_model::quant::{self, x16, GgmlType, Isa, WeightLayout};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const TY: GgmlType = GgmlType::Q5_0;

/// `m` native Q5_0 rows of `k` random values (per-row scales, the odd outlier); raw random
/// bytes with sane scales when `raw` (every fifth-bit and nibble pattern).
fn native_rows(rng: &mut StdRng, k: usize, m: usize, raw: bool) -> Vec<u8> {
    let rb = quant::row_bytes(TY, k).unwrap();
    let mut w = vec![0u8; m * rb];
    if raw {
        rng.fill(&mut w[..]);
        for blk in w.chunks_exact_mut(22) {
            let d = rng.random_range(1e-4..0.05f32) * if rng.random() { 1.0 } else { -1.0 };
            blk[0..2].copy_from_slice(&half::f16::from_f32(d).to_bits().to_le_bytes());
        }
        return w;
    }
    for r in 0..m {
        let sc = rng.random_range(0.01..2.0f32);
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
        quant::quantize_row(TY, &x, &mut w[r * rb..(r + 1) * rb]).unwrap();
    }
    w
}

fn acts(rng: &mut StdRng, k: usize, n: usize) -> Vec<u8> {
    let ab = quant::row_bytes(GgmlType::Q8_0, k).unwrap();
    let mut a = vec![0u8; n * ab];
    for t in 0..n {
        let x: Vec<f32> = (0..k).map(|_| rng.random_range(-3.0..3.0f32)).collect();
        quant::quantize_row(GgmlType::Q8_0, &x, &mut a[t * ab..(t + 1) * ab]).unwrap();
    }
    a
}

fn interleaved(native: &[u8], k: usize) -> Vec<u8> {
    let mut w = native.to_vec();
    x16::interleave(TY, k, &mut w, &mut Vec::new());
    w
}

fn gemm(isa: Isa, layout: WeightLayout, k: usize, w: &[u8], a: &[u8], n: usize) -> Vec<f32> {
    let m = w.len() / quant::row_bytes(TY, k).unwrap();
    let mut out = vec![0f32; m * n];
    quant::try_gemm_layout_isa(isa, layout, TY, k, w, a, n, &mut out).unwrap();
    out
}

#[test]
fn interleaving_round_trips_every_row() {
    let mut rng = StdRng::seed_from_u64(1);
    for (k, m) in [(32, 16), (96, 32), (896, 48)] {
        let native = native_rows(&mut rng, k, m, true);
        let w = interleaved(&native, k);
        assert_ne!(w, native, "the layout changed");
        let rb = quant::row_bytes(TY, k).unwrap();
        let mut row = vec![0u8; rb];
        for r in 0..m {
            let g = r / 16;
            x16::extract_row(TY, k, &w[g * 16 * rb..(g + 1) * 16 * rb], r % 16, &mut row);
            assert_eq!(row, native[r * rb..(r + 1) * rb], "k={k} row {r}");
        }
    }
}

#[test]
fn every_isa_equals_the_portable_kernel_and_stays_batch_invariant() {
    let mut rng = StdRng::seed_from_u64(2);
    for (k, m, raw) in [
        (32, 16, true),
        (96, 32, false),
        (896, 48, true),
        (4864, 16, false),
    ] {
        let native = native_rows(&mut rng, k, m, raw);
        let w = interleaved(&native, k);
        let ab = quant::row_bytes(GgmlType::Q8_0, k).unwrap();
        let gb = 16 * quant::row_bytes(TY, k).unwrap();
        for n in [1usize, 2, 3, 5, 8, 16, 17, 40] {
            let a = acts(&mut rng, k, n);
            let base = gemm(Isa::Scalar, WeightLayout::Interleaved16, k, &w, &a, n);
            for isa in Isa::available() {
                let out = gemm(isa, WeightLayout::Interleaved16, k, &w, &a, n);
                for (i, (x, y)) in out.iter().zip(&base).enumerate() {
                    assert_eq!(
                        x.to_bits(),
                        y.to_bits(),
                        "{isa:?} k={k} n={n} [{i}]: {x} vs {y}"
                    );
                }
                // each token alone, and each group alone, gives the same bits
                for t in 0..n {
                    let one = gemm(
                        isa,
                        WeightLayout::Interleaved16,
                        k,
                        &w,
                        &a[t * ab..(t + 1) * ab],
                        1,
                    );
                    for r in 0..m {
                        assert_eq!(
                            one[r].to_bits(),
                            out[r * n + t].to_bits(),
                            "{isa:?} n={n} t={t} r={r}"
                        );
                    }
                }
                let g = m / 16 - 1;
                let last = gemm(isa, WeightLayout::Interleaved16, k, &w[g * gb..], &a, n);
                assert_eq!(last, out[g * 16 * n..], "{isa:?} the last group alone");
            }
        }
    }
}

#[test]
fn results_agree_with_the_native_kernels_and_an_exact_reference() {
    let mut rng = StdRng::seed_from_u64(3);
    let (k, m, n) = (896, 32, 7);
    let native = native_rows(&mut rng, k, m, false);
    let w = interleaved(&native, k);
    let a = acts(&mut rng, k, n);
    let ours = gemm(Isa::best(), WeightLayout::Interleaved16, k, &w, &a, n);
    let ggml = gemm(Isa::best(), WeightLayout::Native, k, &native, &a, n);
    let rb = quant::row_bytes(TY, k).unwrap();
    let ab = quant::row_bytes(GgmlType::Q8_0, k).unwrap();
    let (mut wr, mut ar) = (vec![0f32; k], vec![0f32; k]);
    for r in 0..m {
        quant::dequantize(TY, &native[r * rb..(r + 1) * rb], &mut wr).unwrap();
        let mag: f64 = wr.iter().map(|v| v.abs() as f64).sum();
        for t in 0..n {
            quant::dequantize(GgmlType::Q8_0, &a[t * ab..(t + 1) * ab], &mut ar).unwrap();
            let exact: f64 = wr.iter().zip(&ar).map(|(x, y)| *x as f64 * *y as f64).sum();
            let (o, g) = (ours[r * n + t] as f64, ggml[r * n + t] as f64);
            // both are exact integer block sums with f32 scaling: a few ulps of the terms
            let tol = mag * 3.0 * 2e-6;
            assert!(
                (o - exact).abs() <= tol,
                "r={r} t={t}: {o} vs exact {exact}"
            );
            assert!(
                (o - g).abs() <= 2.0 * tol,
                "r={r} t={t}: {o} vs ggml order {g}"
            );
        }
    }
    // a buffer that is not whole groups of 16 rows is refused
    let mut out = vec![0f32; 8 * n];
    let e = quant::try_gemm_layout_isa(
        Isa::best(),
        WeightLayout::Interleaved16,
        TY,
        k,
        &w[..8 * rb],
        &a,
        n,
        &mut out,
    );
    assert!(e.is_err(), "8 interleaved rows accepted");
}
