//! Safetensors header as r1-model reads it (HfDir::open memory-maps the file, reads the
//! header and records each tensor's byte range): arbitrary file bytes must give an error
//! naming the file, never a panic or an out-of-range read.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use r1_model::hf::HfDir;

/// One model folder per process (on tmpfs when there is one); each input rewrites its
/// `model.safetensors`.
fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let d = base.join(format!("r1serve-fuzz-st-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join("config.json"),
            r#"{"architectures":["LlamaForCausalLM"],"hidden_size":8}"#,
        )
        .unwrap();
        d
    })
}

fuzz_target!(|data: &[u8]| {
    let d = dir();
    std::fs::write(d.join("model.safetensors"), data).unwrap();
    let Ok(hf) = HfDir::open(d) else {
        return;
    };
    let names: Vec<String> = hf.names().map(str::to_string).collect();
    for n in &names {
        let _ = hf.shape(n);
        let _ = hf.dtype(n);
        // Bounded: the data must be inside the (fuzzer-sized) file anyway.
        let _ = hf.tensor_f32(n);
    }
});
