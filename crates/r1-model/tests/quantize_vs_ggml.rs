//! `quant::quantize_weights` against ggml's own `ggml_quantize_chunk`, the function
//! `llama-quantize` calls, linked from the peer build of llama.cpp (`scripts/build-llamacpp.sh`).
//! Bytes must be identical, with and without an importance matrix, on real weights (rows of
//! `models/qwen05.gguf`, whose values lie on quantization grids and so hit rounding ties) and
//! on random rows with outliers, zeros and constant blocks.
//!
//! Skips with a message when the peer build (its `libggml-base.a` and headers) or a C
//! compiler is missing.
//!
//! Where GCC fuses multiply-adds depends on the CPU it tuned ggml for (`-mtune=native`; see
//! `quant/quantize_ggml.rs`), and our quantizers follow this machine's CPU. To check the other
//! profile, build a libggml-base tuned for it and point the test there, e.g. for Zen on an Intel
//! machine: `cmake -S <peer>/src -B /tmp/ggml-znver/llama.cpp-0c1e570/build -DGGML_NATIVE=OFF
//! -DCMAKE_C_FLAGS="-march=native -mtune=znver3"` (plus the peer's other options,
//! scripts/build-llamacpp.sh), `cmake --build ... --target ggml-base`, link
//! `/tmp/ggml-znver/llama.cpp-0c1e570/src` to the peer's source, then run with
//! `R1SERVE_PEER_CACHE=/tmp/ggml-znver R1SERVE_QUANT_FMA=nochains`.
mod ggml_peer;

use ggml_peer::assert_matches_ggml;
use r1_model::quant::GgmlType;

#[test]
fn quantize_weights_matches_ggml_quantize_chunk() {
    use GgmlType::*;
    let types = [
        F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K,
    ];
    assert_matches_ggml("quantize_vs_ggml", &types, true, true);
}
