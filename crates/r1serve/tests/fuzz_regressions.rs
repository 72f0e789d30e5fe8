//! The fuzz targets' inputs as plain tests: every seed and every input in
//! `fuzz/regressions/<target>/` (where crashers found by `cargo fuzz` go) is fed through the
//! same code as the fuzz target in `fuzz/fuzz_targets/`, and must not panic.

use std::path::PathBuf;

use r1_engine::chat_template::ChatTemplate;
use r1_model::gguf::GgufFile;
use r1_server::error::parse_json;
use r1_server::generation::sampling_params;
use r1_server::openai_types::{ChatCompletionRequest, CompletionRequest};

fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut out = Vec::new();
    for dir in ["seeds", "regressions"] {
        let Ok(rd) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for e in rd.flatten() {
            out.push((e.path(), std::fs::read(e.path()).unwrap()));
        }
    }
    assert!(!out.is_empty(), "no inputs for {target}");
    out
}

#[test]
fn gguf_reader_inputs() {
    for (path, data) in inputs("gguf_reader") {
        eprintln!("{}", path.display());
        let Ok(f) = GgufFile::from_bytes("fuzz.gguf", data) else {
            continue;
        };
        for (k, _) in f.metadata() {
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
    }
}

#[test]
fn safetensors_header_inputs() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        r#"{"architectures":["LlamaForCausalLM"],"hidden_size":8}"#,
    )
    .unwrap();
    for (path, data) in inputs("safetensors_header") {
        eprintln!("{}", path.display());
        std::fs::write(dir.path().join("model.safetensors"), data).unwrap();
        let Ok(hf) = r1_model::hf::HfDir::open(dir.path()) else {
            continue;
        };
        let names: Vec<String> = hf.names().map(str::to_string).collect();
        for n in &names {
            let _ = hf.tensor_f32(n);
        }
    }
}

#[test]
fn request_validation_inputs() {
    for (path, data) in inputs("request_validation") {
        let Some((&which, body)) = data.split_first() else {
            continue;
        };
        let common = if which & 1 == 0 {
            parse_json::<ChatCompletionRequest>(body).map(|r| r.common())
        } else {
            parse_json::<CompletionRequest>(body).map(|r| r.common())
        };
        match common {
            Ok(c) => {
                if let Err(e) = sampling_params(&c, 49152) {
                    assert!(e.status.is_client_error(), "{}", path.display());
                }
            }
            Err(e) => assert!(e.status.is_client_error(), "{}", path.display()),
        }
    }
}

#[test]
fn chat_template_inputs() {
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../r1-engine/tests/data");
    let templates: Vec<ChatTemplate> = [
        "smollm2-chat_template.jinja",
        "qwen05-chat_template.jinja",
        "deepseek-r1-distill.jinja",
    ]
    .iter()
    .map(|f| {
        ChatTemplate::new(
            &std::fs::read_to_string(data.join(f)).unwrap(),
            "<s>",
            "</s>",
        )
        .unwrap()
    })
    .collect();
    for (path, input) in inputs("chat_template") {
        let Some((&which, body)) = input.split_first() else {
            continue;
        };
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
            continue;
        };
        let t = &templates[which as usize % templates.len()];
        let (messages, tools, kwargs) = match &v {
            serde_json::Value::Object(o) => (
                o.get("messages").cloned().unwrap_or_default(),
                o.get("tools").cloned(),
                o.get("kwargs").and_then(|k| k.as_object()).cloned(),
            ),
            other => (other.clone(), None, None),
        };
        let r = t.render_json(
            &messages,
            which & 0x80 != 0,
            tools.as_ref(),
            kwargs.as_ref(),
        );
        eprintln!("{}: {}", path.display(), r.is_ok());
    }
}

/// Found by `cargo fuzz run -a gguf_reader` (with overflow checks): a tensor whose first
/// dimension is 0 passed the reader's checked element count (the product is 0) while the
/// product of the other dimensions overflowed, so `TensorInfo::n_rows` panicked with overflow
/// checks on and wrapped without them. The reader now bounds those dims too; the input is
/// `fuzz/regressions/gguf_reader/n_rows-overflow-*`.
#[test]
fn gguf_tensor_row_counts_do_not_wrap() {
    for (path, data) in inputs("gguf_reader") {
        let Ok(f) = GgufFile::from_bytes("fuzz.gguf", data) else {
            continue;
        };
        for t in f.tensors() {
            let exact = t.dims[1..]
                .iter()
                .try_fold(1u128, |a, &d| a.checked_mul(d as u128));
            assert_eq!(
                exact,
                Some(t.n_rows() as u128),
                "{}: tensor {:?} dims {:?}",
                path.display(),
                t.name,
                t.dims
            );
        }
    }
}
