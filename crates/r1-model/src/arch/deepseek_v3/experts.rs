//! Expert-batched SwiGLU MLPs: every expert of a MoE layer (and its shared experts) in the
//! same few parallel regions.
//!
//! A job is one MLP and the token rows routed to it. All jobs of a layer run together:
//! 1. the input rows are quantized once per activation type (not once per expert);
//! 2. gate and up, fused: each task computes the same rows of both for one job, then SwiGLU
//!    on them, so the intermediate is never read back by another task;
//! 3. the intermediate rows are quantized for the down projection;
//! 4. down.
//!
//! That is four barriers per layer where running experts one after another costs three per
//! expert, and small experts' tasks fill the gaps of large ones. Every output element is the
//! same kernel's fixed-order dot product as in [`super::linear::linear`] (batch invariance),
//! so the results are bit for bit those of running each MLP alone.

use std::collections::HashMap;

use super::linear::{act_type, chunk_for, tile, Buf};
use super::moe::Mlp;
use crate::matmul::QuantizedActs;
use crate::ops;
use crate::pool::ThreadPool;
use crate::quant::{self, GgmlType};
use crate::weights::QMatrix;

/// One MLP applied to some rows of the layer input.
pub(crate) struct ExpertJob<'a> {
    pub mlp: &'a Mlp,
    /// Token rows of the input, in the order of the output rows.
    pub rows: Vec<usize>,
}

/// A task: job `j`, weight rows `r0..r1`.
#[derive(Clone, Copy)]
struct Task {
    j: usize,
    r0: usize,
    r1: usize,
}

/// Tasks covering every job's `rows_of(job)` rows, about `per_thread` tasks per thread in
/// all, weighted by the job's row count times its token count.
fn plan(
    jobs: &[ExpertJob],
    threads: usize,
    per_thread: usize,
    w_of: impl Fn(&Mlp) -> &QMatrix,
) -> Vec<Task> {
    let work: usize = jobs.iter().map(|j| w_of(j.mlp).rows * j.rows.len()).sum();
    let target = (threads * per_thread).max(1);
    let mut tasks = Vec::new();
    for (ji, job) in jobs.iter().enumerate() {
        let w = w_of(job.mlp);
        if job.rows.is_empty() {
            continue;
        }
        let share = (w.rows * job.rows.len()) as f64 / work.max(1) as f64;
        let n_tasks = ((share * target as f64).round() as usize).max(1);
        let chunk = chunk_for(w, w.rows.div_ceil(n_tasks));
        let mut r0 = 0;
        while r0 < w.rows {
            let r1 = (r0 + chunk).min(w.rows);
            tasks.push(Task { j: ji, r0, r1 });
            r0 = r1;
        }
    }
    tasks
}

/// Gather `rows` of quantized activations (all rows in order: borrowed as they are).
fn gather<'a>(acts: &'a QuantizedActs, rows: &[usize], all: usize) -> std::borrow::Cow<'a, [u8]> {
    let rb = acts.row_bytes;
    if rows.len() == all && rows.iter().enumerate().all(|(i, &r)| i == r) {
        return std::borrow::Cow::Borrowed(&acts.data);
    }
    let mut out = Vec::with_capacity(rows.len() * rb);
    for &r in rows {
        out.extend_from_slice(&acts.data[r * rb..(r + 1) * rb]);
    }
    std::borrow::Cow::Owned(out)
}

