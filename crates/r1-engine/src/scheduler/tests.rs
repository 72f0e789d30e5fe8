use super::*;

fn cfg(num_blocks: usize, budget: usize, max_seqs: usize) -> SchedulerConfig {
    SchedulerConfig {
        max_batched_tokens: budget,
        max_num_seqs: max_seqs,
        block_size: 4,
        num_blocks,
        max_model_len: 1024,
        ..SchedulerConfig::default()
    }
}

fn toks(start: u32, n: usize) -> Vec<u32> {
    (start..start + n as u32).collect()
}

/// Sample `tok` for every sequence the plan asks for; returns them.
fn sample_all(s: &mut Scheduler, plan: &StepPlan, tok: u32) -> Vec<SeqId> {
    let mut out = Vec::new();
    for it in plan.sample_items() {
        for seq in it.sample_seqs() {
            s.append_token(seq, tok).unwrap();
            out.push(seq);
        }
    }
    out
}

fn item(plan: &StepPlan, seq: SeqId) -> &PlanItem {
    plan.items.iter().find(|i| i.seq == seq).expect("scheduled")
}

#[test]
fn rejects_requests_that_can_never_run() {
    let mut s = Scheduler::new(cfg(8, 16, 4)).unwrap(); // 32 tokens of KV
    let e = |s: &mut Scheduler, r| s.add(r).unwrap_err();
    assert_eq!(
        e(&mut s, Request::new(1, vec![], 4)),
        SchedError::EmptyPrompt { id: 1 }
    );
    assert_eq!(
        e(&mut s, Request::new(1, toks(0, 3), 0)),
        SchedError::ZeroMaxTokens { id: 1 }
    );
    assert_eq!(
        e(&mut s, Request::new(1, toks(0, 3), 2).with_n(0)),
        SchedError::ZeroN { id: 1 }
    );
    assert!(matches!(
        e(&mut s, Request::new(1, toks(0, 3), 2).with_n(5)),
        SchedError::TooManyChoices { n: 5, max: 4, .. }
    ));
    let msg = e(&mut s, Request::new(1, toks(0, 20), 13)).to_string();
    assert!(
        msg.contains("20 tokens") && msg.contains("(13)") && msg.contains("32 tokens"),
        "{msg}"
    );
    let mut c = cfg(1000, 16, 4);
    c.max_model_len = 50;
    let mut s2 = Scheduler::new(c).unwrap();
    let msg = e(&mut s2, Request::new(1, toks(0, 40), 11)).to_string();
    assert!(
        msg.contains("40 tokens") && msg.contains("(11)") && msg.contains("50"),
        "{msg}"
    );
    // Exactly the cache fits.
    s.add(Request::new(1, toks(0, 20), 12)).unwrap();
    assert_eq!(
        e(&mut s, Request::new(1, toks(0, 3), 1)),
        SchedError::DuplicateRequest(1)
    );
    assert_eq!(s.num_waiting(), 1);
    s.check_invariants().unwrap();
}

#[test]
fn config_validation() {
    let bad = |f: &dyn Fn(&mut SchedulerConfig)| {
        let mut c = cfg(8, 16, 4);
        f(&mut c);
        Scheduler::new(c).err().unwrap()
    };
    assert!(matches!(bad(&|c| c.block_size = 0), SchedError::Config(_)));
    assert!(matches!(
        bad(&|c| c.max_num_seqs = 0),
        SchedError::Config(_)
    ));
    assert!(matches!(
        bad(&|c| c.max_batched_tokens = 3),
        SchedError::Config(_)
    ));
    assert!(matches!(
        bad(&|c| c.max_chunk_tokens = Some(0)),
        SchedError::Config(_)
    ));
    assert!(matches!(
        bad(&|c| c.enable_chunked_prefill = false),
        SchedError::Config(_)
    ));
    assert!(matches!(
        bad(&|c| {
            c.enable_chunked_prefill = false;
            c.max_batched_tokens = 2000;
            c.max_chunk_tokens = Some(100);
        }),
        SchedError::Config(_)
    ));
    Scheduler::new(SchedulerConfig::default()).unwrap();
}

