//! MLA attention of one decode token at depth (DeepSeek-V3 widths: 16 heads here as in
//! v2lite8, latent 512, rope 64), against a plain read of the same cache bytes in the same
//! run. `cargo bench -p r1-model --bench mla_decode [-- FILTER]`; `MLA_THREADS` sets the
//! thread counts (default "1,2"), `MLA_DEPTHS` the depths (default "4096,16384").
//!
//! A decode token at depth reads every latent row of every layer once, so its attention is
//! as fast as the fraction of read bandwidth it sustains: the `read` column is the time the
//! same threads take to sum the layer's cache bytes. The CPU columns are the CPU time of all
//! threads per call (Linux), which a busy machine disturbs less than the wall time. Eight layers rotate, as in the model, so
//! no layer's cache is still in the last-level cache when its turn comes.

use std::hint::black_box;
use std::time::Instant;

use r1_model::arch::deepseek_v3::{mla_attend_for_bench as attend, MlaDims};
use r1_model::pool::ThreadPool;
use r1_model::{Batch, KvCache, KvDtype, KvLayout};

const LAYERS: usize = 8;
const BLOCK: usize = 16;

fn list(var: &str, default: &str) -> Vec<usize> {
    std::env::var(var)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

fn values(n: usize, seed: u64) -> impl Iterator<Item = f32> {
    let mut s = seed;
    (0..n).map(move |_| {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    })
}

/// CPU time of every thread of this process so far, in seconds (Linux `schedstat`; 0
/// elsewhere). Unlike wall time it does not grow while other processes hold the cores, so
/// on a busy machine it still compares two kernels.
fn cpu_seconds() -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    dir.filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .sum::<f64>()
        / 1e9
}

/// Seconds per call of `f` (wall, CPU of all threads), best of 3 rounds of `reps` calls.
fn time(reps: usize, mut f: impl FnMut(usize)) -> (f64, f64) {
    f(0);
    let (mut best, mut best_cpu) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..3 {
        let (t, c) = (Instant::now(), cpu_seconds());
        for i in 0..reps {
            f(i);
        }
        best = best.min(t.elapsed().as_secs_f64() / reps as f64);
        best_cpu = best_cpu.min((cpu_seconds() - c) / reps as f64);
    }
    (best, best_cpu)
}

fn main() {
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let d = MlaDims {
        heads: 16,
        latent: 512,
        rope: 64,
    };
    let kw = d.latent + d.rope;
    println!(
        "| case | threads | attention ms/layer | CPU ms | read ms/layer | CPU ms | read / attention | attention GB/s |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for depth in list("MLA_DEPTHS", "4096,16384") {
        for dtype in [KvDtype::F32, KvDtype::F16] {
            let case = format!("depth {depth} {}", dtype.name());
            if filter.as_ref().is_some_and(|f| !case.contains(f.as_str())) {
                continue;
            }
            let blocks = (depth + 1).div_ceil(BLOCK);
            let layout = KvLayout {
                n_layers: LAYERS,
                k_width: kw,
                v_width: 0,
            };
            let mut kv = KvCache::with_dtype(layout, BLOCK, blocks, dtype);
            for l in 0..LAYERS {
                match dtype {
                    KvDtype::F32 => {
                        let k = kv.layer_f32_mut(l).0;
                        let n = k.len();
                        for (x, v) in k.iter_mut().zip(values(n, l as u64)) {
                            *x = v;
                        }
                    }
                    _ => {
                        let k = kv.layer_mut(l).0;
                        let n = k.len();
                        for (x, v) in k.iter_mut().zip(values(n, l as u64)) {
                            *x = r1_model::f16::from_f32(v);
                        }
                    }
                }
            }
            let bt: Vec<u32> = (0..blocks as u32).collect();
            let mut batch = Batch::default();
            batch.push(&[0], depth, bt, true);
            let q: Vec<f32> = values(d.heads * kw, 99).map(|x| x * 0.1).collect();
            let mut o = vec![0.0f32; d.heads * d.latent];
            let bytes = (depth + 1) * kw * dtype.bytes();
            let reps = (2_000_000_000 / (bytes * 16)).clamp(8, 200);
            for threads in list("MLA_THREADS", "1,2") {
                let pool = ThreadPool::new(threads);
                let att = time(reps, |i| {
                    attend(&pool, &kv, i % LAYERS, &batch, d, 0.07, &q, &mut o);
                    black_box(&o);
                });
                let sums: Vec<std::sync::atomic::AtomicU64> =
                    (0..threads).map(|_| Default::default()).collect();
                let read = time(reps, |i| {
                    let l = i % LAYERS;
                    let words: &[u64] = match dtype {
                        KvDtype::F32 => cast(kv.layer_f32(l).0),
                        _ => cast(kv.layer(l).0),
                    };
                    let words = &words[..bytes / 8];
                    let per = words.len().div_ceil(threads);
                    pool.run(threads, |t| {
                        let part =
                            &words[(t * per).min(words.len())..((t + 1) * per).min(words.len())];
                        let s = part.iter().fold(0u64, |a, &w| a ^ w);
                        sums[t].fetch_xor(s, std::sync::atomic::Ordering::Relaxed);
                    });
                });
                let ((att, att_cpu), (read, read_cpu)) = (att, read);
                println!(
                    "| {case} | {threads} | {:.3} | {:.3} | {:.3} | {:.3} | {:.2} | {:.1} |",
                    att * 1e3,
                    att_cpu * 1e3,
                    read * 1e3,
                    read_cpu * 1e3,
                    read / att,
                    bytes as f64 / att / 1e9
                );
            }
        }
    }
}

/// The bytes of a slice of plain numbers as 8-byte words (the tail that does not fill one
/// is left out).
fn cast<T: Copy>(s: &[T]) -> &[u64] {
    let bytes = std::mem::size_of_val(s);
    // SAFETY: plain numbers; the allocation of a Vec<f32>/Vec<u16> is at least 4-aligned,
    // so the pointer is realigned to 8 and the length cut to whole words inside it.
    unsafe {
        let p = s.as_ptr() as *const u8;
        let off = p.align_offset(8);
        std::slice::from_raw_parts(p.add(off) as *const u64, bytes.saturating_sub(off) / 8)
    }
}
