//! Small element-wise operations of the forward pass, written to follow ggml's numerics
//! (RMSNorm sums in f64, rope angles by repeated multiplication) so outputs track llama.cpp.

/// `out = x / sqrt(mean(x²) + eps) * w`, one row.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let sum: f64 = x.iter().map(|&v| (v * v) as f64).sum();
    let mean = (sum / x.len() as f64) as f32;
    let scale = 1.0 / (mean + eps).sqrt();
    for ((o, &v), &g) in out.iter_mut().zip(x).zip(w) {
        *o = (v * scale) * g;
    }
}

/// RMSNorm of every `d`-wide row of `x`, rows spread over the pool for larger batches
/// (each row is computed the same way either way).
pub fn rms_norm_rows(
    pool: &crate::pool::ThreadPool,
    x: &[f32],
    w: &[f32],
    eps: f32,
    out: &mut [f32],
    d: usize,
) {
    let t = x.len() / d;
    if t < 8 {
        for i in 0..t {
            rms_norm(&x[i * d..(i + 1) * d], w, eps, &mut out[i * d..(i + 1) * d]);
        }
        return;
    }
    let ptr = SharedMut::new(out);
    pool.run(t, |i| {
        // SAFETY: one row per task.
        let o = unsafe { ptr.slice(i * d, d) };
        rms_norm(&x[i * d..(i + 1) * d], w, eps, o);
    });
}

/// In place: `gate = silu(gate) * up` (SwiGLU), with llama.cpp's vectorised `expf`
/// approximation (`ggml_v_expf`, AVX-512 form) so the result is bit-identical to its
/// `ggml_vec_swiglu_f32`.
/// [`silu_mul`] split over the pool (a prefill's SwiGLU is millions of elements; each is
/// computed exactly as alone).
pub fn silu_mul_par(pool: &crate::pool::ThreadPool, gate: &mut [f32], up: &[f32]) {
    const CHUNK: usize = 1 << 14;
    assert_eq!(gate.len(), up.len());
    if gate.len() <= CHUNK || pool.threads() == 1 {
        return silu_mul(gate, up);
    }
    let n = gate.len();
    let g = SharedMut::new(gate);
    pool.run(n.div_ceil(CHUNK), |c| {
        let (a, b) = (c * CHUNK, ((c + 1) * CHUNK).min(n));
        // SAFETY: chunks are disjoint.
        silu_mul(unsafe { g.slice(a, b - a) }, &up[a..b]);
    });
}

pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if crate::quant::Isa::best() == crate::quant::Isa::Avx512 {
            // SAFETY: AVX-512 is present (`Isa::best` checked it).
            return unsafe { crate::swiglu_avx512::silu_mul_avx512(gate, up, silu_mul_scalar) };
        }
        if crate::quant::Isa::best() == crate::quant::Isa::Avx2 {
            // SAFETY: AVX2 and FMA are present (`Isa::best` checked them).
            return unsafe { swiglu_avx2::silu_mul_avx2(gate, up) };
        }
    }
    silu_mul_scalar(gate, up)
}

/// SwiGLU 8 lanes at a time for CPUs without AVX-512: the one-lane path's operations in
/// vector form (a prefill's SwiGLU took 3% of SmolLM2's pp512 one element at a time). AVX2
/// has no `vscalefps`; `j · 2^n` is a multiply by the power of two built from `n` where
/// every lane's `n` is a normal exponent (as [`scalef`] does), and the rare chunk with
/// another lane (|x| beyond ~87, NaN) takes the one-lane path.
#[cfg(target_arch = "x86_64")]
mod swiglu_avx2 {
    use core::arch::x86_64::*;

    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn silu_mul_avx2(gate: &mut [f32], up: &[f32]) {
        let n = gate.len().min(up.len());
        let full = n / 8 * 8;
        let c = |bits: u32| _mm256_set1_ps(f32::from_bits(bits));
        let one = _mm256_set1_ps(1.0);
        for i in (0..full).step_by(8) {
            let g = gate.as_mut_ptr().add(i);
            let x = _mm256_loadu_ps(g);
            // ggml_expf(-x)
            let nx = _mm256_sub_ps(_mm256_setzero_ps(), x);
            let r = c(0x4b40_0000);
            let z = _mm256_fmadd_ps(nx, c(0x3fb8_aa3b), r);
            let e = _mm256_sub_ps(z, r);
            let b = _mm256_fnmadd_ps(e, c(0x35bf_be8e), _mm256_fnmadd_ps(e, c(0x3f31_7200), nx));
            let u = _mm256_mul_ps(b, b);
            let j = _mm256_fmadd_ps(
                _mm256_fmadd_ps(_mm256_fmadd_ps(c(0x3c07_2010), b, c(0x3d2b_9f17)), u, {
                    _mm256_fmadd_ps(c(0x3e2a_af33), b, c(0x3eff_fedb))
                }),
                u,
                _mm256_fmadd_ps(c(0x3f7f_fff6), b, one),
            );
            let lo = _mm256_cmp_ps::<_CMP_GE_OQ>(e, _mm256_set1_ps(-126.0));
            let hi = _mm256_cmp_ps::<_CMP_LE_OQ>(e, _mm256_set1_ps(127.0));
            if _mm256_movemask_ps(_mm256_and_ps(lo, hi)) != 0xFF {
                super::silu_mul_generic(&mut gate[i..i + 8], &up[i..i + 8]);
                continue;
            }
            let bias = _mm256_add_epi32(_mm256_cvtps_epi32(e), _mm256_set1_epi32(127));
            let ex = _mm256_mul_ps(j, _mm256_castsi256_ps(_mm256_slli_epi32::<23>(bias)));
            let silu = _mm256_div_ps(x, _mm256_add_ps(one, ex));
            _mm256_storeu_ps(g, _mm256_mul_ps(silu, _mm256_loadu_ps(up.as_ptr().add(i))));
        }
        super::silu_mul_generic(&mut gate[full..n], &up[full..n]);
    }

