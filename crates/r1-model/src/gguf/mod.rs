//! The GGUF file format (llama.cpp's model container): reader, metadata values and a writer
//! used by tests and `r1serve quantize`. A model split by llama.cpp's `gguf-split` opens as
//! one [`GgufFile`] through its first part (`split`).

mod cursor;
mod reader;
mod resident;
pub mod split;
mod value;
mod writer;

pub use reader::{GgufError, GgufFile, PartInfo, TensorInfo};
pub use split::SplitError;
pub use value::{GgufArray, GgufValue};
pub use writer::{GgufStreamWriter, GgufWriter, StreamTensor};