#[test]
fn chunked_prefill_then_decode_then_length() {
    let mut s = Scheduler::new(cfg(16, 8, 4)).unwrap();
    let ids = s.add(Request::new(7, toks(100, 10), 3)).unwrap();
    let a = ids[0];
    assert_eq!(a, SeqId::new(7, 0));
    let p = s.schedule().unwrap();
    assert_eq!(p.num_tokens, 8);
    let it = item(&p, a);
    assert_eq!(
        (it.pos0, it.tokens.clone(), it.sample),
        (0, toks(100, 8), false)
    );
    assert_eq!(it.block_table.len(), 2);
    assert_eq!(s.append_token(a, 1), Err(SchedError::NotAwaitingToken(a)));
    let p = s.schedule().unwrap();
    let it = item(&p, a);
    assert_eq!(
        (it.pos0, it.tokens.clone(), it.sample),
        (8, toks(108, 2), true)
    );
    assert_eq!(it.block_table.len(), 3);
    assert_eq!(s.append_token(a, 50).unwrap(), Appended::Running);
    let p = s.schedule().unwrap();
    let it = item(&p, a);
    assert_eq!(
        (it.pos0, it.tokens.clone(), it.sample),
        (10, vec![50], true)
    );
    assert_eq!(s.append_token(a, 51).unwrap(), Appended::Running);
    let p = s.schedule().unwrap();
    assert_eq!(item(&p, a).tokens, vec![51]);
    assert_eq!(
        s.append_token(a, 52).unwrap(),
        Appended::Finished(FinishReason::Length)
    );
    assert!(!s.has_unfinished());
    assert_eq!(s.block_usage().used, 0);
    assert_eq!(s.block_usage().free, 16);
    assert!(s.schedule().unwrap().is_empty());
    s.check_invariants().unwrap();
}

#[test]
fn batch_matches_plan() {
    let mut s = Scheduler::new(cfg(16, 8, 4)).unwrap();
    s.add(Request::new(1, toks(0, 3), 2)).unwrap();
    s.add(Request::new(2, toks(10, 9), 2)).unwrap();
    let p = s.schedule().unwrap();
    let b = p.to_batch();
    assert_eq!(b.tokens.len(), 8);
    assert_eq!(b.seqs.len(), 2);
    assert_eq!(b.logit_rows, vec![2]); // only request 1's prompt is complete
    assert_eq!(p.sample_items().count(), 1);
}

#[test]
fn decodes_are_budgeted_first_and_a_long_prompt_advances_every_step() {
    let mut s = Scheduler::new(cfg(64, 6, 4)).unwrap();
    let a = s.add(Request::new(1, toks(0, 2), 50)).unwrap()[0];
    let b = s.add(Request::new(2, toks(10, 2), 50)).unwrap()[0];
    let p = s.schedule().unwrap();
    assert_eq!(p.num_tokens, 4);
    sample_all(&mut s, &p, 9);
    // A long prompt arrives with the same priority but later; decodes keep their token.
    let long = s.add(Request::new(3, toks(100, 40), 2)).unwrap()[0];
    let mut done = 0;
    for step in 0.. {
        let p = s.schedule().unwrap();
        assert!(p.num_tokens <= 6);
        assert!(p.items.iter().any(|i| i.seq == a) && p.items.iter().any(|i| i.seq == b));
        let it = item(&p, long);
        assert_eq!(it.pos0, done, "step {step}");
        assert_eq!(it.tokens.len(), (40 - done).min(4));
        done += it.tokens.len();
        sample_all(&mut s, &p, 9);
        if done == 40 {
            break;
        }
    }
    s.check_invariants().unwrap();
}

#[test]
fn max_chunk_tokens_caps_prefill_chunks() {
    let mut c = cfg(64, 32, 4);
    c.max_chunk_tokens = Some(7);
    let mut s = Scheduler::new(c).unwrap();
    let a = s.add(Request::new(1, toks(0, 20), 2)).unwrap()[0];
    let lens: Vec<usize> = (0..3)
        .map(|_| item(&s.schedule().unwrap(), a).tokens.len())
        .collect();
    assert_eq!(lens, vec![7, 7, 6]);
}

