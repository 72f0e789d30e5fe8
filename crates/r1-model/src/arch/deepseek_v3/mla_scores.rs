//! Attention scores of MLA: `s[j, q] = q_q · k_j` for a tile of cache rows and every query
//! (head × token) of a task, 576 values per row for DeepSeek-V3.
//!
//! The queries are transposed first ([`transpose`]: `qt[i * nqp + q]`, `nqp` a multiple of
//! [`LANES`], padding queries zero), so one vector holds element `i` of 16 queries: a cache
//! row's element is broadcast and multiplied into it, and the scores of a row come out as
//! vectors over the queries (`out[j * nqp + q]`), already in the layout the softmax and the
//! value accumulation read. No horizontal sums, and each cache element is loaded once per
//! 16 queries (the former layout, one dot product per (row, head), reduced every product
//! across lanes and reloaded the rows per 4 heads).
//!
//! Each score has one fixed order on every ISA: element `i` is fused-multiply-added into one
//! f32 in order `i = 0..k`, from 0. The blocking (rows × query vectors that share loads)
//! changes nothing in any one score.

#[cfg(target_arch = "x86_64")]
use crate::quant::Isa;

/// Queries per vector group (the padding unit of `nqp`).
pub(crate) const LANES: usize = 16;

/// Writes `q` (`[nq, k]`) transposed into `qt` (`[k, nqp]`, padding queries zero) and
/// returns `nqp`, `nq` rounded up to a multiple of [`LANES`].
pub(crate) fn transpose(q: &[f32], nq: usize, k: usize, qt: &mut Vec<f32>) -> usize {
    let nqp = nq.div_ceil(LANES) * LANES;
    qt.clear();
    qt.resize(k * nqp, 0.0);
    for (h, qh) in q.chunks_exact(k).take(nq).enumerate() {
        for (i, &x) in qh.iter().enumerate() {
            qt[i * nqp + h] = x;
        }
    }
    nqp
}

/// `out[j * nqp + q] = Σ_i qt[i * nqp + q] · rows[j][i]` for every row and all `nqp`
/// queries (`qt` from [`transpose`]; each row at least `k` values).
pub(crate) fn scores(qt: &[f32], nqp: usize, k: usize, rows: &[&[f32]], out: &mut [f32]) {
    assert!(nqp.is_multiple_of(LANES) && qt.len() >= k * nqp && out.len() >= rows.len() * nqp);
    assert!(rows.iter().all(|r| r.len() >= k));
    #[cfg(target_arch = "x86_64")]
    {
        match Isa::best() {
            // SAFETY: AVX-512 F is present (`Isa::best` checked it); lengths checked above.
            Isa::Avx512 => return unsafe { scores_avx512(qt, nqp, k, rows, out) },
            // SAFETY: AVX2 and FMA are present; lengths checked above.
            Isa::Avx2 => return unsafe { scores_avx2(qt, nqp, k, rows, out) },
            Isa::Scalar => {}
        }
    }
    scores_portable(qt, nqp, k, rows, out);
}