    #[cfg(test)]
    mod tests {
        /// Every 7919th f32 bit pattern (all signs, magnitudes, NaN/inf) against the
        /// one-lane path.
        #[test]
        fn eight_lanes_equal_the_scalar_path_bit_for_bit() {
            if !crate::quant::Isa::Avx2.is_available() {
                eprintln!("SKIP: no AVX2 on this CPU");
                return;
            }
            let gate: Vec<f32> = (0..u32::MAX / 7919)
                .map(|i| f32::from_bits(i.wrapping_mul(7919)))
                .chain([0.0, -0.0, 87.0, -87.0, 88.7, -88.7, 104.0, f32::INFINITY])
                .collect();
            let up: Vec<f32> = (0..gate.len())
                .map(|i| 1.0 + (i % 13) as f32 * 0.37)
                .collect();
            let mut simd = gate.clone();
            let mut scalar = gate.clone();
            crate::ops::silu_mul_scalar(&mut scalar, &up);
            // SAFETY: AVX2 and FMA checked above.
            unsafe { super::silu_mul_avx2(&mut simd, &up) };
            for (i, (a, b)) in simd.iter().zip(&scalar).enumerate() {
                assert!(
                    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                    "x={}: {a} vs {b}",
                    gate[i]
                );
            }
        }
    }
}

/// The one-lane path (the reference of the 16-lane one): FMA-compiled where present.
pub(crate) fn silu_mul_scalar(gate: &mut [f32], up: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("fma") {
            // SAFETY: FMA is present.
            return unsafe { silu_mul_fma(gate, up) };
        }
    }
    silu_mul_generic(gate, up)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
unsafe fn silu_mul_fma(gate: &mut [f32], up: &[f32]) {
    silu_mul_generic(gate, up)
}

#[inline(always)]
fn silu_mul_generic(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = (*g / (1.0 + ggml_expf(-*g))) * u;
    }
}

/// One lane of ggml's `ggml_v_expf` (max error 1.45 ulp + 0.5; flushes beyond ±88/104).
#[inline(always)]
pub fn ggml_expf(x: f32) -> f32 {
    let c = f32::from_bits;
    let r = c(0x4b40_0000); // 0x1.8p23
    let z = x.mul_add(c(0x3fb8_aa3b), r);
    let n = z - r;
    let b = (-n).mul_add(c(0x35bf_be8e), (-n).mul_add(c(0x3f31_7200), x));
    let u = b * b;
    let j = c(0x3c07_2010)
        .mul_add(b, c(0x3d2b_9f17))
        .mul_add(u, c(0x3e2a_af33).mul_add(b, c(0x3eff_fedb)))
        .mul_add(u, c(0x3f7f_fff6).mul_add(b, 1.0));
    if n.abs() > 192.0 {
        return if n <= 0.0 { 0.0 } else { f32::INFINITY };
    }
    scalef(j, n)
}

/// `j · 2^n` for integral `n` with one rounding, like `vscalefps`.
#[inline(always)]
fn scalef(j: f32, n: f32) -> f32 {
    let n = n as i32;
    if (-126..=127).contains(&n) {
        j * f32::from_bits(((n + 127) as u32) << 23)
    } else {
        ((j as f64) * 2f64.powi(n)) as f32
    }
}

/// Add a bias vector to every row of `x` (`[rows, bias.len()]`).
pub fn add_bias(x: &mut [f32], bias: &[f32]) {
    for row in x.chunks_exact_mut(bias.len()) {
        for (v, &b) in row.iter_mut().zip(bias) {
            *v += b;
        }
    }
}