#[test]
fn without_chunking_a_prompt_runs_whole() {
    let mut c = cfg(64, 32, 4);
    c.enable_chunked_prefill = false;
    c.max_model_len = 32;
    let mut s = Scheduler::new(c).unwrap();
    s.add(Request::new(1, toks(0, 20), 2)).unwrap();
    s.add(Request::new(2, toks(50, 20), 2)).unwrap();
    let p = s.schedule().unwrap();
    assert_eq!(p.items.len(), 1);
    assert_eq!(p.items[0].tokens.len(), 20);
    assert_eq!(
        p.blocked.map(|b| b.reason),
        Some(BlockedReason::TokenBudget)
    );
}

#[test]
fn priority_then_fcfs_admission() {
    let mut s = Scheduler::new(cfg(64, 8, 1)).unwrap();
    let low = s.add(Request::new(1, toks(0, 2), 1)).unwrap()[0];
    let hi_old = s
        .add(Request::new(2, toks(10, 2), 1).with_priority(5))
        .unwrap()[0];
    let hi_new = s
        .add(Request::new(3, toks(20, 2), 1).with_priority(5))
        .unwrap()[0];
    let mut order = Vec::new();
    while s.has_unfinished() {
        let p = s.schedule().unwrap();
        assert_eq!(p.items.len(), 1);
        order.extend(sample_all(&mut s, &p, 0));
    }
    assert_eq!(order, vec![hi_old, hi_new, low]);
}

#[test]
fn blocks_running_out_preempts_lowest_priority_newest_and_recomputes_output() {
    // 6 blocks of 4 = 24 tokens; three sequences of 4-token prompts growing to 16 tokens.
    let mut s = Scheduler::new(cfg(6, 16, 4)).unwrap();
    let a = s
        .add(Request::new(1, toks(0, 4), 12).with_priority(1))
        .unwrap()[0];
    let b = s.add(Request::new(2, toks(10, 4), 12)).unwrap()[0];
    let c = s.add(Request::new(3, toks(20, 4), 12)).unwrap()[0];
    let mut first_preempted = None;
    let mut outputs: HashMap<SeqId, Vec<u32>> = HashMap::new();
    let mut steps = 0;
    while s.has_unfinished() {
        steps += 1;
        assert!(steps < 200);
        let p = s.schedule().unwrap();
        s.check_invariants().unwrap();
        if first_preempted.is_none() && !p.preempted.is_empty() {
            first_preempted = Some(p.preempted[0]);
        }
        for it in p.sample_items() {
            for seq in it.sample_seqs() {
                // Token depends only on position: a recompute must reproduce it.
                let tok = 1000 + s.generated(seq).unwrap().len() as u32;
                outputs.entry(seq).or_default().push(tok);
                s.append_token(seq, tok).unwrap();
            }
        }
    }
    assert_eq!(
        first_preempted,
        Some(c),
        "lowest priority, newest goes first"
    );
    assert_eq!(s.num_preemptions(a), None);
    for seq in [a, b, c] {
        assert_eq!(outputs[&seq], (1000..1012).collect::<Vec<_>>());
    }
    assert_eq!(s.block_usage().used, 0);
}

#[test]
fn preempted_sequence_recomputes_prompt_and_generated_tokens() {
    let mut s = Scheduler::new(cfg(3, 16, 4)).unwrap();
    let a = s
        .add(Request::new(1, toks(0, 4), 7).with_priority(1))
        .unwrap()[0];
    let b = s.add(Request::new(2, toks(10, 3), 5)).unwrap()[0];
    let p = s.schedule().unwrap();
    sample_all(&mut s, &p, 77);
    let p = s.schedule().unwrap(); // a: new block 1; b at pos 3
    sample_all(&mut s, &p, 78);
    // b holds 2 blocks now? b: 3 prompt + 77 at pos 3 -> 1 block; then 78 at pos 4 -> block 2.
    // a needs its 3rd block at pos 8: b (lower priority) is preempted.
    let mut preempted_b = false;
    for _ in 0..10 {
        let p = s.schedule().unwrap();
        sample_all(&mut s, &p, 79);
        if p.preempted.contains(&b) {
            preempted_b = true;
            assert_eq!(s.status(b), Some(SeqStatus::Waiting));
            assert_eq!(s.block_table(b).unwrap().len(), 0);
            break;
        }
    }
    assert!(preempted_b);
    // Once a finishes, b recomputes prompt + generated tokens in one chunk and samples.
    while s.status(a).is_some() {
        let p = s.schedule().unwrap();
        assert!(!p.is_empty());
        sample_all(&mut s, &p, 80);
    }
    let p = s.schedule().unwrap();
    let it = item(&p, b);
    assert_eq!(it.pos0, 0);
    assert_eq!(&it.tokens[..3], &toks(10, 3)[..]);
    assert_eq!(&it.tokens[3..], s.generated(b).unwrap());
    assert!(it.sample);
}

