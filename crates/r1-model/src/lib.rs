//! r1-model: model file formats, quantized CPU kernels and the model architectures of r1serve.

pub mod gguf;
pub mod quant;
pub mod testdata;
