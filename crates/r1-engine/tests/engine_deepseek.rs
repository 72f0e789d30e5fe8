//! DeepSeek-V3 (MLA + MoE) through the batching engine: the tiny HF fixture's greedy tokens,
//! alone, all prompts at once, and again from the prefix cache.

use std::sync::Arc;

use r1_engine::block_pool::KvCacheMem;
use r1_engine::engine::{spawn_engine, EngineConfig, EngineEvent, GenerateRequest};
use r1_engine::tokenizer::Tokenizer;
use r1_model::testdata;

fn run(s: r1_engine::engine::RequestStream) -> (Vec<u32>, usize) {
    let mut s = s;
    let (mut toks, mut cached) = (Vec::new(), 0);
    while let Some(ev) = s.blocking_recv() {
        match ev {
            EngineEvent::Admitted { cached_tokens } => cached = cached_tokens,
            EngineEvent::Token { token, .. } => toks.push(token),
            EngineEvent::Finished { .. } => break,
            EngineEvent::Error(e) => panic!("engine error: {e}"),
        }
    }
    (toks, cached)
}

#[test]
fn tiny_deepseek_greedy_through_the_engine() {
    for variant in ["tiny-deepseek-v3", "tiny-deepseek-v3-yarn"] {
        let Some(dir) = testdata::fixture(variant) else {
            return;
        };
        let reference: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
                .unwrap();
        let model: Arc<dyn r1_model::Model> = Arc::from(r1_model::load_hf_dir(&dir, 2).unwrap());
        let tok = Arc::new(Tokenizer::from_hf_dir(&dir).unwrap());
        let cfg = EngineConfig {
            kv_cache_mem: KvCacheMem::Bytes(16 << 20),
            ..Default::default()
        };
        let (e, _) = spawn_engine(model, tok, cfg).unwrap();
        let ids = |v: &serde_json::Value| -> Vec<u32> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect()
        };
        let prompts = reference["prompts"].as_array().unwrap();
        let req = |p: &serde_json::Value| {
            let mut r = GenerateRequest::new(ids(&p["input_ids"]), 16);
            r.ignore_eos = true;
            r
        };
        // Alone: equal to HF's greedy tokens (f32 latents in the cache: the model asks for them).
        let alone: Vec<Vec<u32>> = prompts
            .iter()
            .map(|p| run(e.submit(req(p)).unwrap()).0)
            .collect();
        for (p, got) in prompts.iter().zip(&alone) {
            assert_eq!(
                got,
                &ids(&p["greedy"]["token_ids"]),
                "{variant} prompt {}",
                p["index"]
            );
        }
        // All at once, then again with the prompts in the prefix cache: same tokens.
        let streams: Vec<_> = prompts.iter().map(|p| e.submit(req(p)).unwrap()).collect();
        let together: Vec<(Vec<u32>, usize)> = streams.into_iter().map(run).collect();
        for (i, (t, _)) in together.iter().enumerate() {
            assert_eq!(t, &alone[i], "{variant} prompt {i} in a batch");
        }
        let long = prompts
            .iter()
            .max_by_key(|p| p["input_ids"].as_array().unwrap().len())
            .unwrap();
        let (again, cached) = run(e.submit(req(long)).unwrap());
        assert!(cached >= 96, "{variant}: only {cached} cached tokens");
        assert_eq!(again, ids(&long["greedy"]["token_ids"]));
        e.shutdown();
    }
}
