//! Q4_K and Q6_K weights interleaved 16 rows at a time (see `x16` for why and for the
//! group layout rules: a group-superblock holds the 16 rows' superblocks in the same bytes).
//!
//! # Accumulation order (per weight row and Q8_K activation row, every ISA and batch size)
//! With the exact integer sums of each super-block
//! `S = Σ_s sc_s · Σ_{e∈s} q_e y_e` (Q6_K: `Σ_s sc_s · Σ_{e∈s} (q_e - 32) y_e`) and, for
//! Q4_K, `M = Σ_s m_s · Σ_{e∈s} y_e`: `acc = 0`; per super-block in order
//! `acc = fma(dx*dy, S, acc)`, then for Q4_K `acc = fma(-(dminx*dy), M, acc)`.
//!
//! # Layout of a group-superblock
//! Q4_K (2304 bytes): `[0,32)` the rows' f16 `d`, `[32,64)` their `dmin`, `[64,128)` and
//! `[128,192)` sub-block scales `sc_0..4` / `sc_4..8` as bytes (lane `r` = 4 bytes of row `r`)
//! with the top two bits of the matching min in bits 6-7, `[192,256)` the mins' low nibbles
//! (lane `r` byte `i`: `m_i` low, `m_{i+4}` high), then per pair `j` of 32-element sub-blocks
//! (`[256 + 512j, +512)`) eight 64-byte chunks: lane `r` of chunk `p` is row `r`'s quant
//! bytes `32j+4p..+4` (low nibbles: sub-block `2j` slice `p`; high: sub-block `2j+1`).
//!
//! Q6_K (3360 bytes): `[0,32)` the f16 `d`, `[32,288)` the i8 scales, 16 bytes per
//! 16-element sub-block (byte `r`: row `r`), then 192 bytes per sub-block `j`: two 64-byte
//! nibble chunks (lane `r` of chunk `c`: low nibbles slice `2c`, high slice `2c+1`) and one
//! chunk of high bits (lane `r` byte `e`: bits `2i..2i+2` = the top bits of slice `i`,
//! element `e`).

use super::gemm::OutPtr;
use super::util::{rd_f32, rd_i16, scale_min_k4, QK_K};
use super::GgmlType;

#[cfg(target_arch = "x86_64")]
pub(crate) const Q4_K_GB: usize = 16 * 144;
#[cfg(target_arch = "x86_64")]
pub(crate) const Q6_K_GB: usize = 16 * 210;

/// One row's super-block, decoded: `q` the unsigned quants (Q4_K 0..16, Q6_K 0..64), `sc`
/// the sub-block scales (Q4_K: 8 of 32 elements, Q6_K: 16 signed of 16), `m` Q4_K's mins.
#[derive(Clone, PartialEq, Debug)]
struct Sb {
    d: [u8; 2],
    dmin: [u8; 2],
    sc: [i32; 16],
    m: [i32; 8],
    q: [u8; QK_K],
}

impl Sb {
    fn new() -> Sb {
        Sb {
            d: [0; 2],
            dmin: [0; 2],
            sc: [0; 16],
            m: [0; 8],
            q: [0; QK_K],
        }
    }
}

fn decode_native(ty: GgmlType, b: &[u8]) -> Sb {
    let mut s = Sb::new();
    match ty {
        GgmlType::Q4_K => {
            s.d.copy_from_slice(&b[0..2]);
            s.dmin.copy_from_slice(&b[2..4]);
            for j in 0..8 {
                let (sc, m) = scale_min_k4(j, &b[4..16]);
                s.sc[j] = sc as i32;
                s.m[j] = m as i32;
            }
            for j in 0..4 {
                for l in 0..32 {
                    let byte = b[16 + 32 * j + l];
                    s.q[64 * j + l] = byte & 0xF;
                    s.q[64 * j + 32 + l] = byte >> 4;
                }
            }
        }
        GgmlType::Q6_K => {
            s.d.copy_from_slice(&b[208..210]);
            for j in 0..16 {
                s.sc[j] = b[192 + j] as i8 as i32;
            }
            s.q = super::dequant::q6_k_values(b);
        }
        _ => unreachable!("x16_k covers Q4_K and Q6_K"),
    }
    s
}