#[test]
fn waiting_high_priority_preempts_lower_but_never_the_reverse() {
    let mut s = Scheduler::new(cfg(4, 16, 4)).unwrap();
    let low = s.add(Request::new(1, toks(0, 12), 4)).unwrap()[0];
    let p = s.schedule().unwrap();
    sample_all(&mut s, &p, 5); // low holds 4 blocks (13 tokens next)
    let hi = s
        .add(Request::new(2, toks(50, 6), 2).with_priority(3))
        .unwrap()[0];
    let p = s.schedule().unwrap();
    assert_eq!(p.preempted, vec![low]);
    assert!(p.items.iter().any(|i| i.seq == hi));
    assert!(p.items.iter().all(|i| i.seq != low));
    sample_all(&mut s, &p, 6);
    // Now a lower priority request arrives: it may not preempt `hi`.
    let lower = s
        .add(Request::new(3, toks(70, 14), 2).with_priority(-1))
        .unwrap()[0];
    let p = s.schedule().unwrap();
    assert!(p.preempted.is_empty());
    assert!(p.items.iter().any(|i| i.seq == hi));
    assert_eq!(s.status(lower), Some(SeqStatus::Waiting));
    s.check_invariants().unwrap();
}

#[test]
fn admission_does_not_preempt_in_vain() {
    // The high-priority prompt needs all 4 blocks, but a same-priority request holds 2.
    let mut s = Scheduler::new(cfg(4, 32, 4)).unwrap();
    let same = s
        .add(Request::new(1, toks(0, 6), 2).with_priority(2))
        .unwrap()[0];
    let low = s.add(Request::new(2, toks(10, 3), 2)).unwrap()[0];
    let p = s.schedule().unwrap();
    sample_all(&mut s, &p, 1);
    let hi = s
        .add(Request::new(3, toks(20, 15), 1).with_priority(2))
        .unwrap()[0];
    let p = s.schedule().unwrap();
    assert!(
        p.preempted.is_empty(),
        "preempting `low` alone would not make room"
    );
    assert_eq!(
        p.blocked,
        Some(Blocked {
            seq: hi,
            reason: BlockedReason::KvBlocks {
                needed: 4,
                obtainable: 2
            }
        })
    );
    assert!(p.items.iter().any(|i| i.seq == same) && p.items.iter().any(|i| i.seq == low));
}

#[test]
fn seq_cap_is_respected_and_can_be_freed_by_priority() {
    let mut s = Scheduler::new(cfg(64, 16, 2)).unwrap();
    let a = s.add(Request::new(1, toks(0, 2), 5)).unwrap()[0];
    let b = s.add(Request::new(2, toks(10, 2), 5)).unwrap()[0];
    let c = s.add(Request::new(3, toks(20, 2), 5)).unwrap()[0];
    let p = s.schedule().unwrap();
    assert_eq!(p.items.len(), 2);
    assert_eq!(
        p.blocked.map(|x| (x.seq, x.reason)),
        Some((
            c,
            BlockedReason::SeqCap {
                needed: 1,
                obtainable: 0
            }
        ))
    );
    sample_all(&mut s, &p, 3);
    let hi = s
        .add(Request::new(4, toks(30, 2), 5).with_priority(1))
        .unwrap()[0];
    let p = s.schedule().unwrap();
    assert_eq!(p.preempted, vec![b]);
    let seqs: Vec<SeqId> = p.items.iter().map(|i| i.seq).collect();
    assert!(seqs.contains(&a) && seqs.contains(&hi) && seqs.len() == 2);
    assert_eq!(s.num_running(), 2);
    assert_eq!(s.num_waiting(), 2);
}

