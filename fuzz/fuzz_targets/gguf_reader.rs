//! GGUF reader: arbitrary bytes must give a parsed file or an error, never a panic, and every
//! tensor the parser accepted must be readable within the buffer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use r1_model::gguf::GgufFile;

fuzz_target!(|data: &[u8]| {
    let Ok(f) = GgufFile::from_bytes("fuzz.gguf", data.to_vec()) else {
        return;
    };
    for (k, v) in f.metadata() {
        let _ = (k.len(), v.type_name());
        let _ = f.get_str_array(k);
        let _ = f.get_i64_array(k);
        let _ = f.get_f32_array(k);
    }
    for t in f.tensors() {
        let _ = (t.n_elements(), t.row_len(), t.n_rows());
        let _ = f.tensor_data(t).len();
    }
    let _ = r1_model::config::ModelConfig::from_gguf(&f);
    let _ = r1_engine::tokenizer::Tokenizer::from_gguf(&f);
});