fn encode_native(ty: GgmlType, s: &Sb, b: &mut [u8]) {
    match ty {
        GgmlType::Q4_K => {
            b[0..2].copy_from_slice(&s.d);
            b[2..4].copy_from_slice(&s.dmin);
            let (sc, m) = (|j: usize| s.sc[j] as u8, |j: usize| s.m[j] as u8);
            for j in 0..4 {
                b[4 + j] = sc(j) | ((sc(j + 4) >> 4) << 6);
                b[8 + j] = m(j) | ((m(j + 4) >> 4) << 6);
                b[12 + j] = (sc(j + 4) & 0xF) | ((m(j + 4) & 0xF) << 4);
            }
            for j in 0..4 {
                for l in 0..32 {
                    b[16 + 32 * j + l] = s.q[64 * j + l] | (s.q[64 * j + 32 + l] << 4);
                }
            }
        }
        GgmlType::Q6_K => {
            b[208..210].copy_from_slice(&s.d);
            for j in 0..16 {
                b[192 + j] = s.sc[j] as i8 as u8;
            }
            for h in 0..2 {
                for l in 0..32 {
                    let v = |i: usize| s.q[128 * h + 32 * i + l];
                    b[64 * h + l] = (v(0) & 0xF) | ((v(2) & 0xF) << 4);
                    b[64 * h + 32 + l] = (v(1) & 0xF) | ((v(3) & 0xF) << 4);
                    b[128 + 32 * h + l] =
                        (v(0) >> 4) | ((v(1) >> 4) << 2) | ((v(2) >> 4) << 4) | ((v(3) >> 4) << 6);
                }
            }
        }
        _ => unreachable!("x16_k covers Q4_K and Q6_K"),
    }
}

/// Byte offset, in a group-superblock, of quant `e` of row `r` and the shift of its bits
/// (Q4_K: the nibble; Q6_K: the nibble, then the high-bit pair at the second offset).
fn q4_k_pos(r: usize, e: usize) -> (usize, u32) {
    let (sub, i) = (e / 32, e % 32);
    let (j, p, b) = (sub / 2, i / 4, i % 4);
    (256 + 512 * j + 64 * p + 4 * r + b, 4 * (sub % 2) as u32)
}

fn q6_k_pos(r: usize, e: usize) -> (usize, u32, usize, u32) {
    let (j, i) = (e / 16, e % 16);
    let (slice, b) = (i / 4, i % 4);
    let base = 288 + 192 * j;
    let nib = base + 64 * (slice / 2) + 4 * r + b;
    (
        nib,
        4 * (slice % 2) as u32,
        base + 128 + 4 * r + b,
        2 * slice as u32,
    )
}

fn write_interleaved(ty: GgmlType, r: usize, s: &Sb, g: &mut [u8]) {
    match ty {
        GgmlType::Q4_K => {
            g[2 * r..2 * r + 2].copy_from_slice(&s.d);
            g[32 + 2 * r..34 + 2 * r].copy_from_slice(&s.dmin);
            for i in 0..4 {
                let (lo, hi) = (s.m[i] as u8, s.m[i + 4] as u8);
                g[64 + 4 * r + i] = s.sc[i] as u8 | ((lo >> 4) << 6);
                g[128 + 4 * r + i] = s.sc[i + 4] as u8 | ((hi >> 4) << 6);
                g[192 + 4 * r + i] = (lo & 0xF) | ((hi & 0xF) << 4);
            }
            for e in 0..QK_K {
                let (o, sh) = q4_k_pos(r, e);
                g[o] = (g[o] & !(0xF << sh)) | (s.q[e] << sh);
            }
        }
        GgmlType::Q6_K => {
            g[2 * r..2 * r + 2].copy_from_slice(&s.d);
            for j in 0..16 {
                g[32 + 16 * j + r] = s.sc[j] as i8 as u8;
            }
            for e in 0..QK_K {
                let (o, sh, oh, shh) = q6_k_pos(r, e);
                g[o] = (g[o] & !(0xF << sh)) | ((s.q[e] & 0xF) << sh);
                g[oh] = (g[oh] & !(3 << shh)) | ((s.q[e] >> 4) << shh);
            }
        }
        _ => unreachable!("x16_k covers Q4_K and Q6_K"),
    }
}

