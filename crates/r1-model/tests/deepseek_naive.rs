//! Paths the HF fixtures do not cover, checked against a from-scratch float64 forward
//! written here straight from the fixture README's "Computation" section and the original
//! `modeling_deepseek.py` (no cache, per-head K/V materialised, no weight absorption):
//! * `q_lora_rank = null` (DeepSeek-V2-Lite's single `q_proj`);
//! * DeepSeek-V2 routing (softmax scores, `group_limited_greedy` = group max, no bias,
//!   scaling only without normalisation).
//!
//! The float64 forward is first checked against the HF reference on the fixture itself.

mod deepseek_support;

use std::collections::BTreeMap;
use std::path::Path;

use deepseek_support::*;
use r1_model::WeightDtype;
use serde_json::Value;

struct Naive {
    cfg: Value,
    w: BTreeMap<String, Vec<f64>>,
}

fn u(c: &Value, k: &str) -> usize {
    c[k].as_u64().unwrap_or_else(|| panic!("{k}")) as usize
}

impl Naive {
    fn load(dir: &Path) -> Naive {
        let cfg: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap())
                .unwrap();
        let w = read_raw(&dir.join("model.safetensors"))
            .into_iter()
            .map(|(n, t)| (n, t.to_f32().into_iter().map(f64::from).collect()))
            .collect();
        Naive { cfg, w }
    }

    fn t(&self, n: &str) -> &[f64] {
        self.w.get(n).unwrap_or_else(|| panic!("{n}"))
    }

    /// `W[out, in] · x` for every row of `x`.
    fn lin(&self, n: &str, x: &[Vec<f64>]) -> Vec<Vec<f64>> {
        let w = self.t(n);
        let cols = x[0].len();
        let rows = w.len() / cols;
        x.iter()
            .map(|v| {
                (0..rows)
                    .map(|r| (0..cols).map(|c| w[r * cols + c] * v[c]).sum())
                    .collect()
            })
            .collect()
    }

    fn rms(&self, n: &str, x: &[Vec<f64>]) -> Vec<Vec<f64>> {
        let (w, eps) = (self.t(n), self.cfg["rms_norm_eps"].as_f64().unwrap());
        x.iter()
            .map(|v| {
                let s = 1.0 / (v.iter().map(|a| a * a).sum::<f64>() / v.len() as f64 + eps).sqrt();
                v.iter().zip(w).map(|(a, g)| a * s * g).collect()
            })
            .collect()
    }

    fn mlp(&self, p: &str, x: &[Vec<f64>]) -> Vec<Vec<f64>> {
        let g = self.lin(&format!("{p}.gate_proj.weight"), x);
        let up = self.lin(&format!("{p}.up_proj.weight"), x);
        let h: Vec<Vec<f64>> = g
            .iter()
            .zip(&up)
            .map(|(a, b)| {
                a.iter()
                    .zip(b)
                    .map(|(x, y)| x / (1.0 + (-x).exp()) * y)
                    .collect()
            })
            .collect();
        self.lin(&format!("{p}.down_proj.weight"), &h)
    }

    fn rope(v: &mut [f64], pos: usize, base: f64) {
        let d = v.len();
        for i in 0..d / 2 {
            let a = pos as f64 * base.powf(-((2 * i) as f64) / d as f64);
            let (x, y) = (v[2 * i], v[2 * i + 1]);
            v[2 * i] = x * a.cos() - y * a.sin();
            v[2 * i + 1] = x * a.sin() + y * a.cos();
        }
    }

    /// Selected experts and weights for one token, per the original V2/V3 MoEGate.
    fn gate(&self, l: usize, logits: &[f64]) -> Vec<(usize, f64)> {
        let c = &self.cfg;
        let v3 = c["architectures"][0] == "DeepseekV3ForCausalLM";
        let (ne, ng, tg, k) = (
            logits.len(),
            u(c, "n_group"),
            u(c, "topk_group"),
            u(c, "num_experts_per_tok"),
        );
        let s: Vec<f64> = if c["scoring_func"] == "sigmoid" {
            logits.iter().map(|x| 1.0 / (1.0 + (-x).exp())).collect()
        } else {
            let m = logits.iter().cloned().fold(f64::MIN, f64::max);
            let z: f64 = logits.iter().map(|x| (x - m).exp()).sum();
            logits.iter().map(|x| (x - m).exp() / z).collect()
        };
        let noaux = c["topk_method"] == "noaux_tc";
        let sfc: Vec<f64> = if noaux {
            let b = self.t(&format!(
                "model.layers.{l}.mlp.gate.e_score_correction_bias"
            ));
            s.iter().zip(b).map(|(a, b)| a + b).collect()
        } else {
            s.clone()
        };
        let pg = ne / ng;
        let mut gs: Vec<(f64, usize)> = (0..ng)
            .map(|g| {
                let mut v: Vec<f64> = sfc[g * pg..(g + 1) * pg].to_vec();
                v.sort_by(|a, b| b.total_cmp(a));
                (if noaux { v[0] + v[1] } else { v[0] }, g)
            })
            .collect();
        gs.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut cand: Vec<(f64, usize)> = gs[..tg]
            .iter()
            .flat_map(|&(_, g)| (g * pg..(g + 1) * pg).map(|e| (sfc[e], e)))
            .collect();
        cand.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut w: Vec<(usize, f64)> = cand[..k].iter().map(|&(_, e)| (e, s[e])).collect();
        let rsf = c["routed_scaling_factor"].as_f64().unwrap_or(1.0);
        let norm = k > 1 && c["norm_topk_prob"].as_bool().unwrap_or(false);
        if norm {
            let z: f64 = w.iter().map(|x| x.1).sum::<f64>() + 1e-20;
            w.iter_mut().for_each(|x| x.1 /= z);
        }
        if v3 || !norm {
            w.iter_mut().for_each(|x| x.1 *= rsf);
        }
        w
    }

    /// Logits at every position of `ids` (no cache).
    fn forward(&self, ids: &[u32]) -> Vec<Vec<f64>> {
        let c = &self.cfg;
        let (d, nh) = (u(c, "hidden_size"), u(c, "num_attention_heads"));
        let (dn, dr, dv, r) = (
            u(c, "qk_nope_head_dim"),
            u(c, "qk_rope_head_dim"),
            u(c, "v_head_dim"),
            u(c, "kv_lora_rank"),
        );
        let base = c["rope_theta"].as_f64().unwrap();
        let scale = ((dn + dr) as f64).powf(-0.5);
        let t = ids.len();
        let emb = self.t("model.embed_tokens.weight");
        let mut x: Vec<Vec<f64>> = ids
            .iter()
            .map(|&i| emb[i as usize * d..(i as usize + 1) * d].to_vec())
            .collect();
        for l in 0..u(c, "num_hidden_layers") {
            let p = |s: &str| format!("model.layers.{l}.{s}");
            let h = self.rms(&p("input_layernorm.weight"), &x);
            let q = if c["q_lora_rank"].is_null() {
                self.lin(&p("self_attn.q_proj.weight"), &h)
            } else {
                let qa = self.rms(
                    &p("self_attn.q_a_layernorm.weight"),
                    &self.lin(&p("self_attn.q_a_proj.weight"), &h),
                );
                self.lin(&p("self_attn.q_b_proj.weight"), &qa)
            };
            let ckv = self.lin(&p("self_attn.kv_a_proj_with_mqa.weight"), &h);
            let lat: Vec<Vec<f64>> = ckv.iter().map(|v| v[..r].to_vec()).collect();
            let kv = self.lin(
                &p("self_attn.kv_b_proj.weight"),
                &self.rms(&p("self_attn.kv_a_layernorm.weight"), &lat),
            );
            let kpe: Vec<Vec<f64>> = ckv
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let mut k = v[r..].to_vec();
                    Self::rope(&mut k, i, base);
                    k
                })
                .collect();
            let mut attn = vec![vec![0.0; nh * dv]; t];
            for hh in 0..nh {
                for i in 0..t {
                    let qo = hh * (dn + dr);
                    let mut qpe = q[i][qo + dn..qo + dn + dr].to_vec();
                    Self::rope(&mut qpe, i, base);
                    let sc: Vec<f64> = (0..=i)
                        .map(|j| {
                            let ko = hh * (dn + dv);
                            let nope: f64 = (0..dn).map(|e| q[i][qo + e] * kv[j][ko + e]).sum();
                            let pe: f64 = (0..dr).map(|e| qpe[e] * kpe[j][e]).sum();
                            (nope + pe) * scale
                        })
                        .collect();
                    let m = sc.iter().cloned().fold(f64::MIN, f64::max);
                    let z: f64 = sc.iter().map(|s| (s - m).exp()).sum();
                    for (j, s) in sc.iter().enumerate() {
                        let pw = (s - m).exp() / z;
                        for e in 0..dv {
                            attn[i][hh * dv + e] += pw * kv[j][hh * (dn + dv) + dn + e];
                        }
                    }
                }
            }
            let o = self.lin(&p("self_attn.o_proj.weight"), &attn);
            x.iter_mut()
                .zip(&o)
                .for_each(|(a, b)| a.iter_mut().zip(b).for_each(|(x, y)| *x += y));
            let h = self.rms(&p("post_attention_layernorm.weight"), &x);
            let moe = l >= u(c, "first_k_dense_replace") && l % u(c, "moe_layer_freq") == 0;
            let out = if !moe {
                self.mlp(&p("mlp"), &h)
            } else {
                let logits = self.lin(&p("mlp.gate.weight"), &h);
                let mut out = self.mlp(&p("mlp.shared_experts"), &h);
                for i in 0..t {
                    for (e, w) in self.gate(l, &logits[i]) {
                        let y = self.mlp(&p(&format!("mlp.experts.{e}")), &h[i..i + 1]);
                        out[i].iter_mut().zip(&y[0]).for_each(|(a, b)| *a += w * b);
                    }
                }
                out
            };
            x.iter_mut()
                .zip(&out)
                .for_each(|(a, b)| a.iter_mut().zip(b).for_each(|(x, y)| *x += y));
        }
        self.lin("lm_head.weight", &self.rms("model.norm.weight", &x))
    }
}

