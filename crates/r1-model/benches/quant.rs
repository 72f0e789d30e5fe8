//! Quick single-thread throughput of the quantized GEMV / GEMM kernels per ISA.
//! `cargo bench -p r1-model --bench quant [-- FILTER]`; `QUANT_BENCH_SECS` sets the time per case.
//! `QUANT_BENCH_N=1,64` picks token counts; `QUANT_BENCH_SCALAR=1` times the portable kernels
//! at every count too (by default only up to 4 tokens).

use std::hint::black_box;
use std::time::{Duration, Instant};

use r1_model::quant::{self, x16, GgmlType, Isa, WeightLayout};

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Best time of one call, over repeated calls for about `secs`.
fn time_it(secs: f64, mut f: impl FnMut()) -> Duration {
    f();
    let start = Instant::now();
    let mut best = Duration::MAX;
    let mut iters = 0;
    while start.elapsed().as_secs_f64() < secs || iters < 3 {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed());
        iters += 1;
    }
    best
}

fn main() {
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let secs: f64 = std::env::var("QUANT_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.4);
    // (type, rows m, row length k): the test models' matrices
    let cases = [
        (GgmlType::Q4_1, 576, 1536, "smollm2 ffn_down"),
        (GgmlType::Q4_1, 1536, 576, "smollm2 ffn_up/gate"),
        (GgmlType::Q4_1, 896, 4864, "ffn_down (Q4_1)"),
        (GgmlType::Q4_0, 896, 4864, "ffn_down (Q4_0)"),
        (GgmlType::Q5_0, 896, 4864, "qwen05 ffn_down"),
        (GgmlType::Q5_0, 4864, 896, "qwen05 ffn_up/gate"),
        (GgmlType::Q8_0, 896, 896, "qwen05 attn (Q8_0)"),
        (GgmlType::Q8_0, 896, 4864, "ffn_down (Q8_0)"),
        (GgmlType::Q4_K, 896, 4864, "qwen05 ffn_down (Q4_K)"),
        (GgmlType::Q6_K, 896, 4864, "qwen05 ffn_down (Q6_K)"),
        (GgmlType::IQ4_NL, 4864, 896, "qwen05-IQ ffn_up/gate"),
        (GgmlType::IQ4_XS, 896, 4864, "qwen05-IQ4_XS ffn_down"),
        (GgmlType::IQ2_XXS, 896, 4864, "qwen05-IQ2_XXS ffn_down"),
        (GgmlType::Q2_K, 896, 4864, "qwen05-IQ2_XXS ffn_down"),
        (GgmlType::Q3_K, 896, 4864, "qwen05-Q2_K ffn_down"),
        (GgmlType::IQ1_S, 896, 4864, "ffn_down (IQ1_S)"),
        (GgmlType::IQ1_M, 896, 4864, "ffn_down (IQ1_M)"),
        // DeepSeek-V2-Lite's expert ffn_gate/up (R1's is 2048x7168), in the types of the
        // low-bit R1 mixes
        (GgmlType::IQ3_XXS, 1408, 2048, "v2lite ffn_up (IQ3_XXS)"),
        (GgmlType::IQ2_XS, 1408, 2048, "v2lite ffn_up (IQ2_XS)"),
        (GgmlType::IQ3_S, 1408, 2048, "v2lite ffn_up (IQ3_S)"),
        (GgmlType::IQ2_S, 1408, 2048, "v2lite ffn_up (IQ2_S)"),
        (GgmlType::IQ1_S, 1408, 2048, "v2lite ffn_up (IQ1_S)"),
        (GgmlType::IQ1_M, 1408, 2048, "v2lite ffn_up (IQ1_M)"),
        (GgmlType::F32, 576, 576, "f32"),
    ];
    println!("best ISA: {:?}; single thread; best-of timing", Isa::best());
    for (ty, k) in [
        (GgmlType::Q8_0, 4864),
        (GgmlType::Q8_1, 1536),
        (GgmlType::Q8_K, 4864),
    ] {
        let name = format!("quantize {ty} k={k}");
        if filter.as_ref().is_some_and(|f| !name.contains(f.as_str())) {
            continue;
        }
        let x = values(k, 3);
        let mut out = vec![0u8; quant::row_bytes(ty, k).unwrap()];
        let d = time_it(secs, || {
            quant::quantize_row(ty, black_box(&x), &mut out).unwrap();
            black_box(&out);
        });
        println!("{name:<28} {:>8.2} us", d.as_secs_f64() * 1e6);
    }
    for (ty, m, k, what) in cases {
        let name = format!("{ty} {m}x{k}");
        if let Some(f) = &filter {
            if !name.contains(f.as_str()) && !what.contains(f.as_str()) {
                continue;
            }
        }
        let wrow = quant::row_bytes(ty, k).unwrap();
        let mut w = vec![0u8; m * wrow];
        let x = values(m * k, 1);
        if quant::quantize_row(ty, &x, &mut w).is_err() {
            // no quantizer (the i-quants): random blocks with a small f16 scale first
            for (i, b) in w.iter_mut().enumerate() {
                *b = (i.wrapping_mul(2654435761) >> 13) as u8;
            }
            for blk in w.chunks_exact_mut(ty.type_size()) {
                blk[0..2].copy_from_slice(&half::f16::from_f32(0.01).to_bits().to_le_bytes());
            }
        }
        let a_ty = quant::vec_dot_type(ty);
        let arow = quant::row_bytes(a_ty, k).unwrap();
        for n in [1usize, 4, 8, 64] {
            if std::env::var("QUANT_BENCH_N")
                .is_ok_and(|v| v.split(',').all(|x| x != n.to_string()))
            {
                continue;
            }
            let xa = values(n * k, 2);
            let mut a = vec![0u8; n * arow];
            quant::quantize_row(a_ty, &xa, &mut a).unwrap();
            let mut out = vec![0f32; m * n];
            let mut line = format!("{name:<16} {what:<24} n={n:<3}");
            // the native layout (ggml's order), and the interleaved one where supported
            let mut w16 = Vec::new();
            if x16::supported(ty) && m % x16::GROUP == 0 {
                w16 = w.clone();
                x16::interleave(ty, k, &mut w16, &mut Vec::new());
            }
            let layouts = [
                (WeightLayout::Native, &w),
                (WeightLayout::Interleaved16, &w16),
            ];
            for (layout, wl) in layouts {
                if wl.is_empty() {
                    continue;
                }
                for isa in Isa::available() {
                    // the portable kernel at every n only on request (slow; for speedup ratios)
                    if isa == Isa::Scalar
                        && n > 4
                        && std::env::var_os("QUANT_BENCH_SCALAR").is_none()
                    {
                        continue;
                    }
                    // no kernel for this ISA and layout (x16 Q2_K and i-quants: AVX-512 only)
                    if let Err(quant::QuantError::Unsupported { .. }) =
                        quant::try_gemm_layout_isa(isa, layout, ty, k, wl, &a, n, &mut out)
                    {
                        continue;
                    }
                    let d = time_it(secs, || {
                        quant::try_gemm_layout_isa(
                            isa,
                            layout,
                            ty,
                            k,
                            black_box(wl),
                            black_box(&a),
                            n,
                            &mut out,
                        )
                        .unwrap();
                        black_box(&out);
                    });
                    let s = d.as_secs_f64();
                    let gbs = w.len() as f64 / s / 1e9;
                    let gops = 2.0 * (m * k * n) as f64 / s / 1e9;
                    let tag = match layout {
                        WeightLayout::Native => format!("{isa:?}"),
                        WeightLayout::Interleaved16 => format!("{isa:?} x16"),
                    };
                    line += &format!(
                        " | {tag}: {:>8.1} us {gbs:>6.1} GB/s {gops:>6.1} GOP/s",
                        s * 1e6
                    );
                }
                if layout == WeightLayout::Interleaved16 {
                    // the AVX2 level's x16 kernels with and without AVX-VNNI
                    for vnni in [false, true] {
                        if x16::try_gemm_avx2(vnni, ty, k, wl, &a, n, &mut out).is_err() {
                            continue;
                        }
                        let d = time_it(secs, || {
                            x16::try_gemm_avx2(
                                vnni,
                                ty,
                                k,
                                black_box(wl),
                                black_box(&a),
                                n,
                                &mut out,
                            )
                            .unwrap();
                            black_box(&out);
                        });
                        let s = d.as_secs_f64();
                        let gops = 2.0 * (m * k * n) as f64 / s / 1e9;
                        let tag = if vnni {
                            "Avx2+VNNI x16"
                        } else {
                            "Avx2(plain) x16"
                        };
                        line += &format!(" | {tag}: {:>8.1} us {gops:>6.1} GOP/s", s * 1e6);
                    }
                }
            }
            println!("{line}");
        }
    }
}
