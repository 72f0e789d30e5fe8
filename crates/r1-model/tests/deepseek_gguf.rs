//! GGUF `deepseek2`: the tiny fixture converted the way llama.cpp's `convert_hf_to_gguf.py`
//! (`DeepseekV2Model`) does it — llama.cpp tensor names and metadata keys, experts stacked
//! into 3-D tensors, `kv_b_proj` split into `attn_k_b` (transposed per head) and `attn_v_b`
//! (or kept whole as in older conversions), yarn as `yarn_log_multiplier = 0.1·mscale_all_dim`
//! — written with our `GgufWriter`, loaded through `load_gguf`, and compared with the HF
//! reference logits and greedy tokens.

mod deepseek_support;

use std::collections::BTreeMap;
use std::path::Path;

use deepseek_support::*;
use r1_model::arch::deepseek_v3::{DeepSeekV3, Trace};
use r1_model::gguf::{GgufValue, GgufWriter};
use r1_model::load_gguf;
use r1_model::quant::{self, GgmlType};

#[derive(Clone, Copy)]
struct Opts {
    split_kv_b: bool,
    /// Quantize the matrices whose rows are whole Q8_0 blocks.
    q8: bool,
}

fn encode(ty: GgmlType, v: &[f32]) -> Vec<u8> {
    if ty == GgmlType::F32 {
        return v.iter().flat_map(|x| x.to_le_bytes()).collect();
    }
    let mut out = vec![0u8; ty.row_bytes(v.len()).unwrap()];
    quant::quantize_row(ty, v, &mut out).unwrap();
    out
}

