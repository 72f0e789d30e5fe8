//! x86-64 AVX2 float dot products (F32, F16, BF16) in the canonical order of `dot_float`:
//! four 8-wide FMA accumulators hold lanes 0..32, the tail goes into the same lanes.

// Parallel arrays of SIMD registers (per token / per lane) are indexed together.
#![allow(clippy::needless_range_loop)]

use super::gemm::OutPtr;
use core::arch::x86_64::*;

use super::dot_float::finish32;
use super::gemm::{gemm_tiled, RowKernel};

trait FloatFmt {
    /// Bytes per element.
    const ES: usize;
    unsafe fn load8(p: *const u8) -> __m256;
    unsafe fn load1(p: *const u8) -> f32;
}

struct F32;
struct F16;
struct Bf16;

impl FloatFmt for F32 {
    const ES: usize = 4;
    #[inline(always)]
    unsafe fn load8(p: *const u8) -> __m256 {
        _mm256_loadu_ps(p as *const f32)
    }
    #[inline(always)]
    unsafe fn load1(p: *const u8) -> f32 {
        (p as *const f32).read_unaligned()
    }
}

impl FloatFmt for F16 {
    const ES: usize = 2;
    #[inline(always)]
    unsafe fn load8(p: *const u8) -> __m256 {
        _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
    }
    #[inline(always)]
    unsafe fn load1(p: *const u8) -> f32 {
        half::f16::from_bits((p as *const u16).read_unaligned()).to_f32()
    }
}

impl FloatFmt for Bf16 {
    const ES: usize = 2;
    #[inline(always)]
    unsafe fn load8(p: *const u8) -> __m256 {
        let v = _mm256_cvtepu16_epi32(_mm_loadu_si128(p as *const __m128i));
        _mm256_castsi256_ps(_mm256_slli_epi32(v, 16))
    }
    #[inline(always)]
    unsafe fn load1(p: *const u8) -> f32 {
        f32::from_bits(((p as *const u16).read_unaligned() as u32) << 16)
    }
}

struct FloatKernel<F> {
    w: *const u8,
    a: *const u8,
    k: usize,
    _p: core::marker::PhantomData<F>,
}

impl<F: FloatFmt> RowKernel<1> for FloatKernel<F> {
    #[inline(always)]
    unsafe fn run<const NT: usize>(&self, rows: [usize; 1], t0: usize) -> [[f32; NT]; 1] {
        let r = rows[0];
        let row = self.k * F::ES;
        let w = self.w.add(r * row);
        let a: [*const u8; NT] = core::array::from_fn(|i| self.a.add((t0 + i) * row));
        let chunks = self.k / 32;
        let mut acc = [[_mm256_setzero_ps(); 4]; NT];
        for c in 0..chunks {
            for j in 0..4 {
                let off = (32 * c + 8 * j) * F::ES;
                let wv = F::load8(w.add(off));
                for t in 0..NT {
                    acc[t][j] = _mm256_fmadd_ps(wv, F::load8(a[t].add(off)), acc[t][j]);
                }
            }
        }
        let mut out = [0f32; NT];
        for t in 0..NT {
            let mut lanes = [0f32; 32];
            for j in 0..4 {
                _mm256_storeu_ps(lanes.as_mut_ptr().add(8 * j), acc[t][j]);
            }
            let tail = (32 * chunks..self.k).map(|i| {
                let off = i * F::ES;
                (i % 32, F::load1(w.add(off)), F::load1(a[t].add(off)))
            });
            out[t] = finish32(lanes, tail);
        }
        [out]
    }
}

#[inline(always)]
unsafe fn gemm_float<F: FloatFmt>(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    let kern = FloatKernel::<F> {
        w: w.as_ptr(),
        a: a.as_ptr(),
        k,
        _p: core::marker::PhantomData,
    };
    gemm_tiled::<_, 1, 2>(&kern, w.len() / (k * F::ES), n, k * F::ES, out);
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn gemm_f32_avx2(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    gemm_float::<F32>(k, w, a, n, out)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn gemm_f16_avx2(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    gemm_float::<F16>(k, w, a, n, out)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn gemm_bf16_avx2(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    gemm_float::<Bf16>(k, w, a, n, out)
}
