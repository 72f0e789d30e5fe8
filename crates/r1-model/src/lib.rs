//! r1-model: model file formats, quantized CPU kernels and the model architectures of r1serve.

pub mod arch;
pub mod attention;
pub mod batch;
pub mod config;
pub mod expf;
pub mod f16;
pub mod gguf;
pub mod hf;
pub mod kv_cache;
pub mod matmul;
pub mod ops;
pub mod pool;
pub mod quant;
pub mod rope_yarn;
#[cfg(target_arch = "x86_64")]
mod swiglu_avx512;
pub mod testdata;
pub mod weights;

pub use arch::{load_gguf, Logits, Model, ModelError};
pub use arch::{load_hf_dir, load_hf_dir_with};
pub use batch::Batch;
pub use config::ModelConfig;
pub use hf::{HfDir, HfError, WeightDtype};
pub use kv_cache::KvDtype;
pub use kv_cache::{KvCache, KvLayout};