/// Run every job on `x` (`t` rows of `k`); returns per job its output rows (`[rows, d]`,
/// `d` the down projection's rows).
pub(crate) fn run(pool: &ThreadPool, x: &[f32], t: usize, jobs: &[ExpertJob]) -> Vec<Vec<f32>> {
    let threads = pool.threads();
    let k = x.len() / t.max(1);
    for job in jobs {
        assert!(
            job.mlp.gate.cols == k && job.mlp.up.cols == k,
            "MLP input width"
        );
        assert!(job.rows.iter().all(|&r| r < t), "job row outside the input");
    }
    // 1. Input activations, once per type.
    let mut acts: HashMap<GgmlType, QuantizedActs> = HashMap::new();
    for job in jobs {
        for w in [&job.mlp.gate, &job.mlp.up] {
            let ty = act_type(w);
            acts.entry(ty)
                .or_insert_with(|| QuantizedActs::new(pool, ty, x, t, k));
        }
    }
    let gathered: Vec<_> = jobs
        .iter()
        .map(|job| {
            let g = gather(&acts[&act_type(&job.mlp.gate)], &job.rows, t);
            let u = if act_type(&job.mlp.up) == act_type(&job.mlp.gate) {
                None
            } else {
                Some(gather(&acts[&act_type(&job.mlp.up)], &job.rows, t))
            };
            (g, u)
        })
        .collect();

    // 2. gate and up, fused with SwiGLU.
    let mut gates: Vec<Vec<f32>> = jobs
        .iter()
        .map(|j| vec![0.0; j.rows.len() * j.mlp.gate.rows])
        .collect();
    let mut ups: Vec<Vec<f32>> = jobs
        .iter()
        .map(|j| vec![0.0; j.rows.len() * j.mlp.up.rows])
        .collect();
    {
        let g_ptr: Vec<Buf<f32>> = gates.iter_mut().map(|g| Buf(g.as_mut_ptr())).collect();
        let u_ptr: Vec<Buf<f32>> = ups.iter_mut().map(|u| Buf(u.as_mut_ptr())).collect();
        let tasks = plan(jobs, threads, 4, |m| &m.gate);
        pool.run(tasks.len(), |i| {
            let Task { j, r0, r1 } = tasks[i];
            let job = &jobs[j];
            let (n, ff) = (job.rows.len(), job.mlp.gate.rows);
            let (ga, ua) = &gathered[j];
            let ua = ua.as_deref().unwrap_or(ga);
            // SAFETY: this task alone writes columns r0..r1 of job j's gate and up rows, and
            // reads back only those.
            unsafe {
                let (g, u) = (g_ptr[j].0, u_ptr[j].0);
                tile(&job.mlp.gate, r0, r1, ga, n, g.add(r0), ff);
                tile(&job.mlp.up, r0, r1, ua, n, u.add(r0), ff);
                for row in 0..n {
                    let gs = std::slice::from_raw_parts_mut(g.add(row * ff + r0), r1 - r0);
                    let us = std::slice::from_raw_parts(u.add(row * ff + r0), r1 - r0);
                    ops::silu_mul(gs, us);
                }
            }
        });
    }
    drop(ups);

    // 3. The intermediate, quantized for down: one task per job and chunk of rows.
    let mids: Vec<(GgmlType, usize)> = jobs
        .iter()
        .map(|j| {
            let ty = act_type(&j.mlp.down);
            (ty, ty.row_bytes(j.mlp.down.cols).expect("whole blocks"))
        })
        .collect();
    let mut mid_acts: Vec<Vec<u8>> = jobs
        .iter()
        .zip(&mids)
        .map(|(j, &(_, rb))| vec![0u8; j.rows.len() * rb])
        .collect();
    {
        const ROWS: usize = 8;
        let ptrs: Vec<Buf<u8>> = mid_acts.iter_mut().map(|a| Buf(a.as_mut_ptr())).collect();
        let q_tasks: Vec<(usize, usize)> = jobs
            .iter()
            .enumerate()
            .flat_map(|(j, job)| (0..job.rows.len()).step_by(ROWS).map(move |r| (j, r)))
            .collect();
        pool.run(q_tasks.len(), |i| {
            let (j, first) = q_tasks[i];
            let (ty, rb) = mids[j];
            let ff = jobs[j].mlp.down.cols;
            for r in first..(first + ROWS).min(jobs[j].rows.len()) {
                // SAFETY: each row is written by one task only, inside job j's buffer.
                let dst = unsafe { std::slice::from_raw_parts_mut(ptrs[j].0.add(r * rb), rb) };
                quant::quantize_row(ty, &gates[j][r * ff..(r + 1) * ff], dst)
                    .expect("buffer sized for the type");
            }
        });
    }
    drop(gates);

    // 4. down.
    let mut outs: Vec<Vec<f32>> = jobs
        .iter()
        .map(|j| vec![0.0; j.rows.len() * j.mlp.down.rows])
        .collect();
    {
        let o_ptr: Vec<Buf<f32>> = outs.iter_mut().map(|o| Buf(o.as_mut_ptr())).collect();
        let tasks = plan(jobs, threads, 4, |m| &m.down);
        pool.run(tasks.len(), |i| {
            let Task { j, r0, r1 } = tasks[i];
            let job = &jobs[j];
            let (n, d) = (job.rows.len(), job.mlp.down.rows);
            // SAFETY: this task alone writes columns r0..r1 of job j's output rows.
            unsafe {
                tile(
                    &job.mlp.down,
                    r0,
                    r1,
                    &mid_acts[j],
                    n,
                    o_ptr[j].0.add(r0),
                    d,
                )
            };
        });
    }
    outs
}

