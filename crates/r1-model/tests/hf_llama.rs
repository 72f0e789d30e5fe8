//! `LlamaForCausalLM` / `Qwen2ForCausalLM` HF directories (the R1 distills' format) through
//! `load_hf_dir`. The HF folders are made from the test GGUFs exactly as transformers' GGUF
//! loader does it for the references in `../shared/fixtures/*-hf-reference.json`: every
//! tensor dequantized to f32, llama q/k rows un-permuted back to HF's rotate-half layout, HF
//! names. Loading them must re-apply llama.cpp's conventions (q/k permutation for llama, none
//! for qwen2, biases, tied or separate lm_head) to reproduce the reference logits.

mod deepseek_support;

use std::collections::BTreeMap;
use std::path::Path;

use deepseek_support::*;
use r1_model::gguf::GgufFile;
use r1_model::{load_hf_dir, quant};
use serde_json::Value;

/// HF row `h·d + j·d/2 + i` is GGUF row `h·d + 2i + j`.
fn unpermute(v: &[f32], rows: usize, cols: usize, n_head: usize) -> Vec<f32> {
    let hd = rows / n_head;
    let mut out = vec![0.0; v.len()];
    for h in 0..n_head {
        for j in 0..2 {
            for i in 0..hd / 2 {
                let (hf, gg) = (h * hd + j * hd / 2 + i, h * hd + 2 * i + j);
                out[hf * cols..(hf + 1) * cols].copy_from_slice(&v[gg * cols..(gg + 1) * cols]);
            }
        }
    }
    out
}

fn hf_name(gg: &str) -> Option<String> {
    let fixed = [
        ("token_embd.weight", "model.embed_tokens.weight"),
        ("output_norm.weight", "model.norm.weight"),
        ("output.weight", "lm_head.weight"),
    ];
    if let Some((_, h)) = fixed.iter().find(|(g, _)| *g == gg) {
        return Some(h.to_string());
    }
    let rest = gg.strip_prefix("blk.")?;
    let (l, t) = rest.split_once('.')?;
    let map = [
        ("attn_norm.weight", "input_layernorm.weight"),
        ("ffn_norm.weight", "post_attention_layernorm.weight"),
        ("attn_q.weight", "self_attn.q_proj.weight"),
        ("attn_k.weight", "self_attn.k_proj.weight"),
        ("attn_v.weight", "self_attn.v_proj.weight"),
        ("attn_q.bias", "self_attn.q_proj.bias"),
        ("attn_k.bias", "self_attn.k_proj.bias"),
        ("attn_v.bias", "self_attn.v_proj.bias"),
        ("attn_output.weight", "self_attn.o_proj.weight"),
        ("ffn_gate.weight", "mlp.gate_proj.weight"),
        ("ffn_up.weight", "mlp.up_proj.weight"),
        ("ffn_down.weight", "mlp.down_proj.weight"),
    ];
    map.iter()
        .find(|(g, _)| *g == t)
        .map(|(_, h)| format!("model.layers.{l}.{h}"))
}

/// Write an HF folder for `gguf` with the reference's `hf_config`.
fn hf_dir_from_gguf(gguf: &Path, reference: &Value, dst: &Path, llama: bool) {
    let f = GgufFile::open(gguf).unwrap();
    let cfg = &reference["model"]["hf_config"];
    let n_head = cfg["num_attention_heads"].as_u64().unwrap() as usize;
    let n_kv = cfg["num_key_value_heads"].as_u64().unwrap() as usize;
    let mut out = BTreeMap::new();
    for t in f.tensors() {
        let name = hf_name(&t.name).unwrap_or_else(|| panic!("unmapped tensor {}", t.name));
        let mut v = vec![0.0f32; t.n_elements() as usize];
        quant::dequantize(t.ty, f.tensor_data(t), &mut v).unwrap();
        let shape: Vec<usize> = t.dims.iter().rev().map(|&d| d as usize).collect();
        let (rows, cols) = (t.n_rows(), t.row_len());
        if llama && t.name.ends_with("attn_q.weight") {
            v = unpermute(&v, rows, cols, n_head);
        } else if llama && t.name.ends_with("attn_k.weight") {
            v = unpermute(&v, rows, cols, n_kv);
        }
        out.insert(name, RawTensor::from_f32(&shape, &v));
    }
    write_raw(&dst.join("model.safetensors"), &out);
    let mut c = cfg.clone();
    let o = c.as_object_mut().unwrap();
    o.insert(
        "architectures".into(),
        serde_json::json!([if llama {
            "LlamaForCausalLM"
        } else {
            "Qwen2ForCausalLM"
        }]),
    );
    o.insert(
        "rope_theta".into(),
        cfg["rope_parameters"]["rope_theta"].clone(),
    );
    o.remove("rope_parameters");
    o.remove("quantization_config");
    std::fs::write(
        dst.join("config.json"),
        serde_json::to_string_pretty(&c).unwrap(),
    )
    .unwrap();
}

fn check(model: &str, reference: &str, llama: bool, prompts: &[usize]) {
    let Some(gguf) = r1_model::testdata::model(model) else {
        return;
    };
    let Some(refp) = r1_model::testdata::fixture(reference) else {
        return;
    };
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&refp).unwrap()).unwrap();
    let tensors = std::fs::read(refp.with_file_name(r["tensors_file"].as_str().unwrap())).unwrap();
    let st = safetensors::SafeTensors::deserialize(&tensors).unwrap();
    let tmp = temp_dir(&format!("hf-{model}"));
    hf_dir_from_gguf(&gguf, &r, &tmp.0, llama);
    let m = load_hf_dir(&tmp.0, 2).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(m.config().arch, if llama { "llama" } else { "qwen2" });
    for &i in prompts {
        let pr = &r["prompts"][i];
        let p = ids(&pr["input_ids"]);
        let want: Vec<f32> = st
            .tensor(pr["full_last_logits_tensor"].as_str().unwrap())
            .unwrap()
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let (toks, steps) = greedy(m.as_ref(), &p, 16);
        let d = max_abs_diff(&steps[0], &want);
        let scale = want.iter().fold(0.0f32, |a, &x| a.max(x.abs()));
        eprintln!("{model} (HF dir) prompt {i}: max |Δlogit| {d:.3e} (max |logit| {scale:.1})");
        // The llama path keeps K/V and the query in f16 (llama.cpp's numerics), ~1e-3 relative.
        assert!(d <= 2e-3 * scale.max(1.0), "{model} prompt {i}: {d}");
        assert_eq!(
            argmax(&steps[0]),
            pr["last_position_logits"]["argmax"].as_u64().unwrap() as u32
        );
        assert_eq!(
            toks,
            ids(&pr["greedy"]["token_ids"]),
            "{model} prompt {i}: greedy tokens"
        );
    }
}

#[test]
fn llama_hf_dir_reproduces_the_smollm2_reference() {
    check(
        "smollm2.gguf",
        "smollm2-hf-reference.json",
        true,
        &[0, 1, 3],
    );
}

#[test]
fn qwen2_hf_dir_reproduces_the_qwen05_reference() {
    // qwen2: NEOX rope (no permutation), q/k/v biases, a separate lm_head.
    check("qwen05.gguf", "qwen05-hf-reference.json", false, &[0]);
}