fn read_interleaved(ty: GgmlType, r: usize, g: &[u8]) -> Sb {
    let mut s = Sb::new();
    match ty {
        GgmlType::Q4_K => {
            s.d.copy_from_slice(&g[2 * r..2 * r + 2]);
            s.dmin.copy_from_slice(&g[32 + 2 * r..34 + 2 * r]);
            for i in 0..4 {
                let (a, b, n) = (g[64 + 4 * r + i], g[128 + 4 * r + i], g[192 + 4 * r + i]);
                s.sc[i] = (a & 0x3F) as i32;
                s.sc[i + 4] = (b & 0x3F) as i32;
                s.m[i] = ((n & 0xF) | ((a >> 6) << 4)) as i32;
                s.m[i + 4] = ((n >> 4) | ((b >> 6) << 4)) as i32;
            }
            for e in 0..QK_K {
                let (o, sh) = q4_k_pos(r, e);
                s.q[e] = (g[o] >> sh) & 0xF;
            }
        }
        GgmlType::Q6_K => {
            s.d.copy_from_slice(&g[2 * r..2 * r + 2]);
            for j in 0..16 {
                s.sc[j] = g[32 + 16 * j + r] as i8 as i32;
            }
            for e in 0..QK_K {
                let (o, sh, oh, shh) = q6_k_pos(r, e);
                s.q[e] = ((g[o] >> sh) & 0xF) | (((g[oh] >> shh) & 3) << 4);
            }
        }
        _ => unreachable!("x16_k covers Q4_K and Q6_K"),
    }
    s
}

/// Interleave one group of 16 native rows (`native`, `nsb` super-blocks each) into `out`.
pub(crate) fn interleave_group(ty: GgmlType, nsb: usize, native: &[u8], out: &mut [u8]) {
    let (ts, gb) = (ty.type_size(), 16 * ty.type_size());
    for b in 0..nsb {
        for r in 0..16 {
            let o = (r * nsb + b) * ts;
            let s = decode_native(ty, &native[o..o + ts]);
            write_interleaved(ty, r, &s, &mut out[b * gb..(b + 1) * gb]);
        }
    }
}

/// Row `r` of one interleaved group, in the native layout.
pub(crate) fn extract_row(ty: GgmlType, nsb: usize, group: &[u8], r: usize, out: &mut [u8]) {
    let (ts, gb) = (ty.type_size(), 16 * ty.type_size());
    for b in 0..nsb {
        let s = read_interleaved(ty, r, &group[b * gb..(b + 1) * gb]);
        encode_native(ty, &s, &mut out[b * ts..(b + 1) * ts]);
    }
}

/// Portable x16 GEMM for Q4_K / Q6_K against Q8_K activations (the SIMD reference).
fn gemm_scalar(ty: GgmlType, k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    let nsb = k / QK_K;
    let gb = 16 * ty.type_size();
    for (g, grp) in w.chunks_exact(nsb * gb).enumerate() {
        for t in 0..n {
            let mut acc = [0f32; 16];
            for b in 0..nsb {
                let ab = &a[(t * nsb + b) * 292..(t * nsb + b + 1) * 292];
                let dy = rd_f32(ab, 0);
                let y = |e: usize| ab[4 + e] as i8 as i32;
                for (r, acc) in acc.iter_mut().enumerate() {
                    let s = read_interleaved(ty, r, &grp[b * gb..(b + 1) * gb]);
                    let dx = f32::from(half::f16::from_le_bytes(s.d));
                    if ty == GgmlType::Q4_K {
                        let mut sum = 0i32;
                        let mut mins = 0i32;
                        for sub in 0..8 {
                            let e0 = 32 * sub;
                            let dot: i32 = (e0..e0 + 32).map(|e| s.q[e] as i32 * y(e)).sum();
                            let ys =
                                rd_i16(ab, 260 + 4 * sub) as i32 + rd_i16(ab, 262 + 4 * sub) as i32;
                            sum += s.sc[sub] * dot;
                            mins += s.m[sub] * ys;
                        }
                        let dmin = f32::from(half::f16::from_le_bytes(s.dmin));
                        *acc = (dx * dy).mul_add(sum as f32, *acc);
                        *acc = (-(dmin * dy)).mul_add(mins as f32, *acc);
                    } else {
                        let mut sum = 0i32;
                        for j in 0..16 {
                            let e0 = 16 * j;
                            let dot: i32 = (e0..e0 + 16).map(|e| (s.q[e] as i32 - 32) * y(e)).sum();
                            sum += s.sc[j] * dot;
                        }
                        *acc = (dx * dy).mul_add(sum as f32, *acc);
                    }
                }
            }
            for (r, v) in acc.iter().enumerate() {
                // SAFETY: the caller's `OutPtr` covers every (row, token) of this call.
                unsafe { out.write(g * 16 + r, t, *v) };
            }
        }
    }
}

pub(crate) fn gemm_q4_k_scalar(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    gemm_scalar(GgmlType::Q4_K, k, w, a, n, out)
}

pub(crate) fn gemm_q6_k_scalar(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    gemm_scalar(GgmlType::Q6_K, k, w, a, n, out)
}
