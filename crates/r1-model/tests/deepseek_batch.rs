//! Batch invariance of the DeepSeek forward: the same logits, bit for bit, whether a prompt
//! runs alone, with other prompts in one batch, in prefill chunks, or after a prefix whose
//! latents came from another sequence's blocks (prefix-cache hit, incl. copy-on-write of a
//! partly filled block). Also the f16 latent cache (the engine's default storage).

mod deepseek_support;

use deepseek_support::*;
use r1_model::{Batch, KvCache, KvDtype, Model, WeightDtype};

fn model_and_ref() -> Option<(r1_model::arch::deepseek_v3::DeepSeekV3, Reference)> {
    let dir = fixture_dir("tiny-deepseek-v3")?;
    Some((load_model(&dir, WeightDtype::Native), Reference::load(&dir)))
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn several_prompts_in_one_batch_equal_each_alone() {
    let Some((m, r)) = model_and_ref() else {
        return;
    };
    let n = r.n_prompts();
    let alone: Vec<Vec<f32>> = (0..n)
        .map(|i| prefill_logits(&m, &r.prompt_ids(i), None))
        .collect();
    let per = 128usize.div_ceil(BLOCK);
    let mut kv = new_cache(&m, n, 128);
    let mut b = Batch::default();
    for i in 0..n {
        b.push(&r.prompt_ids(i), 0, table(i * per, per), true);
    }
    let out = m.forward(&b, &mut kv).unwrap();
    for (i, a) in alone.iter().enumerate() {
        assert_eq!(
            bits(out.row(i)),
            bits(a),
            "prompt {i}: batched prefill differs"
        );
    }
}

#[test]
fn batched_greedy_decode_equals_reference_and_solo_runs() {
    let Some((m, r)) = model_and_ref() else {
        return;
    };
    let n = r.n_prompts();
    let per = 128usize.div_ceil(BLOCK);
    let mut kv = new_cache(&m, n, 128);
    let prompts: Vec<Vec<u32>> = (0..n).map(|i| r.prompt_ids(i)).collect();
    let mut b = Batch::default();
    for (i, p) in prompts.iter().enumerate() {
        b.push(p, 0, table(i * per, per), true);
    }
    let mut logits = m.forward(&b, &mut kv).unwrap();
    let mut toks: Vec<Vec<u32>> = vec![Vec::new(); n];
    let mut rows: Vec<Vec<Vec<f32>>> = vec![Vec::new(); n];
    for step in 0..16 {
        let mut b = Batch::default();
        for i in 0..n {
            let t = argmax(logits.row(i));
            toks[i].push(t);
            rows[i].push(logits.row(i).to_vec());
            b.push(&[t], prompts[i].len() + step, table(i * per, per), true);
        }
        if step < 15 {
            logits = m.forward(&b, &mut kv).unwrap();
        }
    }
    for i in 0..n {
        assert_eq!(
            toks[i],
            r.greedy_ids(i),
            "prompt {i}: batched greedy tokens"
        );
        let (solo, solo_logits) = greedy(&m, &prompts[i], 16);
        assert_eq!(toks[i], solo);
        for s in 0..16 {
            assert_eq!(
                bits(&rows[i][s]),
                bits(&solo_logits[s]),
                "prompt {i} step {s}: batched decode differs"
            );
        }
    }
}

#[test]
fn chunked_prefill_and_mixed_batches_are_bit_identical() {
    let Some((m, r)) = model_and_ref() else {
        return;
    };
    let p = r.prompt_ids(4);
    let whole = prefill_logits(&m, &p, None);
    let per = 128usize.div_ceil(BLOCK);
    let mut kv = new_cache(&m, 2, 128);
    let bt = table(0, per);
    let other = r.prompt_ids(1);
    // Chunks of 13, 40 and the rest; a second sequence rides along in the middle chunk.
    let mut pos = 0;
    let mut last = Vec::new();
    for (k, len) in [13usize, 40, p.len() - 53].into_iter().enumerate() {
        let mut b = Batch::default();
        if k == 1 {
            b.push(&other, 0, table(per, per), true);
        }
        b.push(&p[pos..pos + len], pos, bt.clone(), true);
        let out = m.forward(&b, &mut kv).unwrap();
        if k == 1 {
            let alone = prefill_logits(&m, &other, None);
            assert_eq!(bits(out.row(0)), bits(&alone), "rider sequence differs");
        }
        last = out.row(out.rows() - 1).to_vec();
        pos += len;
    }
    assert_eq!(
        bits(&last),
        bits(&whole),
        "chunked prefill differs from one prefill"
    );
}

#[test]
fn prefix_cache_hit_reuses_latents_bit_identically() {
    let Some((m, r)) = model_and_ref() else {
        return;
    };
    let p = r.prompt_ids(4);
    let whole = prefill_logits(&m, &p, None);
    let per = 128usize.div_ceil(BLOCK);
    let mut kv = new_cache(&m, 3, 128);
    // Sequence A fills blocks 0..per.
    let mut b = Batch::default();
    b.push(&p, 0, table(0, per), true);
    m.forward(&b, &mut kv).unwrap();
    // Sequence B shares A's first 4 full blocks (64 positions) and computes the rest.
    let mut bt: Vec<u32> = table(0, 4);
    bt.extend(table(per + 4, per - 4));
    let mut b = Batch::default();
    b.push(&p[64..], 64, bt, true);
    let out = m.forward(&b, &mut kv).unwrap();
    assert_eq!(
        bits(out.row(0)),
        bits(&whole),
        "full-block prefix hit differs"
    );
    // Sequence C reuses 56 positions: 3 shared blocks plus a copy of A's half-used block 3.
    let c0 = 2 * per;
    kv.copy_block(3, c0 as u32 + 3);
    let mut bt: Vec<u32> = table(0, 3);
    bt.extend(table(c0 + 3, per - 3));
    let mut b = Batch::default();
    b.push(&p[56..], 56, bt, true);
    let out = m.forward(&b, &mut kv).unwrap();
    assert_eq!(
        bits(out.row(0)),
        bits(&whole),
        "copy-on-write prefix hit differs"
    );
}

#[test]
fn f16_latent_cache_stays_close_to_the_reference() {
    let Some((m, r)) = model_and_ref() else {
        return;
    };
    assert_eq!(m.kv_dtype(), KvDtype::F32);
    for i in 0..r.n_prompts() {
        let p = r.prompt_ids(i);
        let mut kv = KvCache::new(m.kv_layout(), BLOCK, 128 / BLOCK);
        let mut b = Batch::default();
        b.push(&p, 0, table(0, 128 / BLOCK), true);
        let got = m.forward(&b, &mut kv).unwrap().data;
        let (want, _) = r.tensor(&format!("prompt{i}.last_logits"));
        let d = max_abs_diff(&got, &want);
        eprintln!("prompt {i}: f16 latents, max |Δlogit| = {d:.2e}");
        // f16 keeps 11 significant bits of each latent (relative error 2^-12).
        assert!(d < 5e-3, "prompt {i}: {d}");
    }
}
