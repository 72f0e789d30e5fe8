//! The batching engine on a real model: output must not depend on what else is in the batch,
//! on prefix-cache hits, on prefill chunking, or on preemption.

use std::sync::Arc;

use r1_engine::block_pool::KvCacheMem;
use r1_engine::engine::{
    spawn_engine, EngineConfig, EngineError, EngineEvent, EngineHandle, Finish, GenerateRequest,
};
use r1_engine::sampler::argmax;
use r1_engine::scheduler::SchedError;
use r1_engine::session::Session;
use r1_engine::tokenizer::Tokenizer;
use r1_model::testdata;

struct Loaded {
    model: Arc<dyn r1_model::Model>,
    tok: Arc<Tokenizer>,
}

fn load(name: &str) -> Option<Loaded> {
    let path = testdata::model(&format!("{name}.gguf"))?;
    let (file, model) = r1_model::load_gguf(&path, 2, &mut |_, _| {}).unwrap();
    let tok = Tokenizer::from_gguf(&file).unwrap();
    Some(Loaded {
        model: Arc::from(model),
        tok: Arc::new(tok),
    })
}

fn engine(l: &Loaded, f: impl FnOnce(&mut EngineConfig)) -> EngineHandle {
    let mut cfg = EngineConfig {
        kv_cache_mem: KvCacheMem::Bytes(64 << 20),
        ..Default::default()
    };
    f(&mut cfg);
    spawn_engine(l.model.clone(), l.tok.clone(), cfg).unwrap().0
}

#[derive(Debug, Default, Clone, PartialEq)]
struct Output {
    tokens: Vec<u32>,
    text: String,
    finish: Option<Finish>,
    cached: usize,
}

fn collect(mut s: r1_engine::engine::RequestStream) -> Output {
    let mut o = Output::default();
    while let Some(ev) = s.blocking_recv() {
        match ev {
            EngineEvent::Admitted { cached_tokens } => o.cached = cached_tokens,
            EngineEvent::Token { token, text, .. } => {
                o.tokens.push(token);
                o.text.push_str(&text);
            }
            EngineEvent::Finished { reason, text, .. } => {
                o.text.push_str(&text);
                o.finish = Some(reason);
                break;
            }
            EngineEvent::Error(e) => panic!("engine error: {e}"),
        }
    }
    o
}

fn greedy_req(prompt: Vec<u32>, n: usize) -> GenerateRequest {
    let mut r = GenerateRequest::new(prompt, n);
    r.ignore_eos = true;
    r
}

fn prompts(l: &Loaded) -> Vec<Vec<u32>> {
    let texts = [
        "The capital of France is",
        "def fibonacci(n):",
        "Once upon a time",
        "In the early morning the harbour was quiet, and the fishing boats rocked gently against the pier while gulls circled overhead looking for scraps.",
        "你好，世界",
        "List three prime numbers:",
        "import numpy as np\nx = np.arange(10)\n",
        "Q: What is 2+2?\nA:",
    ];
    texts
        .iter()
        .map(|t| l.tok.encode(t, false, false).unwrap())
        .collect()
}

/// Reference: the same greedy loop on a plain session, outside the engine.
fn session_greedy(l: &Loaded, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut s = Session::new(l.model.as_ref(), 512);
    let mut logits = s.feed(prompt, 512).unwrap();
    let mut out = Vec::new();
    for _ in 0..n {
        let t = argmax(&logits);
        out.push(t);
        logits = s.feed(&[t], 1).unwrap();
    }
    out
}

#[test]
fn greedy_output_is_the_same_alone_and_beside_15_others() {
    let Some(l) = load("smollm2") else { return };
    let e = engine(&l, |_| {});
    let ps = prompts(&l);
    let alone: Vec<Output> = ps
        .iter()
        .map(|p| collect(e.submit(greedy_req(p.clone(), 24)).unwrap()))
        .collect();
    for (p, a) in ps.iter().zip(&alone).take(3) {
        assert_eq!(
            a.tokens,
            session_greedy(&l, p, 24),
            "engine alone vs plain session"
        );
        assert_eq!(a.finish, Some(Finish::Length));
    }
    // 16 at once: every prompt twice, interleaved.
    let streams: Vec<_> = (0..16)
        .map(|i| e.submit(greedy_req(ps[i % ps.len()].clone(), 24)).unwrap())
        .collect();
    let together: Vec<Output> = streams.into_iter().map(collect).collect();
    for (i, o) in together.iter().enumerate() {
        assert_eq!(
            o.tokens,
            alone[i % ps.len()].tokens,
            "prompt {} in a batch of 16",
            i % ps.len()
        );
        assert_eq!(o.text, alone[i % ps.len()].text);
    }
}

#[test]
fn prefix_hit_reports_cached_tokens_and_changes_nothing() {
    let Some(l) = load("smollm2") else { return };
    let e = engine(&l, |_| {});
    let ps = prompts(&l);
    let long: Vec<u32> = ps
        .iter()
        .flatten()
        .cloned()
        .chain(ps[3].iter().cloned())
        .collect();
    let cold = collect(e.submit(greedy_req(long.clone(), 16)).unwrap());
    assert_eq!(cold.cached, 0);
    let warm = collect(e.submit(greedy_req(long.clone(), 16)).unwrap());
    // Full blocks only, and never the whole prompt.
    let expect = (long.len() - 1) / 16 * 16;
    assert_eq!(warm.cached, expect, "prompt of {} tokens", long.len());
    assert_eq!(warm.tokens, cold.tokens);
    // A prompt sharing only a prefix hits the shared part.
    let mut other = long[..40].to_vec();
    other.extend_from_slice(&ps[0]);
    let part = collect(e.submit(greedy_req(other.clone(), 8)).unwrap());
    assert_eq!(part.cached, 32);
    assert_eq!(part.tokens, session_greedy(&l, &other, 8));
    let st = e.stats();
    assert!(st.prefix_hit_tokens >= (expect + 32) as u64, "{st:?}");
}