/// Element-wise `x += y`.
pub fn add_assign(x: &mut [f32], y: &[f32]) {
    for (a, &b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// cos/sin for one position: `rope_dims / 2` pairs.
pub struct RopeTable {
    pub cos: Vec<f32>,
    pub sin: Vec<f32>,
}

/// Rotation angles as ggml computes them: `theta_i = pos · base^(-2i/d)` by repeated
/// multiplication, divided by an optional per-frequency factor (llama 3 `rope_freqs`).
pub fn rope_table(
    pos: f32,
    rope_dims: usize,
    base: f32,
    freq_factors: Option<&[f32]>,
) -> RopeTable {
    let half = rope_dims / 2;
    let theta_scale = base.powf(-2.0 / rope_dims as f32);
    let mut theta = pos;
    let mut cos = Vec::with_capacity(half);
    let mut sin = Vec::with_capacity(half);
    for i in 0..half {
        let ff = freq_factors.map_or(1.0, |f| f[i]);
        let t = theta / ff;
        cos.push(t.cos());
        sin.push(t.sin());
        theta *= theta_scale;
    }
    RopeTable { cos, sin }
}

/// Rotate one head vector in place. The rotation is evaluated as llama.cpp's compiled code
/// does it (GCC contracts it to fused multiply-adds): `x0' = fma(x0, cos, -(x1·sin))`,
/// `x1' = fma(x0, sin, x1·cos)`.
pub fn apply_rope(x: &mut [f32], t: &RopeTable, neox: bool) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("fma") {
            // SAFETY: FMA is present.
            return unsafe { apply_rope_fma(x, t, neox) };
        }
    }
    apply_rope_generic(x, t, neox)
}

/// [`apply_rope`] with FMA instructions: elsewhere each `mul_add` is a call into libm's
/// `fmaf` (1-2% of a prefill), with the same result.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
unsafe fn apply_rope_fma(x: &mut [f32], t: &RopeTable, neox: bool) {
    apply_rope_generic(x, t, neox)
}

#[inline(always)]
fn apply_rope_generic(x: &mut [f32], t: &RopeTable, neox: bool) {
    let half = t.cos.len();
    let rot = |a: f32, b: f32, c: f32, s: f32| (a.mul_add(c, -(b * s)), a.mul_add(s, b * c));
    if neox {
        for i in 0..half {
            (x[i], x[i + half]) = rot(x[i], x[i + half], t.cos[i], t.sin[i]);
        }
    } else {
        for i in 0..half {
            (x[2 * i], x[2 * i + 1]) = rot(x[2 * i], x[2 * i + 1], t.cos[i], t.sin[i]);
        }
    }
}

/// A raw pointer that lets parallel tasks write disjoint parts of one buffer.
#[derive(Clone, Copy)]
pub struct SharedMut<T>(*mut T, usize);

unsafe impl<T: Send> Send for SharedMut<T> {}
unsafe impl<T: Send> Sync for SharedMut<T> {}

impl<T> SharedMut<T> {
    pub fn new(s: &mut [T]) -> Self {
        SharedMut(s.as_mut_ptr(), s.len())
    }

    /// # Safety
    /// No two live slices obtained from this pointer may overlap.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn slice(&self, start: usize, len: usize) -> &mut [T] {
        assert!(start + len <= self.1, "SharedMut slice out of bounds");
        std::slice::from_raw_parts_mut(self.0.add(start), len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rope_rotates_pairs_by_the_expected_angle() {
        let t = rope_table(3.0, 4, 10000.0, None);
        assert!((t.cos[0] - 3f32.cos()).abs() < 1e-6);
        assert!((t.sin[1] - (3.0f32 * 0.01).sin()).abs() < 1e-6);
        let mut x = [1.0, 0.0, 1.0, 0.0];
        apply_rope(&mut x, &t, false);
        assert!((x[0] - 3f32.cos()).abs() < 1e-6 && (x[1] - 3f32.sin()).abs() < 1e-6);
        let mut y = [1.0, 1.0, 0.0, 0.0];
        apply_rope(&mut y, &t, true);
        assert!((y[0] - 3f32.cos()).abs() < 1e-6 && (y[2] - 3f32.sin()).abs() < 1e-6);
    }

    #[test]
    fn ggml_expf_is_close_to_exp() {
        for i in -2000..2000 {
            let x = i as f32 * 0.043;
            let (a, b) = (ggml_expf(x), x.exp());
            assert!((a - b).abs() <= b * 4e-7, "{x}: {a} vs {b}");
        }
        assert_eq!(ggml_expf(-200.0), 0.0);
        assert_eq!(ggml_expf(200.0), f32::INFINITY);
    }

    #[test]
    fn rms_norm_normalises() {
        let x = [3.0, 4.0];
        let mut o = [0.0; 2];
        rms_norm(&x, &[1.0, 2.0], 0.0, &mut o);
        let r = (12.5f32).sqrt();
        assert!((o[0] - 3.0 / r).abs() < 1e-6 && (o[1] - 8.0 / r).abs() < 1e-6);
    }
}
