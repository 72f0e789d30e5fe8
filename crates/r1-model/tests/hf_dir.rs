//! Loading HF model directories: sharded safetensors with an index, f16/bf16/f32 storage,
//! the f32 load option, and errors that name the bad file and field for broken folders.

#[path = "deepseek_support/mod.rs"]
mod deepseek_support;

use std::collections::BTreeMap;
use std::path::Path;

use deepseek_support::*;
use r1_model::{load_hf_dir, HfDir, WeightDtype};

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Write the fixture's tensors as `n` shards plus `model.safetensors.index.json`.
fn write_sharded(src: &Path, dst: &Path, n: usize, convert: impl Fn(&RawTensor) -> RawTensor) {
    let all = read_raw(&src.join("model.safetensors"));
    let mut shards: Vec<BTreeMap<String, RawTensor>> = vec![BTreeMap::new(); n];
    let mut map = serde_json::Map::new();
    for (i, (name, t)) in all.iter().enumerate() {
        let file = format!("model-{:05}-of-{:05}.safetensors", i % n + 1, n);
        shards[i % n].insert(name.clone(), convert(t));
        map.insert(name.clone(), file.into());
    }
    for (k, s) in shards.iter().enumerate() {
        write_raw(
            &dst.join(format!("model-{:05}-of-{:05}.safetensors", k + 1, n)),
            s,
        );
    }
    let index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": map});
    std::fs::write(dst.join("model.safetensors.index.json"), index.to_string()).unwrap();
    write_config(src, dst, |_| {});
}

#[test]
fn sharded_checkpoint_equals_the_single_file() {
    let Some(src) = fixture_dir("tiny-deepseek-v3") else {
        return;
    };
    let r = Reference::load(&src);
    let tmp = temp_dir("sharded");
    write_sharded(&src, &tmp.0, 3, |t| t.clone());
    let one = load_model(&src, WeightDtype::Native);
    let three = load_model(&tmp.0, WeightDtype::Native);
    let p = r.prompt_ids(2);
    assert_eq!(
        bits(&prefill_logits(&one, &p, None)),
        bits(&prefill_logits(&three, &p, None))
    );
    // Through the generic entry point too.
    let boxed = load_hf_dir(&tmp.0, 2).unwrap();
    assert_eq!(boxed.config().arch, "deepseek_v3");
    assert_eq!(boxed.n_params(), 6_466_656);
    assert_eq!(greedy(boxed.as_ref(), &p, 16).0, r.greedy_ids(2));
}

#[test]
fn f16_checkpoint_loads_and_stays_close() {
    let Some(src) = fixture_dir("tiny-deepseek-v3") else {
        return;
    };
    let r = Reference::load(&src);
    let tmp = temp_dir("f16");
    write_sharded(&src, &tmp.0, 1, |t| {
        let v = t.to_f32();
        RawTensor {
            dtype: safetensors::Dtype::F16,
            shape: t.shape.clone(),
            data: v
                .iter()
                .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
                .collect(),
        }
    });
    let m = load_model(&tmp.0, WeightDtype::Native);
    let got = prefill_logits(&m, &r.prompt_ids(0), None);
    let (want, _) = r.tensor("prompt0.last_logits");
    let d = max_abs_diff(&got, &want);
    eprintln!("f16 weights: max |Δlogit| = {d:.2e}");
    // f16 keeps 11 significant bits, 8x finer than bf16, whose logits the fixture README puts
    // within 0.038 of the f32 model's.
    assert!(d < 0.038 / 4.0, "{d}");
}

#[test]
fn f32_load_option_of_bf16_weights_is_bit_identical() {
    // Widening bf16 to f32 is exact and both paths use the same f32 dot kernel.
    let Some(src) = fixture_dir("tiny-deepseek-v3-bf16") else {
        return;
    };
    let r = Reference::load(&src);
    let native = load_model(&src, WeightDtype::Native);
    let wide = load_model(&src, WeightDtype::F32);
    let p = r.prompt_ids(3);
    assert_eq!(
        bits(&prefill_logits(&native, &p, None)),
        bits(&prefill_logits(&wide, &p, None))
    );
}

/// Load `dir` and return the error message, which must mention every `needles`.
fn expect_err(dir: &Path, needles: &[&str]) {
    let msg = match load_hf_dir(dir, 1) {
        Ok(_) => panic!(
            "{} loaded, expected an error mentioning {needles:?}",
            dir.display()
        ),
        Err(e) => e.to_string(),
    };
    for n in needles {
        assert!(msg.contains(n), "error `{msg}` does not mention `{n}`");
    }
    eprintln!("ok: {msg}");
}

