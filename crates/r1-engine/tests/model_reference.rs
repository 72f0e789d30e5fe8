//! The forward pass against references no one here wrote: llama.cpp's greedy generations
//! (token ids) and HF transformers' logits, on the two real test models.

use std::path::Path;

use r1_engine::sampler::argmax;
use r1_engine::session::Session;
use r1_model::testdata;
use serde_json::Value;

const MARGIN: f64 = 0.05;

fn load(name: &str) -> Option<Box<dyn r1_model::Model>> {
    let path = testdata::model(&format!("{name}.gguf"))?;
    let (_, m) = r1_model::load_gguf(&path, 2, &mut |_, _| {}).expect("model loads");
    Some(m)
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// llama.cpp's top-1/top-2 logprob margin at each generated step.
fn margins(result: &Value) -> Vec<f64> {
    result["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let top = s["top5"].as_array().unwrap();
            top[0]["logprob"].as_f64().unwrap() - top[1]["logprob"].as_f64().unwrap()
        })
        .collect()
}

fn greedy(session: &mut Session, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut logits = session.feed(prompt, 512).unwrap();
    let mut out = Vec::new();
    for _ in 0..n {
        let t = argmax(&logits);
        out.push(t);
        logits = session.feed(&[t], 1).unwrap();
    }
    out
}

fn greedy_vs_llamacpp(name: &str) {
    let Some(model) = load(name) else { return };
    let Some(fx) = testdata::fixture(&format!("llamacpp/{name}.json")) else {
        return;
    };
    let fx = json(&fx);
    for r in fx["results"].as_array().unwrap() {
        let prompt = ids(&r["prompt_token_ids_no_special"]);
        let want = ids(&r["generated_token_ids"]);
        let m = margins(r);
        let mut s = Session::new(model.as_ref(), 256);
        let got = greedy(&mut s, &prompt, want.len());
        match got.iter().zip(&want).position(|(a, b)| a != b) {
            None => eprintln!(
                "{name} {}: all {} tokens equal llama.cpp",
                r["prompt"],
                want.len()
            ),
            Some(i) => {
                eprintln!(
                    "{name} {}: diverges at step {i} (llama.cpp margin {:.4}); all before it equal",
                    r["prompt"], m[i]
                );
                assert!(
                    m[i] < MARGIN,
                    "{name} {}: step {i} differs (ours {} vs llama.cpp {}) where llama.cpp's margin is {:.4} >= {MARGIN}\nours: {got:?}\nwant: {want:?}",
                    r["prompt"], got[i], want[i], m[i]
                );
            }
        }
    }
}

fn teacher_forced_vs_llamacpp(name: &str) {
    let Some(model) = load(name) else { return };
    let Some(fx) = testdata::fixture(&format!("llamacpp/{name}.json")) else {
        return;
    };
    let fx = json(&fx);
    for r in fx["results"].as_array().unwrap() {
        let prompt = ids(&r["prompt_token_ids_no_special"]);
        let gen = ids(&r["generated_token_ids"]);
        let m = margins(r);
        let mut seq = prompt.clone();
        seq.extend_from_slice(&gen[..gen.len() - 1]);
        let mut s = Session::new(model.as_ref(), 256);
        let all = s.feed_all_logits(&seq, 512, true).unwrap();
        let mut checked = 0;
        for (step, want) in gen.iter().enumerate() {
            let ours = argmax(&all[prompt.len() - 1 + step]);
            if m[step] > MARGIN {
                assert_eq!(
                    ours, *want,
                    "{name} {}: teacher-forced step {step} (margin {:.4})",
                    r["prompt"], m[step]
                );
                checked += 1;
            }
        }
        eprintln!(
            "{name} {}: {checked} confident steps, all equal",
            r["prompt"]
        );
        assert!(checked > 10);
    }
}

fn hf_last_logits(name: &str) {
    let Some(model) = load(name) else { return };
    let Some(refp) = testdata::fixture(&format!("{name}-hf-reference.json")) else {
        return;
    };
    let Some(tp) = testdata::fixture(&format!("{name}-hf-reference-tensors.safetensors")) else {
        return;
    };
    let reference = json(&refp);
    let tbytes = std::fs::read(tp).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&tbytes).unwrap();
    let mut worst = 0f32;
    for p in reference["prompts"].as_array().unwrap() {
        let prompt = ids(&p["input_ids"]);
        let mut s = Session::new(model.as_ref(), 256);
        let ours = s.feed(&prompt, 512).unwrap();
        let top: Vec<u32> = ids(&p["last_position_logits"]["top_ids"]);
        let t = tensors
            .tensor(p["full_last_logits_tensor"].as_str().unwrap())
            .unwrap();
        let full: Vec<f32> = t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert_eq!(full.len(), ours.len());
        let diff = full
            .iter()
            .zip(&ours)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        worst = worst.max(diff);
        let mut order: Vec<u32> = (0..ours.len() as u32).collect();
        order.sort_by(|a, b| ours[*b as usize].total_cmp(&ours[*a as usize]));
        let shared = order[..5].iter().filter(|i| top[..5].contains(i)).count();
        eprintln!(
            "{name} prompt {}: top-1 {} (HF {}), {shared}/5 of top-5 shared, max |dlogit| {diff:.4}",
            p["index"], order[0], top[0]
        );
        assert_eq!(
            order[0], top[0],
            "{name} prompt {}: top-1 differs",
            p["index"]
        );
        assert!(
            shared >= 4,
            "{name} prompt {}: only {shared} of top-5 shared",
            p["index"]
        );
    }
    eprintln!(
        "{name}: max abs logit difference vs HF transformers (f32, dequantized weights): {worst:.4}"
    );
}

/// Chunked prefill must give bit-identical logits: the batch-invariance rule.
fn chunking_is_invisible(name: &str) {
    let Some(model) = load(name) else { return };
    let prompt: Vec<u32> = (0..70u32).map(|i| 100 + i * 37 % 900).collect();
    let mut reference = None;
    for chunk in [512, 64, 7, 1] {
        let mut s = Session::new(model.as_ref(), 128);
        let logits = s.feed(&prompt, chunk).unwrap();
        match &reference {
            None => reference = Some(logits),
            Some(r) => assert!(
                r.iter()
                    .zip(&logits)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{name}: chunk size {chunk} changed the logits"
            ),
        }
    }
}

#[test]
fn smollm2_greedy_matches_llamacpp() {
    greedy_vs_llamacpp("smollm2");
}
#[test]
fn qwen05_greedy_matches_llamacpp() {
    greedy_vs_llamacpp("qwen05");
}
#[test]
fn smollm2_teacher_forced_matches_llamacpp() {
    teacher_forced_vs_llamacpp("smollm2");
}
#[test]
fn qwen05_teacher_forced_matches_llamacpp() {
    teacher_forced_vs_llamacpp("qwen05");
}
#[test]
fn smollm2_last_logits_match_hf() {
    hf_last_logits("smollm2");
}
#[test]
fn qwen05_last_logits_match_hf() {
    hf_last_logits("qwen05");
}
#[test]
fn smollm2_chunked_prefill_is_bit_identical() {
    chunking_is_invisible("smollm2");
}
#[test]
fn qwen05_chunked_prefill_is_bit_identical() {
    chunking_is_invisible("qwen05");
}
