//! The tile loop shared by the SIMD kernels. Tokens are taken in chunks whose activation
//! rows fit in L1; for each chunk every weight row is dotted with `TN` tokens at a time (its
//! blocks are loaded and unpacked once per tile), the remainder in smaller tiles. A kernel computes
//! each (row, token) value exactly as it would alone, so the tiling never changes results.

/// Dots of weight row `r` with the `NT` activation rows `t0..t0 + NT`.
pub(crate) trait RowKernel {
    /// # Safety
    /// `r` and `t0 + NT` must be in range of the buffers the kernel was built over, and the
    /// CPU must support the kernel's instruction set.
    unsafe fn run<const NT: usize>(&self, r: usize, t0: usize) -> [f32; NT];
}

/// Bytes of activation rows kept hot per token chunk.
const L1_BUDGET: usize = 32 * 1024;

/// # Safety
/// `kern` covers `m` weight rows and `n` activation rows of `arow` bytes,
/// `out.len() == m * n`, and `kern`'s requirements hold.
#[inline(always)]
pub(crate) unsafe fn gemm_tiled<K: RowKernel, const TN: usize>(
    kern: &K,
    m: usize,
    n: usize,
    arow: usize,
    out: &mut [f32],
) {
    debug_assert_eq!(out.len(), m * n);
    let chunk = ((L1_BUDGET / arow.max(1)).max(TN) / TN) * TN;
    let mut c0 = 0;
    while c0 < n {
        let c1 = n.min(c0 + chunk);
        for r in 0..m {
            let o = &mut out[r * n..r * n + n];
            let mut t = c0;
            while t + TN <= c1 {
                o[t..t + TN].copy_from_slice(&kern.run::<TN>(r, t));
                t += TN;
            }
            // the remainder in tiles of 4, 2 and 1 tokens
            if TN > 4 && t + 4 <= c1 {
                o[t..t + 4].copy_from_slice(&kern.run::<4>(r, t));
                t += 4;
            }
            if TN > 2 && t + 2 <= c1 {
                o[t..t + 2].copy_from_slice(&kern.run::<2>(r, t));
                t += 2;
            }
            while t < c1 {
                o[t] = kern.run::<1>(r, t)[0];
                t += 1;
            }
        }
        c0 = c1;
    }
}
