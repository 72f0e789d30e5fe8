//! i-quant weights (IQ4_NL, IQ4_XS, and the grid types IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S,
//! IQ1_S, IQ1_M) interleaved 16 rows at a time (see `x16` for why and for the group rules: a
//! group-block holds the 16 rows' blocks in the same bytes, so a row range split at multiples
//! of 16 stays a byte range).
//!
//! # Accumulation order: ggml's generic one, unchanged
//! Unlike Q5_0/Q8_0/Q4_K/Q6_K, these types need no order of their own: ggml's reference
//! kernels (`iq_dot_scalar`) already fold one exact integer sum per block (IQ4_NL: 32
//! elements, `acc = fma(dx*dy, Σ v*q, acc)`) or per 32-element sub-block (IQ4_XS:
//! `acc = fma((dx*dy)*(ls-32), Σ v*q, acc)`; IQ2_XXS: per super-block
//! `acc = fma(dx*dy, Σ (2s+1) v*q, acc)`, result `acc / 8`; the other grid types likewise, see
//! `iq_dot_scalar`) into a scalar chain, and that chain runs per row in a SIMD lane as well as
//! in a scalar. So the interleaved kernels equal the native
//! ones bit for bit, whatever the ISA or batch; the portable reference here simply puts each
//! group back in the native layout and runs the native portable kernel.
//!
//! # Layout (IQ4_NL, group-block of 16 native 18-byte blocks: 288 bytes)
//! `[0, 32)` the rows' f16 `d`; `[32, 288)` four 64-byte chunks: bytes `4r..4r+4` of chunk
//! `p` are row `r`'s quant bytes `4p..4p+4`, whose low nibbles index the levels of
//! elements `4p..4p+4` (slice `p`) and high nibbles those of `16+4p..` (slice `p+4`).
//!
//! # Layout (IQ4_XS, group-superblock of 16 native 136-byte blocks: 2176 bytes)
//! `[0, 32)` the f16 `d`; `[32, 96)` lane `r` (4 bytes) = row `r`'s `scales_l` (so bits
//! `4j..4j+4` of the lane are sub-block `j`'s low scale bits); `[96, 128)` row `r`'s u16
//! `scales_h` at `96 + 2r` (bits `2j..2j+2`: the high bits); then per 32-element sub-block
//! `j` 256 bytes at `128 + 256j`, laid out as an IQ4_NL group-block's chunks.
//!
//! # Layout (IQ2_XXS, group-superblock of 16 native 66-byte blocks: 1056 bytes)
//! `[0, 32)` the f16 `d`; `[32, 544)` the grid indices: byte `32 + 16(4j + l) + r` is row
//! `r`'s index of the 8 elements `8l..8l+8` of 32-element sub-block `j` (so one load gives
//! the 16 rows' indices for a gather); `[544, 1056)` row `r`'s u32 of sub-block `j` (four
//! 7-bit sign fields and the 4-bit scale) at `544 + 64j + 4r`.
//!
//! # Layouts of the other grid types (group-superblock: 16 native blocks)
//! All but IQ1_M open with the 16 rows' f16 `d` at `[0, 32)`. A "byte array" field stores the byte of
//! sub-block `j` (or index `i`) of row `r` at `off + 16j + r`: one 16-byte load, widened, gives
//! the 16 rows' lanes; a "u16 array" likewise stores u16 `j` at `off + 32j + 2r`. A "lane
//! word" field stores row `r`'s 4 bytes of sub-block `j` at `off + 64j + 4r` (one 64-byte
//! load: the word in lane `r`).
//! * IQ3_XXS (98-byte blocks, 1568 bytes): grid indices (one per 4 elements) as byte arrays
//!   at `32 + 16(8j + i)` for the 4 elements `4i..4i+4` of sub-block `j`; the sign/scale u32
//!   of sub-block `j` as a lane word at `1056`.
//! * IQ2_XS (74 bytes, 1184): the u16 (9-bit grid index, 7 sign bits) of the 8 elements `8l..`
//!   of sub-block `j` as a u16 array at `32 + 32(4j + l)`; the scale byte (two nibbles) of
//!   sub-block `j` as a byte array at `1056`.
//! * IQ3_S (110 bytes, 1760): the grid index low bytes as IQ3_XXS's at `32`; the 9th bits
//!   (`qh`, bit `i` for index `i`) of sub-block `j` as a byte array at `1056`; its 4 sign bytes
//!   (byte `l`: the 8 elements `8l..`) as a lane word at `1184`; the scale bytes (two
//!   sub-blocks' nibbles each) as a byte array at `1696`.
//! * IQ2_S (82 bytes, 1312): the grid index low bytes of the 8 elements `8l..` of sub-block
//!   `j` as a byte array at `32 + 16(4j + l)`; its 4 sign bytes as a lane word at `544`; the
//!   2 high index bits per 8 elements (`qh`) and the scale byte as byte arrays at `1056` and
//!   `1184`.
//! * IQ1_S (50 bytes, 800): the grid index low bytes as IQ2_S's at `32`; the u16 `qh` of
//!   sub-block `j` (3 high index bits per 8 elements, the scale, the offset sign) as a u16
//!   array at `544`.
//! * IQ1_M (56 bytes, 896; its f16 `d` is spread over the top nibbles of its 4 scale words,
//!   so it has no `d` field): the grid index low bytes at `0 + 16(4j + l)`; the 2 `qh` bytes
//!   of sub-block `j` (a nibble per 8 elements) as a u16 array at `512`; the 4 scale words as
//!   a u16 array at `768`.

