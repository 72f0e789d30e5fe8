//! The GGUF file format (llama.cpp's model container): reader, metadata values and a writer
//! used by tests and `r1serve quantize`.

mod reader;
mod resident;
mod value;
mod writer;

pub use reader::{GgufError, GgufFile, TensorInfo};
pub use value::{GgufArray, GgufValue};
pub use writer::GgufWriter;
