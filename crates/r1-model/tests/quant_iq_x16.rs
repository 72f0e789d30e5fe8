//! The x16 layouts of the types llama-quantize's IQ files use (IQ4_NL, IQ4_XS, the grid types
//! IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S, IQ1_S, IQ1_M, and Q2_K for some matrices of IQ2 files), `WeightLayout::Interleaved16`: the layout round-trips, every
//! ISA's x16 kernel equals the portable x16 kernel bit for bit on awkward shapes and token
//! counts (and for the i-quants, which keep ggml's generic order, the native portable
//! kernel too), results do not depend on the batch, and they stay within f32 rounding of an
//! f64 dot of the dequantized operands.

use r1_model::quant::{self, x16, GgmlType, Isa, WeightLayout};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use GgmlType::*;

mod iq_support;
use iq_support::assert_near_exact_dot;

/// The types with an interleaved layout tested here.
const TYPES: [GgmlType; 10] = [
    IQ4_NL, IQ4_XS, IQ2_XXS, Q2_K, IQ3_XXS, IQ2_XS, IQ3_S, IQ2_S, IQ1_S, IQ1_M,
];

/// Whether the x16 kernels of `ty` keep the native kernels' (ggml's) order.
fn native_order(ty: GgmlType) -> bool {
    ty != Q2_K
}

/// Offsets of a block's f16 scales (IQ1_M: none, see `weights`).
fn scale_offsets(ty: GgmlType) -> &'static [usize] {
    match ty {
        Q2_K => &[80, 82],
        IQ1_M => &[],
        _ => &[0],
    }
}

fn shapes(ty: GgmlType) -> &'static [usize] {
    match ty {
        IQ4_NL => &[32, 96, 256, 896, 2816],
        IQ4_XS | IQ2_XXS | Q2_K => &[256, 512, 2816],
        // 1-3 super-blocks
        _ => &[256, 512, 768],
    }
}

/// `m` rows of random blocks with finite, sanely sized f16 scales (everything else random).
fn weights(rng: &mut StdRng, ty: GgmlType, k: usize, m: usize) -> Vec<u8> {
    let mut w = vec![0u8; m * quant::row_bytes(ty, k).unwrap()];
    rng.fill(&mut w[..]);
    for blk in w.chunks_exact_mut(ty.type_size()) {
        for &o in scale_offsets(ty) {
            let d = rng.random_range(1e-4..0.05f32) * if rng.random() { 1.0 } else { -1.0 };
            blk[o..o + 2].copy_from_slice(&half::f16::from_f32(d).to_bits().to_le_bytes());
        }
        if ty == IQ1_M {
            // the f16 scale is spread over the top nibbles of the 4 u16 scale words @48
            let d = rng.random_range(1e-4..0.05f32) * if rng.random() { 1.0 } else { -1.0 };
            let bits = half::f16::from_f32(d).to_bits();
            for i in 0..4 {
                let off = 48 + 2 * i;
                let word = u16::from_le_bytes([blk[off], blk[off + 1]]);
                let word = (word & 0x0FFF) | (((bits >> (4 * i)) & 0xF) << 12);
                blk[off..off + 2].copy_from_slice(&word.to_le_bytes());
            }
        }
    }
    w
}

/// `n` activation rows in the weight type's `vec_dot_type`, and their dequantization.
fn activations(rng: &mut StdRng, ty: GgmlType, k: usize, n: usize) -> (Vec<u8>, Vec<f32>) {
    let a_ty = quant::vec_dot_type(ty);
    let ab = quant::row_bytes(a_ty, k).unwrap();
    let mut a = vec![0u8; n * ab];
    for t in 0..n {
        let sc = rng.random_range(0.1..10.0f32);
        let x: Vec<f32> = (0..k)
            .map(|_| rng.random_range(-1.0..1.0f32) * sc)
            .collect();
        quant::quantize_row(a_ty, &x, &mut a[t * ab..(t + 1) * ab]).unwrap();
    }
    let mut adq = vec![0f32; n * k];
    quant::dequantize(a_ty, &a, &mut adq).unwrap();
    (a, adq)
}

