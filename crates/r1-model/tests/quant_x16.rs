//! The x16 kernels (weights interleaved 16 rows at a time, `quant::x16`; Q5_0, Q8_0, Q4_K,
//! Q6_K) on random data:
//! the layout round-trips, every ISA (and the AVX2 level with and without AVX-VNNI) equals
//! the portable kernel bit for bit, each token's
//! result does not depend on the batch (or on which groups share the call), and the
//! results agree with ggml-order kernels on the native layout and with an f64 reference.

use r1_model::quant::{self, x16, GgmlType, Isa, WeightLayout};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const TYPES: [GgmlType; 6] = [
    GgmlType::Q5_0,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q4_K,
    GgmlType::Q6_K,
];

/// Row lengths to test per type: one block, a few, and the models' sizes.
fn lengths(ty: GgmlType) -> [usize; 4] {
    if ty.block_size() == 32 {
        [32, 96, 896, 4864]
    } else {
        [256, 512, 1792, 4864]
    }
}

/// The f16 scale fields of a block: (offset, may be negative).
fn scale_fields(ty: GgmlType) -> &'static [(usize, bool)] {
    match ty {
        GgmlType::Q5_0 | GgmlType::Q8_0 | GgmlType::Q4_0 => &[(0, true)],
        GgmlType::Q4_1 => &[(0, true), (2, true)],
        GgmlType::Q4_K => &[(0, false), (2, false)],
        _ => &[(208, true)],
    }
}

/// `m` native rows of `k` random values (per-row scales, the odd outlier); raw random
/// bytes with sane scales when `raw` (every fifth-bit and nibble pattern).
fn native_rows(rng: &mut StdRng, ty: GgmlType, k: usize, m: usize, raw: bool) -> Vec<u8> {
    let rb = quant::row_bytes(ty, k).unwrap();
    let mut w = vec![0u8; m * rb];
    if raw {
        rng.fill(&mut w[..]);
        for blk in w.chunks_exact_mut(ty.type_size()) {
            for &(off, signed) in scale_fields(ty) {
                let sign = if signed && rng.random() { -1.0 } else { 1.0 };
                let d = rng.random_range(1e-4..0.05f32) * sign;
                blk[off..off + 2].copy_from_slice(&half::f16::from_f32(d).to_bits().to_le_bytes());
            }
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
        quant::quantize_row(ty, &x, &mut w[r * rb..(r + 1) * rb]).unwrap();
    }
    w
}

fn acts(rng: &mut StdRng, ty: GgmlType, k: usize, n: usize) -> Vec<u8> {
    let a_ty = quant::vec_dot_type(ty);
    let ab = quant::row_bytes(a_ty, k).unwrap();
    let mut a = vec![0u8; n * ab];
    for t in 0..n {
        let x: Vec<f32> = (0..k).map(|_| rng.random_range(-3.0..3.0f32)).collect();
        quant::quantize_row(a_ty, &x, &mut a[t * ab..(t + 1) * ab]).unwrap();
    }
    a
}

fn interleaved(ty: GgmlType, native: &[u8], k: usize) -> Vec<u8> {
    let mut w = native.to_vec();
    x16::interleave(ty, k, &mut w, &mut Vec::new());
    w
}

/// The ISAs with an x16 kernel for `ty` (the portable one always has).
fn isas(ty: GgmlType) -> Vec<Isa> {
    Isa::available()
        .into_iter()
        .filter(|&isa| {
            let mut out = [0f32; 16];
            let k = lengths(ty)[0];
            let w = vec![0u8; 16 * quant::row_bytes(ty, k).unwrap()];
            let a = vec![0u8; quant::row_bytes(quant::vec_dot_type(ty), k).unwrap()];
            let r = quant::try_gemm_layout_isa(
                isa,
                WeightLayout::Interleaved16,
                ty,
                k,
                &w,
                &a,
                1,
                &mut out,
            );
            match r {
                Ok(()) => true,
                Err(quant::QuantError::Unsupported { .. }) => false,
                Err(e) => panic!("{e}"),
            }
        })
        .collect()
}

/// A kernel to compare: an ISA's (as the models get it), or the AVX2 level's with or without
/// AVX-VNNI whatever `R1SERVE_AVXVNNI` says.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kernel {
    Isa(Isa),
    Avx2 { vnni: bool },
}

