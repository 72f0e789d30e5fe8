//! Quantized tensor formats (GGML block layouts): dequantization, activation quantization
//! and the dot-product kernels the matmuls are built from.

mod types;

pub use types::GgmlType;
