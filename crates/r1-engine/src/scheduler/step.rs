//! One scheduling step: `Scheduler::schedule`.

use std::collections::HashSet;

use super::types::*;
use super::{Key, Scheduler, Seq};
use crate::prefix_cache::PrefixHit;

/// State of the step being planned.
struct Step {
    budget: usize,
    /// Running decodes not yet processed: one token each is held back from prefill chunks.
    reserved: HashSet<SeqId>,
    scheduled: HashSet<SeqId>,
    preempted: HashSet<SeqId>,
    admission_open: bool,
    /// A protected (latency-targeted) request prefills in this step: the others sit it out
    /// (their prompt chunks and their decodes), so its first token is held up by nothing
    /// but the protected class's own work. Each of their decodes costs about 2% of a
    /// ~100-token prefill step; in the overload A/B (scripts/overload-test.sh, same
    /// arrivals) skipping them took VIP TTFT p50/p90/p99 from 251/409/509 ms to
    /// 230/369/435 ms for 3% fewer normal completions.
    protected_prefill: bool,
    plan: StepPlan,
}

impl Step {
    /// Tokens a prefill chunk may take now.
    fn prefill_budget(&self) -> usize {
        self.budget.saturating_sub(self.reserved.len())
    }

    fn close(&mut self, seq: SeqId, reason: BlockedReason) {
        if self.admission_open {
            self.admission_open = false;
            self.plan.blocked = Some(Blocked { seq, reason });
        }
    }
}

impl Scheduler {
    /// Plan the next step. Also confirms the previous one: the blocks it filled enter the
    /// prefix cache now (so call it only after the previous plan's forward pass finished, or
    /// after [`Scheduler::step_failed`]).
    pub fn schedule(&mut self) -> Result<StepPlan, SchedError> {
        let running: Vec<SeqId> = self.running.iter().map(|k| k.2).collect();
        for id in &running {
            if let Some(mut s) = self.seqs.remove(id) {
                self.register_computed(&mut s);
                self.seqs.insert(*id, s);
            }
        }
        let mut st = Step {
            budget: self.initial_budget(),
            reserved: self
                .running
                .iter()
                .filter_map(|k| self.seqs.get(&k.2))
                .filter(|s| s.is_decode() && !s.awaiting_sample && s.num_computed < s.tokens.len())
                .map(|s| s.id)
                .collect(),
            scheduled: HashSet::new(),
            preempted: HashSet::new(),
            admission_open: true,
            protected_prefill: false,
            plan: StepPlan::default(),
        };
        let mut order: Vec<Key> = self.running.iter().chain(&self.waiting).copied().collect();
        order.sort_unstable();
        for key in order {
            let id = key.2;
            let Some(s) = self.seqs.get(&id) else {
                continue;
            };
            let priority = s.priority;
            st.budget = self.budget_at(
                priority,
                st.budget,
                st.plan.num_tokens,
                st.reserved.len(),
                st.protected_prefill,
            );
            let items = st.plan.items.len();
            if st.preempted.contains(&id) {
                st.close(id, BlockedReason::Preempted);
            } else if s.running
                && st.protected_prefill
                && s.is_decode()
                && self.limits.protect.is_some_and(|p| priority < p)
            {
                // Its token waits one step (see `Step::protected_prefill`).
                st.reserved.remove(&id);
            } else if s.running {
                self.schedule_running(id, &mut st)?;
            } else if st.admission_open {
                self.try_admit(id, &mut st)?;
            }
            if self.limits.protect.is_some_and(|p| priority >= p)
                && st.plan.items.len() > items
                && st.plan.items[items].tokens.len() > 1
            {
                st.protected_prefill = true;
            }
        }
        self.in_flight = st
            .plan
            .items
            .iter()
            .flat_map(|i| std::iter::once(i.seq).chain(i.forks.iter().copied()))
            .collect();
        Ok(st.plan)
    }

    /// Continue a running sequence: its decode token or its next prefill chunk.
    fn schedule_running(&mut self, id: SeqId, st: &mut Step) -> Result<(), SchedError> {
        let s = self.get(id)?;
        let decode = s.is_decode();
        let remaining = s.tokens.len().saturating_sub(s.num_computed);
        if decode {
            st.reserved.remove(&id);
        }
        if s.awaiting_sample || remaining == 0 {
            tracing::warn!(seq = %id, "sequence has nothing to compute: no token was appended after its last sample");
            return Ok(());
        }
        let n_new = if decode {
            1
        } else {
            let n = remaining
                .min(st.prefill_budget())
                .min(self.cfg.max_chunk_tokens.unwrap_or(usize::MAX));
            if n == 0 || (!self.cfg.enable_chunked_prefill && n < remaining) {
                return Ok(());
            }
            n
        };
        // Free blocks by preempting from the tail of the priority order (lowest priority,
        // newest) until this sequence fits, or it is the tail itself.
        while self.blocks_needed(id, n_new)? > self.pool.num_free() {
            let victim = self
                .running
                .last()
                .map(|k| k.2)
                .ok_or_else(|| SchedError::Internal("running set empty".into()))?;
            self.preempt(victim, st)?;
            if victim == id {
                // Nothing after it in the order may take the blocks it could not get.
                st.close(id, BlockedReason::Preempted);
                return Ok(());
            }
        }
        self.grow(id, n_new, st)
    }