use super::gemm::OutPtr;
use super::GgmlType;

/// Bytes of one IQ4_NL group-block.
#[cfg(target_arch = "x86_64")]
pub(crate) const IQ4_NL_GB: usize = 16 * 18;
/// Bytes of one IQ4_XS group-superblock.
#[cfg(target_arch = "x86_64")]
pub(crate) const IQ4_XS_GB: usize = 16 * 136;
/// Bytes of one IQ2_XXS group-superblock, and where its grid indices and sign words start.
#[cfg(target_arch = "x86_64")]
pub(crate) const IQ2_XXS_GB: usize = 16 * 66;
pub(crate) const IQ2_XXS_IDX: usize = 32;
pub(crate) const IQ2_XXS_AUX: usize = 544;
/// IQ3_XXS: group-superblock bytes, grid indices, sign/scale words.
#[cfg(target_arch = "x86_64")]
pub(crate) const IQ3_XXS_GB: usize = 16 * 98;
pub(crate) const IQ3_XXS_IDX: usize = 32;
pub(crate) const IQ3_XXS_AUX: usize = 1056;
/// IQ2_XS: group-superblock bytes, index/sign u16s, scales.
#[cfg(target_arch = "x86_64")]
pub(crate) const IQ2_XS_GB: usize = 16 * 74;
pub(crate) const IQ2_XS_QS: usize = 32;
pub(crate) const IQ2_XS_SC: usize = 1056;
/// IQ3_S: group-superblock bytes, index low bytes, 9th bits, signs, scales.
#[cfg(target_arch = "x86_64")]
pub(crate) const IQ3_S_GB: usize = 16 * 110;
pub(crate) const IQ3_S_IDX: usize = 32;
pub(crate) const IQ3_S_QH: usize = 1056;
pub(crate) const IQ3_S_SGN: usize = 1184;
pub(crate) const IQ3_S_SC: usize = 1696;
/// IQ2_S: group-superblock bytes, index low bytes, signs, high index bits, scales.
#[cfg(target_arch = "x86_64")]
pub(crate) const IQ2_S_GB: usize = 16 * 82;
pub(crate) const IQ2_S_IDX: usize = 32;
pub(crate) const IQ2_S_SGN: usize = 544;
pub(crate) const IQ2_S_QH: usize = 1056;
pub(crate) const IQ2_S_SC: usize = 1184;
/// IQ1_S: group-superblock bytes, index low bytes, `qh` words.
#[cfg(target_arch = "x86_64")]
pub(crate) const IQ1_S_GB: usize = 16 * 50;
pub(crate) const IQ1_S_IDX: usize = 32;
pub(crate) const IQ1_S_QH: usize = 544;
/// IQ1_M: group-superblock bytes, index low bytes, `qh`, scale words.
#[cfg(target_arch = "x86_64")]
pub(crate) const IQ1_M_GB: usize = 16 * 56;
pub(crate) const IQ1_M_IDX: usize = 0;
pub(crate) const IQ1_M_QH: usize = 512;
pub(crate) const IQ1_M_SC: usize = 768;

