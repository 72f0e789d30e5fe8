//! Decode-shaped GEMV with weights streamed from DRAM, against the machine's read bandwidth
//! measured in the same run. `cargo bench -p r1-model --bench gemv_dram [-- FILTER]`;
//! Token counts 1 (decode) and 8 (a batched decode step). `GEMV_MIB` sets the weight bytes per case (default 512 MiB, beyond any cache),
//! `GEMV_THREADS` the thread counts (default "1,2").
//!
//! Decode reads every weight once per token, so a GEMV kernel is as fast as the fraction of
//! read bandwidth it sustains. Weights sit in 2 MiB pages when the kernel supports it (as the
//! model loader arranges) and in 4 KiB pages for comparison.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use r1_model::matmul::{matmul, QuantizedActs};
use r1_model::pool::ThreadPool;
use r1_model::quant::{self, x16, GgmlType, WeightLayout};
use r1_model::weights::{ByteSource, QMatrix};

struct Anon(memmap2::MmapMut);

impl ByteSource for Anon {
    fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// `len` bytes of anonymous memory, huge pages requested or not, filled from `fill`.
fn anon(len: usize, huge: bool, fill: &[u8]) -> Anon {
    let mut m = memmap2::MmapMut::map_anon(len).expect("mmap");
    #[cfg(target_os = "linux")]
    if huge {
        let _ = m.advise(memmap2::Advice::HugePage);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = huge;
    for c in m.chunks_mut(fill.len()) {
        c.copy_from_slice(&fill[..c.len()]);
    }
    Anon(m)
}

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

/// Read bandwidth over `buf` with `pool`: every thread sums its share; best of 3 passes.
fn read_bandwidth(pool: &ThreadPool, buf: &[u8]) -> f64 {
    let words: &[u64] = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast(), buf.len() / 8) };
    let per = words.len().div_ceil(pool.threads());
    let mut best = f64::MAX;
    for _ in 0..4 {
        let t = Instant::now();
        pool.run(pool.threads(), |i| {
            let part = &words[(i * per).min(words.len())..((i + 1) * per).min(words.len())];
            let mut acc = [0u64; 8];
            for c in part.chunks_exact(8) {
                for j in 0..8 {
                    acc[j] ^= c[j];
                }
            }
            black_box(acc);
        });
        best = best.min(t.elapsed().as_secs_f64());
    }
    buf.len() as f64 / best / 1e9
}

fn main() {
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let mib: usize = std::env::var("GEMV_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(512);
    let threads: Vec<usize> = std::env::var("GEMV_THREADS")
        .unwrap_or_else(|_| "1,2".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let cases = [
        (GgmlType::Q4_1, 576, "smollm2"),
        (GgmlType::Q5_0, 896, "qwen05 ffn_up/gate"),
        (GgmlType::Q5_0, 4864, "qwen05 ffn_down"),
        (GgmlType::Q8_0, 896, "qwen05 output"),
        (GgmlType::Q4_K, 4864, "qwen05 ffn_down"),
        (GgmlType::Q6_K, 4864, "qwen05 ffn_down"),
    ];
    let bytes = mib << 20;
    for &nt in &threads {
        let pool = ThreadPool::new(nt);
        let probe = anon(bytes, true, &[1u8; 4096]);
        println!(
            "threads {nt}: read bandwidth {:.1} GB/s ({mib} MiB, 2 MiB pages)",
            read_bandwidth(&pool, &probe.0)
        );
        drop(probe);
        for (ty, k, what) in cases {
            let name = format!("{ty} k={k} {what}");
            if filter.as_ref().is_some_and(|f| !name.contains(f.as_str())) {
                continue;
            }
            let rb = quant::row_bytes(ty, k).unwrap();
            // one real matrix of 64 rows repeated: realistic values, any size
            let mut fill = vec![0u8; 64 * rb];
            quant::quantize_row(ty, &values(64 * k, 1), &mut fill).unwrap();
            let rows = (bytes / rb) / 64 * 64;
            for n in [1usize, 8] {
                let x = values(n * k, 2);
                let mut line = format!("{name:<32} n={n}");
                // the file's layout on 4 KiB and 2 MiB pages, and interleaved for the x16
                // kernels (as the model loader does where this CPU has them) on 2 MiB pages
                let mut runs = vec![(false, WeightLayout::Native), (true, WeightLayout::Native)];
                if x16::available(ty) {
                    runs.push((true, WeightLayout::Interleaved16));
                }
                for (huge, layout) in runs {
                    let mut fill16 = fill.clone();
                    if layout == WeightLayout::Interleaved16 {
                        x16::interleave(ty, k, &mut fill16, &mut Vec::new());
                    }
                    let src = anon(rows * rb, huge, &fill16);
                    let w = QMatrix::from_source(ty, rows, k, Arc::new(src))
                        .and_then(|w| w.with_layout(layout))
                        .unwrap();
                    let acts = QuantizedActs::new(&pool, ty, &x, n, k);
                    let mut out = vec![0f32; rows * n];
                    let mut best = f64::MAX;
                    for _ in 0..4 {
                        let t = Instant::now();
                        matmul(&pool, &w, &acts, &mut out);
                        best = best.min(t.elapsed().as_secs_f64());
                    }
                    black_box(&out);
                    let gbs = (rows * rb) as f64 / best / 1e9;
                    let tag = match (huge, layout) {
                        (_, WeightLayout::Interleaved16) => "x16 2M",
                        (true, _) => "2M",
                        (false, _) => "4K",
                    };
                    line += &format!(" | {tag}: {gbs:>5.1} GB/s");
                }
                println!("{line}");
            }
        }
    }
}