    /// Admit a waiting sequence, preempting strictly lower-priority ones if that makes it fit.
    fn try_admit(&mut self, id: SeqId, st: &mut Step) -> Result<(), SchedError> {
        let bs = self.cfg.block_size;
        let avail = st.prefill_budget();
        if avail == 0 {
            st.close(id, BlockedReason::TokenBudget);
            return Ok(());
        }
        let (hit, n_new) = loop {
            let s = self.get(id)?;
            let hit = self.cache.lookup(s.root, &s.tokens);
            let cached = hit.num_tokens(bs);
            let remaining = s.tokens.len() - cached;
            let n_new = remaining
                .min(avail)
                .min(self.cfg.max_chunk_tokens.unwrap_or(usize::MAX));
            if n_new < remaining
                && (!self.cfg.enable_chunked_prefill || self.split_is_avoidable(s, remaining, st))
            {
                st.close(id, BlockedReason::TokenBudget);
                return Ok(());
            }
            let need_blocks = (cached + n_new).div_ceil(bs) - hit.blocks.len();
            let free_blocks = self.pool.num_free().saturating_sub(hit.n_parked);
            let need_slots = s.slots();
            let free_slots = self.seq_cap().saturating_sub(self.running_slots);
            if need_blocks <= free_blocks && need_slots <= free_slots {
                break (hit, n_new);
            }
            match self.plan_victims(s.priority, &hit, need_blocks, need_slots)? {
                Ok(victims) => {
                    for v in victims {
                        self.preempt(v, st)?;
                    }
                }
                Err(reason) => {
                    st.close(id, reason);
                    return Ok(());
                }
            }
        };
        let cached = hit.num_tokens(bs);
        self.cache.acquire(&mut self.pool, &hit)?;
        let s = self.get_mut(id)?;
        let key = s.key();
        let query = s.tokens.len();
        s.blocks = hit.blocks;
        s.hashes = hit.hashes;
        s.num_computed = cached;
        s.prefill_target = s.tokens.len();
        s.cached_tokens.get_or_insert(cached.min(s.prompt_len));
        s.running = true;
        let slots = s.slots();
        self.cache.record_query(query, cached);
        self.waiting.remove(&key);
        self.running.insert(key);
        self.running_slots += slots;
        self.grow(id, n_new, st)
    }

    /// Whether a prompt that does not fit the rest of this step should rather wait for the
    /// next one: another prompt already prefills here, and a step could hold this one whole.
    /// Its first token then comes after one step instead of two (the split's tail would cost
    /// a step of its own), and the prompt ahead of it gets a shorter step; the tokens it
    /// would have filled are cheap to leave out, since prefill is compute-bound.
    fn split_is_avoidable(&self, s: &Seq, remaining: usize, st: &Step) -> bool {
        let whole_step = match self.limits.protect {
            Some(p) if s.priority >= p => self.protected_budget(),
            _ => self.step_budget(),
        };
        let prefill_here = st
            .plan
            .items
            .iter()
            .any(|i| i.tokens.len() > 1 || !i.sample);
        prefill_here
            && remaining <= whole_step.saturating_sub(self.running_slots)
            && self.cfg.max_chunk_tokens.is_none_or(|c| remaining <= c)
    }

    /// The fewest running sequences of priority below `priority` (lowest, newest first) whose
    /// preemption frees `need_blocks` blocks beyond the free ones and `need_slots` slots;
    /// `Err(reason)` when even all of them would not be enough.
    fn plan_victims(
        &self,
        priority: i32,
        hit: &PrefixHit,
        need_blocks: usize,
        need_slots: usize,
    ) -> Result<Result<Vec<SeqId>, BlockedReason>, SchedError> {
        let mut free_blocks = self.pool.num_free().saturating_sub(hit.n_parked);
        let mut free_slots = self.seq_cap().saturating_sub(self.running_slots);
        let mut victims = Vec::new();
        let mut dropped = std::collections::HashMap::new();
        for key in self.running.iter().rev() {
            if key.0 .0 >= priority {
                break;
            }
            let v = self.get(key.2)?;
            victims.push(v.id);
            free_slots += v.slots();
            for &b in &v.blocks {
                let n = dropped.entry(b).or_insert(0u32);
                *n += 1;
                // A hit block freed by a victim is parked and revived: no gain.
                if *n == self.pool.ref_count(b)? && !hit.blocks.contains(&b) {
                    free_blocks += 1;
                }
            }
            if need_blocks <= free_blocks && need_slots <= free_slots {
                return Ok(Ok(victims));
            }
        }
        Ok(Err(if need_slots > free_slots {
            BlockedReason::SeqCap {
                needed: need_slots,
                obtainable: free_slots,
            }
        } else {
            BlockedReason::KvBlocks {
                needed: need_blocks,
                obtainable: free_blocks,
            }
        }))
    }

