//! Parallel `y = x · Wᵀ` over the worker pool, on quantized weights.
//!
//! Activations are quantized once per input (to the weight type's dot-product type, as
//! llama.cpp does) and may be shared by several matmuls with the same input. Work is split by
//! weight rows, so every output element is computed by the same kernel in the same order
//! whatever the batch size: the batch-invariance rule of DESIGN.md.

use crate::ops::SharedMut;
use crate::pool::ThreadPool;
use crate::quant::{self, GgmlType};
use crate::weights::QMatrix;

/// Activation rows quantized for one dot-product type.
pub struct QuantizedActs {
    pub ty: GgmlType,
    pub n: usize,
    pub k: usize,
    pub row_bytes: usize,
    pub data: Vec<u8>,
}

impl QuantizedActs {
    /// Quantize `n` rows of `k` values for weights of type `weight_ty`.
    pub fn new(pool: &ThreadPool, weight_ty: GgmlType, x: &[f32], n: usize, k: usize) -> Self {
        let ty = quant::vec_dot_type(weight_ty);
        let row_bytes = ty
            .row_bytes(k)
            .expect("activation width fits the block size");
        let mut data = vec![0u8; row_bytes * n];
        let ptr = SharedMut::new(&mut data);
        let per_task = n.div_ceil(pool.threads()).max(1);
        pool.run(n.div_ceil(per_task), |t| {
            for r in t * per_task..((t + 1) * per_task).min(n) {
                // SAFETY: each row is written by one task only.
                let dst = unsafe { ptr.slice(r * row_bytes, row_bytes) };
                quant::quantize_row(ty, &x[r * k..(r + 1) * k], dst)
                    .expect("buffer sized for the type");
            }
        });
        QuantizedActs {
            ty,
            n,
            k,
            row_bytes,
            data,
        }
    }
}

/// Rows of W per task: small enough to balance the threads, large enough to amortise the
/// activation loads; a multiple of `unit` (8, or 16 for interleaved weights) so SIMD kernels
/// see whole row groups.
fn rows_per_task(rows: usize, threads: usize, unit: usize) -> usize {
    let target = rows.div_ceil(threads * 4);
    target.div_ceil(unit).max(1) * unit
}

/// `out[t, r] = x_t · W_r` for all `n` activation rows; `out` is `[n, w.rows]`.
pub fn matmul(pool: &ThreadPool, w: &QMatrix, acts: &QuantizedActs, out: &mut [f32]) {
    matmul_many(pool, &mut [(w, out)], acts);
}

/// [`matmul`] of several weights with the same input (Q/K/V, gate/up) in one pass over the
/// pool: one barrier instead of one per weight, and the small matrices' tasks fill the gaps
/// of the large ones. Each output is exactly what [`matmul`] gives.
pub fn matmul_many(pool: &ThreadPool, jobs: &mut [(&QMatrix, &mut [f32])], acts: &QuantizedActs) {
    let n = acts.n;
    // (weight, first row, rows per task, first task) per job
    let mut plan = Vec::with_capacity(jobs.len());
    let mut n_tasks = 0;
    for (w, out) in jobs.iter_mut() {
        assert_eq!(
            acts.ty,
            quant::vec_dot_type(w.ty),
            "activations quantized for another type"
        );
        assert_eq!(acts.k, w.cols);
        assert_eq!(out.len(), n * w.rows);
        let chunk = rows_per_task(w.rows, pool.threads(), w.layout.unit_rows().max(8));
        plan.push((*w, chunk, n_tasks, SendPtr(out.as_mut_ptr())));
        n_tasks += w.rows.div_ceil(chunk);
    }
    pool.run(n_tasks, |t| {
        let j = plan.partition_point(|p| p.2 <= t) - 1;
        let (w, chunk, first, base) = plan[j];
        let r0 = (t - first) * chunk;
        let r1 = (r0 + chunk).min(w.rows);
        let rb = w.row_bytes();
        // SAFETY: `out` holds `n x rows`; this task writes columns r0..r1 of every token
        // row of its job's output, which no other task touches.
        unsafe {
            quant::gemm_token_major(
                w.layout,
                w.ty,
                w.cols,
                &w.data()[r0 * rb..r1 * rb],
                &acts.data,
                n,
                base.at(r0),
                w.rows,
            )
        };
    });
}

/// The output pointer shared by the tasks (each writes its own elements).
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: tasks write disjoint elements and `pool.run` returns only when all are done.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// # Safety
    /// `i` is in range of the buffer.
    unsafe fn at(self, i: usize) -> *mut f32 {
        self.0.add(i)
    }
}

/// Quantize `x` and multiply in one call.
pub fn matmul_f32(pool: &ThreadPool, w: &QMatrix, x: &[f32], n: usize, out: &mut [f32]) {
    let acts = QuantizedActs::new(pool, w.ty, x, n, w.cols);
    matmul(pool, w, &acts, out);
}