fn compare(dir: &Path, naive: &Naive, prompts: &[Vec<u32>], what: &str) {
    let m = load_model(dir, WeightDtype::Native);
    for (i, p) in prompts.iter().enumerate() {
        // Logits of the prefill and of the three cached decode steps.
        let (got, ours) = greedy(&m, p, 4);
        let mut seq = p.clone();
        seq.extend(&got[..3]);
        let all = naive.forward(&seq);
        for (s, o) in ours.iter().enumerate() {
            let want: Vec<f32> = all[p.len() - 1 + s].iter().map(|&v| v as f32).collect();
            let d = max_abs_diff(o, &want);
            assert!(d <= 1e-4, "{what} prompt {i} step {s}: max |Δlogit| {d}");
            assert_eq!(
                argmax(o),
                argmax(&want),
                "{what} prompt {i} step {s}: argmax"
            );
        }
        eprintln!("{what} prompt {i}: 4 greedy steps match the float64 forward");
    }
}

#[test]
fn float64_forward_matches_the_hf_reference() {
    let Some(dir) = fixture_dir("tiny-deepseek-v3") else {
        return;
    };
    let r = Reference::load(&dir);
    let naive = Naive::load(&dir);
    for i in [0, 2] {
        let logits = naive.forward(&r.prompt_ids(i));
        let got: Vec<f32> = logits.last().unwrap().iter().map(|&v| v as f32).collect();
        let (want, _) = r.tensor(&format!("prompt{i}.last_logits"));
        let d = max_abs_diff(&got, &want);
        assert!(d <= 2e-5, "float64 forward vs HF: {d}");
    }
}

