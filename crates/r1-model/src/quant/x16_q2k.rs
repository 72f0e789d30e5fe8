//! Q2_K weights interleaved 16 rows at a time (see `x16` for why and for the group rules).
//! llama-quantize keeps some matrices of its IQ2 files in Q2_K (qwen2: 3 of 24 `ffn_down`),
//! and without a SIMD kernel those few took most of the prefill time.
//!
//! # Accumulation order (per weight row and Q8_K activation row, every ISA and batch size)
//! The order of `x16_k`'s Q4_K: with the exact integer sums of each super-block
//! `S = Σ_s sc_s · Σ_{e∈s} q_e y_e` and `M = Σ_s m_s · bsum_s` (16-element sub-blocks `s`,
//! `bsum`: the activation's stored sums), `acc = 0`; per super-block in order
//! `acc = fma(dx*dy, S, acc)`, then `acc = fma(-(dminx*dy), M, acc)`. Not llama.cpp's order
//! (results differ within rounding; `R1SERVE_REPACK=0` keeps ggml's).
//!
//! # Layout of a group-superblock (16 native 84-byte blocks: 1344 bytes)
//! `[0, 32)` the rows' f16 `d`, `[32, 64)` their `dmin`; `[64, 320)` four 64-byte chunks:
//! lane `r` (4 bytes) of chunk `c` = row `r`'s scale bytes `4c..4c+4` (low nibble: the
//! sub-block's scale, high: its min); `[320, 1344)` sixteen 64-byte chunks: lane `r` of
//! chunk `8h + p` = row `r`'s quant bytes `32h+4p..+4`, whose bits `2j..2j+2` are the
//! elements `128h + 32j + 4p..+4` (sub-block `8h + 2j + p/4`).

use super::gemm::OutPtr;
use super::util::{rd_f16, rd_f32, rd_i16, QK_K};

/// Bytes of one Q2_K group-superblock.
pub(crate) const Q2_K_GB: usize = 16 * 84;
/// Where the quant chunks start in a group-superblock.
pub(crate) const QS_OFF: usize = 320;

/// `f(native offset, group-superblock offset)` for every byte of row `r`'s native block.
fn for_each_byte(r: usize, mut f: impl FnMut(usize, usize)) {
    for i in 0..2 {
        f(80 + i, 2 * r + i);
        f(82 + i, 32 + 2 * r + i);
    }
    for i in 0..16 {
        f(i, 64 + 64 * (i / 4) + 4 * r + i % 4);
    }
    for b in 0..64 {
        let (h, p, i) = (b / 32, (b % 32) / 4, b % 4);
        f(16 + b, QS_OFF + 64 * (8 * h + p) + 4 * r + i);
    }
}

/// Interleave one group of 16 native rows (`native`, `nsb` super-blocks each) into `out`.
pub(crate) fn interleave_group(nsb: usize, native: &[u8], out: &mut [u8]) {
    for r in 0..16 {
        for b in 0..nsb {
            let src = &native[(r * nsb + b) * 84..];
            for_each_byte(r, |n, g| out[b * Q2_K_GB + g] = src[n]);
        }
    }
}

/// Row `r` of one interleaved group, in the native layout.
pub(crate) fn extract_row(nsb: usize, group: &[u8], r: usize, out: &mut [u8]) {
    for b in 0..nsb {
        let src = &group[b * Q2_K_GB..(b + 1) * Q2_K_GB];
        for_each_byte(r, |n, g| out[b * 84 + n] = src[g]);
    }
}

/// Portable x16 GEMM against Q8_K activations (the SIMD reference): each row's super-block
/// is read back natively and summed exactly.
pub(crate) fn gemm_q2_k_scalar(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    let nsb = k / QK_K;
    let mut blk = [0u8; 84];
    for (g, grp) in w.chunks_exact(nsb * Q2_K_GB).enumerate() {
        for t in 0..n {
            let mut acc = [0f32; 16];
            for b in 0..nsb {
                let ab = &a[(t * nsb + b) * 292..(t * nsb + b + 1) * 292];
                let dy = rd_f32(ab, 0);
                let gb = &grp[b * Q2_K_GB..(b + 1) * Q2_K_GB];
                for (r, acc) in acc.iter_mut().enumerate() {
                    for_each_byte(r, |n, g| blk[n] = gb[g]);
                    let (mut s, mut m) = (0i32, 0i32);
                    for e in 0..QK_K {
                        let (h, j, l) = (e / 128, (e % 128) / 32, e % 32);
                        let q = (blk[16 + 32 * h + l] >> (2 * j)) & 3;
                        let sc = blk[e / 16] & 0xF;
                        s += (sc as i32) * (q as i32) * (ab[4 + e] as i8 as i32);
                    }
                    for (j, &sc) in blk[..16].iter().enumerate() {
                        m += (sc >> 4) as i32 * rd_i16(ab, 260 + 2 * j) as i32;
                    }
                    let (dx, dmin) = (rd_f16(&blk, 80), rd_f16(&blk, 82));
                    *acc = (dx * dy).mul_add(s as f32, *acc);
                    *acc = (-(dmin * dy)).mul_add(m as f32, *acc);
                }
            }
            for (r, v) in acc.iter().enumerate() {
                // SAFETY: the caller's `OutPtr` covers every (row, token) of this call.
                unsafe { out.write(g * 16 + r, t, *v) };
            }
        }
    }
}
