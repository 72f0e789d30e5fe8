//! The tile loop shared by the SIMD kernels. Tokens are taken in chunks whose activation
//! rows fit in L1; for each chunk, `MR` weight rows at a time are dotted with `TN` tokens at a
//! time (their blocks are loaded and unpacked once per tile), the remainder in smaller tiles.
//! A kernel computes each (row, token) value exactly as it would alone, so the tiling never
//! changes results.

/// Where a GEMM writes `dot(w_r, a_t)`: `ptr[r * rs + t * ts]`. Row-major output
/// (`rs = n, ts = 1`) is the public layout; the matmul writes token-major (`rs = 1,
/// ts = all rows`) straight into the activation layout, each task its own rows.
#[derive(Clone, Copy)]
pub(crate) struct OutPtr {
    pub ptr: *mut f32,
    pub rs: usize,
    pub ts: usize,
}

impl OutPtr {
    /// # Safety
    /// `(r, t)` is in range of the buffer and written by nobody else.
    #[inline(always)]
    pub unsafe fn write(self, r: usize, t: usize, v: f32) {
        *self.ptr.add(r * self.rs + t * self.ts) = v;
    }
}

/// Dots of `MR` weight rows with the `NT` activation rows `t0..t0 + NT`.
pub(crate) trait RowKernel<const MR: usize> {
    /// `rows` may repeat a row (the last group of an odd row count); each row's results must
    /// not depend on the other rows of the group.
    ///
    /// # Safety
    /// The rows and `t0 + NT` must be in range of the buffers the kernel was built over,
    /// and the CPU must support the kernel's instruction set.
    unsafe fn run<const NT: usize>(&self, rows: [usize; MR], t0: usize) -> [[f32; NT]; MR];
}

/// Bytes of activation rows kept hot per token chunk.
const L1_BUDGET: usize = 32 * 1024;

/// Runs one tile and stores the results of its `cnt` distinct rows.
#[inline(always)]
unsafe fn tile<K: RowKernel<MR>, const MR: usize, const NT: usize>(
    kern: &K,
    rows: [usize; MR],
    cnt: usize,
    t: usize,
    out: OutPtr,
) {
    let res = kern.run::<NT>(rows, t);
    for (i, ri) in res.iter().enumerate().take(cnt) {
        for (j, &v) in ri.iter().enumerate() {
            out.write(rows[i], t + j, v);
        }
    }
}

/// # Safety
/// `kern` covers `m` weight rows and `n` activation rows of about `arow` bytes, `out`
/// addresses `m x n` values, and `kern`'s requirements hold.
#[inline(always)]
pub(crate) unsafe fn gemm_tiled<K: RowKernel<MR>, const MR: usize, const TN: usize>(
    kern: &K,
    m: usize,
    n: usize,
    arow: usize,
    out: OutPtr,
) {
    let chunk = ((L1_BUDGET / arow.max(1)).max(TN) / TN) * TN;
    let mut c0 = 0;
    while c0 < n {
        let c1 = n.min(c0 + chunk);
        for r in (0..m).step_by(MR) {
            let rows: [usize; MR] = core::array::from_fn(|i| (r + i).min(m - 1));
            let cnt = MR.min(m - r);
            let mut t = c0;
            while t + TN <= c1 {
                tile::<K, MR, TN>(kern, rows, cnt, t, out);
                t += TN;
            }
            // the remainder in tiles of 4, 2 and 1 tokens
            if TN > 4 && t + 4 <= c1 {
                tile::<K, MR, 4>(kern, rows, cnt, t, out);
                t += 4;
            }
            if TN > 2 && t + 2 <= c1 {
                tile::<K, MR, 2>(kern, rows, cnt, t, out);
                t += 2;
            }
            while t < c1 {
                tile::<K, MR, 1>(kern, rows, cnt, t, out);
                t += 1;
            }
        }
        c0 = c1;
    }
}
