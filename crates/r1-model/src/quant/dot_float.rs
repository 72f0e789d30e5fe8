//! Portable float dot products (F32, F16, BF16 weights against activations of the same type)
//! in the canonical order: element `i` fused-multiply-added into lane `i % 32`, then
//! [`hsum32`].

use super::dot_scalar::gemm_rows;
use super::gemm::OutPtr;
use super::util::*;
use super::GgmlType;

/// Finishes a float dot from 32 lane accumulators and the elements past the last whole
/// 32-chunk (`tail` yields (lane, w, a)).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn finish32(mut lanes: [f32; 32], tail: impl Iterator<Item = (usize, f32, f32)>) -> f32 {
    for (l, x, y) in tail {
        lanes[l] = x.mul_add(y, lanes[l]);
    }
    hsum32(&lanes)
}

#[inline(always)]
fn dot_lanes(k: usize, x: impl Fn(usize) -> f32, y: impl Fn(usize) -> f32) -> f32 {
    let mut lanes = [0f32; 32];
    for i in 0..k {
        lanes[i % 32] = x(i).mul_add(y(i), lanes[i % 32]);
    }
    hsum32(&lanes)
}

pub(crate) fn gemm_f32(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    gemm_rows(GgmlType::F32, k, w, a, n, out, |x, y| {
        dot_lanes(k, |i| rd_f32(x, 4 * i), |i| rd_f32(y, 4 * i))
    })
}

pub(crate) fn gemm_f16(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    gemm_rows(GgmlType::F16, k, w, a, n, out, |x, y| {
        dot_lanes(k, |i| rd_f16(x, 2 * i), |i| rd_f16(y, 2 * i))
    })
}

pub(crate) fn gemm_bf16(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    gemm_rows(GgmlType::BF16, k, w, a, n, out, |x, y| {
        dot_lanes(k, |i| rd_bf16(x, 2 * i), |i| rd_bf16(y, 2 * i))
    })
}