#[test]
fn prefix_hit_reports_cached_tokens_and_reuses_blocks() {
    let mut s = Scheduler::new(cfg(16, 32, 4)).unwrap();
    let shared = toks(0, 9);
    let a = s.add(Request::new(1, shared.clone(), 1)).unwrap()[0];
    let p = s.schedule().unwrap();
    let a_blocks = item(&p, a).block_table.clone();
    sample_all(&mut s, &p, 5); // finishes (max 1)
    assert_eq!(s.cached_tokens(a), None, "finished sequences are forgotten");
    let mut prompt = shared.clone();
    prompt.extend([40, 41, 42]);
    let b = s.add(Request::new(2, prompt.clone(), 2)).unwrap()[0];
    assert_eq!(s.cached_tokens(b), None);
    let p = s.schedule().unwrap();
    let it = item(&p, b);
    assert_eq!(it.pos0, 8);
    assert_eq!(&it.block_table[..2], &a_blocks[..2]);
    assert_eq!(s.cached_tokens(b), Some(8));
    let st = s.prefix_cache_stats();
    assert_eq!((st.queries, st.query_tokens, st.hit_tokens), (2, 21, 8));
    // A different cache salt gets no hit.
    let c = s
        .add(Request::new(3, prompt, 2).with_cache_salt(9))
        .unwrap()[0];
    let p = s.schedule().unwrap();
    assert_eq!(item(&p, c).pos0, 0);
    assert_eq!(s.cached_tokens(c), Some(0));
    s.check_invariants().unwrap();
}

#[test]
fn prefix_hit_of_a_running_sequence_shares_its_blocks() {
    let mut s = Scheduler::new(cfg(16, 32, 4)).unwrap();
    let a = s.add(Request::new(1, toks(0, 9), 4)).unwrap()[0];
    let p = s.schedule().unwrap();
    sample_all(&mut s, &p, 5);
    let b = s.add(Request::new(2, toks(0, 10), 2)).unwrap()[0];
    let p = s.schedule().unwrap();
    let (ta, tb) = (&item(&p, a).block_table, &item(&p, b).block_table);
    assert_eq!(ta[..2], tb[..2]);
    assert_ne!(ta[2], tb[2]);
    assert_eq!(s.cached_tokens(b), Some(8));
    s.check_invariants().unwrap();
}

#[test]
fn fork_shares_prompt_blocks_and_copies_on_write() {
    let mut s = Scheduler::new(cfg(16, 32, 4)).unwrap();
    let ids = s.add(Request::new(1, toks(0, 6), 3).with_n(3)).unwrap();
    assert_eq!(s.num_waiting(), 3);
    assert_eq!(s.status(ids[2]), Some(SeqStatus::Waiting));
    let p = s.schedule().unwrap();
    assert_eq!(p.items.len(), 1);
    assert_eq!(p.items[0].forks, ids[1..].to_vec());
    assert_eq!(p.items[0].sample_seqs().collect::<Vec<_>>(), ids);
    assert_eq!(s.num_running(), 3);
    assert_eq!(s.block_usage().used, 2);
    for (i, &seq) in ids.iter().enumerate() {
        s.append_token(seq, 100 + i as u32).unwrap();
    }
    let p = s.schedule().unwrap();
    assert_eq!(p.items.len(), 3);
    // Block 1 holds positions 4..8 and is shared by 3: two copy, the last writes in place.
    assert_eq!(p.copies.len(), 2);
    let tables: Vec<_> = p.items.iter().map(|i| i.block_table.clone()).collect();
    assert!(tables.iter().all(|t| t[0] == tables[0][0]));
    let seconds: std::collections::HashSet<_> = tables.iter().map(|t| t[1]).collect();
    assert_eq!(seconds.len(), 3);
    for c in &p.copies {
        assert!(tables.iter().any(|t| t[1] == c.dst));
    }
    assert_eq!(s.block_usage().used, 4);
    for it in &p.items {
        assert_eq!(it.tokens, vec![100 + it.seq.index]);
        assert_eq!(it.pos0, 6);
    }
    s.check_invariants().unwrap();
}