/// Convert the fixture folder `src` to a deepseek2 GGUF at `dst`.
fn write_gguf(src: &Path, dst: &Path, o: Opts) {
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    let u = |k: &str| cfg[k].as_u64().unwrap();
    let all: BTreeMap<String, Vec<f32>> = read_raw(&src.join("model.safetensors"))
        .into_iter()
        .map(|(n, t)| (n, t.to_f32()))
        .collect();
    let (nh, dn, dv, r) = (
        u("num_attention_heads") as usize,
        u("qk_nope_head_dim") as usize,
        u("v_head_dim") as usize,
        u("kv_lora_rank") as usize,
    );
    let mut w = GgufWriter::new();
    let a = |k: &str| format!("deepseek2.{k}");
    w.set(
        "general.architecture",
        GgufValue::String("deepseek2".into()),
    );
    w.set("general.name", GgufValue::String("tiny-deepseek-v3".into()));
    for (k, v) in [
        ("block_count", u("num_hidden_layers")),
        ("context_length", u("max_position_embeddings")),
        ("embedding_length", u("hidden_size")),
        ("feed_forward_length", u("intermediate_size")),
        ("attention.head_count", u("num_attention_heads")),
        ("attention.head_count_kv", 1),
        ("rope.dimension_count", u("qk_rope_head_dim")),
        ("vocab_size", u("vocab_size")),
        ("leading_dense_block_count", u("first_k_dense_replace")),
        ("attention.q_lora_rank", u("q_lora_rank")),
        ("attention.kv_lora_rank", u("kv_lora_rank")),
        (
            "attention.key_length",
            u("kv_lora_rank") + u("qk_rope_head_dim"),
        ),
        ("attention.value_length", u("kv_lora_rank")),
        (
            "attention.key_length_mla",
            u("qk_nope_head_dim") + u("qk_rope_head_dim"),
        ),
        ("attention.value_length_mla", u("v_head_dim")),
        ("expert_feed_forward_length", u("moe_intermediate_size")),
        ("expert_count", u("n_routed_experts")),
        ("expert_used_count", u("num_experts_per_tok")),
        ("expert_shared_count", u("n_shared_experts")),
        ("expert_gating_func", 2),
        ("expert_group_count", u("n_group")),
        ("expert_group_used_count", u("topk_group")),
    ] {
        w.set(&a(k), GgufValue::U32(v as u32));
    }
    w.set(
        &a("attention.layer_norm_rms_epsilon"),
        GgufValue::F32(cfg["rms_norm_eps"].as_f64().unwrap() as f32),
    );
    w.set(
        &a("rope.freq_base"),
        GgufValue::F32(cfg["rope_theta"].as_f64().unwrap() as f32),
    );
    w.set(
        &a("expert_weights_scale"),
        GgufValue::F32(cfg["routed_scaling_factor"].as_f64().unwrap() as f32),
    );
    w.set(
        &a("expert_weights_norm"),
        GgufValue::Bool(cfg["norm_topk_prob"].as_bool().unwrap()),
    );
    if let Some(rs) = cfg["rope_scaling"].as_object() {
        w.set(&a("rope.scaling.type"), GgufValue::String("yarn".into()));
        w.set(
            &a("rope.scaling.factor"),
            GgufValue::F32(rs["factor"].as_f64().unwrap() as f32),
        );
        w.set(
            &a("rope.scaling.original_context_length"),
            GgufValue::U32(rs["original_max_position_embeddings"].as_u64().unwrap() as u32),
        );
        w.set(
            &a("rope.scaling.yarn_log_multiplier"),
            GgufValue::F32(0.1 * rs["mscale_all_dim"].as_f64().unwrap() as f32),
        );
    }
    let mut put = |name: &str, dims: &[usize], v: &[f32], quantizable: bool| {
        let ty = if o.q8 && quantizable && dims[0].is_multiple_of(32) {
            GgmlType::Q8_0
        } else {
            GgmlType::F32
        };
        let dims: Vec<u64> = dims.iter().map(|&d| d as u64).collect();
        w.tensor(name, ty, &dims, encode(ty, v));
    };
    let shape = |n: &str| -> Vec<usize> {
        let t = read_shape(src, n);
        t.into_iter().rev().collect()
    };
    put(
        "token_embd.weight",
        &shape("model.embed_tokens.weight"),
        &all["model.embed_tokens.weight"],
        false,
    );
    put(
        "output.weight",
        &shape("lm_head.weight"),
        &all["lm_head.weight"],
        true,
    );
    put(
        "output_norm.weight",
        &shape("model.norm.weight"),
        &all["model.norm.weight"],
        false,
    );
    for l in 0..u("num_hidden_layers") as usize {
        let hf = |s: &str| format!("model.layers.{l}.{s}");
        let gg = |s: &str| format!("blk.{l}.{s}");
        for (h, g, q) in [
            ("input_layernorm.weight", "attn_norm.weight", false),
            ("post_attention_layernorm.weight", "ffn_norm.weight", false),
            ("self_attn.q_a_proj.weight", "attn_q_a.weight", true),
            (
                "self_attn.q_a_layernorm.weight",
                "attn_q_a_norm.weight",
                false,
            ),
            ("self_attn.q_b_proj.weight", "attn_q_b.weight", true),
            (
                "self_attn.kv_a_proj_with_mqa.weight",
                "attn_kv_a_mqa.weight",
                true,
            ),
            (
                "self_attn.kv_a_layernorm.weight",
                "attn_kv_a_norm.weight",
                false,
            ),
            ("self_attn.o_proj.weight", "attn_output.weight", true),
            ("mlp.gate_proj.weight", "ffn_gate.weight", true),
            ("mlp.up_proj.weight", "ffn_up.weight", true),
            ("mlp.down_proj.weight", "ffn_down.weight", true),
            ("mlp.gate.weight", "ffn_gate_inp.weight", false),
            (
                "mlp.gate.e_score_correction_bias",
                "exp_probs_b.bias",
                false,
            ),
            (
                "mlp.shared_experts.gate_proj.weight",
                "ffn_gate_shexp.weight",
                true,
            ),
            (
                "mlp.shared_experts.up_proj.weight",
                "ffn_up_shexp.weight",
                true,
            ),
            (
                "mlp.shared_experts.down_proj.weight",
                "ffn_down_shexp.weight",
                true,
            ),
        ] {
            if let Some(v) = all.get(&hf(h)) {
                put(&gg(g), &shape(&hf(h)), v, q);
            }
        }
        let kv_b = &all[&hf("self_attn.kv_b_proj.weight")];
        if o.split_kv_b {
            let (mut kb, mut vb) = (Vec::new(), Vec::new());
            for h in 0..nh {
                let base = h * (dn + dv) * r;
                for j in 0..r {
                    for i in 0..dn {
                        kb.push(kv_b[base + i * r + j]);
                    }
                }
                vb.extend_from_slice(&kv_b[base + dn * r..base + (dn + dv) * r]);
            }
            put(&gg("attn_k_b.weight"), &[dn, r, nh], &kb, true);
            put(&gg("attn_v_b.weight"), &[r, dv, nh], &vb, true);
        } else {
            put(&gg("attn_kv_b.weight"), &[r, nh * (dn + dv)], kv_b, true);
        }
        if all.contains_key(&hf("mlp.experts.0.gate_proj.weight")) {
            let ne = u("n_routed_experts") as usize;
            for (p, g) in [
                ("gate_proj", "ffn_gate_exps"),
                ("up_proj", "ffn_up_exps"),
                ("down_proj", "ffn_down_exps"),
            ] {
                let mut st = Vec::new();
                for e in 0..ne {
                    st.extend_from_slice(&all[&hf(&format!("mlp.experts.{e}.{p}.weight"))]);
                }
                let mut dims = shape(&hf(&format!("mlp.experts.0.{p}.weight")));
                dims.push(ne);
                put(&gg(&format!("{g}.weight")), &dims, &st, true);
            }
        }
    }
    w.write(dst).unwrap();
}