fn scores_portable(qt: &[f32], nqp: usize, k: usize, rows: &[&[f32]], out: &mut [f32]) {
    for (j, row) in rows.iter().enumerate() {
        let o = &mut out[j * nqp..(j + 1) * nqp];
        o.fill(0.0);
        for (i, &x) in row[..k].iter().enumerate() {
            for (s, &qv) in o.iter_mut().zip(&qt[i * nqp..(i + 1) * nqp]) {
                *s = qv.mul_add(x, *s);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
/// Calls `$f::<G, R>` over every block of `R` rows and `G` query vectors: full blocks, then
/// the leftover rows one const size at a time (each size is its own kernel, so the
/// accumulators stay in registers).
macro_rules! blocked {
    ($f:ident, $g:literal, $r:literal, $qt:expr, $nqp:expr, $k:expr, $rows:expr, $out:expr, $g0:expr) => {{
        let n = $rows.len();
        let mut j = 0;
        while j + $r <= n {
            $f::<$g, $r>($qt, $nqp, $k, &$rows[j..j + $r], $out, j, $g0);
            j += $r;
        }
        while j < n {
            match n - j {
                1 => $f::<$g, 1>($qt, $nqp, $k, &$rows[j..j + 1], $out, j, $g0),
                2 => $f::<$g, 2>($qt, $nqp, $k, &$rows[j..j + 2], $out, j, $g0),
                3 => $f::<$g, 3>($qt, $nqp, $k, &$rows[j..j + 3], $out, j, $g0),
                _ => $f::<$g, 4>($qt, $nqp, $k, &$rows[j..j + 4], $out, j, $g0),
            }
            j += (n - j).min(4);
        }
    }};
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn scores_avx512(qt: &[f32], nqp: usize, k: usize, rows: &[&[f32]], out: &mut [f32]) {
    let groups = nqp / LANES;
    let mut g0 = 0;
    // Two query vectors × 6 rows (12 accumulators) where there are two; else one × 8.
    while g0 + 2 <= groups {
        blocked!(block_avx512, 2, 6, qt, nqp, k, rows, out, g0);
        g0 += 2;
    }
    if g0 < groups {
        blocked!(block_avx512, 1, 8, qt, nqp, k, rows, out, g0);
    }
}

/// Rows `j0..j0 + R` (given as `rows`) against query vectors `g0..g0 + G`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn block_avx512<const G: usize, const R: usize>(
    qt: &[f32],
    nqp: usize,
    k: usize,
    rows: &[&[f32]],
    out: &mut [f32],
    j0: usize,
    g0: usize,
) {
    use std::arch::x86_64::*;
    let rp: [*const f32; R] = std::array::from_fn(|a| rows[a].as_ptr());
    let q0 = qt.as_ptr().add(g0 * LANES);
    let mut acc = [[_mm512_setzero_ps(); G]; R];
    for i in 0..k {
        let qv: [__m512; G] = std::array::from_fn(|g| _mm512_loadu_ps(q0.add(i * nqp + g * LANES)));
        for a in 0..R {
            let kv = _mm512_set1_ps(*rp[a].add(i));
            for g in 0..G {
                acc[a][g] = _mm512_fmadd_ps(qv[g], kv, acc[a][g]);
            }
        }
    }
    for (a, acc) in acc.iter().enumerate() {
        let o = out.as_mut_ptr().add((j0 + a) * nqp + g0 * LANES);
        for (g, v) in acc.iter().enumerate() {
            _mm512_storeu_ps(o.add(g * LANES), *v);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn scores_avx2(qt: &[f32], nqp: usize, k: usize, rows: &[&[f32]], out: &mut [f32]) {
    // One query vector of 16 is two ymm registers: 2 × 6 rows = 12 accumulators.
    for g0 in 0..nqp / LANES {
        blocked!(block_avx2, 1, 6, qt, nqp, k, rows, out, g0);
    }
}

/// Rows `j0..j0 + R` against query vectors `g0..g0 + G` (each two ymm registers).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn block_avx2<const G: usize, const R: usize>(
    qt: &[f32],
    nqp: usize,
    k: usize,
    rows: &[&[f32]],
    out: &mut [f32],
    j0: usize,
    g0: usize,
) {
    use std::arch::x86_64::*;
    let rp: [*const f32; R] = std::array::from_fn(|a| rows[a].as_ptr());
    let q0 = qt.as_ptr().add(g0 * LANES);
    let mut acc = [[[_mm256_setzero_ps(); 2]; G]; R];
    for i in 0..k {
        let qv: [[__m256; 2]; G] = std::array::from_fn(|g| {
            let p = q0.add(i * nqp + g * LANES);
            [_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8))]
        });
        for a in 0..R {
            let kv = _mm256_set1_ps(*rp[a].add(i));
            for g in 0..G {
                for half in 0..2 {
                    acc[a][g][half] = _mm256_fmadd_ps(qv[g][half], kv, acc[a][g][half]);
                }
            }
        }
    }
    for (a, acc) in acc.iter().enumerate() {
        let o = out.as_mut_ptr().add((j0 + a) * nqp + g0 * LANES);
        for (g, v) in acc.iter().enumerate() {
            _mm256_storeu_ps(o.add(g * LANES), v[0]);
            _mm256_storeu_ps(o.add(g * LANES + 8), v[1]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn every_isa_gives_the_portable_scores_bit_for_bit() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        for (k, nq, n) in [
            (576, 16, 64),
            (576, 128, 13),
            (24, 4, 7),
            (40, 5, 13),
            (16, 1, 1),
            (100, 35, 9),
            (100, 3, 5),
        ] {
            let q: Vec<f32> = (0..nq * k)
                .map(|_| rng.random_range(-1.0f32..1.0))
                .collect();
            let data: Vec<Vec<f32>> = (0..n)
                .map(|_| (0..k).map(|_| rng.random_range(-1.0f32..1.0)).collect())
                .collect();
            let rows: Vec<&[f32]> = data.iter().map(|r| r.as_slice()).collect();
            let mut qt = Vec::new();
            let nqp = transpose(&q, nq, k, &mut qt);
            let mut want = vec![0.0; n * nqp];
            scores_portable(&qt, nqp, k, &rows, &mut want);
            for j in 0..n {
                for h in 0..nqp {
                    let exact: f64 = if h < nq {
                        (0..k)
                            .map(|i| q[h * k + i] as f64 * rows[j][i] as f64)
                            .sum()
                    } else {
                        0.0
                    };
                    assert!((want[j * nqp + h] as f64 - exact).abs() < 1e-4);
                }
            }
            #[cfg(target_arch = "x86_64")]
            for isa in [Isa::Avx2, Isa::Avx512] {
                if !isa.is_available() {
                    eprintln!("SKIP: {isa:?} is not available on this CPU");
                    continue;
                }
                let mut got = vec![f32::NAN; n * nqp];
                // SAFETY: the ISA is available; lengths as asserted in `scores`.
                unsafe {
                    match isa {
                        Isa::Avx2 => scores_avx2(&qt, nqp, k, &rows, &mut got),
                        _ => scores_avx512(&qt, nqp, k, &rows, &mut got),
                    }
                }
                let same = got
                    .iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{isa:?} k={k} nq={nq} n={n}");
            }
        }
    }
}