#[test]
fn cancel_frees_blocks_at_once_and_handles_pending_forks() {
    let mut s = Scheduler::new(cfg(16, 32, 4)).unwrap();
    let a = s.add(Request::new(1, toks(0, 9), 4)).unwrap()[0];
    s.schedule().unwrap();
    assert_eq!(s.block_usage().used, 3);
    s.cancel(a).unwrap();
    assert_eq!(s.block_usage().used, 0);
    assert_eq!(s.block_usage().free, 16);
    // Cancelled mid-step: nothing of it may be cached (its KV may never be written).
    assert_eq!(s.prefix_cache_stats().cached_blocks, 0);
    assert_eq!(s.cancel(a), Err(SchedError::UnknownSeq(a)));

    // n = 3 before its prompt ran: cancelling choice 0 hands the work to choice 1.
    let ids = s.add(Request::new(2, toks(0, 5), 2).with_n(3)).unwrap();
    s.cancel(ids[0]).unwrap();
    s.cancel(ids[2]).unwrap();
    assert_eq!(s.num_waiting(), 1);
    let p = s.schedule().unwrap();
    assert_eq!(p.items[0].seq, ids[1]);
    assert!(p.items[0].forks.is_empty());
    s.check_invariants().unwrap();
    s.cancel_request(2).unwrap();
    assert!(!s.has_unfinished());
    assert_eq!(s.cancel_request(2), Err(SchedError::UnknownRequest(2)));
    let ids = s.add(Request::new(3, toks(0, 5), 2).with_n(4)).unwrap();
    s.schedule().unwrap();
    s.cancel_request(3).unwrap();
    assert_eq!(s.status(ids[3]), None);
    assert_eq!(s.block_usage().used, 0);
    s.check_invariants().unwrap();
}

#[test]
fn step_failed_recomputes_and_caches_nothing() {
    let mut s = Scheduler::new(cfg(16, 32, 4)).unwrap();
    let a = s.add(Request::new(1, toks(0, 9), 4)).unwrap()[0];
    s.schedule().unwrap();
    s.step_failed().unwrap();
    assert_eq!(s.status(a), Some(SeqStatus::Waiting));
    assert_eq!(s.block_usage().used, 0);
    let p = s.schedule().unwrap();
    assert_eq!(item(&p, a).pos0, 0);
    assert_eq!(s.prefix_cache_stats().hit_tokens, 0);
}

#[test]
fn finished_blocks_stay_cached_and_are_evicted_when_needed() {
    let mut s = Scheduler::new(cfg(4, 32, 4)).unwrap();
    let a = s.add(Request::new(1, toks(0, 8), 1)).unwrap()[0];
    let p = s.schedule().unwrap();
    s.append_token(a, 3).unwrap();
    drop(p);
    let u = s.block_usage();
    assert_eq!((u.used, u.cached_free, u.free), (0, 2, 4));
    // A different 15-token prompt needs all 4 blocks: the cached ones are evicted.
    let b = s.add(Request::new(2, toks(50, 15), 1)).unwrap()[0];
    let p = s.schedule().unwrap();
    assert_eq!(item(&p, b).block_table.len(), 4);
    assert_eq!(s.prefix_cache_stats().evictions, 2);
    s.check_invariants().unwrap();
}

#[test]
fn append_and_finish_errors() {
    let mut s = Scheduler::new(cfg(16, 32, 4)).unwrap();
    let ghost = SeqId::new(9, 0);
    assert_eq!(s.append_token(ghost, 1), Err(SchedError::UnknownSeq(ghost)));
    assert_eq!(
        s.finish(ghost, FinishReason::Stop),
        Err(SchedError::UnknownSeq(ghost))
    );
    let a = s.add(Request::new(1, toks(0, 3), 4)).unwrap()[0];
    assert_eq!(s.append_token(a, 1), Err(SchedError::NotAwaitingToken(a)));
    let p = s.schedule().unwrap();
    sample_all(&mut s, &p, 1);
    assert_eq!(s.append_token(a, 1), Err(SchedError::NotAwaitingToken(a)));
    s.finish(a, FinishReason::Stop).unwrap();
    assert_eq!(s.block_usage().used, 0);
    // Its full block (3 prompt tokens + 1 sampled = 4, but only 3 computed) is not cached.
    assert_eq!(s.prefix_cache_stats().cached_blocks, 0);
}