#[test]
fn broken_directories_get_errors_naming_file_and_field() {
    let Some(src) = fixture_dir("tiny-deepseek-v3") else {
        return;
    };
    let tmp = temp_dir("broken");
    let d = |name: &str| {
        let p = tmp.0.join(name);
        std::fs::create_dir_all(&p).unwrap();
        p
    };
    let link = |dir: &Path| {
        std::os::unix::fs::symlink(src.join("model.safetensors"), dir.join("model.safetensors"))
            .unwrap()
    };

    expect_err(&tmp.0.join("nope"), &["nope", "not a directory"]);

    let a = d("no-config");
    link(&a);
    expect_err(&a, &["config.json"]);

    let a = d("bad-json");
    std::fs::write(a.join("config.json"), "{ not json").unwrap();
    expect_err(&a, &["config.json", "invalid JSON"]);

    let a = d("missing-field");
    write_config(&src, &a, |c| {
        c.as_object_mut().unwrap().remove("kv_lora_rank");
    });
    link(&a);
    expect_err(&a, &["config.json", "kv_lora_rank", "missing"]);

    let a = d("bad-type");
    write_config(&src, &a, |c| c["n_group"] = "two".into());
    link(&a);
    expect_err(&a, &["config.json", "n_group"]);

    let a = d("bad-group");
    write_config(&src, &a, |c| c["n_group"] = 3.into());
    link(&a);
    expect_err(&a, &["config.json", "n_group", "divide"]);

    let a = d("bad-rope");
    write_config(&src, &a, |c| {
        c["rope_scaling"] = serde_json::json!({"type": "dynamic", "factor": 2.0})
    });
    link(&a);
    expect_err(&a, &["config.json", "rope_scaling.type", "dynamic"]);

    let a = d("unknown-arch");
    write_config(&src, &a, |c| {
        c["architectures"] = serde_json::json!(["GPTNeoXForCausalLM"])
    });
    link(&a);
    expect_err(&a, &["config.json", "GPTNeoXForCausalLM"]);

    let a = d("no-weights");
    write_config(&src, &a, |_| {});
    expect_err(&a, &["no-weights", "model.safetensors"]);

    let a = d("truncated");
    write_config(&src, &a, |_| {});
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    std::fs::write(a.join("model.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    expect_err(&a, &["truncated/model.safetensors", "safetensors"]);

    let a = d("missing-shard");
    write_sharded(&src, &a, 2, |t| t.clone());
    std::fs::remove_file(a.join("model-00002-of-00002.safetensors")).unwrap();
    expect_err(&a, &["model-00002-of-00002.safetensors"]);

    let a = d("index-lies");
    write_sharded(&src, &a, 2, |t| t.clone());
    let ip = a.join("model.safetensors.index.json");
    let mut index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&ip).unwrap()).unwrap();
    index["weight_map"]["model.extra.weight"] = "model-00001-of-00002.safetensors".into();
    std::fs::write(&ip, index.to_string()).unwrap();
    expect_err(
        &a,
        &[
            "model-00001-of-00002.safetensors",
            "model.extra.weight",
            "index",
        ],
    );

    // A tensor missing, and one with the wrong shape.
    let all = read_raw(&src.join("model.safetensors"));
    let a = d("missing-tensor");
    write_config(&src, &a, |_| {});
    let mut t = all.clone();
    t.remove("model.layers.1.mlp.experts.5.up_proj.weight");
    write_raw(&a.join("model.safetensors"), &t);
    expect_err(
        &a,
        &[
            "model.layers.1.mlp.experts.5.up_proj.weight",
            "not in the checkpoint",
        ],
    );

    let a = d("bad-shape");
    write_config(&src, &a, |_| {});
    let mut t = all.clone();
    t.insert(
        "model.layers.2.self_attn.kv_b_proj.weight".into(),
        RawTensor::from_f32(&[16, 128], &[0.0; 2048]),
    );
    write_raw(&a.join("model.safetensors"), &t);
    expect_err(
        &a,
        &[
            "bad-shape/model.safetensors",
            "kv_b_proj",
            "[16, 128]",
            "[128, 16]",
        ],
    );

    let a = d("bad-dtype");
    write_config(&src, &a, |_| {});
    let mut t = all.clone();
    t.insert(
        "model.norm.weight".into(),
        RawTensor {
            dtype: safetensors::Dtype::I32,
            shape: vec![64],
            data: vec![0; 256],
        },
    );
    write_raw(&a.join("model.safetensors"), &t);
    expect_err(&a, &["model.norm.weight", "I32"]);

    let a = d("fp8-no-scale");
    write_config(&src, &a, |_| {});
    let mut t = all;
    t.insert(
        "model.layers.0.self_attn.o_proj.weight".into(),
        RawTensor {
            dtype: safetensors::Dtype::F8_E4M3,
            shape: vec![64, 64],
            data: vec![0x38; 4096],
        },
    );
    write_raw(&a.join("model.safetensors"), &t);
    expect_err(&a, &["o_proj.weight", "weight_scale_inv"]);

    // The failures above are errors, not panics; an HfDir of a good folder still opens.
    assert!(HfDir::open(&src).is_ok());
}

#[test]
fn tokenizer_and_chat_template_are_found() {
    let Some(src) = fixture_dir("tiny-deepseek-v3") else {
        return;
    };
    let d = HfDir::open(&src).unwrap();
    assert_eq!(d.tokenizer_json().unwrap(), src.join("tokenizer.json"));
    let t = d.chat_template().unwrap().expect("chat_template.jinja");
    assert_eq!(
        t,
        std::fs::read_to_string(src.join("chat_template.jinja")).unwrap()
    );
    // Without the .jinja file, tokenizer_config.json's `chat_template` is used.
    let tmp = temp_dir("template");
    write_config(&src, &tmp.0, |_| {});
    std::os::unix::fs::symlink(
        src.join("model.safetensors"),
        tmp.0.join("model.safetensors"),
    )
    .unwrap();
    std::fs::write(
        tmp.0.join("tokenizer_config.json"),
        r#"{"chat_template": "{{ x }}"}"#,
    )
    .unwrap();
    let d = HfDir::open(&tmp.0).unwrap();
    assert_eq!(d.chat_template().unwrap().as_deref(), Some("{{ x }}"));
    assert!(d.tokenizer_json().is_none());
}
