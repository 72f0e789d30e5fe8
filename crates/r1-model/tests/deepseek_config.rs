//! DeepSeek config handling: KV-cache bytes per token with the real R1 values, the MTP layer
//! of a checkpoint recognised and skipped.

mod deepseek_support;

use std::path::Path;

use deepseek_support::*;
use r1_model::arch::deepseek_v3::{DeepSeekConfig, DeepSeekV3};
use r1_model::hf::HfConfig;
use r1_model::{HfDir, Model, WeightDtype};

/// `config.json` of deepseek-ai/DeepSeek-R1 (same architecture values as DeepSeek-V3).
const R1_CONFIG: &str = r#"{
  "architectures": ["DeepseekV3ForCausalLM"],
  "attention_bias": false, "attention_dropout": 0.0, "aux_loss_alpha": 0.001,
  "bos_token_id": 0, "eos_token_id": 1, "ep_size": 1, "first_k_dense_replace": 3,
  "hidden_act": "silu", "hidden_size": 7168, "initializer_range": 0.02,
  "intermediate_size": 18432, "kv_lora_rank": 512, "max_position_embeddings": 163840,
  "model_type": "deepseek_v3", "moe_intermediate_size": 2048, "moe_layer_freq": 1,
  "n_group": 8, "n_routed_experts": 256, "n_shared_experts": 1, "norm_topk_prob": true,
  "num_attention_heads": 128, "num_experts_per_tok": 8, "num_hidden_layers": 61,
  "num_key_value_heads": 128, "num_nextn_predict_layers": 1, "q_lora_rank": 1536,
  "qk_nope_head_dim": 128, "qk_rope_head_dim": 64,
  "quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3",
                          "quant_method": "fp8", "weight_block_size": [128, 128]},
  "rms_norm_eps": 1e-06,
  "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 1.0,
                   "mscale_all_dim": 1.0, "original_max_position_embeddings": 4096,
                   "type": "yarn"},
  "rope_theta": 10000, "routed_scaling_factor": 2.5, "scoring_func": "sigmoid",
  "seq_aux": true, "tie_word_embeddings": false, "topk_group": 4, "topk_method": "noaux_tc",
  "torch_dtype": "bfloat16", "transformers_version": "4.46.3", "use_cache": true,
  "v_head_dim": 128, "vocab_size": 129280
}"#;

#[test]
fn r1_kv_cache_bytes_per_token() {
    let cfg = HfConfig::parse(Path::new("DeepSeek-R1/config.json"), R1_CONFIG).unwrap();
    let c = DeepSeekConfig::from_hf(&cfg).unwrap();
    let bf16 = 2;
    let latent = c.kv_layout().bytes_per_token(bf16);
    assert_eq!(latent, (512 + 64) * 2 * 61);
    assert_eq!(latent, 70_272);
    let per_head = c.per_head_kv_layout().bytes_per_token(bf16);
    assert_eq!(per_head, 128 * ((128 + 64) + 128) * 2 * 61);
    let ratio = per_head as f64 / latent as f64;
    eprintln!(
        "R1 KV cache per token: latent {latent} B ({:.1} KiB) vs per-head K/V {per_head} B ({:.2} MiB): {ratio:.1}x smaller",
        latent as f64 / 1024.0,
        per_head as f64 / (1024.0 * 1024.0)
    );
    assert!((ratio - 71.11).abs() < 0.01);
    // The other R1 values the forward depends on.
    assert!(c.is_moe_layer(3) && !c.is_moe_layer(2));
    assert_eq!((c.n_group, c.topk_group, c.num_experts_per_tok), (8, 4, 8));
    let m = r1_model::rope_yarn::yarn_get_mscale(40.0, 1.0);
    assert!((c.softmax_scale() as f64 - m * m / 192f64.sqrt()).abs() < 1e-7);
    assert_eq!(c.model_config("r1").context_length, 163_840);
}

#[test]
fn mtp_layer_is_recognised_and_skipped() {
    let Some(src) = fixture_dir("tiny-deepseek-v3") else {
        return;
    };
    let r = Reference::load(&src);
    let mut all = read_raw(&src.join("model.safetensors"));
    // An MTP block as DeepSeek-V3 ships it: layer index = num_hidden_layers, a full decoder
    // layer plus enorm/hnorm/eh_proj and its own embedding and head.
    let layer2: Vec<(String, RawTensor)> = all
        .iter()
        .filter(|(n, _)| n.starts_with("model.layers.2."))
        .map(|(n, t)| (n.replace("model.layers.2.", "model.layers.3."), t.clone()))
        .collect();
    let n_mtp = layer2.len() + 6;
    all.extend(layer2);
    let norm = all["model.norm.weight"].clone();
    for n in ["enorm", "hnorm", "shared_head.norm"] {
        all.insert(format!("model.layers.3.{n}.weight"), norm.clone());
    }
    all.insert(
        "model.layers.3.eh_proj.weight".into(),
        RawTensor::from_f32(&[64, 128], &[0.01; 64 * 128]),
    );
    all.insert(
        "model.layers.3.embed_tokens.weight".into(),
        all["model.embed_tokens.weight"].clone(),
    );
    all.insert(
        "model.layers.3.shared_head.head.weight".into(),
        all["lm_head.weight"].clone(),
    );
    let tmp = temp_dir("mtp");
    write_raw(&tmp.0.join("model.safetensors"), &all);
    write_config(&src, &tmp.0, |c| c["num_nextn_predict_layers"] = 1.into());

    let hf = HfDir::open(&tmp.0).unwrap();
    let with_mtp = DeepSeekV3::from_hf(&hf, 2, WeightDtype::Native).unwrap();
    let plain = load_model(&src, WeightDtype::Native);
    assert_eq!(with_mtp.skipped_mtp_tensors(), n_mtp);
    assert_eq!(plain.skipped_mtp_tensors(), 0);
    assert_eq!(with_mtp.n_params(), plain.n_params());
    assert_eq!(with_mtp.config().n_layers, 3);
    let p = r.prompt_ids(0);
    assert_eq!(
        prefill_logits(&with_mtp, &p, None),
        prefill_logits(&plain, &p, None)
    );
}