#[test]
fn a_prompt_that_fits_one_step_is_not_split_behind_another() {
    let mut s = Scheduler::new(cfg(256, 100, 8)).unwrap();
    let id = |r| SeqId::new(r, 0);
    s.add(Request::new(1, toks(0, 60), 4)).unwrap();
    s.add(Request::new(2, toks(100, 60), 4)).unwrap();
    // 40 tokens are left after the first prompt: the second waits for a step of its own
    // rather than leaving a 20-token tail for a third step.
    let plan = s.schedule().unwrap();
    assert_eq!(plan.items.len(), 1);
    assert_eq!(item(&plan, id(1)).tokens.len(), 60);
    assert_eq!(
        plan.blocked.map(|b| b.reason),
        Some(BlockedReason::TokenBudget)
    );
    sample_all(&mut s, &plan, 7);
    let plan = s.schedule().unwrap();
    assert_eq!(item(&plan, id(2)).tokens.len(), 60);
    assert!(item(&plan, id(2)).sample);
    sample_all(&mut s, &plan, 7);
    // A prompt longer than a step is chunked as before, even behind another prompt.
    s.add(Request::new(3, toks(200, 30), 4)).unwrap();
    s.add(Request::new(4, toks(300, 150), 4)).unwrap();
    let plan = s.schedule().unwrap();
    assert_eq!(item(&plan, id(3)).tokens.len(), 30);
    // 100 - 2 decodes - 30 = 68 tokens of the long prompt.
    assert_eq!(item(&plan, id(4)).tokens.len(), 68);
    s.check_invariants().unwrap();
}

#[test]
fn a_sequence_preempted_again_and_again_ages_ahead_of_newer_high_priority_arrivals() {
    // 4 blocks of 4 tokens. A low-priority request runs; high-priority requests that each
    // need the whole cache keep arriving. Without aging `low` would lose every time.
    let mut s = Scheduler::new(cfg(4, 16, 4)).unwrap();
    let low = s.add(Request::new(1, toks(0, 8), 8)).unwrap()[0];
    let p = s.schedule().unwrap();
    sample_all(&mut s, &p, 5);
    let mut next_id = 10;
    for round in 1..=AGING_PREEMPTIONS {
        let hi = s
            .add(Request::new(next_id, toks(100 * round, 12), 1).with_priority(5))
            .unwrap()[0];
        next_id += 1;
        let p = s.schedule().unwrap();
        assert_eq!(p.preempted, vec![low], "round {round}");
        assert_eq!(s.num_preemptions(low), Some(round));
        // `hi` prefills and samples its one token: done, its blocks go back.
        assert!(sample_all(&mut s, &p, 7).contains(&hi));
        assert_eq!(s.status(hi), None, "round {round}: hi finished");
        if round < AGING_PREEMPTIONS {
            // `low` runs again (nothing else waits), recomputing its tokens.
            let p = s.schedule().unwrap();
            assert!(p.items.iter().any(|i| i.seq == low));
            sample_all(&mut s, &p, 5);
        }
    }
    // Aged: a newer high-priority request no longer goes first, nor preempts it.
    let newer = s
        .add(Request::new(next_id, toks(900, 12), 1).with_priority(5))
        .unwrap()[0];
    let p = s.schedule().unwrap();
    assert!(p.preempted.is_empty());
    assert!(p.items.iter().any(|i| i.seq == low));
    assert_eq!(s.status(newer), Some(SeqStatus::Waiting));
    // Its own class is still what it reports.
    assert_eq!(s.priority(low), Some(0));
    s.check_invariants().unwrap();
}