/// Every kernel this CPU runs for interleaved `ty`: the ISAs', and both AVX2 variants (those
/// the CPU lacks are skipped with a message).
fn kernels(ty: GgmlType) -> Vec<Kernel> {
    let mut ks: Vec<Kernel> = isas(ty).into_iter().map(Kernel::Isa).collect();
    for vnni in [false, true] {
        let (k, n) = (lengths(ty)[0], 1);
        let w = vec![0u8; 16 * quant::row_bytes(ty, k).unwrap()];
        let a = vec![0u8; quant::row_bytes(quant::vec_dot_type(ty), k).unwrap()];
        match x16::try_gemm_avx2(vnni, ty, k, &w, &a, n, &mut [0f32; 16]) {
            Ok(()) => ks.push(Kernel::Avx2 { vnni }),
            Err(quant::QuantError::IsaUnavailable(_)) => {
                let what = if vnni { "AVX-VNNI" } else { "AVX2" };
                eprintln!("skipping the {what} x16 kernel for {ty}: this CPU lacks {what}");
            }
            Err(e) => panic!("{ty} AVX2 (vnni: {vnni}): {e}"),
        }
    }
    ks
}

fn run(kern: Kernel, ty: GgmlType, k: usize, w: &[u8], a: &[u8], n: usize) -> Vec<f32> {
    match kern {
        Kernel::Isa(isa) => gemm(isa, WeightLayout::Interleaved16, ty, k, w, a, n),
        Kernel::Avx2 { vnni } => {
            let m = w.len() / quant::row_bytes(ty, k).unwrap();
            let mut out = vec![0f32; m * n];
            x16::try_gemm_avx2(vnni, ty, k, w, a, n, &mut out).unwrap();
            out
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn gemm(
    isa: Isa,
    layout: WeightLayout,
    ty: GgmlType,
    k: usize,
    w: &[u8],
    a: &[u8],
    n: usize,
) -> Vec<f32> {
    let m = w.len() / quant::row_bytes(ty, k).unwrap();
    let mut out = vec![0f32; m * n];
    quant::try_gemm_layout_isa(isa, layout, ty, k, w, a, n, &mut out).unwrap();
    out
}

#[test]
fn interleaving_round_trips_every_row() {
    let mut rng = StdRng::seed_from_u64(1);
    for ty in TYPES {
        let ks = lengths(ty);
        for (k, m) in [(ks[0], 16), (ks[1], 32), (ks[2], 48)] {
            let native = native_rows(&mut rng, ty, k, m, true);
            let w = interleaved(ty, &native, k);
            assert_ne!(w, native, "the layout changed");
            let rb = quant::row_bytes(ty, k).unwrap();
            let mut row = vec![0u8; rb];
            for r in 0..m {
                let g = r / 16;
                x16::extract_row(ty, k, &w[g * 16 * rb..(g + 1) * 16 * rb], r % 16, &mut row);
                assert_eq!(row, native[r * rb..(r + 1) * rb], "{ty} k={k} row {r}");
            }
        }
    }
}

#[test]
fn every_isa_equals_the_portable_kernel_and_stays_batch_invariant() {
    let mut rng = StdRng::seed_from_u64(2);
    for ty in TYPES {
        // the kernel the models use on this CPU is among those checked (the loader keeps
        // Q4_0/Q4_1 native for now: see `x16::available`)
        let loaded = !matches!(ty, GgmlType::Q4_0 | GgmlType::Q4_1);
        assert_eq!(
            x16::available(ty),
            loaded && isas(ty).contains(&Isa::best()),
            "{ty}"
        );
        let ks = lengths(ty);
        for (k, m, raw) in [
            (ks[0], 16, true),
            (ks[1], 32, false),
            (ks[2], 48, true),
            (ks[3], 16, false),
        ] {
            let native = native_rows(&mut rng, ty, k, m, raw);
            let w = interleaved(ty, &native, k);
            let ab = quant::row_bytes(quant::vec_dot_type(ty), k).unwrap();
            let gb = 16 * quant::row_bytes(ty, k).unwrap();
            for n in [1usize, 2, 3, 5, 8, 16, 17, 40] {
                let a = acts(&mut rng, ty, k, n);
                let base = gemm(Isa::Scalar, WeightLayout::Interleaved16, ty, k, &w, &a, n);
                for kern in kernels(ty) {
                    let out = run(kern, ty, k, &w, &a, n);
                    for (i, (x, y)) in out.iter().zip(&base).enumerate() {
                        assert_eq!(
                            x.to_bits(),
                            y.to_bits(),
                            "{ty} {kern:?} k={k} n={n} [{i}]: {x} vs {y}"
                        );
                    }
                    // each token alone, and the last group alone, give the same bits
                    for t in 0..n {
                        let at = &a[t * ab..(t + 1) * ab];
                        let one = run(kern, ty, k, &w, at, 1);
                        for r in 0..m {
                            assert_eq!(
                                one[r].to_bits(),
                                out[r * n + t].to_bits(),
                                "{ty} {kern:?} n={n} t={t} r={r}"
                            );
                        }
                    }
                    let g = m / 16 - 1;
                    let last = run(kern, ty, k, &w[g * gb..], &a, n);
                    assert_eq!(
                        last,
                        out[g * 16 * n..],
                        "{ty} {kern:?}: the last group alone"
                    );
                }
            }
        }
    }
}

#[test]
fn results_agree_with_the_native_kernels_and_an_exact_reference() {
    let mut rng = StdRng::seed_from_u64(3);
    for ty in TYPES {
        let (k, m, n) = (lengths(ty)[2], 32, 7);
        let native = native_rows(&mut rng, ty, k, m, false);
        let w = interleaved(ty, &native, k);
        let a = acts(&mut rng, ty, k, n);
        // The fastest ISA with an x16 kernel: a capped R1SERVE_ISA may have none.
        let x16_isa = *isas(ty).last().unwrap();
        let ours = gemm(x16_isa, WeightLayout::Interleaved16, ty, k, &w, &a, n);
        let ggml = gemm(Isa::best(), WeightLayout::Native, ty, k, &native, &a, n);
        let rb = quant::row_bytes(ty, k).unwrap();
        let a_ty = quant::vec_dot_type(ty);
        let ab = quant::row_bytes(a_ty, k).unwrap();
        let (mut wr, mut ar) = (vec![0f32; k], vec![0f32; k]);
        for r in 0..m {
            quant::dequantize(ty, &native[r * rb..(r + 1) * rb], &mut wr).unwrap();
            let mag: f64 = wr.iter().map(|v| v.abs() as f64).sum();
            for t in 0..n {
                quant::dequantize(a_ty, &a[t * ab..(t + 1) * ab], &mut ar).unwrap();
                let mut exact: f64 = wr.iter().zip(&ar).map(|(x, y)| *x as f64 * *y as f64).sum();
                if ty == GgmlType::Q4_1 {
                    // Q4_1's min term takes the activation block's f16 sum `s`, as ggml does
                    for b in 0..k / 32 {
                        let f = |buf: &[u8], o: usize| {
                            half::f16::from_le_bytes([buf[o], buf[o + 1]]).to_f64()
                        };
                        let mx = f(&native[r * rb + 20 * b..], 2);
                        let sy = f(&a[t * ab + 36 * b..], 2);
                        let ysum: f64 = ar[32 * b..32 * b + 32].iter().map(|&v| v as f64).sum();
                        exact += mx * (sy - ysum);
                    }
                }
                let (o, g) = (ours[r * n + t] as f64, ggml[r * n + t] as f64);
                // exact integer sums with f32 scaling: a few ulps of the terms' magnitude
                let tol = mag * 3.0 * 4e-6;
                assert!(
                    (o - exact).abs() <= tol,
                    "{ty} r={r} t={t}: {o} vs exact {exact}"
                );
                assert!(
                    (o - g).abs() <= 2.0 * tol,
                    "{ty} r={r} t={t}: {o} vs ggml order {g}"
                );
            }
        }
        // a buffer that is not whole groups of 16 rows is refused
        let mut out = vec![0f32; 8 * n];
        let e = quant::try_gemm_layout_isa(
            x16_isa,
            WeightLayout::Interleaved16,
            ty,
            k,
            &w[..8 * rb],
            &a,
            n,
            &mut out,
        );
        assert!(e.is_err(), "{ty}: 8 interleaved rows accepted");
    }
}
