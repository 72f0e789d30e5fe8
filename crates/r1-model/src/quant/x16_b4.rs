//! Q4_0 and Q4_1 weights interleaved 16 rows at a time (see `x16` for why, and for Q5_0,
//! whose layout these follow without the fifth bits).
//!
//! # Accumulation order (per weight row and activation row, every ISA and batch size)
//! Q4_0 as Q5_0 (`x16`), with `q_e - 8`. Q4_1 against Q8_1 activations: `acc = 0`; per block
//! in order `acc = fma(dx * dy, Σ_e q_e y_e, acc)`, then `acc = fma(mx, sy, acc)` with the
//! exact integer sum and `sy` the activation block's f16 `s` (`dy * Σ y`).
//!
//! # Layout
//! Q4_0 group-block (288 bytes, 16 native 18-byte blocks): `[0, 32)` the rows' f16 `d`, then
//! four 64-byte chunks from `32`: bytes `4r..4r+4` of chunk `p` are row `r`'s quant bytes
//! `4p..4p+4` (low nibbles: elements `4p..4p+4`, slice `p`; high: `16+4p..`, slice `p+4`).
//! Q4_1 (320 bytes, 16 native 20-byte blocks): `[0, 32)` the `d`, `[32, 64)` the `m`, then
//! the chunks from `64`.

use super::gemm::OutPtr;
use super::util::rd_f16;
use super::x16::GROUP;
use super::GgmlType;

#[cfg(target_arch = "x86_64")]
pub(crate) const Q4_0_GB: usize = 288;
#[cfg(target_arch = "x86_64")]
pub(crate) const Q4_1_GB: usize = 320;

/// Whether `ty` is one of this file's types.
pub(crate) fn covers(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::Q4_0 | GgmlType::Q4_1)
}

/// (native block bytes, f16 fields per block, offset of the quant chunks in a group-block).
fn shape(ty: GgmlType) -> (usize, usize, usize) {
    match ty {
        GgmlType::Q4_0 => (18, 1, 32),
        GgmlType::Q4_1 => (20, 2, 64),
        _ => unreachable!("x16_b4 covers Q4_0 and Q4_1"),
    }
}

/// Interleave one group of 16 native rows (`src`, `nb` blocks each) into `dst`.
pub(crate) fn interleave_group(ty: GgmlType, nb: usize, src: &[u8], dst: &mut [u8]) {
    let (bs, nf, qs) = shape(ty);
    let gbb = GROUP * bs;
    for b in 0..nb {
        let gb = &mut dst[b * gbb..(b + 1) * gbb];
        for r in 0..GROUP {
            let blk = &src[(r * nb + b) * bs..(r * nb + b + 1) * bs];
            for f in 0..nf {
                gb[32 * f + 2 * r..32 * f + 2 * r + 2].copy_from_slice(&blk[2 * f..2 * f + 2]);
            }
            for p in 0..4 {
                let o = qs + 64 * p + 4 * r;
                gb[o..o + 4].copy_from_slice(&blk[2 * nf + 4 * p..2 * nf + 4 * p + 4]);
            }
        }
    }
}

/// Row `r` of one interleaved group, in the native layout.
pub(crate) fn extract_row(ty: GgmlType, nb: usize, group: &[u8], r: usize, out: &mut [u8]) {
    let (bs, nf, qs) = shape(ty);
    let gbb = GROUP * bs;
    for b in 0..nb {
        let gb = &group[b * gbb..(b + 1) * gbb];
        let blk = &mut out[b * bs..(b + 1) * bs];
        for f in 0..nf {
            blk[2 * f..2 * f + 2].copy_from_slice(&gb[32 * f + 2 * r..32 * f + 2 * r + 2]);
        }
        for p in 0..4 {
            let o = qs + 64 * p + 4 * r;
            blk[2 * nf + 4 * p..2 * nf + 4 * p + 4].copy_from_slice(&gb[o..o + 4]);
        }
    }
}

/// The portable x16 GEMM (the SIMD kernels' reference).
fn gemm_scalar(ty: GgmlType, k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    let (bs, _, qs) = shape(ty);
    let q4_1 = ty == GgmlType::Q4_1;
    // activation blocks: Q8_0 (d, 32 i8) or Q8_1 (d, s, 32 i8)
    let (ab, yo, off) = if q4_1 { (36, 4, 0) } else { (34, 2, 8) };
    let nb = k / 32;
    let gbb = GROUP * bs;
    for (g, grp) in w.chunks_exact(nb * gbb).enumerate() {
        for t in 0..n {
            let mut acc = [0f32; GROUP];
            for b in 0..nb {
                let gb = &grp[b * gbb..(b + 1) * gbb];
                let ay = &a[(t * nb + b) * ab..(t * nb + b + 1) * ab];
                let dy = rd_f16(ay, 0);
                for (r, acc) in acc.iter_mut().enumerate() {
                    let isum: i32 = (0..32)
                        .map(|e| {
                            let (s, i) = (e / 4, e % 4);
                            let byte = gb[qs + 64 * (s % 4) + 4 * r + i];
                            let q = if s < 4 { byte & 0xF } else { byte >> 4 };
                            (q as i32 - off) * (ay[yo + e] as i8 as i32)
                        })
                        .sum();
                    let d = rd_f16(gb, 2 * r) * dy;
                    *acc = d.mul_add(isum as f32, *acc);
                    if q4_1 {
                        *acc = rd_f16(gb, 32 + 2 * r).mul_add(rd_f16(ay, 2), *acc);
                    }
                }
            }
            for (r, v) in acc.iter().enumerate() {
                // SAFETY: the caller's `OutPtr` covers every (row, token) of this call.
                unsafe { out.write(g * GROUP + r, t, *v) };
            }
        }
    }
}

pub(crate) fn gemm_q4_0_scalar(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    gemm_scalar(GgmlType::Q4_0, k, w, a, n, out)
}

pub(crate) fn gemm_q4_1_scalar(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    gemm_scalar(GgmlType::Q4_1, k, w, a, n, out)
}