fn read_shape(src: &Path, name: &str) -> Vec<usize> {
    thread_local! {
        static SHAPES: std::cell::RefCell<BTreeMap<(std::path::PathBuf, String), Vec<usize>>> = Default::default();
    }
    SHAPES.with(|s| {
        let mut s = s.borrow_mut();
        if s.is_empty() || !s.keys().any(|(p, _)| p == src) {
            for (n, t) in read_raw(&src.join("model.safetensors")) {
                s.insert((src.to_path_buf(), n), t.shape);
            }
        }
        s[&(src.to_path_buf(), name.to_string())].clone()
    })
}

fn check(variant: &str, o: Opts) {
    let Some(src) = fixture_dir(variant) else {
        return;
    };
    let r = Reference::load(&src);
    let tmp = temp_dir(&format!("gguf-{variant}-{}-{}", o.split_kv_b, o.q8));
    let path = tmp.0.join("tiny.gguf");
    write_gguf(&src, &path, o);
    let (_file, m) = load_gguf(&path, 2, &mut |_, _| {}).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(m.config().arch, "deepseek_v3");
    assert_eq!(m.kv_layout().k_width, 16 + 8);
    for i in 0..r.n_prompts() {
        let p = r.prompt_ids(i);
        let (toks, steps) = greedy(m.as_ref(), &p, 16);
        let (want, _) = r.tensor(&format!("prompt{i}.last_logits"));
        let d = max_abs_diff(&steps[0], &want);
        eprintln!(
            "{variant} split={} q8={} prompt {i}: max |Δlogit| {d:.2e}",
            o.split_kv_b, o.q8
        );
        assert!(d <= 1e-4, "{variant} prompt {i}: {d}");
        assert_eq!(toks, r.greedy_ids(i), "{variant} prompt {i}: greedy tokens");
    }
}

#[test]
fn gguf_split_k_b_v_b_matches_reference() {
    check(
        "tiny-deepseek-v3",
        Opts {
            split_kv_b: true,
            q8: false,
        },
    );
}

#[test]
fn gguf_legacy_kv_b_matches_reference() {
    check(
        "tiny-deepseek-v3",
        Opts {
            split_kv_b: false,
            q8: false,
        },
    );
}

#[test]
fn gguf_yarn_keys_match_reference() {
    check(
        "tiny-deepseek-v3-yarn",
        Opts {
            split_kv_b: true,
            q8: false,
        },
    );
}

