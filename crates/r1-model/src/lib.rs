//! r1-model: model file formats, quantized CPU kernels and the model architectures of r1serve.

pub mod arch;
pub mod attention;
pub mod batch;
pub mod config;
pub mod f16;
pub mod gguf;
pub mod kv_cache;
pub mod matmul;
pub mod ops;
pub mod pool;
pub mod quant;
pub mod testdata;
pub mod weights;

pub use arch::{load_gguf, Logits, Model, ModelError};
pub use batch::Batch;
pub use config::ModelConfig;
pub use kv_cache::{KvCache, KvLayout};