fn interleaved(ty: GgmlType, native: &[u8], k: usize) -> Vec<u8> {
    let mut w = native.to_vec();
    x16::interleave(ty, k, &mut w, &mut Vec::new());
    w
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

/// The ISAs with an x16 kernel for `ty` (the portable one always has one).
fn x16_isas(ty: GgmlType) -> Vec<Isa> {
    let k = ty.block_size();
    let w = vec![0u8; 16 * quant::row_bytes(ty, k).unwrap()];
    let a = vec![0u8; quant::row_bytes(quant::vec_dot_type(ty), k).unwrap()];
    Isa::ALL
        .into_iter()
        .filter(|&isa| {
            let mut out = [0f32; 16];
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
                Err(quant::QuantError::IsaUnavailable(_)) => {
                    eprintln!("skipping {ty} x16 on {isa:?}: this CPU lacks it");
                    false
                }
                Err(e) => panic!("{e}"),
            }
        })
        .collect()
}

fn same_bits(x: &[f32], y: &[f32]) -> Option<usize> {
    x.iter()
        .zip(y)
        .position(|(a, b)| a.to_bits() != b.to_bits())
}

#[test]
fn interleaving_round_trips_every_row() {
    let mut rng = StdRng::seed_from_u64(1);
    for ty in TYPES {
        assert!(x16::supported(ty), "{ty}");
        for &k in shapes(ty) {
            let rb = quant::row_bytes(ty, k).unwrap();
            let native = weights(&mut rng, ty, k, 32);
            let w = interleaved(ty, &native, k);
            assert_ne!(w, native, "{ty} k={k}: interleaving changed nothing");
            let mut row = vec![0u8; rb];
            for r in 0..32 {
                let group = &w[(r / 16) * 16 * rb..(r / 16 + 1) * 16 * rb];
                x16::extract_row(ty, k, group, r % 16, &mut row);
                assert_eq!(row, native[r * rb..(r + 1) * rb], "{ty} k={k} row {r}");
            }
        }
    }
}

/// Every x16 kernel equals the portable x16 kernel bit for bit (the i-quants: the native
/// portable kernel too), for any number of tokens (1..=21: every tile size and remainder),
/// and each token's result equals that token alone.
#[test]
fn every_isa_equals_the_portable_kernel_and_is_batch_invariant() {
    let mut rng = StdRng::seed_from_u64(2);
    for ty in TYPES {
        let isas = x16_isas(ty);
        assert!(isas.contains(&Isa::Scalar), "{ty}: no portable x16 kernel");
        for &k in shapes(ty) {
            let m = 48;
            let native = weights(&mut rng, ty, k, m);
            let w = interleaved(ty, &native, k);
            let (a, _) = activations(&mut rng, ty, k, 21);
            let ab = a.len() / 21;
            for n in 1..=21 {
                let a = &a[..n * ab];
                let want = gemm(Isa::Scalar, WeightLayout::Interleaved16, ty, k, &w, a, n);
                if native_order(ty) {
                    let nat = gemm(Isa::Scalar, WeightLayout::Native, ty, k, &native, a, n);
                    assert_eq!(same_bits(&nat, &want), None, "{ty} k={k} n={n}: native");
                }
                for &isa in &isas {
                    let got = gemm(isa, WeightLayout::Interleaved16, ty, k, &w, a, n);
                    if let Some(i) = same_bits(&got, &want) {
                        panic!(
                            "{ty} k={k} n={n} {isa:?}: row {} token {}: {} vs portable {}",
                            i / n,
                            i % n,
                            got[i],
                            want[i]
                        );
                    }
                }
            }
            // batch invariance: each token alone gives the same bits as in the batch of 21
            // (on the fastest ISA with an x16 kernel: a capped R1SERVE_ISA may have none)
            let fastest = *isas.last().unwrap();
            let all = gemm(fastest, WeightLayout::Interleaved16, ty, k, &w, &a, 21);
            for t in 0..21 {
                let one = gemm(
                    fastest,
                    WeightLayout::Interleaved16,
                    ty,
                    k,
                    &w,
                    &a[t * ab..(t + 1) * ab],
                    1,
                );
                for r in 0..m {
                    assert_eq!(
                        one[r].to_bits(),
                        all[r * 21 + t].to_bits(),
                        "{ty} k={k} row {r} token {t}"
                    );
                }
            }
        }
    }
}