#[cfg(test)]
mod tests {
    use super::super::linear::linear;
    use super::*;
    use rand::{Rng, SeedableRng};

    fn matrix(rng: &mut rand::rngs::StdRng, ty: GgmlType, rows: usize, cols: usize) -> QMatrix {
        let v: Vec<f32> = (0..rows * cols)
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect();
        if ty == GgmlType::F32 {
            return QMatrix::from_f32(rows, cols, &v);
        }
        let rb = ty.row_bytes(cols).unwrap();
        let mut bytes = vec![0u8; rows * rb];
        for (r, dst) in bytes.chunks_exact_mut(rb).enumerate() {
            quant::quantize_row(ty, &v[r * cols..(r + 1) * cols], dst).unwrap();
        }
        QMatrix::from_bytes(ty, rows, cols, bytes).unwrap()
    }

    /// The MLP as it ran before expert batching: three matmuls and SwiGLU, one after another.
    fn alone(pool: &ThreadPool, m: &Mlp, x: &[f32], n: usize) -> Vec<f32> {
        let f = m.gate.rows;
        let (mut g, mut u) = (vec![0.0; n * f], vec![0.0; n * f]);
        linear(pool, &m.gate, x, n, &mut g);
        linear(pool, &m.up, x, n, &mut u);
        ops::silu_mul(&mut g, &u);
        let mut out = vec![0.0; n * m.down.rows];
        linear(pool, &m.down, &g, n, &mut out);
        out
    }

    #[test]
    fn batched_experts_equal_each_mlp_run_alone_bit_for_bit() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let (d, ff, t) = (256, 256, 11);
        // Quantized experts (the gate/up and down types of a Q4_K_M file), float ones (the
        // widened path) and a shared expert of another width.
        for (ty_gu, ty_down) in [
            (GgmlType::Q4_K, GgmlType::Q6_K),
            (GgmlType::F16, GgmlType::F16),
            (GgmlType::Q8_0, GgmlType::F32),
        ] {
            let mlps: Vec<Mlp> = [ff, ff, ff, 2 * ff]
                .iter()
                .map(|&f| Mlp {
                    gate: matrix(&mut rng, ty_gu, f, d),
                    up: matrix(&mut rng, ty_gu, f, d),
                    down: matrix(&mut rng, ty_down, d, f),
                })
                .collect();
            let x: Vec<f32> = (0..t * d).map(|_| rng.random_range(-2.0f32..2.0)).collect();
            let rows = [vec![0, 3, 4, 10], vec![], vec![7], (0..t).collect()];
            for threads in [1, 3] {
                let pool = ThreadPool::new(threads);
                let jobs: Vec<ExpertJob> = mlps
                    .iter()
                    .zip(&rows)
                    .map(|(mlp, r)| ExpertJob {
                        mlp,
                        rows: r.clone(),
                    })
                    .collect();
                let ys = run(&pool, &x, t, &jobs);
                for (j, job) in jobs.iter().enumerate() {
                    let xs: Vec<f32> = job
                        .rows
                        .iter()
                        .flat_map(|&r| x[r * d..(r + 1) * d].iter().copied())
                        .collect();
                    let want = alone(&pool, job.mlp, &xs, job.rows.len());
                    let same = ys[j]
                        .iter()
                        .zip(&want)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(
                        same && ys[j].len() == want.len(),
                        "{ty_gu}/{ty_down} job {j} threads {threads}"
                    );
                }
            }
        }
    }
}