/// Deterministic N(0, 1/cols)-ish values (a sum of uniforms from an LCG).
fn random_matrix(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    let mut uni = || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    (0..rows * cols)
        .map(|_| (uni() + uni() + uni() + uni()) * (3.0 / cols as f32).sqrt())
        .collect()
}

#[test]
fn q_proj_without_low_rank_matches_float64() {
    let Some(src) = fixture_dir("tiny-deepseek-v3") else {
        return;
    };
    let r = Reference::load(&src);
    let mut all = read_raw(&src.join("model.safetensors"));
    all.retain(|n, _| {
        !n.contains("q_a_proj") && !n.contains("q_a_layernorm") && !n.contains("q_b_proj")
    });
    for l in 0..3 {
        all.insert(
            format!("model.layers.{l}.self_attn.q_proj.weight"),
            RawTensor::from_f32(&[96, 64], &random_matrix(96, 64, 7 + l as u64)),
        );
    }
    let tmp = temp_dir("qproj");
    write_raw(&tmp.0.join("model.safetensors"), &all);
    write_config(&src, &tmp.0, |c| c["q_lora_rank"] = Value::Null);
    let naive = Naive::load(&tmp.0);
    let prompts: Vec<Vec<u32>> = (0..4).map(|i| r.prompt_ids(i)).collect();
    compare(&tmp.0, &naive, &prompts, "q_proj");
}

#[test]
fn deepseek_v2_routing_matches_float64() {
    let Some(src) = fixture_dir("tiny-deepseek-v3") else {
        return;
    };
    let r = Reference::load(&src);
    let tmp = temp_dir("v2");
    let all = read_raw(&src.join("model.safetensors"));
    write_raw(&tmp.0.join("model.safetensors"), &all);
    for (tag, method, norm) in [
        ("v2-glg", "group_limited_greedy", false),
        ("v2-greedy-norm", "greedy", true),
    ] {
        write_config(&src, &tmp.0, |c| {
            c["architectures"] = serde_json::json!(["DeepseekV2ForCausalLM"]);
            c["scoring_func"] = "softmax".into();
            c["topk_method"] = method.into();
            c["norm_topk_prob"] = norm.into();
            c["routed_scaling_factor"] = 16.0.into();
            if method == "greedy" {
                c["n_group"] = 1.into();
                c["topk_group"] = 1.into();
            }
        });
        let naive = Naive::load(&tmp.0);
        let prompts: Vec<Vec<u32>> = (0..3).map(|i| r.prompt_ids(i)).collect();
        compare(&tmp.0, &naive, &prompts, tag);
    }
}