/// The block sums are exact; only the f32 scaling rounds: within a few ulps of Σ|products|.
#[test]
fn x16_results_match_an_f64_dot_of_the_dequantized_operands() {
    let mut rng = StdRng::seed_from_u64(3);
    for ty in TYPES {
        let fastest = *x16_isas(ty).last().unwrap();
        for &k in shapes(ty) {
            let (m, n) = (16, 7);
            let native = weights(&mut rng, ty, k, m);
            let mut wdq = vec![0f32; m * k];
            quant::dequantize(ty, &native, &mut wdq).unwrap();
            let (a, adq) = activations(&mut rng, ty, k, n);
            let w = interleaved(ty, &native, k);
            let out = gemm(fastest, WeightLayout::Interleaved16, ty, k, &w, &a, n);
            assert_near_exact_dot(&format!("{ty} k={k}"), k, &wdq, &adq, &out);
        }
    }
}

/// Real tensors that llama-quantize made (every `*.gguf` in `$R1SERVE_IQ_GGUF_DIR`, e.g. the
/// small1 IQ1_S ... IQ4_XS files; skipped where it is unset): the loader interleaves each
/// tensor whose type has an x16 kernel on this CPU, and on the first 64 rows of each, for 1,
/// 3 and 17 tokens, the x16 kernel equals the native portable kernel bit for bit.
#[test]
fn real_llama_quantize_tensors_interleaved_equal_the_native_kernel() {
    use r1_model::gguf::GgufFile;
    let Some(dir) = std::env::var_os("R1SERVE_IQ_GGUF_DIR") else {
        eprintln!("skipping: set R1SERVE_IQ_GGUF_DIR to a folder of llama-quantize IQ files");
        return;
    };
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
        .collect();
    files.sort();
    let mut rng = StdRng::seed_from_u64(4);
    let mut checked = std::collections::BTreeMap::<String, usize>::new();
    for path in &files {
        let native = GgufFile::open(path).unwrap();
        let mut file = GgufFile::open_resident(path).unwrap();
        file.interleave_weights(|_| true);
        for t in file.tensors() {
            // the i-quants (the K-quants' x16 kernels have an order of their own)
            let iq = TYPES.contains(&t.ty) && native_order(t.ty);
            if t.layout != WeightLayout::Interleaved16 || !iq {
                continue;
            }
            let fastest = *x16_isas(t.ty).last().unwrap();
            let k = t.row_len();
            let rb = quant::row_bytes(t.ty, k).unwrap();
            let rows = t.n_rows().min(64);
            let w16 = &file.tensor_data(t)[..rows * rb];
            let wn = &native.tensor_data(native.tensor(&t.name).unwrap())[..rows * rb];
            assert_ne!(w16, wn, "{}: not interleaved", t.name);
            for n in [1, 3, 17] {
                let (a, _) = activations(&mut rng, t.ty, k, n);
                let want = gemm(Isa::Scalar, WeightLayout::Native, t.ty, k, wn, &a, n);
                let got = gemm(fastest, WeightLayout::Interleaved16, t.ty, k, w16, &a, n);
                let p = path.display();
                assert_eq!(
                    same_bits(&got, &want),
                    None,
                    "{p} {} {} n={n}",
                    t.name,
                    t.ty
                );
            }
            *checked.entry(format!("{} {fastest:?}", t.ty)).or_default() += 1;
        }
    }
    eprintln!("real tensors checked, per type and ISA: {checked:?}");
}