/// Whether `ty` is one of this file's types.
pub(crate) fn covers(ty: GgmlType) -> bool {
    matches!(
        ty,
        GgmlType::IQ4_NL
            | GgmlType::IQ4_XS
            | GgmlType::IQ2_XXS
            | GgmlType::IQ3_XXS
            | GgmlType::IQ2_XS
            | GgmlType::IQ3_S
            | GgmlType::IQ2_S
            | GgmlType::IQ1_S
            | GgmlType::IQ1_M
    )
}

/// For each byte of a native block of row `r`, where it lies in its group-block; `f(native
/// offset, group-block offset)` is called for every byte.
fn for_each_byte(ty: GgmlType, r: usize, mut f: impl FnMut(usize, usize)) {
    let chunks = |f: &mut dyn FnMut(usize, usize), nat: usize, grp: usize| {
        for p in 0..4 {
            for i in 0..4 {
                f(nat + 4 * p + i, grp + 64 * p + 4 * r + i);
            }
        }
    };
    // `n` native bytes from `nat` of sub-block / index `j` as a byte array at `grp`
    let bytes = |f: &mut dyn FnMut(usize, usize), nat: usize, n: usize, grp: usize| {
        for j in 0..n {
            f(nat + j, grp + 16 * j + r);
        }
    };
    // `n` native u16 from `nat` as a u16 array at `grp`
    let halfs = |f: &mut dyn FnMut(usize, usize), nat: usize, n: usize, grp: usize| {
        for j in 0..n {
            f(nat + 2 * j, grp + 32 * j + 2 * r);
            f(nat + 2 * j + 1, grp + 32 * j + 2 * r + 1);
        }
    };
    // `n` native 4-byte words from `nat` as lane words at `grp`
    let words = |f: &mut dyn FnMut(usize, usize), nat: usize, n: usize, grp: usize| {
        for j in 0..n {
            for i in 0..4 {
                f(nat + 4 * j + i, grp + 64 * j + 4 * r + i);
            }
        }
    };
    if ty != GgmlType::IQ1_M {
        f(0, 2 * r);
        f(1, 2 * r + 1);
    }
    match ty {
        GgmlType::IQ4_NL => chunks(&mut f, 2, 32),
        GgmlType::IQ4_XS => {
            f(2, 96 + 2 * r);
            f(3, 97 + 2 * r);
            for i in 0..4 {
                f(4 + i, 32 + 4 * r + i);
            }
            for j in 0..8 {
                chunks(&mut f, 8 + 16 * j, 128 + 256 * j);
            }
        }
        GgmlType::IQ2_XXS => {
            for j in 0..8 {
                for l in 0..4 {
                    f(2 + 8 * j + l, IQ2_XXS_IDX + 16 * (4 * j + l) + r);
                    f(6 + 8 * j + l, IQ2_XXS_AUX + 64 * j + 4 * r + l);
                }
            }
        }
        GgmlType::IQ3_XXS => {
            bytes(&mut f, 2, 64, IQ3_XXS_IDX);
            words(&mut f, 66, 8, IQ3_XXS_AUX);
        }
        GgmlType::IQ2_XS => {
            halfs(&mut f, 2, 32, IQ2_XS_QS);
            bytes(&mut f, 66, 8, IQ2_XS_SC);
        }
        GgmlType::IQ3_S => {
            bytes(&mut f, 2, 64, IQ3_S_IDX);
            bytes(&mut f, 66, 8, IQ3_S_QH);
            words(&mut f, 74, 8, IQ3_S_SGN);
            bytes(&mut f, 106, 4, IQ3_S_SC);
        }
        GgmlType::IQ2_S => {
            bytes(&mut f, 2, 32, IQ2_S_IDX);
            words(&mut f, 34, 8, IQ2_S_SGN);
            bytes(&mut f, 66, 8, IQ2_S_QH);
            bytes(&mut f, 74, 8, IQ2_S_SC);
        }
        GgmlType::IQ1_S => {
            bytes(&mut f, 2, 32, IQ1_S_IDX);
            halfs(&mut f, 34, 8, IQ1_S_QH);
        }
        GgmlType::IQ1_M => {
            bytes(&mut f, 0, 32, IQ1_M_IDX);
            halfs(&mut f, 32, 8, IQ1_M_QH);
            halfs(&mut f, 48, 4, IQ1_M_SC);
        }
        _ => unreachable!("x16_iq does not cover {ty}"),
    }
}