    /// New blocks (copy-on-write included) `id` needs to compute `n_new` more tokens.
    fn blocks_needed(&self, id: SeqId, n_new: usize) -> Result<usize, SchedError> {
        let s = self.get(id)?;
        let bs = self.cfg.block_size;
        let grow = (s.num_computed + n_new)
            .div_ceil(bs)
            .saturating_sub(s.blocks.len());
        let cow = self.shared_partial(s)?;
        Ok(grow + cow as usize)
    }

    /// Whether the block `s` writes next is partially filled and shared (needs a copy).
    fn shared_partial(&self, s: &Seq) -> Result<bool, SchedError> {
        let bs = self.cfg.block_size;
        let offset = s.num_computed % bs;
        match s.blocks.get(s.num_computed / bs) {
            Some(&b) if offset > 0 => Ok(self.pool.ref_count(b)? > 1),
            _ => Ok(false),
        }
    }

    /// Give `id` the blocks for `n_new` more tokens (copying a shared partial block first)
    /// and add its plan item. The blocks were checked to be available.
    fn grow(&mut self, id: SeqId, n_new: usize, st: &mut Step) -> Result<(), SchedError> {
        let bs = self.cfg.block_size;
        let cow = self.shared_partial(self.get(id)?)?;
        let Scheduler {
            seqs,
            pool,
            cache,
            running,
            ..
        } = self;
        let s = seqs
            .get_mut(&id)
            .ok_or_else(|| SchedError::Internal(format!("growing unknown {id}")))?;
        if cow {
            let i = s.num_computed / bs;
            let src = s.blocks[i];
            let dst = cache.allocate(pool)?;
            cache.release(pool, src)?;
            s.blocks[i] = dst;
            st.plan.copies.push(BlockCopy { src, dst });
        }
        while s.blocks.len() < (s.num_computed + n_new).div_ceil(bs) {
            s.blocks.push(cache.allocate(pool)?);
        }
        let pos0 = s.num_computed;
        let tokens = s.tokens[pos0..pos0 + n_new].to_vec();
        s.num_computed += n_new;
        let sample = s.num_computed == s.tokens.len();
        s.awaiting_sample = sample;
        let mut item = PlanItem {
            seq: id,
            tokens,
            pos0,
            block_table: s.blocks.clone(),
            sample,
            forks: Vec::new(),
        };
        if sample && !s.pending_forks.is_empty() {
            let pending = std::mem::take(&mut s.pending_forks);
            let parent = s.clone();
            for idx in pending {
                let mut child = parent.clone();
                child.id = SeqId::new(id.request, idx);
                child.num_preemptions = 0;
                for &b in &child.blocks {
                    pool.retain(b)?;
                }
                running.insert(child.key());
                st.scheduled.insert(child.id);
                item.forks.push(child.id);
                seqs.insert(child.id, child);
            }
        }
        st.budget -= n_new;
        st.plan.num_tokens += n_new;
        st.scheduled.insert(id);
        st.plan.items.push(item);
        Ok(())
    }

    fn preempt(&mut self, id: SeqId, st: &mut Step) -> Result<(), SchedError> {
        if st.scheduled.contains(&id) {
            return Err(SchedError::Internal(format!(
                "preempting {id}, which this step already scheduled"
            )));
        }
        st.reserved.remove(&id);
        self.preempt_now(id)?;
        st.preempted.insert(id);
        st.plan.preempted.push(id);
        Ok(())
    }

    fn get(&self, id: SeqId) -> Result<&Seq, SchedError> {
        self.seqs
            .get(&id)
            .ok_or_else(|| SchedError::Internal(format!("unknown sequence {id}")))
    }

    fn get_mut(&mut self, id: SeqId) -> Result<&mut Seq, SchedError> {
        self.seqs
            .get_mut(&id)
            .ok_or_else(|| SchedError::Internal(format!("unknown sequence {id}")))
    }
}