#[test]
fn prefill_chunk_size_does_not_change_output() {
    let Some(l) = load("smollm2") else { return };
    let ps = prompts(&l);
    let long: Vec<u32> = ps.iter().flatten().cloned().collect();
    let mut outs = Vec::new();
    for chunk in [7usize, 64, 512] {
        let e = engine(&l, |c| {
            c.max_chunk_tokens = Some(chunk);
            c.enable_prefix_caching = false;
        });
        // Two at once, so chunks of one prompt share steps with the other's decodes.
        let a = e.submit(greedy_req(long.clone(), 16)).unwrap();
        let b = e.submit(greedy_req(ps[1].clone(), 16)).unwrap();
        outs.push((collect(a).tokens, collect(b).tokens));
        e.shutdown();
    }
    assert_eq!(outs[0], outs[1], "chunk 7 vs 64");
    assert_eq!(outs[1], outs[2], "chunk 64 vs 512");
}

#[test]
fn preemption_leaves_outputs_unchanged() {
    let Some(l) = load("smollm2") else { return };
    let ps = prompts(&l);
    let reference = engine(&l, |_| {});
    let alone: Vec<Output> = ps
        .iter()
        .map(|p| collect(reference.submit(greedy_req(p.clone(), 40)).unwrap()))
        .collect();
    // 18 blocks of 16 tokens: far too few for 8 sequences of up to ~80 tokens at once.
    let bytes = 18 * 16 * l.model.kv_layout().bytes_per_token(2) as u64;
    let small = engine(&l, |c| {
        c.kv_cache_mem = KvCacheMem::Bytes(bytes);
        c.enable_prefix_caching = false;
    });
    let streams: Vec<_> = ps
        .iter()
        .map(|p| small.submit(greedy_req(p.clone(), 40)).unwrap())
        .collect();
    let outs: Vec<Output> = streams.into_iter().map(collect).collect();
    assert!(
        small.stats().preemptions > 0,
        "the test must actually preempt"
    );
    for (i, (o, a)) in outs.iter().zip(&alone).enumerate() {
        assert_eq!(o.tokens, a.tokens, "prompt {i} after preemption");
    }
}

#[test]
fn cancelled_requests_free_their_blocks() {
    let Some(l) = load("smollm2") else { return };
    let e = engine(&l, |c| c.enable_prefix_caching = false);
    let ps = prompts(&l);
    let mut s = e.submit(greedy_req(ps[3].clone(), 400)).unwrap();
    let mut got = 0;
    while got < 3 {
        if let Some(EngineEvent::Token { .. }) = s.blocking_recv() {
            got += 1;
        }
    }
    assert!(e.stats().kv_blocks_used > 0);
    drop(s);
    // The next engine step frees them; give it a moment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while e.stats().kv_blocks_used > 0 || e.stats().running > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "blocks not freed: {:?}",
            e.stats()
        );
        // Another request makes the engine step (and publish) again.
        let _ = collect(e.submit(greedy_req(ps[0].clone(), 1)).unwrap());
    }
}

#[test]
fn stop_strings_n2_seeds_and_rejections() {
    let Some(l) = load("smollm2") else { return };
    let e = engine(&l, |_| {});
    let ps = prompts(&l);
    let full = collect(e.submit(greedy_req(ps[1].clone(), 32)).unwrap());
    // Stop at a piece of text the greedy output contains: output is cut just before it.
    let cut = full.text.char_indices().nth(12).map(|(i, _)| i).unwrap();
    let stop: String = full.text[cut..].chars().take(3).collect();
    let mut r = greedy_req(ps[1].clone(), 32);
    r.stop_strings = vec![stop.clone()];
    let stopped = collect(e.submit(r).unwrap());
    assert_eq!(stopped.finish, Some(Finish::Stop));
    assert_eq!(stopped.text, full.text[..full.text.find(&stop).unwrap()]);
    assert!(!stopped.text.contains(&stop));

    // n = 2 with a seed: two different samples, reproducible as a pair.
    let sample = |seed| {
        let mut r = GenerateRequest::new(ps[2].clone(), 16);
        r.params.temperature = 1.0;
        r.params.seed = Some(seed);
        r.n = 2;
        let mut s = e.submit(r).unwrap();
        let mut per: [Vec<u32>; 2] = Default::default();
        let mut done = 0;
        while let Some(ev) = s.blocking_recv() {
            match ev {
                EngineEvent::Token { index, token, .. } => per[index as usize].push(token),
                EngineEvent::Finished { .. } => {
                    done += 1;
                    if done == 2 {
                        break;
                    }
                }
                EngineEvent::Admitted { .. } => {}
                EngineEvent::Error(m) => panic!("{m}"),
            }
        }
        per
    };
    let a = sample(7);
    assert_eq!(a, sample(7));
    assert_ne!(a[0], a[1]);

    // A prompt that cannot fit the context is rejected with both numbers.
    let huge = vec![ps[0][0]; e.max_model_len()];
    let mut s = e.submit(GenerateRequest::new(huge, 16)).unwrap();
    match s.blocking_recv() {
        Some(EngineEvent::Error(EngineError::Rejected(SchedError::ExceedsModelLen {
            max_model_len,
            ..
        }))) => assert_eq!(max_model_len, e.max_model_len()),
        other => panic!("expected a rejection, got {other:?}"),
    }
}