/// Interleave one group of 16 native rows (`native`, `nb` blocks each) into `out`.
pub(crate) fn interleave_group(ty: GgmlType, nb: usize, native: &[u8], out: &mut [u8]) {
    let ts = ty.type_size();
    for r in 0..16 {
        for b in 0..nb {
            let (src, dst) = (&native[(r * nb + b) * ts..], b * 16 * ts);
            for_each_byte(ty, r, |n, g| out[dst + g] = src[n]);
        }
    }
}

/// Row `r` of one interleaved group, in the native layout.
pub(crate) fn extract_row(ty: GgmlType, nb: usize, group: &[u8], r: usize, out: &mut [u8]) {
    let ts = ty.type_size();
    for b in 0..nb {
        let src = &group[b * 16 * ts..(b + 1) * 16 * ts];
        for_each_byte(ty, r, |n, g| out[b * ts + n] = src[g]);
    }
}

/// Portable reference: each group back in the native layout, then ggml's generic kernel.
fn gemm_scalar(ty: GgmlType, k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    let nb = k / ty.block_size();
    let wrow = nb * ty.type_size();
    let mut native = vec![0u8; 16 * wrow];
    for (g, grp) in w.chunks_exact(16 * wrow).enumerate() {
        for (r, row) in native.chunks_exact_mut(wrow).enumerate() {
            extract_row(ty, nb, grp, r, row);
        }
        let out_g = OutPtr {
            // SAFETY: the caller's `OutPtr` covers rows g*16..g*16+16 of every token.
            ptr: unsafe { out.ptr.add(g * 16 * out.rs) },
            ..out
        };
        match ty {
            GgmlType::IQ4_NL => super::iq_dot_scalar::gemm_iq4_nl(k, &native, a, n, out_g),
            GgmlType::IQ4_XS => super::iq_dot_scalar::gemm_iq4_xs(k, &native, a, n, out_g),
            GgmlType::IQ2_XXS => super::iq_dot_scalar::gemm_iq2_xxs(k, &native, a, n, out_g),
            GgmlType::IQ3_XXS => super::iq_dot_scalar::gemm_iq3_xxs(k, &native, a, n, out_g),
            GgmlType::IQ2_XS => super::iq_dot_scalar::gemm_iq2_xs(k, &native, a, n, out_g),
            GgmlType::IQ3_S => super::iq_dot_scalar::gemm_iq3_s(k, &native, a, n, out_g),
            GgmlType::IQ2_S => super::iq_dot_scalar::gemm_iq2_s(k, &native, a, n, out_g),
            GgmlType::IQ1_S => super::iq_dot_scalar::gemm_iq1_s(k, &native, a, n, out_g),
            GgmlType::IQ1_M => super::iq_dot_scalar::gemm_iq1_m(k, &native, a, n, out_g),
            _ => unreachable!("x16_iq does not cover {ty}"),
        }
    }
}

pub(crate) fn gemm_iq4_nl_scalar(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    gemm_scalar(GgmlType::IQ4_NL, k, w, a, n, out)
}

pub(crate) fn gemm_iq4_xs_scalar(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    gemm_scalar(GgmlType::IQ4_XS, k, w, a, n, out)
}

pub(crate) fn gemm_iq2_xxs_scalar(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    gemm_scalar(GgmlType::IQ2_XXS, k, w, a, n, out)
}

pub(crate) fn gemm_iq3_xxs_scalar(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    gemm_scalar(GgmlType::IQ3_XXS, k, w, a, n, out)
}

pub(crate) fn gemm_iq2_xs_scalar(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    gemm_scalar(GgmlType::IQ2_XS, k, w, a, n, out)
}

pub(crate) fn gemm_iq3_s_scalar(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    gemm_scalar(GgmlType::IQ3_S, k, w, a, n, out)
}

pub(crate) fn gemm_iq2_s_scalar(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    gemm_scalar(GgmlType::IQ2_S, k, w, a, n, out)
}

pub(crate) fn gemm_iq1_s_scalar(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    gemm_scalar(GgmlType::IQ1_S, k, w, a, n, out)
}

pub(crate) fn gemm_iq1_m_scalar(k: usize, w: &[u8], a: &[u8], n: usize, out: OutPtr) {
    gemm_scalar(GgmlType::IQ1_M, k, w, a, n, out)
}