#[test]
fn gguf_q8_0_runs_the_quantized_kernels() {
    // Q8_0 weights with Q8_0-quantized activations (as llama.cpp computes): ~0.4% relative
    // noise per matmul. Routing decisions with margins below that flip (this fixture's go down
    // to 3e-4) and move the logits by O(1), so the bound is checked with the f32 model's expert
    // choices imposed (weights from the Q8_0 model's own scores); flips are printed.
    let Some(src) = fixture_dir("tiny-deepseek-v3") else {
        return;
    };
    let r = Reference::load(&src);
    let tmp = temp_dir("gguf-q8");
    let path = tmp.0.join("tiny-q8.gguf");
    write_gguf(
        &src,
        &path,
        Opts {
            split_kv_b: true,
            q8: true,
        },
    );
    let file = std::sync::Arc::new(r1_model::gguf::GgufFile::open(&path).unwrap());
    assert!(file.tensors().iter().any(|t| t.ty == GgmlType::Q8_0));
    let q8 = DeepSeekV3::from_gguf(&file, 2).unwrap();
    let f32_model = load_model(&src, r1_model::WeightDtype::Native);
    // As the server opens it: Q8_0 matrices interleaved for the x16 kernels where this CPU
    // has them (another summation order: equal up to rounding, with the same routing).
    let (served, _) = r1_model::arch::open_gguf_for_serving(&path).unwrap();
    let n_x16 = served
        .tensors()
        .iter()
        .filter(|t| t.layout == quant::WeightLayout::Interleaved16)
        .count();
    let x16_model =
        (n_x16 > 0).then(|| DeepSeekV3::from_gguf(&std::sync::Arc::new(served), 2).unwrap());
    if x16_model.is_none() {
        eprintln!("q8_0: no x16 kernel for Q8_0 on this CPU; interleaved check skipped");
    }
    for i in 0..r.n_prompts() {
        let p = r.prompt_ids(i);
        let mut reference = Trace::default();
        prefill_logits(&f32_model, &p, Some(&mut reference));
        let mut forced = Trace {
            force_experts: reference
                .routing
                .iter()
                .map(|(l, t)| {
                    (
                        *l,
                        t.iter().map(|x| x.iter().map(|e| e.0).collect()).collect(),
                    )
                })
                .collect(),
            ..Trace::default()
        };
        let got = prefill_logits(&q8, &p, Some(&mut forced));
        let mut free = Trace::default();
        let unforced = prefill_logits(&q8, &p, Some(&mut free));
        let flips: usize = free
            .routing
            .iter()
            .zip(&reference.routing)
            .map(|((_, a), (_, b))| {
                a.iter()
                    .zip(b)
                    .filter(|(x, y)| x.iter().map(|e| e.0).ne(y.iter().map(|e| e.0)))
                    .count()
            })
            .sum();
        let (want, _) = r.tensor(&format!("prompt{i}.last_logits"));
        let d = max_abs_diff(&got, &want);
        eprintln!(
            "q8_0 prompt {i}: max |Δlogit| {d:.3e} with f32 routing; {flips} flips, unforced {:.3e}",
            max_abs_diff(&unforced, &want)
        );
        assert!(d <= 0.25, "q8_0 prompt {i}: {d}");
        if let Some(m) = &x16_model {
            let mut forced_again = Trace {
                force_experts: forced.force_experts.clone(),
                ..Trace::default()
            };
            let x = prefill_logits(m, &p, Some(&mut forced_again));
            let dx = max_abs_diff(&x, &got);
            eprintln!(
                "q8_0 prompt {i}: {n_x16} interleaved tensors, max |Δlogit| vs native {dx:.3e}"
            );
            assert!(dx <= 2e-3, "q8_0 interleaved prompt {i}: {dx}");
        }
    }
}

#[test]
fn broken_deepseek2_gguf_gets_errors_not_panics() {
    let tmp = temp_dir("gguf-broken");
    let write = |name: &str, kv_lora: u32| {
        let mut w = GgufWriter::new();
        w.set(
            "general.architecture",
            GgufValue::String("deepseek2".into()),
        );
        for (k, v) in [
            ("block_count", 2u32),
            ("context_length", 64),
            ("embedding_length", 64),
            ("feed_forward_length", 128),
            ("attention.head_count", 4),
            ("rope.dimension_count", 8),
            ("vocab_size", 100),
            ("attention.kv_lora_rank", kv_lora),
            ("attention.key_length_mla", 24),
            ("attention.value_length_mla", 16),
        ] {
            w.set(&format!("deepseek2.{k}"), GgufValue::U32(v));
        }
        let p = tmp.0.join(name);
        w.write(&p).unwrap();
        p
    };
    let msg = |p: &Path| match load_gguf(p, 1, &mut |_, _| {}) {
        Ok(_) => panic!("{} loaded", p.display()),
        Err(e) => e.to_string(),
    };
    let e = msg(&write("zero-rank.gguf", 0));
    assert!(
        e.contains("zero-rank.gguf") && e.contains("kv_lora_rank"),
        "{e}"
    );
    let e = msg(&write("no-tensors.gguf", 16));
    assert!(
        e.contains("no-tensors.gguf") && e.contains("token_embd.weight"),
        "{e}"
    );
    eprintln!("ok: {e}");
}
